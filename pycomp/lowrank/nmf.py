"""Non-negative matrix factorization (Lee & Seung 2001, multiplicative updates on the Frobenius error).

It applies only to weights with no negative entry: W (N, K) >= 0 ~= A (N, r) B (r, K) with A, B >= 0.
Trained Linear and Conv2d weights almost always mix signs, so NMF rarely applies to them; it fits
non-negative matrices such as embedding tables or count-like weights kept non-negative in training.
"""
from __future__ import annotations

import torch
from torch import Tensor

from pycomp.lowrank.rank import check_weight, one_thread


def nmf(weight: Tensor, rank: int, *, iters: int = 2000, seed: int = 0, where: str = "weight") -> tuple[Tensor, Tensor]:
    """weight (N, K) >= 0 -> A (N, r), B (r, K) float32, both >= 0, with A @ B ~= weight.

    Raises ValueError naming `where` when the weight has a negative entry: NMF does not apply there
    (use SVD). Computed in float64 from a seeded random start scaled to the weight's mean.
    """
    w = check_weight(weight, where)
    if w.dim() != 2:
        raise ValueError(f"{where}: NMF factors a matrix, got shape {tuple(w.shape)}")
    negative = int((w < 0).sum())
    if negative:
        raise ValueError(f"{where}: NMF needs a non-negative weight, but {negative} of {w.numel()} entries are "
                         f"negative (min {float(w.min()):.4g}); use method='svd' for this layer")
    n, k = w.shape
    gen = torch.Generator().manual_seed(seed)
    scale = (float(w.mean()) / rank) ** 0.5
    a = torch.rand(n, rank, generator=gen, dtype=torch.float64) * scale
    b = torch.rand(rank, k, generator=gen, dtype=torch.float64) * scale
    eps = 1e-30
    with one_thread():
        for _ in range(iters):
            b *= (a.T @ w) / (a.T @ a @ b + eps)
            a *= (w @ b.T) / (a @ (b @ b.T) + eps)
    return a.float(), b.float()
