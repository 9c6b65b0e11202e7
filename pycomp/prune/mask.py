"""What every weight-pruning method shares: which layers it prunes, and masks that stay applied while training.

A mask is a bool tensor shaped like the weight it belongs to: True keeps the
weight, False prunes it. Masks are applied by zeroing weights in place; the
model keeps its plain modules and state_dict keys (no `weight_orig`
re-parametrization as in torch.nn.utils.prune), so a pruned model saves, loads
and compresses like any other.
"""
from __future__ import annotations

import fnmatch
import numbers
from collections.abc import Iterable, Mapping

import torch
from torch import Tensor, nn

PRUNABLE = (nn.Linear, nn.Conv2d)


def check_sparsity(sparsity: float, where: str) -> float:
    """`sparsity` as a float in [0, 1), or a ValueError saying what was given."""
    if isinstance(sparsity, bool) or not isinstance(sparsity, numbers.Real) or not 0 <= sparsity < 1:
        raise ValueError(f"{where}: sparsity must be a number in [0, 1), got {sparsity!r}")
    return float(sparsity)


def skip_list(skip: str | Iterable[str]) -> list[str]:
    return [skip] if isinstance(skip, str) else list(skip)


def prunable_layers(model: nn.Module, skip: str | Iterable[str] = ()) -> dict[str, nn.Module]:
    """{qualified name: module} of the model's nn.Linear and nn.Conv2d layers whose names match no `skip`
    fnmatch pattern, in definition order. A model that is itself one layer is named ""."""
    patterns = skip_list(skip)
    return {name: m for name, m in model.named_modules()
            if isinstance(m, PRUNABLE) and not any(fnmatch.fnmatchcase(name, p) for p in patterns)}


def check_finite(weight: Tensor, where: str) -> None:
    if not torch.isfinite(weight).all():
        raise ValueError(f"{where}: weight has a NaN or infinite value; its magnitude cannot be ranked")


def layer_label(name: str) -> str:
    return f"layer '{name}'" if name else "the model (a single layer)"


@torch.no_grad()
def apply_masks(model: nn.Module, masks: Mapping[str, Tensor]) -> None:
    """Zero the weights that `masks` prune, in place. masks: {layer name: bool tensor shaped like its weight}."""
    for name, mask in masks.items():
        weight = model.get_submodule(name).weight
        if mask.shape != weight.shape:
            raise ValueError(f"{layer_label(name)}: mask shape {tuple(mask.shape)} != weight shape "
                             f"{tuple(weight.shape)}")
        weight.mul_(mask.to(weight.device))


def sparsity_of(model: nn.Module, skip: str | Iterable[str] = ()) -> float:
    """Fraction of exact zeros among the weights of the model's prunable layers (see `prunable_layers`)."""
    weights = [m.weight for m in prunable_layers(model, skip).values()]
    total = sum(w.numel() for w in weights)
    return sum(int((w == 0).sum()) for w in weights) / total if total else 0.0


class MaskKeeper:
    """Keeps masks applied while a model trains; returned by `keep_masks`.

    Each masked weight gets a gradient hook that multiplies its gradient by the
    mask, so the optimizer never sees a gradient for a pruned weight. With an
    optimizer from before the masks (momentum, Adam moments of weights that were
    alive), a zero gradient is not enough; passing the optimizer adds a
    post-step hook that re-applies the masks after every `optimizer.step()`.
    `masks` may be updated in place (`keeper.masks[name] = new`): the hooks read them at call time.
    Use as a context manager or call `remove()`: it applies the masks a last time and removes the hooks.
    """

    def __init__(self, model: nn.Module, masks: Mapping[str, Tensor], optimizer: torch.optim.Optimizer | None = None):
        self.model, self.masks = model, dict(masks)
        apply_masks(model, self.masks)
        self._handles = [model.get_submodule(name).weight.register_hook(self._grad_hook(name)) for name in self.masks]
        if optimizer is not None:
            self._handles.append(optimizer.register_step_post_hook(lambda opt, args, kwargs: self.apply()))

    def _grad_hook(self, name: str):
        def hook(grad: Tensor) -> Tensor:
            return grad * self.masks[name].to(grad.device)

        return hook

    def apply(self) -> None:
        apply_masks(self.model, self.masks)

    def remove(self) -> dict[str, Tensor]:
        """Apply the masks a last time and remove the hooks; the zeros stay. Returns the masks."""
        self.apply()
        for handle in self._handles:
            handle.remove()
        self._handles = []
        return self.masks

    def __enter__(self) -> MaskKeeper:
        return self

    def __exit__(self, *exc) -> None:
        self.remove()


def keep_masks(model: nn.Module, masks: Mapping[str, Tensor],
               optimizer: torch.optim.Optimizer | None = None) -> MaskKeeper:
    """Apply `masks` and keep them applied through training (gradient hooks; see MaskKeeper).

        masks = nm_prune(model)                       # or magnitude_prune(model, 0.5)
        with keep_masks(model, masks, optimizer=opt):
            train(model, opt)                         # pruned weights stay exactly zero
    """
    return MaskKeeper(model, masks, optimizer)


def prune_count(sparsity: float, numel: int) -> int:
    """How many of `numel` weights `sparsity` prunes: round(sparsity * numel), Python's round (half to even)."""
    return round(sparsity * numel)
