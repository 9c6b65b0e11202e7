"""GPTQ (Frantar et al. 2022, arXiv:2210.17323) for int4 group-wise weights.

Columns of W (N, K) are quantized one at a time; each column's rounding error is
spread over the columns not yet quantized through the upper Cholesky factor of
H^-1, where H = 2/n * X^T X over the layer's n calibration input rows (tokens, or
im2col patches for a conv). As in the reference implementation:

- dampening: percdamp (0.01) * mean(diag H) is added to the diagonal;
- lazy batch updates: blocks of 128 columns, the rest of W updated once per block;
- dead columns (diag H = 0, inputs always zero) get weight 0 and H_ii = 1;
- group parameters: found (by the clipping search of pycomp.quantize.int4) on the
  error-updated weights when the loop reaches a group's first column;
- act_order=True: columns go by decreasing diag H, with *static* groups whose
  parameters are found on the weights before any update, so groups stay the
  contiguous K ranges of the storage format (no per-column group index).

Calibration must give at least K rows: with fewer, X^T X has rank < K and the
damped Hessian mostly reflects the dampening, so the result would fit the few
samples rather than the layer.
"""
from __future__ import annotations

import torch
from torch import Tensor

from pycomp.formats.int4 import (
    SYMMETRIC_ZERO, check_finite, check_group_size, n_groups, pack_nibbles, round_to_codes,
)
from pycomp.quantize.int4 import int4_group_params

PERCDAMP = 0.01
BLOCK_SIZE = 128  # a multiple of every group size, so a group never straddles two blocks


class Hessian:
    """The running H = 2/n * sum x x^T over the rows x of a layer's K-feature inputs."""

    def __init__(self, k: int):
        self.k = k
        self.rows = 0
        self._sum: Tensor | None = None

    def add(self, rows: Tensor) -> None:
        """rows (n, K) float, one batch of the layer's inputs (accumulated in float32)."""
        x = rows.detach().reshape(-1, self.k).float()
        xtx = x.t() @ x
        self._sum = xtx if self._sum is None else self._sum.add_(xtx)
        self.rows += x.shape[0]

    def matrix(self) -> Tensor:
        return self._sum * (2.0 / self.rows)


def min_rows(k: int) -> int:
    """Fewest calibration rows GPTQ accepts for a K-column weight."""
    return k


def _inverse_cholesky(h: Tensor, percdamp: float, where: str) -> Tensor:
    """Upper Cholesky factor of (H + damp I)^-1, in float64 for the factorizations."""
    h = h.double()
    h.diagonal().add_(percdamp * h.diagonal().mean())
    lower, info = torch.linalg.cholesky_ex(h)
    if int(info) == 0:
        upper, info = torch.linalg.cholesky_ex(torch.cholesky_inverse(lower), upper=True)
    if int(info) != 0:
        raise ValueError(f"{where}: the damped Hessian is not positive definite (percdamp={percdamp}); "
                         "try a larger percdamp or more calibration data")
    return upper.float()


def gptq_int4(weight: Tensor, hessian: Hessian, group_size: int = 128, symmetric: bool = False,
              act_order: bool = False, *, percdamp: float = PERCDAMP, where: str = "int4 weight"
              ) -> tuple[Tensor, Tensor, Tensor | None]:
    """weight (N, K) float and its layer's Hessian -> (packed, scales, zeros) in the k-nibble int4 format."""
    check_group_size(group_size, where)
    w = weight.detach().reshape(weight.shape[0], -1).float().clone()
    check_finite(w, where)
    n, k = w.shape
    if hessian.k != k:
        raise ValueError(f"{where}: the Hessian is {hessian.k}x{hessian.k} but the weight has K={k} columns")
    if hessian.rows < min_rows(k):
        raise ValueError(f"{where}: GPTQ needs at least {min_rows(k)} calibration rows (one per token, or per "
                         f"im2col patch for a conv: at least K={k}) to estimate the Hessian, got {hessian.rows}; "
                         "pass more calibration batches")
    h = hessian.matrix().to(w.device)
    dead = h.diagonal() == 0
    h.diagonal()[dead] = 1
    w[:, dead] = 0
    g = n_groups(k, group_size)
    scales = torch.empty(n, g, dtype=torch.float16, device=w.device)
    zeros = None if symmetric else torch.empty(n, g, dtype=torch.uint8, device=w.device)
    if act_order:
        scales[:], z = int4_group_params(w, group_size, symmetric, where=where)
        if zeros is not None:
            zeros[:] = z
        perm = torch.argsort(h.diagonal(), descending=True)
        w, h = w[:, perm], h[perm][:, perm]
        group_of = [c // group_size for c in perm.tolist()]  # storage group of each permuted column
    u = _inverse_cholesky(h, percdamp, where)
    codes = torch.empty(n, k, dtype=torch.uint8, device=w.device)
    for i1 in range(0, k, BLOCK_SIZE):
        i2 = min(i1 + BLOCK_SIZE, k)
        w1, err1, u1 = w[:, i1:i2].clone(), torch.empty(n, i2 - i1, device=w.device), u[i1:i2, i1:i2]
        for i in range(i2 - i1):
            col = i1 + i
            grp = group_of[col] if act_order else col // group_size
            if not act_order and col % group_size == 0:
                s_g, z_g = int4_group_params(w1[:, i:i + group_size], group_size, symmetric, where=where)
                scales[:, grp] = s_g[:, 0]
                if zeros is not None:
                    zeros[:, grp] = z_g[:, 0]
            s = scales[:, grp].float()
            z = SYMMETRIC_ZERO if zeros is None else zeros[:, grp].float()
            c = round_to_codes(w1[:, i], s, z)
            codes[:, col] = c.to(torch.uint8)
            e = (w1[:, i] - (c - z) * s) / u1[i, i]
            w1[:, i:].sub_(e.unsqueeze(1) * u1[i, i:].unsqueeze(0))
            err1[:, i] = e
        w[:, i2:].sub_(err1 @ u[i1:i2, i2:])
    if act_order:
        codes = codes[:, torch.argsort(perm)]
    pad = SYMMETRIC_ZERO if zeros is None else zeros[:, -1]
    return pack_nibbles(codes, pad), scales, zeros
