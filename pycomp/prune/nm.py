"""N:M semi-structured masks (2:4 by default): in every group of M consecutive weights along the
input dimension K, only the N largest |w| are kept, the pattern sparse tensor cores run.

K is the GEMM's reduction dimension: in_features for nn.Linear, in_channels * kh * kw for
nn.Conv2d, in the order weight.reshape(out, -1) flattens it (unfold's patch order, as
pycomp's im2col convs use). When K is not a multiple of M a layer raises, unless pad=True:
then the last group's K % M weights are treated as padded with zeros to M and keep their
min(N, K % M) largest, the mask a kernel that zero-pads K to a multiple of M would use.
Ties within a group keep the lower index.
"""
from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pycomp.prune.mask import apply_masks, check_finite, layer_label, prunable_layers


def _check_nm(n: int, m: int, where: str) -> None:
    if isinstance(n, bool) or isinstance(m, bool) or not (isinstance(n, int) and isinstance(m, int)) or not 0 < n < m:
        raise ValueError(f"{where}: need integers 0 < n < m for an N:M pattern, got n={n!r}, m={m!r}")


def _groups(weight: Tensor, m: int, pad_value: float) -> Tensor:
    """weight (O, ...) -> (O, ceil(K / m), m), K = numel / O, the tail padded with pad_value."""
    w = weight.detach().reshape(weight.shape[0], -1)
    tail = -w.shape[1] % m
    return F.pad(w, (0, tail), value=pad_value).view(w.shape[0], -1, m)


def nm_mask(weight: Tensor, n: int = 2, m: int = 4, *, pad: bool = False, where: str = "weight") -> Tensor:
    """Bool mask shaped like `weight` (True keeps): the n largest |w| of each group of m along K.

    weight: (O, K) for a Linear or (O, C, kh, kw) for a Conv2d (K = C * kh * kw).
    K % m != 0 raises ValueError unless pad=True (see the module docstring).
    """
    _check_nm(n, m, where)
    if weight.dim() < 2:
        raise ValueError(f"{where}: an N:M mask needs a 2-D or larger weight, got shape {tuple(weight.shape)}")
    check_finite(weight, where)
    k = weight[0].numel()
    if k % m and not pad:
        raise ValueError(f"{where}: K = {k} (the input dimension, in_channels * kh * kw for a conv) is not a "
                         f"multiple of M = {m}; skip this layer or pass pad=True to prune the last "
                         f"{k % m} as a zero-padded group")
    scores = _groups(weight.abs().float(), m, -1.0)  # -1: padding never outranks a real weight, even a zero one
    order = scores.argsort(dim=-1, descending=True, stable=True)
    keep = torch.zeros_like(scores, dtype=torch.bool).scatter_(-1, order[..., :n], True)
    return keep.view(weight.shape[0], -1)[:, :k].reshape(weight.shape)


def is_nm_sparse(weight: Tensor, n: int = 2, m: int = 4, *, pad: bool = False) -> bool:
    """Whether every group of m consecutive weights along K has at most n non-zeros.

    weight: (O, K) or (O, C, kh, kw). When K % m != 0 the answer is False (no N:M kernel takes that
    layout) unless pad=True, where the last, shorter group is checked as if zero-padded to m.
    """
    _check_nm(n, m, "is_nm_sparse")
    if weight.dim() < 2:
        return False
    if weight[0].numel() % m and not pad:
        return False
    return bool(((_groups(weight, m, 0.0) != 0).sum(-1) <= n).all())


def nm_masks(model: nn.Module, n: int = 2, m: int = 4, *, skip: str | Iterable[str] = (),
             pad: bool = False) -> dict[str, Tensor]:
    """N:M masks {layer name: bool tensor, True keeps} for every nn.Linear and nn.Conv2d not matched by a
    `skip` fnmatch pattern; the model is not changed. A layer whose K is not a multiple of m raises
    (naming it) unless pad=True."""
    _check_nm(n, m, "nm")
    layers = prunable_layers(model, skip)
    if not layers:
        raise ValueError(f"nm: the model has no nn.Linear or nn.Conv2d layer to prune (skip={skip!r})")
    return {name: nm_mask(module.weight, n, m, pad=pad, where=f"nm {n}:{m}: {layer_label(name)}")
            for name, module in layers.items()}


def nm_prune(model: nn.Module, n: int = 2, m: int = 4, *, skip: str | Iterable[str] = (),
             pad: bool = False) -> dict[str, Tensor]:
    """Apply N:M masks to `model` in place (see `nm_masks`) and return them.

    Fine-tune keeping the pattern with `keep_masks`:
        masks = nm_prune(model, skip=["conv1"])
        with keep_masks(model, masks, optimizer=opt):
            train(model, opt)
        assert all(is_nm_sparse(model.get_submodule(k).weight) for k in masks)
    """
    masks = nm_masks(model, n, m, skip=skip, pad=pad)
    apply_masks(model, masks)
    return masks
