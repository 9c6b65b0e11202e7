"""`pycomp.compress`: replace a model's layers with compressed ones, on a copy."""
from __future__ import annotations

import copy
import dataclasses
import fnmatch
import warnings
from collections.abc import Iterable, Iterator, Sequence

from torch import nn

from pycomp.binarize import BinaryConfig, XnorConfig
from pycomp.calibrate import calib_batches, replace_calibrated
from pycomp.lowrank.config import LowRankConfig
from pycomp.nn.base import CompressedLayer, held_by_parent, put_layer, replaceable
from pycomp.prune.config import Sparse24Config, SparseConfig
from pycomp.quantize.int4 import Int4Config
from pycomp.quantize.int8 import Int8Config
from pycomp.recipe import TRAINING_STEPS, Recipe

# Technique name -> configuration dataclass. A technique's config takes its
# options as fields and converts one module at a time (returning None for a
# module type it does not handle). Adding a technique adds one row here.
# A config whose `calibrates` is true also has `handles(module)` and takes
# `convert(module, name, calib=inputs)`, the inputs compress collected for that module.
# Steps that train instead of replacing layers live in pycomp.recipe.TRAINING_STEPS.
TECHNIQUES: dict[str, type] = {
    "binary": BinaryConfig,
    "int4": Int4Config,
    "int8": Int8Config,
    "lowrank": LowRankConfig,
    "2:4": Sparse24Config,
    "sparse": SparseConfig,
    "xnor": XnorConfig,
}


class NothingToCompress(ValueError):
    """A compress step found no layer it can replace (every candidate skipped, or none of its kind)."""


def make_config(technique: str, **options):
    """The configuration object for `technique` with `options`, or a clear error."""
    try:
        cls = TECHNIQUES[technique]
    except KeyError:
        raise ValueError(f"unknown technique {technique!r}; available: {', '.join(sorted(TECHNIQUES))}") from None
    valid = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(options) - valid)
    if unknown:
        raise TypeError(f"{technique}: unknown option(s) {unknown}; valid: {sorted(valid) or 'none'}")
    return cls(**options)


def _warn_held_overrides(model: nn.Module, step) -> None:
    """Warns when an override pattern of `step` names only modules that stay float for their parent (a pattern
    that also matches layers it can change, such as "*", is not about them)."""
    held = held_by_parent(model)
    if not held or not step.overrides:
        return
    names = [n for n, _ in model.named_modules() if n]
    named = set()
    for p, _ in step.overrides:
        matched = [n for n in names if fnmatch.fnmatchcase(n, p)]
        if matched and all(n in held for n in matched):
            named.update(matched)
    if named:
        warnings.warn(f"compress: {step.technique} overrides name {', '.join(sorted(named))}, which stay float: "
                      "nn.MultiheadAttention reads its out_proj's weight directly", stacklevel=4)


def _calibrates(config) -> bool:
    return getattr(config, "calibrates", False)


def _layer_step(model: nn.Module, step, skip: Sequence[str], batches) -> nn.Module:
    """Runs one layer-replacing step on `model` (changed in place, or the new root when it is itself a layer)."""
    base = make_config(step.technique, **step.options)
    overrides = [(p, make_config(step.technique, **{**step.options, **o})) for p, o in step.overrides]

    def config_for(name: str):
        return next((c for p, c in overrides if fnmatch.fnmatchcase(name, p)), base)

    skip = [*skip, *step.skip]
    root = config_for("")
    if not _calibrates(root) and (new := root.convert(model, "")) is not None:
        return new
    if _calibrates(root) and root.handles(model):
        return replace_calibrated(model, [("", model)], lambda n, m, x: root.convert(m, n, calib=x), batches,
                                  step.technique)
    _warn_held_overrides(model, step)
    targets = replaceable(model, skip)
    later, replaced = [], 0
    for name, module in targets:  # layers without calibration first: GPTQ then sees them compressed
        config = config_for(name)
        if _calibrates(config):
            if config.handles(module):
                later.append((name, module))
            continue
        new = config.convert(module, name)
        if new is not None:
            put_layer(model, name, new)
            replaced += 1
    if later:
        replace_calibrated(model, later, lambda n, m, x: config_for(n).convert(m, n, calib=x), batches,
                           step.technique)
    if replaced + len(later) == 0:
        kinds = sorted({type(m).__name__ for _, m in targets if isinstance(m, CompressedLayer)})
        held = f"; the compressed layers it met ({', '.join(kinds)}) have no {step.technique} form" if kinds else ""
        raise NothingToCompress(f"compress: {step.technique} found no layer it can compress (after skip={skip}){held}")
    return model


