"""int8 quantization: symmetric per-output-channel weights (round to nearest).

Activations are handled at run time by the ops (per token, "dynamic") or left
in float ("weight_only"); this module only decides the weight values.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from pycomp.ops.int8 import quantize_per_token_int8_ref

MODES = ("dynamic", "weight_only")


def quantize_weight_int8(weight: Tensor, *, where: str = "weight") -> tuple[Tensor, Tensor]:
    """weight (N, ...) float -> (qweight (N, K) int8 in [-127, 127], scale (N,) float32).

    K is the product of the trailing dimensions (in_channels * kh * kw for a conv).
    Raises ValueError on NaN or infinite weights, which have no int8 value.
    """
    w = weight.detach().reshape(weight.shape[0], -1).float()
    if not torch.isfinite(w).all():
        bad = (~torch.isfinite(w)).nonzero()[0].tolist()
        raise ValueError(f"{where}: weight has a NaN or infinite value (first at {bad}); cannot quantize to int8")
    q, scale = quantize_per_token_int8_ref(w)  # per output channel = per row: the activations' formula
    return q.contiguous(), scale.contiguous()


def check_reduce_range(mode: str, reduce_range: bool, where: str) -> None:
    """reduce_range (7-bit activations) only concerns W8A8: raises ValueError for other modes."""
    if not isinstance(reduce_range, bool):
        raise TypeError(f"{where}: reduce_range must be True or False, got {reduce_range!r}")
    if reduce_range and mode != "dynamic":
        raise ValueError(f"{where}: reduce_range=True quantizes activations, so it needs mode='dynamic', "
                         f"got mode={mode!r}")


@dataclass(frozen=True)
class Int8Config:
    """`pycomp.compress(model, "int8", mode=..., reduce_range=...)`: W8A8 ("dynamic") or W8A16/W8A32
    ("weight_only"). reduce_range=True (dynamic only): activations quantized to 7 bits with a zero point per
    token, torch.ao's fbgemm numerics, for its faster u8 x s8 kernels; the exact full-range mode is the default.

    Float nn.Linear / nn.Conv2d become Int8Linear / Int8Conv2d; the 2:4 layers a "2:4" step left become
    int8 2:4 layers (SparseLinear.quantized), so ["2:4", "int8"] stores 5 bits per weight.
    """

    mode: Literal["dynamic", "weight_only"] = "dynamic"
    reduce_range: bool = False

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"int8: mode must be one of {MODES}, got {self.mode!r}")
        check_reduce_range(self.mode, self.reduce_range, "int8")

    def convert(self, module: nn.Module, name: str) -> nn.Module | None:
        from pycomp.nn.int8 import Int8Conv2d, Int8Linear
        from pycomp.nn.sparse import SparseConv2d, SparseLinear

        if isinstance(module, (SparseLinear, SparseConv2d)):  # a 2:4 step came first: keep its pattern
            if module.pattern != "2:4" or module.quant is not None:
                return None
            if self.reduce_range:
                raise ValueError(f"int8: {module.label} is a 2:4 layer, whose int8 form has no reduce_range "
                                 "kernel; use reduce_range=False, or skip it")
            return module.quantized(self.mode)
        if isinstance(module, nn.Linear):
            return Int8Linear.from_float(module, mode=self.mode, name=name, reduce_range=self.reduce_range)
        if isinstance(module, nn.Conv2d):
            return Int8Conv2d.from_float(module, mode=self.mode, name=name, reduce_range=self.reduce_range)
        return None
