"""Magnitude pruning: zero the weights of smallest |w|, per layer or under one global threshold.

Ties are broken by position (a stable sort of |w|: among equal magnitudes the
weight with the lower flat index is pruned first; globally, earlier layers in
definition order first), so the same weights always give the same mask and
exactly round(sparsity * numel) weights are pruned: per layer in "layer" scope,
over all chosen layers together in "global" scope.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Literal

import torch
from torch import Tensor, nn

from pycomp.prune.mask import (apply_masks, check_finite, check_sparsity, layer_label, prunable_layers,
                               prune_count)

SCOPES = ("layer", "global")


def magnitude_mask(weight: Tensor, sparsity: float, *, where: str = "weight") -> Tensor:
    """Bool mask shaped like `weight` (True keeps) pruning exactly round(sparsity * numel) smallest |w|."""
    sparsity = check_sparsity(sparsity, where)
    check_finite(weight, where)
    order = weight.detach().abs().flatten().argsort(stable=True)
    mask = torch.ones(weight.numel(), dtype=torch.bool, device=weight.device)
    mask[order[:prune_count(sparsity, weight.numel())]] = False
    return mask.view(weight.shape)


def _layer_scales(layers: Mapping[str, nn.Module], scale) -> dict[str, float]:
    if scale is None:
        return {name: 1.0 for name in layers}
    if scale == "rms":  # each layer's |w| relative to its own RMS: layers of different scale compete fairly
        return {name: 1.0 / max(float(m.weight.detach().float().pow(2).mean().sqrt()), 1e-30)
                for name, m in layers.items()}
    if isinstance(scale, Mapping):
        unknown = sorted(set(scale) - set(layers))
        if unknown:
            raise ValueError(f"magnitude: scale names layers that are not pruned here: {unknown}")
        return {name: float(scale.get(name, 1.0)) for name in layers}
    raise ValueError(f"magnitude: scale must be None, 'rms' or a {{layer name: factor}} mapping, got {scale!r}")


def _global_masks(layers: Mapping[str, nn.Module], sparsity: float, scale) -> dict[str, Tensor]:
    factors = _layer_scales(layers, scale)
    scores = torch.cat([m.weight.detach().abs().flatten().float() * factors[name] for name, m in layers.items()])
    pruned = torch.zeros(scores.numel(), dtype=torch.bool, device=scores.device)
    pruned[scores.argsort(stable=True)[:prune_count(sparsity, scores.numel())]] = True
    masks, start = {}, 0
    for name, m in layers.items():
        n = m.weight.numel()
        masks[name] = ~pruned[start:start + n].view(m.weight.shape)
        start += n
    return masks


def magnitude_masks(model: nn.Module, sparsity: float, *, scope: Literal["layer", "global"] = "layer",
                    skip: str | Iterable[str] = (), scale: str | Mapping[str, float] | None = None
                    ) -> dict[str, Tensor]:
    """Masks {layer name: bool tensor shaped like its weight, True keeps} for every nn.Linear and nn.Conv2d
    weight not matched by a `skip` fnmatch pattern; the model is not changed.

    scope="layer": each weight loses exactly round(sparsity * numel) of its smallest |w|.
    scope="global": one threshold over all chosen weights together, round(sparsity * total) pruned,
        on |w| * factor per layer: scale=None (factor 1), "rms" (1 / the layer's weight RMS) or
        {layer name: factor} (layers not named keep factor 1). `scale` is only read in global scope.
    """
    sparsity = check_sparsity(sparsity, "magnitude")
    if scope not in SCOPES:
        raise ValueError(f"magnitude: scope must be one of {SCOPES}, got {scope!r}")
    layers = prunable_layers(model, skip)
    if not layers:
        raise ValueError(f"magnitude: the model has no nn.Linear or nn.Conv2d layer to prune (skip={skip!r})")
    for name, m in layers.items():
        check_finite(m.weight, layer_label(name))
    if scope == "global":
        return _global_masks(layers, sparsity, scale)
    return {name: magnitude_mask(m.weight, sparsity, where=layer_label(name)) for name, m in layers.items()}


def magnitude_prune(model: nn.Module, sparsity: float, *, scope: Literal["layer", "global"] = "layer",
                    skip: str | Iterable[str] = (), scale: str | Mapping[str, float] | None = None
                    ) -> dict[str, Tensor]:
    """Prune `model` in place by magnitude (see `magnitude_masks` for the options) and return the masks.

    To fine-tune without the pruned weights coming back: `with keep_masks(model, masks, opt): ...`.
    """
    masks = magnitude_masks(model, sparsity, scope=scope, skip=skip, scale=scale)
    apply_masks(model, masks)
    return masks
