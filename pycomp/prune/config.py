"""The sparsity techniques of `pycomp.compress`: "2:4" (semi-structured) and "sparse" (unstructured or blocks).

Each converts nn.Linear and nn.Conv2d (groups=1) into SparseLinear / SparseConv2d. A weight that is
already sparse enough (pruned and fine-tuned with pycomp.prune) keeps its pattern; otherwise it is
pruned by magnitude here, one layer at a time.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from pycomp.prune.mask import check_finite, check_sparsity, prune_count


def block_magnitude_mask(weight: Tensor, sparsity: float, block: tuple[int, int], *, where: str = "weight") -> Tensor:
    """Bool mask shaped like `weight` (N, K) (True keeps) zeroing round(sparsity * nblocks) whole (bn, bk)
    blocks of smallest L2 norm (edge blocks padded with zeros; ties prune the lower block index first)."""
    sparsity = check_sparsity(sparsity, where)
    check_finite(weight, where)
    bn, bk = block
    n, k = weight.shape
    np_, kp = -(-n // bn) * bn, -(-k // bk) * bk
    w = torch.nn.functional.pad(weight.detach().float(), (0, kp - k, 0, np_ - n))
    norms = w.view(np_ // bn, bn, kp // bk, bk).pow(2).sum((1, 3)).flatten()
    keep = torch.ones(norms.numel(), dtype=torch.bool, device=weight.device)
    keep[norms.argsort(stable=True)[:prune_count(sparsity, norms.numel())]] = False
    keep = keep.view(np_ // bn, 1, kp // bk, 1).expand(-1, bn, -1, bk).reshape(np_, kp)
    return keep[:n, :k]


def _convertible(module: nn.Module) -> bool:
    return isinstance(module, nn.Linear) or (isinstance(module, nn.Conv2d) and module.groups == 1)


@dataclass(frozen=True)
class Sparse24Config:
    """`pycomp.compress(model, "2:4")`: 2 of every 4 weights along K kept (K padded to the format's multiple)."""

    def convert(self, module: nn.Module, name: str) -> nn.Module | None:
        from pycomp.nn.sparse import SparseConv2d, SparseLinear

        if not _convertible(module):
            return None
        cls = SparseLinear if isinstance(module, nn.Linear) else SparseConv2d
        return cls.from_float(module, pattern="2:4", name=name)


@dataclass(frozen=True)
class SparseConfig:
    """`pycomp.compress(model, "sparse", sparsity=0.9, pattern="unstructured"|"block", block_size=(16, 16))`.

    sparsity: each layer is pruned by magnitude to it (whole blocks for "block"), unless it is already at
    least that sparse; None keeps every layer's existing zeros (a model pruned beforehand).
    """

    sparsity: float | None = None
    pattern: Literal["unstructured", "block"] = "unstructured"
    block_size: tuple[int, int] = (16, 16)

    def __post_init__(self):
        if self.pattern not in ("unstructured", "block"):
            raise ValueError(f"sparse: pattern must be 'unstructured' or 'block' (use the \"2:4\" technique for "
                             f"2:4), got {self.pattern!r}")
        if self.sparsity is not None:
            check_sparsity(self.sparsity, "sparse")

    def convert(self, module: nn.Module, name: str) -> nn.Module | None:
        from pycomp.nn.sparse import SparseConv2d, SparseLinear

        if not _convertible(module):
            return None
        cls = SparseLinear if isinstance(module, nn.Linear) else SparseConv2d
        return cls.from_float(module, pattern=self.pattern, sparsity=self.sparsity, block_size=self.block_size,
                              name=name)
