"""int8 storage: row-major (N, K) int8 values in [-127, 127] and one float32 scale per row.

That canonical layout is what the CPU, CUDA and Triton kernels all read, so
packing is a check rather than a shuffle; -128 is excluded so that the format
stays symmetric and every kernel's int32 bound, 127 * 127 * K, holds.
Reduce-range layers (7-bit activations) also keep wsum, the int32 row sums of
qweight (pycomp.ops.int8.weight_row_sums), beside these buffers.
"""
from __future__ import annotations

import torch
from torch import Tensor

LAYOUT = "row-major"
FORMAT_VERSION = 1


def check_int8(qweight: Tensor, scale: Tensor, *, where: str = "int8 weight") -> None:
    """Raises ValueError unless (qweight, scale) is a valid packed int8 weight."""
    if qweight.dtype != torch.int8 or qweight.dim() != 2:
        raise ValueError(f"{where}: qweight must be a 2-D int8 tensor (N, K), got {qweight.dim()}-D {qweight.dtype}")
    if scale.dtype != torch.float32 or scale.shape != (qweight.shape[0],):
        raise ValueError(f"{where}: scale must be float32 of shape ({qweight.shape[0]},), got {scale.dtype} {tuple(scale.shape)}")
    if qweight.numel() and int(qweight.min()) < -127:
        raise ValueError(f"{where}: qweight holds -128; the format's range is [-127, 127]")


def dequantize_int8(qweight: Tensor, scale: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
    """The one reference dequantizer: (N, K) int8, (N,) float32 -> (N, K) `dtype`."""
    return (qweight.float() * scale.unsqueeze(1)).to(dtype)


def int8_nbytes(qweight: Tensor, scale: Tensor) -> int:
    return qweight.numel() * qweight.element_size() + scale.numel() * scale.element_size()
