"""int4 weight-only op (W4A16): x @ dequantize(packed, scales, zeros).T + bias.

One `torch.library` op, `pycomp::w4a16_linear`, with a plain-PyTorch reference,
a fake impl for torch.compile and torch.export, CPU and CUDA impls and a
straight-through backward for x. Kernels read the canonical k-nibble layout
(pycomp.formats.int4) in place. On the CPU the C++ kernels (csrc/cpu/int4) run
float32, bfloat16 and float16 x (converted to float32 around the kernel, which
accumulates in float32); float64 x runs the reference. The CUDA impl runs the
reference until its kernels land. `plan()` names what runs.

Shapes: x (..., K) float -> (..., N) in x's dtype; packed (N, ceil(K/2)) uint8
(column 2j in the low nibble of byte j); scales (N, G) float16 and zeros
(N, G) uint8 in [0, 15] or None (symmetric, zero point 8), G = ceil(K / group_size);
bias (N,) float or None; group_size in (32, 64, 128); in_features = K.
"""
from __future__ import annotations

import torch
from torch import Tensor

from pycomp import _ext
from pycomp.formats.int4 import GROUP_SIZES, dequantize_int4, n_groups
from pycomp.ops._library import LIB, check, cpu_dense_route, run

LIB.define("w4a16_linear(Tensor x, Tensor packed, Tensor scales, Tensor? zeros, Tensor? bias, "
           "int group_size, int in_features) -> Tensor")


def w4a16_linear_ref(x: Tensor, packed: Tensor, scales: Tensor, zeros: Tensor | None, bias: Tensor | None,
                     group_size: int, in_features: int) -> Tensor:
    """The definition: dequantize exactly to float32, matmul in float32 (float64 when x is float64)."""
    compute = torch.float64 if x.dtype == torch.float64 else torch.float32
    w = dequantize_int4(packed, scales, zeros, group_size, in_features, compute)
    out = x.to(compute) @ w.t()
    if bias is not None:
        out = out + bias.to(compute)
    return out.to(x.dtype)


def _check(x: Tensor, packed: Tensor, scales: Tensor, zeros: Tensor | None, bias: Tensor | None,
           group_size: int, in_features: int) -> None:
    op = "pycomp.w4a16_linear"
    check(x.dtype.is_floating_point, lambda: f"{op}: x must be a float tensor, got {x.dtype}")
    check(x.dim() >= 1, lambda: f"{op}: x must have a feature dimension")
    check(group_size in GROUP_SIZES, lambda: f"{op}: group_size must be one of {GROUP_SIZES}, got {group_size}")
    check(
        x.shape[-1] == in_features,
        lambda: f"{op}: x has {x.shape[-1]} features (last dim) but the weight expects K={in_features}",
    )
    check(
        packed.dim() == 2 and packed.dtype == torch.uint8 and packed.shape[1] == (in_features + 1) // 2,
        lambda: f"{op}: packed must be a 2-D uint8 tensor (N, {(in_features + 1) // 2}) for K={in_features}, "
        f"got {packed.dtype} {tuple(packed.shape)}",
    )
    n, g = packed.shape[0], n_groups(in_features, group_size)
    check(
        scales.dtype == torch.float16 and scales.dim() == 2 and scales.shape[0] == n and scales.shape[1] == g,
        lambda: f"{op}: scales must be float16 of shape ({n}, {g}), got {scales.dtype} {tuple(scales.shape)}",
    )
    check(
        zeros is None or (zeros.dtype == torch.uint8 and zeros.dim() == 2 and zeros.shape[0] == n
                          and zeros.shape[1] == g),
        lambda: f"{op}: zeros must be None or uint8 of shape ({n}, {g})",
    )
    check(
        bias is None or (bias.dim() == 1 and bias.shape[0] == n),
        lambda: f"{op}: bias must be a vector of N={n} values",
    )
    for name, t in (("packed", packed), ("scales", scales), ("zeros", zeros), ("bias", bias)):
        check(t is None or t.device == x.device, lambda: f"{op}: {name} is on {t.device} but x is on {x.device}")


