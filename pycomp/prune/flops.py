"""A small FLOP counter: the multiply-adds of a model's nn.Conv2d and nn.Linear layers, by forward hooks.

FLOPs = 2 x multiply-accumulates of the weights (bias adds, activations, norms and
pooling are not counted: in CNNs and MLPs they are a few percent). Counted for
the input given, batch included; a layer called twice counts twice.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn


def _macs(module: nn.Module, out: Tensor) -> int:
    if isinstance(module, nn.Conv2d):
        kh, kw = module.kernel_size
        return out.numel() * (module.in_channels // module.groups) * kh * kw
    return out.numel() * module.in_features  # nn.Linear


@torch.no_grad()
def flops_by_layer(model: nn.Module, example_input: Tensor) -> dict[str, int]:
    """{layer name: FLOPs} of each nn.Conv2d and nn.Linear for one forward pass on `example_input`.

    The model runs in eval mode (restored afterwards), so batch-norm statistics do not move.
    """
    counts: dict[str, int] = {}

    def hook(name):
        def count(module, args, out):
            counts[name] = counts.get(name, 0) + 2 * _macs(module, out)

        return count

    handles = [m.register_forward_hook(hook(n)) for n, m in model.named_modules()
               if isinstance(m, (nn.Conv2d, nn.Linear))]
    flags = {m: m.training for m in model.modules()}
    model.eval()
    try:
        model(example_input)
    finally:
        for h in handles:
            h.remove()
        for m, training in flags.items():
            m.train(training)
    return counts


def count_flops(model: nn.Module, example_input: Tensor) -> int:
    """Total FLOPs of the model's nn.Conv2d and nn.Linear layers on `example_input` (see `flops_by_layer`)."""
    return sum(flops_by_layer(model, example_input).values())
