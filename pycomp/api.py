"""`pycomp.compress`: replace a model's layers with compressed ones, on a copy."""
from __future__ import annotations

import copy
import dataclasses
import fnmatch
from collections.abc import Iterable, Sequence

from torch import nn

from pycomp.quantize.int8 import Int8Config

# Technique name -> configuration dataclass. A technique's config takes its
# options as fields and converts one module at a time (returning None for a
# module type it does not handle). Adding a technique adds one row here.
TECHNIQUES: dict[str, type] = {
    "int8": Int8Config,
}


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


def _skipped(name: str, patterns: Sequence[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def _replace(model: nn.Module, config, skip: Sequence[str]) -> int:
    targets = [(n, m) for n, m in model.named_modules() if n and not _skipped(n, skip)]
    replaced = 0
    for name, module in targets:
        new = config.convert(module, name)
        if new is None:
            continue
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name), child, new)
        replaced += 1
    return replaced


def compress(model: nn.Module, spec: str | Sequence[str], *, skip: Iterable[str] = (), calib=None,
             **options) -> nn.Module:
    """Return a compressed copy of `model`; the original is left untouched.

    spec: a technique name ("int8") or a list of them, applied in order.
    skip: fnmatch patterns of module names kept in float (e.g. ["classifier", "*.head"]).
    calib: an iterable of input batches, for techniques that calibrate (unused by int8).
    options: the technique's settings (int8: mode="dynamic"|"weight_only").
    """
    steps = [spec] if isinstance(spec, str) else list(spec)
    if not steps:
        raise ValueError("compress: spec names no technique")
    configs = [make_config(step, **options) for step in steps]
    skip = [skip] if isinstance(skip, str) else list(skip)
    out = copy.deepcopy(model)
    for step, config in zip(steps, configs):
        root = config.convert(out, "")  # the model may itself be a single layer
        if root is not None:
            out = root
        elif _replace(out, config, skip) == 0:
            raise ValueError(f"compress: {step} found no layer it can compress (after skip={skip})")
    return out
