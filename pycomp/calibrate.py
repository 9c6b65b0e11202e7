"""Calibration for compress: the inputs each layer receives, collected with forward hooks on the model itself."""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import torch
from torch import Tensor, nn

from pycomp.nn.base import put_layer


class _Stop(Exception):
    """Raised by a calibration hook once it has its layer's input: the rest of the forward is not needed."""


def calib_batches(calib, step: str) -> list | Iterable:
    """`calib` as something compress can iterate more than once; a clear error naming `step` when it is None."""
    if calib is None:
        raise ValueError(f"compress: {step} calibrates on the layers' inputs with these options; pass calib=, "
                         "an iterable of input batches (or of (inputs, labels))")
    if isinstance(calib, Tensor):
        return [calib]
    return list(calib) if isinstance(calib, Iterator) else calib  # one-shot iterators are read once, kept


def run_batch(model: nn.Module, batch, device: torch.device) -> None:
    """Runs `model` on a batch: a tensor, (inputs, labels), or a dict of keyword inputs."""
    if isinstance(batch, dict):
        model(**{k: v.to(device) if isinstance(v, Tensor) else v for k, v in batch.items()})
    else:
        model((batch[0] if isinstance(batch, (tuple, list)) else batch).to(device))


def inputs_of(model: nn.Module, module: nn.Module, batches, device) -> list[Tensor]:
    """What `module` receives (first call per batch) when `model` runs on each batch; the forward stops there."""
    got = []

    def hook(mod, args):
        got.append(args[0].detach())
        raise _Stop

    handle = module.register_forward_pre_hook(hook)
    try:
        for batch in batches:
            try:
                run_batch(model, batch, device)
            except _Stop:
                pass
    finally:
        handle.remove()
    return got


def call_order(model: nn.Module, targets: list, batches, device) -> list:
    """`targets` in the order the forward first calls them on the first batch (uncalled ones last)."""
    seen: dict[str, int] = {}

    def hook(name):
        def record(mod, args):  # returns None: a pre-hook's return value would replace the input
            seen.setdefault(name, len(seen))

        return record

    handles = [m.register_forward_pre_hook(hook(n)) for n, m in targets]
    try:
        run_batch(model, next(iter(batches)), device)
    finally:
        for h in handles:
            h.remove()
    return sorted(targets, key=lambda t: seen.get(t[0], len(seen)))


@torch.no_grad()
def replace_calibrated(model: nn.Module, targets: list[tuple[str, nn.Module]],
                       convert: Callable[[str, nn.Module, list[Tensor]], nn.Module], batches,
                       step: str) -> nn.Module:
    """Sequential calibration, the GPTQ way: `targets` (name, module) in call order, each replaced by
    convert(name, module, inputs), its inputs taken from the model with every earlier layer already
    replaced. Holds one layer's inputs at a time. targets [("", model)] converts the model itself.
    """
    device = next((t.device for t in (*model.parameters(), *model.buffers())), torch.device("cpu"))
    if not any(True for _ in batches):
        raise ValueError(f"compress: {step}: calib holds no batch")
    flags = {m: m.training for m in model.modules()}
    model.eval()
    try:
        if len(targets) == 1 and targets[0][1] is model:
            return convert("", model, inputs_of(model, model, batches, device))
        for name, module in call_order(model, targets, batches, device):
            inputs = inputs_of(model, module, batches, device)
            if not inputs:
                raise ValueError(f"compress: {step}: layer '{name}' never ran on the calibration data; "
                                 "give calib that reaches it, or skip it")
            put_layer(model, name, convert(name, module, inputs))
        return model
    finally:
        for m, training in flags.items():
            m.train(training)
