"""`pycomp.Recipe`: ordered compression steps, with per-step options, skips and per-layer overrides.

A recipe is written by hand (YAML or a dict) in either of two forms:

    # steps form
    skip: [fc2]                       # every layer step leaves these modules in float
    steps:
      - "2:4"                         # a technique with its default options
      - finetune: {epochs: 2, lr: 1.0e-3}
      - int4:
          group_size: 128
          skip: [conv1]               # this step only
          overrides: {"conv*": {group_size: 32}}   # first matching fnmatch pattern wins

    # call form: what pycomp.compress(model, spec, skip=..., **options) takes, and what it records
    spec: ["finetune", "int4"]
    options: [{epochs: 2}, {group_size: 32}]   # one dict per step; or one dict, each option going
    skip: [fc2]                                 # to the steps that accept it (a one-step recipe: its options)

Two kinds of step: a technique of pycomp.api.TECHNIQUES replaces layers (its config converts one
module at a time), and a training step of TRAINING_STEPS trains the model in place. A training step
is a callable `fn(model, *, teacher, train, **options) -> model`: `teacher` is the model compress
was given, `train` compress's train= data. Its options are its keyword parameters, or the names
`fn.option_names()` returns when it forwards **options.

`to_dict()` writes the call form, with each step's options exactly as given (plus "calib":
"<calibration data>" on a step that calibrated: the data itself is not recorded), so
`compress(model, Recipe.from_dict(small._pycomp_recipe), calib=..., train=...)` repeats the run.
"""
from __future__ import annotations

import dataclasses
import inspect
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

# Keys of a step's options that the recipe handles itself rather than the technique. "calib" is
# recorded by compress on a step that calibrated (the data itself is not recorded: pass calib= again).
STEP_KEYS = ("skip", "overrides", "calib")
CALIB_MARK = "<calibration data>"


# ----------------------------------------------------------------------------- training steps


def _batches(train, step: str) -> list | Iterable:
    if train is None:
        raise ValueError(f"compress: step '{step}' trains the model; pass train=, an iterable of "
                         "(inputs, labels) batches")
    return list(train) if isinstance(train, Iterator) else train  # one-shot iterators are read once, kept


def finetune(model: nn.Module, *, teacher: nn.Module, train, epochs: int = 1, lr: float = 1e-3,
             seed: int = 0) -> nn.Module:
    """Train `model`'s trainable parameters on `train` ((inputs, labels) batches, seen in their order)
    with Adam and cross-entropy, for `epochs` passes. Seeded (dropout and friends), without touching
    the global random state. `teacher` is unused. Returns `model` in the training mode it came in.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("compress: step 'finetune': the model has no trainable parameter left "
                         "(packed layers hold buffers); fine-tune before quantizing")
    if not (isinstance(epochs, int) and epochs >= 1):
        raise ValueError(f"compress: step 'finetune': epochs must be a positive integer, got {epochs!r}")
    batches = _batches(train, "finetune")
    flags = {m: m.training for m in model.modules()}
    opt = torch.optim.Adam(params, lr=lr)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model.train()
        try:
            for _ in range(epochs):
                for batch in batches:
                    if not (isinstance(batch, (tuple, list)) and len(batch) == 2):
                        raise ValueError("compress: step 'finetune': train batches must be (inputs, labels)")
                    x, y = batch
                    opt.zero_grad()
                    F.cross_entropy(model(x), y).backward()
                    opt.step()
        finally:
            for m, training in flags.items():
                m.train(training)
    return model


def _distiller():
    try:
        from pycomp.distill import Distiller
    except ImportError as e:
        raise ValueError(f"compress: step 'distill' needs pycomp.distill.Distiller, which did not import ({e})") from None
    return Distiller


def _parameters(fn, leading: int) -> list[inspect.Parameter]:
    """fn's named parameters after the first `leading` ones (self, teacher, student / data)."""
    ps = list(inspect.signature(fn).parameters.values())[leading:]
    return [p for p in ps if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]


def distill(model: nn.Module, *, teacher: nn.Module, train, **options) -> nn.Module:
    """Distil `teacher` into `model`: Distiller(teacher, model, **init options).fit(train, **fit options),
    each option going to whichever of Distiller's constructor and fit() names it.
    """
    cls = _distiller()
    init_names = {p.name for p in _parameters(cls.__init__, 3)}
    init = {k: v for k, v in options.items() if k in init_names}
    fit = {k: v for k, v in options.items() if k not in init_names}
    trainer = cls(teacher, model, **init)
    out = trainer.fit(_batches(train, "distill"), **fit)
    if isinstance(out, nn.Module):
        return out
    return getattr(trainer, "student", model)


