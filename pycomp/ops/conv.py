"""im2col for the Conv2d forms of the compressed layers: one op, so torch.compile sees one call.

im2col(x (B, C, H, W) float, already padded, kernel, stride, dilation) -> (B * Ho * Wo, C * kh * kw)
rows in F.unfold's patch order. On the CPU, float32 runs a C++ kernel that writes the rows directly
(F.unfold plus the transpose-and-copy to rows took 6.6 ms on the digits CNN's conv2 input, longer
than its GEMM); other dtypes and devices use F.unfold. Backward is F.fold (col2im).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from pycomp import _ext
from pycomp.ops._library import LIB, check, impl_cpu, run

LIB.define("im2col(Tensor x, int[] kernel, int[] stride, int[] dilation) -> Tensor")


def _out_hw(x: Tensor, kernel, stride, dilation) -> tuple[int, int]:
    (kh, kw), (sh, sw), (dh, dw) = kernel, stride, dilation
    return (x.shape[2] - dh * (kh - 1) - 1) // sh + 1, (x.shape[3] - dw * (kw - 1) - 1) // sw + 1


def im2col_ref(x: Tensor, kernel, stride, dilation) -> Tensor:
    """The definition: F.unfold, then one row per output position."""
    cols = F.unfold(x, tuple(kernel), dilation=tuple(dilation), stride=tuple(stride))  # (B, K, L)
    return cols.transpose(1, 2).reshape(-1, cols.shape[1])


def _check(x: Tensor, kernel, stride, dilation) -> None:
    check(x.dim() == 4, lambda: f"pycomp.im2col: x must be 4-D (B, C, H, W), got {x.dim()}-D")
    check(len(kernel) == len(stride) == len(dilation) == 2,
                 lambda: "pycomp.im2col: kernel, stride and dilation take two values each")
    ho, wo = _out_hw(x, kernel, stride, dilation)
    check(ho > 0 and wo > 0, lambda: f"pycomp.im2col: input {tuple(x.shape)} is smaller than the kernel")


@torch.library.register_fake("pycomp::im2col")
def _fake(x, kernel, stride, dilation):
    _check(x, kernel, stride, dilation)
    ho, wo = _out_hw(x, kernel, stride, dilation)
    return x.new_empty((x.shape[0] * ho * wo, x.shape[1] * kernel[0] * kernel[1]))


def _cpu(x, kernel, stride, dilation):
    if x.dtype == torch.float32 and _ext._C is not None:
        return _ext._C.im2col_op(x, kernel, stride, dilation)  # these checks and the kernel, in C++
    _check(x, kernel, stride, dilation)
    return im2col_ref(x, kernel, stride, dilation)


def _other(x, kernel, stride, dilation):
    _check(x, kernel, stride, dilation)
    return im2col_ref(x, kernel, stride, dilation)


impl_cpu("im2col", _cpu)
LIB.impl("im2col", _other, "CUDA")


def _setup_ctx(ctx, inputs, output):
    x, kernel, stride, dilation = inputs
    ctx.geometry = (tuple(x.shape), tuple(kernel), tuple(stride), tuple(dilation))


def _backward(ctx, grad_rows):
    (B, C, H, W), kernel, stride, dilation = ctx.geometry
    cols = grad_rows.reshape(B, -1, grad_rows.shape[-1]).transpose(1, 2)  # (B, K, L)
    return F.fold(cols, (H, W), kernel, dilation=dilation, stride=stride), None, None, None


torch.library.register_autograd("pycomp::im2col", _backward, setup_context=_setup_ctx)


def im2col(x: Tensor, kernel, stride, dilation) -> Tensor:
    """x (B, C, H, W) float, padded -> (B * Ho * Wo, C * kh * kw) in x's dtype."""
    return run(torch.ops.pycomp.im2col, x, list(kernel), list(stride), list(dilation))