@torch.library.register_fake("pycomp::w4a16_linear")
def _fake(x, packed, scales, zeros, bias, group_size, in_features):
    _check(x, packed, scales, zeros, bias, group_size, in_features)
    return x.new_empty((*x.shape[:-1], packed.shape[0]))


# x dtypes the CPU kernels take (converted to float32 around the kernel); others run the reference.
CPU_KERNEL_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def plan(device: torch.device | str, M: int | None = None, K: int | None = None,
         dtype: torch.dtype | None = None) -> str:
    """Name of the backend that runs w4a16_linear for this device, shape and x dtype:
    "cpu-avx512", "cpu-avx2", "cpu-portable" (the C++ kernels), "cpu-dense" (a large batch of a small
    layer: MKL on the weight decoded once, pycomp.ops._library.cpu_dense_route), "cuda" (the decode GEMV,
    M <= 16), "triton" (the GEMM) or "reference".

    With M, K or dtype left out, the answer is for a float32 x of any shape on the CPU (the
    kernels take every M and K), and for a bfloat16 x, M=1024, K=4096 on CUDA.
    """
    device = torch.device(device)
    if device.type == "cpu" and _ext.has_c("w4a16_linear_cpu") and (dtype is None or dtype in CPU_KERNEL_DTYPES):
        return "cpu-dense" if cpu_dense_route(M, K) else f"cpu-{_ext._C.w4a16_cpu_kernel()}"
    if device.type == "cuda":
        from pycomp.ops.int4_cuda import plan_cuda

        return plan_cuda(1024 if M is None else M, 4096 if K is None else K, dtype or torch.bfloat16)
    return "reference"


def _linear_cuda(x, packed, scales, zeros, bias, group_size, in_features):
    from pycomp.ops.int4_cuda import cuda_impl  # imports this module's _check and reference

    return cuda_impl(x, packed, scales, zeros, bias, group_size, in_features)


def _linear_cpu(x, packed, scales, zeros, bias, group_size, in_features):
    """The C++ entry (csrc/cpu/int4/int4_ops.h: checks, rows, float32 conversion, kernel) for the kernels' x
    dtypes; the checked reference for the others (float64) and without the extension."""
    if x.dtype in CPU_KERNEL_DTYPES and _ext._C is not None:
        return _ext._C.w4a16_linear_op(x, packed, scales, zeros, bias, group_size, in_features)
    _check(x, packed, scales, zeros, bias, group_size, in_features)
    return w4a16_linear_ref(x, packed, scales, zeros, bias, group_size, in_features)


LIB.impl("w4a16_linear", _linear_cpu, "CPU")
LIB.impl("w4a16_linear", _linear_cuda, "CUDA")


def _setup_ctx(ctx, inputs, output):
    x, packed, scales, zeros, bias, group_size, in_features = inputs
    ctx.save_for_backward(packed, scales, zeros)
    ctx.shape = (group_size, in_features)
    ctx.x_dtype = x.dtype
    ctx.has_bias = bias is not None


def _backward(ctx, grad_out):
    packed, scales, zeros = ctx.saved_tensors
    w = dequantize_int4(packed, scales, zeros, *ctx.shape, dtype=grad_out.dtype)
    grad_x = (grad_out @ w).to(ctx.x_dtype)
    grad_bias = grad_out.reshape(-1, grad_out.shape[-1]).sum(0) if ctx.has_bias else None
    return grad_x, None, None, None, grad_bias, None, None


torch.library.register_autograd("pycomp::w4a16_linear", _backward, setup_context=_setup_ctx)


def w4a16_linear(x: Tensor, packed: Tensor, scales: Tensor, zeros: Tensor | None, bias: Tensor | None,
                 group_size: int, in_features: int) -> Tensor:
    """W4A16: x (..., K) float -> (..., N) in x's dtype; group-wise int4 weights dequantized on the fly."""
    return run(torch.ops.pycomp.w4a16_linear, x, packed, scales, zeros, bias, group_size, in_features)