def _distill_options() -> set[str]:
    cls = _distiller()
    return {p.name for p in _parameters(cls.__init__, 3)} | {p.name for p in _parameters(cls.fit, 2)}


distill.option_names = _distill_options

# Training step name -> callable(model, *, teacher, train, **options) -> model. Adding a step adds one row.
TRAINING_STEPS: dict[str, Callable] = {
    "distill": distill,
    "finetune": finetune,
}


# ----------------------------------------------------------------------------- steps and recipes


def _techniques() -> dict:
    from pycomp.api import TECHNIQUES

    return TECHNIQUES


def step_names() -> list[str]:
    return sorted({*_techniques(), *TRAINING_STEPS})


def option_names(technique: str) -> set[str]:
    """The options a step takes (its config's fields, or its training callable's keyword parameters)."""
    if technique in TRAINING_STEPS:
        fn = TRAINING_STEPS[technique]
        if hasattr(fn, "option_names"):
            return set(fn.option_names())
        return {p.name for p in _parameters(fn, 1) if p.name not in ("teacher", "train")}
    try:
        return {f.name for f in dataclasses.fields(_techniques()[technique])}
    except KeyError:
        raise ValueError(f"unknown technique {technique!r}; available: {', '.join(step_names())}") from None


def _patterns(value, where: str) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if not isinstance(value, (list, tuple)) or not all(isinstance(p, str) for p in value):
        raise TypeError(f"{where}: skip must be a pattern or a list of patterns, got {value!r}")
    return tuple(value)


@dataclass(frozen=True)
class Step:
    """One step: `technique` (a TECHNIQUES or TRAINING_STEPS name) with its options; for a technique,
    `skip` patterns it leaves alone and `overrides` ((pattern, options), ...) for matching layers.
    `calibrated` records that the step ran on calibration data.
    """

    technique: str
    options: dict = field(default_factory=dict)
    skip: tuple[str, ...] = ()
    overrides: tuple[tuple[str, dict], ...] = ()
    calibrated: bool = False

    @property
    def trains(self) -> bool:
        return self.technique in TRAINING_STEPS

    @classmethod
    def from_options(cls, technique: str, options: Mapping | None) -> "Step":
        """A step from a technique name and its options dict (which may hold "skip" and "overrides")."""
        options = dict(options or {})
        calibrated = bool(options.pop("calib", None))
        skip = _patterns(options.pop("skip", ()), technique)
        overrides = options.pop("overrides", {}) or {}
        if not isinstance(overrides, Mapping) or not all(isinstance(v, Mapping) for v in overrides.values()):
            raise TypeError(f"{technique}: overrides must map name patterns to option dicts, got {overrides!r}")
        return cls(technique, options, skip, tuple((p, dict(o)) for p, o in overrides.items()), calibrated)

    def check(self) -> None:
        """Raises a clear error for an unknown step or an option it does not take (overrides included)."""
        from pycomp.api import make_config

        option_names(self.technique)  # an unknown name fails here, listing every step
        if self.trains:
            if self.skip or self.overrides:
                raise ValueError(f"{self.technique}: skip and overrides apply to steps that replace layers, "
                                 "not to a training step")
            valid = option_names(self.technique)
            unknown = sorted(set(self.options) - valid)
            if unknown:
                raise TypeError(f"{self.technique}: unknown option(s) {unknown}; valid: {sorted(valid) or 'none'}")
            return
        make_config(self.technique, **self.options)
        for _, extra in self.overrides:
            make_config(self.technique, **{**self.options, **extra})

    def to_dict(self) -> dict:
        """The step's options as given, with "calib", "skip" and "overrides" when it has them."""
        out = dict(self.options)
        if self.calibrated:
            out["calib"] = CALIB_MARK
        if self.skip:
            out["skip"] = list(self.skip)
        if self.overrides:
            out["overrides"] = {p: dict(o) for p, o in self.overrides}
        return out

    def with_skip(self, skip: Iterable[str]) -> "Step":
        if self.trains:
            return self
        return dataclasses.replace(self, skip=tuple(dict.fromkeys([*skip, *self.skip])))


