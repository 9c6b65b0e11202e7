"""`pycomp.compress`: replace a model's layers with compressed ones, on a copy."""
from __future__ import annotations

import copy
import dataclasses
import fnmatch
import json
from collections.abc import Iterable, Iterator, Sequence

import torch
from torch import Tensor, nn

from pycomp.binarize import BinaryConfig, XnorConfig
from pycomp.quantize.int4 import Int4Config
from pycomp.quantize.int8 import Int8Config

# Technique name -> configuration dataclass. A technique's config takes its
# options as fields and converts one module at a time (returning None for a
# module type it does not handle). Adding a technique adds one row here.
# A config whose `calibrates` is true also has `handles(module)` and takes
# `convert(module, name, calib=inputs)`, the inputs compress collected for that module.
TECHNIQUES: dict[str, type] = {
    "binary": BinaryConfig,
    "int4": Int4Config,
    "int8": Int8Config,
    "xnor": XnorConfig,
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


class _Stop(Exception):
    """Raised by a calibration hook once it has its layer's input: the rest of the forward is not needed."""


def _calib_batches(calib, step: str) -> list | Iterable:
    if calib is None:
        raise ValueError(f"compress: {step} calibrates on the layers' inputs with these options; pass calib=, "
                         "an iterable of input batches (or of (inputs, labels))")
    if isinstance(calib, Tensor):
        return [calib]
    return list(calib) if isinstance(calib, Iterator) else calib  # one-shot iterators are read once, kept


def _run(model: nn.Module, batch, device: torch.device) -> None:
    if isinstance(batch, dict):
        model(**{k: v.to(device) if isinstance(v, Tensor) else v for k, v in batch.items()})
    else:
        model((batch[0] if isinstance(batch, (tuple, list)) else batch).to(device))


def _inputs_of(model: nn.Module, module: nn.Module, batches, device) -> list[Tensor]:
    """What `module` receives (first call per batch) when `model` runs on each batch; the forward stops there."""
    got = []

    def hook(mod, args):
        got.append(args[0].detach())
        raise _Stop

    handle = module.register_forward_pre_hook(hook)
    try:
        for batch in batches:
            try:
                _run(model, batch, device)
            except _Stop:
                pass
    finally:
        handle.remove()
    return got


def _call_order(model: nn.Module, targets: list, batches, device) -> list:
    """`targets` in the order the forward first calls them on the first batch (uncalled ones last)."""
    seen: dict[str, int] = {}

    def hook(name):
        def record(mod, args):  # returns None: a pre-hook's return value would replace the input
            seen.setdefault(name, len(seen))

        return record

    handles = [m.register_forward_pre_hook(hook(n)) for n, m in targets]
    try:
        _run(model, next(iter(batches)), device)
    finally:
        for h in handles:
            h.remove()
    return sorted(targets, key=lambda t: seen.get(t[0], len(seen)))


@torch.no_grad()
def _replace_calibrated(model: nn.Module, config, batches, skip: Sequence[str], step: str) -> nn.Module:
    """Sequential calibration, the GPTQ way: layers in call order, each calibrated on the inputs it gets
    from the model with every earlier layer already compressed. Holds one layer's inputs at a time.
    """
    device = next((t.device for t in (*model.parameters(), *model.buffers())), torch.device("cpu"))
    if not any(True for _ in batches):
        raise ValueError(f"compress: {step}: calib holds no batch")
    flags = {m: m.training for m in model.modules()}
    model.eval()
    try:
        if config.handles(model):  # the model is itself a single layer
            return config.convert(model, "", calib=_inputs_of(model, model, batches, device))
        targets = [(n, m) for n, m in model.named_modules() if n and not _skipped(n, skip) and config.handles(m)]
        if not targets:
            raise ValueError(f"compress: {step} found no layer it can compress (after skip={list(skip)})")
        for name, module in _call_order(model, targets, batches, device):
            inputs = _inputs_of(model, module, batches, device)
            if not inputs:
                raise ValueError(f"compress: {step}: layer '{name}' never ran on the calibration data; "
                                 "give calib that reaches it, or skip it")
            parent_name, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent_name), child, config.convert(module, name, calib=inputs))
        return model
    finally:
        for m, training in flags.items():
            m.train(training)


def _jsonable(value):
    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError):
        return f"<{type(value).__name__}>"


def _recipe(steps: list, options: dict, skip: list, calib) -> dict:
    """What compress was asked, JSON-able: kept on the result as `_pycomp_recipe` for pycomp.save's manifest."""
    recorded = {k: _jsonable(v) for k, v in options.items()}
    if calib is not None:
        recorded["calib"] = "<calibration data>"
    return {"spec": list(steps), "options": recorded, "skip": list(skip)}


def compress(model: nn.Module, spec: str | Sequence[str], *, skip: Iterable[str] = (), calib=None,
             **options) -> nn.Module:
    """Return a compressed copy of `model`; the original is left untouched.

    spec: a technique name ("int8") or a list of them, applied in order.
    skip: fnmatch patterns of module names kept in float (e.g. ["classifier", "*.head"]).
    calib: an iterable (re-iterable, or it is read once and kept) of input batches, or of
        (inputs, labels), or of keyword dicts, for techniques that calibrate (int4 method="gptq";
        unused by int8 and int4 RTN). Each calibrating step collects its layers' inputs with
        forward hooks, one layer at a time in call order, on the copy being compressed.
    options: the technique's settings (int8: mode="dynamic"|"weight_only";
        int4: group_size=32|64|128, method="rtn"|"gptq", symmetric=False, act_order=False).
    The result carries `_pycomp_recipe` ({"spec", "options", "skip"}, JSON-able; calib recorded as
    "<calibration data>"), which pycomp.save writes to the file's manifest.
    """
    steps = [spec] if isinstance(spec, str) else list(spec)
    if not steps:
        raise ValueError("compress: spec names no technique")
    configs = [make_config(step, **options) for step in steps]
    skip = [skip] if isinstance(skip, str) else list(skip)
    batches = next((_calib_batches(calib, s) for s, c in zip(steps, configs) if getattr(c, "calibrates", False)), None)
    out = copy.deepcopy(model)
    for step, config in zip(steps, configs):
        if getattr(config, "calibrates", False):
            out = _replace_calibrated(out, config, batches, skip, step)
            continue
        root = config.convert(out, "")  # the model may itself be a single layer
        if root is not None:
            out = root
        elif _replace(out, config, skip) == 0:
            raise ValueError(f"compress: {step} found no layer it can compress (after skip={skip})")
    out._pycomp_recipe = _recipe(steps, options, skip, calib)
    return out
