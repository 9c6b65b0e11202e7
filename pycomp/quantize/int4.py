"""int4 weight-only quantization (W4A16): group-wise scales and zero points, RTN or GPTQ.

Group parameters come from a clipping search: for each shrink factor p in
SHRINK_GRID (1.00, 0.98, ..., 0.50) the group's range is scaled by p, the group is
quantized with the float16-rounded scale, and the p with the least squared error
wins. Asymmetric: range [p*min(w, 0), p*max(w, 0)], scale = width / 15, integer
zero point = round(-p*min(w, 0) / scale), so zero stays exact. Symmetric:
scale = p*max|w| / 7, so at p = 1 nothing clips and -8 is used only once p < 1.
p = 1, plain min/max, is the first candidate and wins ties, so the search is
never worse than min/max rounding.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from pycomp.formats.int4 import (
    QMAX, SCALE_MAX, SCALE_MIN, SYMMETRIC_ZERO, check_finite, check_group_size, n_groups, pack_int4, round_to_codes,
)

METHODS = ("rtn", "gptq")
# Shrink factors of the group's range tried by the clipping search: 1.00, 0.98, ..., 0.50.
SHRINK_GRID = tuple(round(1 - 0.02 * i, 2) for i in range(26))
# Rows searched at once, so temporaries stay near 16 MB whatever the layer's size.
_CHUNK_ELEMENTS = 1 << 22


def _candidate(lo: Tensor, hi: Tensor, p: float, symmetric: bool) -> tuple[Tensor, Tensor]:
    """Range [p*lo, p*hi] (per group) -> (scale as float16-valued float32, zero point as float)."""
    if symmetric:
        scale = torch.maximum(-lo, hi) * (p / (SYMMETRIC_ZERO - 1))
    else:
        scale = (hi - lo) * (p / QMAX)
    scale = scale.clamp(SCALE_MIN, SCALE_MAX).half().float()
    if symmetric:
        return scale, torch.full_like(scale, SYMMETRIC_ZERO)
    return scale, torch.round(-p * lo / scale).clamp_(0, QMAX)


def _search(groups: Tensor, symmetric: bool, grid: tuple[float, ...]) -> tuple[Tensor, Tensor]:
    """groups (R, G, group_size) float32 -> best (scale, zero) per group, each (R, G) float32."""
    lo = groups.amin(-1).clamp(max=0)
    hi = groups.amax(-1).clamp(min=0)
    best_err = best_s = best_z = None
    for p in grid:
        s, z = _candidate(lo, hi, p, symmetric)
        s3, z3 = s.unsqueeze(-1), z.unsqueeze(-1)
        err = ((round_to_codes(groups, s3, z3) - z3) * s3 - groups).square_().sum(-1)
        if best_err is None:
            best_err, best_s, best_z = err, s, z
        else:
            better = err < best_err
            best_err = torch.where(better, err, best_err)
            best_s, best_z = torch.where(better, s, best_s), torch.where(better, z, best_z)
    return best_s, best_z


def int4_group_params(weight: Tensor, group_size: int, symmetric: bool = False, grid: tuple[float, ...] = SHRINK_GRID,
                      *, where: str = "int4 weight") -> tuple[Tensor, Tensor | None]:
    """weight (N, K) float -> (scales (N, G) float16, zeros (N, G) uint8 or None when symmetric).

    G = ceil(K / group_size); the last group is padded with zero weights, which
    quantize exactly and so do not move its parameters. grid=(1.0,) is plain min/max.
    """
    check_group_size(group_size, where)
    n, k = weight.shape
    g = n_groups(k, group_size)
    w = weight.detach().float()
    if k % group_size:
        w = torch.nn.functional.pad(w, (0, g * group_size - k))
    if w.numel():
        widest = float(w.abs().amax() / (SYMMETRIC_ZERO - 1) if symmetric else (w.amax().clamp(min=0) - w.amin().clamp(max=0)) / QMAX)
        if widest > SCALE_MAX:
            raise ValueError(f"{where}: weights up to {float(w.abs().amax()):.3g} need a scale of {widest:.3g}, beyond "
                             f"float16's {SCALE_MAX:.0f}; rescale the layer before int4")
    scales, zeros = torch.empty(n, g, device=w.device), torch.empty(n, g, device=w.device)
    step = max(1, _CHUNK_ELEMENTS // max(1, g * group_size))
    for r in range(0, n, step):
        s, z = _search(w[r:r + step].reshape(-1, g, group_size), symmetric, grid)
        scales[r:r + step], zeros[r:r + step] = s, z
    return scales.half(), (None if symmetric else zeros.to(torch.uint8))


def rtn_int4(weight: Tensor, group_size: int = 128, symmetric: bool = False, *,
             where: str = "int4 weight") -> tuple[Tensor, Tensor, Tensor | None]:
    """Round to nearest with searched clipping: weight (N, ...) float -> (packed, scales, zeros) in the k-nibble format.

    K is the product of the trailing dimensions (in_channels * kh * kw for a conv).
    """
    w = weight.detach().reshape(weight.shape[0], -1).float()
    check_finite(w, where)
    scales, zeros = int4_group_params(w, group_size, symmetric, where=where)
    return pack_int4(w, scales, zeros, group_size, where=where), scales, zeros


@dataclass(frozen=True)
class Int4Config:
    """`pycomp.compress(model, "int4", group_size=128, method="rtn"|"gptq", calib=...)`: W4A16 weights.

    method="gptq" calibrates on the layers' inputs (compress collects them from `calib`);
    act_order=True quantizes GPTQ's columns by decreasing Hessian diagonal, with
    static groups (see pycomp.quantize.gptq). round_x=False keeps the CPU kernels' product of
    float32 x exact instead of rounding x to int16 per group (see pycomp.ops.int4).
    """

    group_size: int = 128
    method: Literal["rtn", "gptq"] = "rtn"
    symmetric: bool = False
    act_order: bool = False
    round_x: bool = True

    def __post_init__(self):
        check_group_size(self.group_size, "int4")
        if self.method not in METHODS:
            raise ValueError(f"int4: method must be one of {METHODS}, got {self.method!r}")
        if self.act_order and self.method != "gptq":
            raise ValueError("int4: act_order applies to method='gptq' only")

    @property
    def calibrates(self) -> bool:
        """True when convert() needs each layer's input activations (compress collects them)."""
        return self.method == "gptq"

    def handles(self, module: nn.Module) -> bool:
        return isinstance(module, (nn.Linear, nn.Conv2d))

    def convert(self, module: nn.Module, name: str, calib=None) -> nn.Module | None:
        from pycomp.nn.int4 import Int4Conv2d, Int4Linear

        cls = Int4Linear if isinstance(module, nn.Linear) else Int4Conv2d if isinstance(module, nn.Conv2d) else None
        if cls is None:
            return None
        return cls.from_float(module, group_size=self.group_size, method=self.method, calib=calib,
                              symmetric=self.symmetric, act_order=self.act_order, round_x=self.round_x, name=name)