def route_options(spec: list[str], options: Mapping) -> list[dict]:
    """One options dict per step of a chain: each option goes to every step that accepts it.

    A one-step spec takes all of them (its technique then names any it does not accept).
    """
    if len(spec) == 1:
        return [dict(options)]
    names = [option_names(t) | set(STEP_KEYS) for t in spec]
    homeless = sorted(k for k in options if not any(k in n for n in names))
    if homeless:
        takes = "; ".join(f"{t} takes {sorted(n - set(STEP_KEYS)) or 'none'}" for t, n in zip(spec, names))
        raise TypeError(f"compress: option(s) {homeless} fit no step of {spec}; {takes}")
    if any(k in STEP_KEYS for k in options):
        raise TypeError(f"compress: {sorted(set(options) & set(STEP_KEYS))} of a chain belong to one step; "
                        "give them in a Recipe step (or pass skip= for every step)")
    return [{k: v for k, v in options.items() if k in n} for n in names]


@dataclass(frozen=True)
class Recipe:
    """Ordered steps and the module-name patterns (fnmatch) every layer-replacing step leaves in float."""

    steps: tuple[Step, ...]
    skip: tuple[str, ...] = ()

    def __post_init__(self):
        if not self.steps:
            raise ValueError("Recipe: no step")
        for s in self.steps:
            s.check()

    @classmethod
    def from_call(cls, spec, options: Mapping | None = None, skip=()) -> "Recipe":
        """The recipe of compress(model, spec, skip=skip, **options): spec a name or a list of names;
        options one dict (routed to the steps that take each option) or one dict per step.
        """
        spec = [spec] if isinstance(spec, str) else list(spec)
        if not spec or not all(isinstance(t, str) for t in spec):
            raise ValueError(f"compress: spec must name one technique or a list of them, got {spec!r}")
        for t in spec:
            option_names(t)  # unknown names fail here, before options are routed
        options = options or {}
        if isinstance(options, Mapping):
            per_step = route_options(spec, options)
        elif len(options) == len(spec) and all(isinstance(o, Mapping) for o in options):
            per_step = [dict(o) for o in options]
        else:
            raise TypeError(f"Recipe: options must be a dict or one dict per step of {spec}, got {options!r}")
        return cls(tuple(Step.from_options(t, o) for t, o in zip(spec, per_step)), _patterns(skip, "Recipe"))

    @classmethod
    def from_dict(cls, data: Mapping) -> "Recipe":
        """A recipe from its steps form ({"steps": [...], "skip": [...]}) or call form ({"spec", "options", "skip"})."""
        if not isinstance(data, Mapping):
            raise TypeError(f"Recipe: expected a mapping, got {type(data).__name__}")
        if "steps" in data:
            unknown = sorted(set(data) - {"steps", "skip"})
            if unknown:
                raise ValueError(f"Recipe: unknown key(s) {unknown} beside 'steps' (allowed: steps, skip)")
            if not isinstance(data["steps"], (list, tuple)):
                raise TypeError("Recipe: 'steps' must be a list")
            return cls(tuple(cls._step(entry, i) for i, entry in enumerate(data["steps"])),
                       _patterns(data.get("skip", ()), "Recipe"))
        unknown = sorted(set(data) - {"spec", "options", "skip"})
        if unknown or "spec" not in data:
            raise ValueError(f"Recipe: expected keys steps[, skip] or spec[, options, skip], got {sorted(data)}")
        return cls.from_call(data["spec"], data.get("options"), data.get("skip", ()))

    @staticmethod
    def _step(entry, i: int) -> Step:
        if isinstance(entry, str):
            return Step.from_options(entry, {})
        if isinstance(entry, Mapping) and len(entry) == 1:
            (technique, options), = entry.items()
            if options is None or isinstance(options, Mapping):
                return Step.from_options(technique, options)
        raise ValueError(f"Recipe: step {i + 1} must be a technique name or {{technique: options}}, got {entry!r}")

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Recipe":
        """A recipe from a YAML (or JSON) file."""
        import yaml

        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
        try:
            return cls.from_dict(data)
        except (TypeError, ValueError) as e:
            raise type(e)(f"{os.fspath(path)}: {e}") from None

    def to_dict(self) -> dict:
        """The call form, JSON-able: {"spec": [names], "options": dict (one step) or [dict per step], "skip": [...]}."""
        options = [s.to_dict() for s in self.steps]
        return {"spec": [s.technique for s in self.steps], "options": options[0] if len(options) == 1 else options,
                "skip": list(self.skip)}

    def then(self, other: "Recipe") -> "Recipe":
        """This recipe followed by `other`; the skips move into the steps when the two differ."""
        if self.skip == other.skip:
            return Recipe(self.steps + other.steps, self.skip)
        steps = [s.with_skip(self.skip) for s in self.steps] + [s.with_skip(other.skip) for s in other.steps]
        return Recipe(tuple(steps))

    @property
    def trains(self) -> bool:
        return any(s.trains for s in self.steps)