def _check_data(recipe: Recipe, calib, train) -> tuple[Recipe, list | Iterable | None]:
    """(the recipe with its calibrating steps marked, the calibration batches when a step needs them);
    raises, before any work, when a step needs calib= or train= and did not get it."""
    steps, batches = [], None
    for i, step in enumerate(recipe.steps, 1):
        label = step.technique if len(recipe.steps) == 1 else f"step {i} ({step.technique})"
        if step.trains:
            if train is None:
                raise ValueError(f"compress: {label} trains the model; pass train=, an iterable of "
                                 "(inputs, labels) batches")
            steps.append(step)
            continue
        configs = [make_config(step.technique, **{**step.options, **o}) for o in [{}, *(o for _, o in step.overrides)]]
        calibrates = any(_calibrates(c) for c in configs)
        if calibrates and batches is None:
            batches = calib_batches(calib, label)
        steps.append(dataclasses.replace(step, calibrated=calibrates))
    return Recipe(tuple(steps), recipe.skip), batches


def _jsonable(value):
    """`value` for a JSON manifest: containers walked, anything JSON cannot hold named as "<type>"."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return f"<{type(value).__name__}>"


def _recorded(model: nn.Module) -> Recipe | None:
    """The recipe recorded on an already-compressed model, which this call's steps extend."""
    data = getattr(model, "_pycomp_recipe", None)
    if data is None:
        return None
    try:
        return Recipe.from_dict(data)
    except (TypeError, ValueError) as e:
        raise ValueError(f"compress: the model's recorded recipe ({data!r}) cannot be extended: {e}; "
                         "delete model._pycomp_recipe to start a new record") from None


def compress(model: nn.Module, spec: str | Sequence[str] | Recipe, *, skip: Iterable[str] = (), calib=None,
             train=None, **options) -> nn.Module:
    """Return a compressed copy of `model`; the original is left untouched.

    spec: a technique name ("int8"), a list of steps applied in order (techniques of TECHNIQUES, which
        replace layers, and training steps of pycomp.recipe.TRAINING_STEPS, e.g. "finetune"), or a
        pycomp.Recipe (then its steps carry their options, and `options` must be empty).
    skip: fnmatch patterns of module names kept in float (e.g. ["classifier", "*.head"]). The out_proj of
        every nn.MultiheadAttention stays in float as well: its parent reads the weight directly.
    calib: an iterable (re-iterable, or it is read once and kept) of input batches, or of
        (inputs, labels), or of keyword dicts, for techniques that calibrate (int4 method="gptq";
        unused by int8 and int4 RTN). Each calibrating step collects its layers' inputs with
        forward hooks, one layer at a time in call order, on the copy being compressed.
    train: (inputs, labels) batches for training steps ("finetune", "distill"), whose teacher is `model`.
    options: the technique's settings (int8: mode="dynamic"|"weight_only";
        int4: group_size=32|64|128, method="rtn"|"gptq", symmetric=False, act_order=False), and
        "skip"/"overrides" ({pattern: options}) for a single technique. For a list, each option goes
        to every step that accepts it; one that no step accepts is an error.
    The result carries `_pycomp_recipe`, the Recipe's to_dict() ({"spec", "options", "skip"}; an option
    JSON cannot hold is recorded as "<type>"), which pycomp.save writes to the file's manifest and
    Recipe.from_dict reads back; compressing a model that has one appends this call's steps to it.
    """
    if isinstance(spec, Recipe):
        if options:
            raise TypeError(f"compress: options {sorted(options)} given with a Recipe; put them in its steps")
        extra = [skip] if isinstance(skip, str) else list(skip)
        recipe = Recipe(spec.steps, tuple(dict.fromkeys([*spec.skip, *extra]))) if extra else spec
    else:
        recipe = Recipe.from_call(spec, options, skip)
    recipe, batches = _check_data(recipe, calib, train)
    train = list(train) if isinstance(train, Iterator) else train  # one-shot iterators: read once, kept
    before = _recorded(model)
    out = copy.deepcopy(model)
    for step in recipe.steps:
        if step.trains:
            out = TRAINING_STEPS[step.technique](out, teacher=model, train=train, **step.options)
        else:
            out = _layer_step(out, step, recipe.skip, batches)
    out._pycomp_recipe = _jsonable((recipe if before is None else before.then(recipe)).to_dict())
    return out
