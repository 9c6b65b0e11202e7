"""int4 weight-only op (W4A16): x @ dequantize(packed, scales, zeros).T + bias.

One `torch.library` op, `pycomp::w4a16_linear`, with a plain-PyTorch reference,
a fake impl for torch.compile and torch.export, CPU and CUDA impls and a
straight-through backward for x. Kernels read the canonical k-nibble layout
(pycomp.formats.int4) in place. On the CPU the C++ kernels (csrc/cpu/int4) run
float32, bfloat16 and float16 x (converted to float32 around the kernel, which
accumulates in float32); float64 x runs the reference. On CUDA the decode GEMV
and the Triton GEMM take x in bfloat16 or float16. `plan()` names what runs.

round_x=True lets the CPU kernels round x to int16 per (row, weight group),
q = round(x / s), s = max|x_g| / 32767, and multiply in integers (vpmaddwd: 16
products per instruction, no int->float conversion per weight): 1.3-1.6x faster
at M=1 and about 1.5-2x in the GEMM on AVX2 (benchmarks/RESULTS.md). The error
is at most s / 2 = 2^-16 max|x_g| per input, so |out - exact| <= sum_g
max|x_g| / 65534 * sum_{k in g} |w[n, k]| (round_x_bound); bfloat16 x rounds
every input within 2^7 of its group's largest more coarsely. round_x_ref is
that product's definition. The CUDA kernels ignore the flag: they round x to
bfloat16 or float16 either way. Int4Linear and Int4Conv2d set it by default.

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
from pycomp.ops._library import LIB, check, cpu_dense_route, impl_cpu, run

LIB.define("w4a16_linear(Tensor x, Tensor packed, Tensor scales, Tensor? zeros, Tensor? bias, "
           "int group_size, int in_features, bool round_x=False) -> Tensor")

# int16 range of the rounded x (symmetric: -32767..32767).
X16_MAX = 32767


def _by_group(t: Tensor, group_size: int) -> Tensor:
    """(..., K) -> (..., G, group_size), the last group zero-padded."""
    k = t.shape[-1]
    g = -(-k // group_size)
    return torch.nn.functional.pad(t, (0, g * group_size - k)).reshape(*t.shape[:-1], g, group_size)


def round_x_ref(x: Tensor, group_size: int) -> Tensor:
    """x (..., K) float rounded as the CPU kernels round it under round_x, returned as the float64 values
    q * s: per row and group of `group_size` columns, s = max|x_g| / 32767 in float32 (1 for an all-zero
    group, NaN for one holding NaN or inf), q = round(x / s) (half to even), clamped to +-32767."""
    xf = _by_group(x.to(torch.float32), group_size)
    amax = xf.abs().amax(-1, keepdim=True)
    finite = torch.isfinite(xf).all(-1, keepdim=True)
    s = torch.where(amax > 0, amax / X16_MAX, torch.ones_like(amax))
    q = torch.round(torch.where(finite, xf, torch.zeros_like(xf)) / torch.where(finite, s, torch.ones_like(s)))
    q = q.clamp(-X16_MAX, X16_MAX)
    s = torch.where(finite, s, torch.full_like(s, float("nan")))
    return (q.double() * s.double()).flatten(-2)[..., :x.shape[-1]]


def round_x_bound(x: Tensor, packed: Tensor, scales: Tensor, zeros: Tensor | None, group_size: int,
                  in_features: int) -> Tensor:
    """(..., N) float64: the most round_x can move each output, sum_g max|x_g| / 65534 * sum_{k in g} |w[n, k]|."""
    w = dequantize_int4(packed, scales, zeros, group_size, in_features, torch.float64).abs()
    wg = _by_group(w, group_size).sum(-1)  # (N, G)
    return (_by_group(x.double().abs(), group_size).amax(-1) / (2 * X16_MAX)) @ wg.t()


def w4a16_linear_ref(x: Tensor, packed: Tensor, scales: Tensor, zeros: Tensor | None, bias: Tensor | None,
                     group_size: int, in_features: int, round_x: bool = False) -> Tensor:
    """The definition: dequantize exactly to float32, matmul in float32 (float64 when x is float64);
    with round_x, x first rounded by round_x_ref and the product taken in float64."""
    compute = torch.float64 if x.dtype == torch.float64 or round_x else torch.float32
    w = dequantize_int4(packed, scales, zeros, group_size, in_features, compute)
    out = (round_x_ref(x, group_size) if round_x else x.to(compute)) @ w.t()
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
def _fake(x, packed, scales, zeros, bias, group_size, in_features, round_x=False):
    _check(x, packed, scales, zeros, bias, group_size, in_features)
    return x.new_empty((*x.shape[:-1], packed.shape[0]))


# x dtypes the CPU kernels take, reading 16-bit x in place (converted exactly as they pack it); others run the
# reference.
CPU_KERNEL_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def plan(device: torch.device | str, M: int | None = None, K: int | None = None,
         dtype: torch.dtype | None = None, round_x: bool = False) -> str:
    """Name of the backend that runs w4a16_linear for this device, shape, x dtype and round_x:
    "cpu-avx512", "cpu-avx2", "cpu-portable" (the C++ kernels), "cpu-avx2-x16" (round_x on an AVX2
    CPU: the int16 kernels), "cpu-dense" (a large batch of a small
    layer: MKL on the weight decoded once, pycomp.ops._library.cpu_dense_route), "cuda" (the decode GEMV,
    M <= 16), "triton" (the GEMM) or "reference".

    With M, K or dtype left out, the answer is for a float32 x of any shape on the CPU (the
    kernels take every M and K), and for a bfloat16 x, M=1024, K=4096 on CUDA.
    """
    device = torch.device(device)
    if device.type == "cpu" and _ext.has_c("w4a16_linear_cpu") and (dtype is None or dtype in CPU_KERNEL_DTYPES):
        return "cpu-dense" if cpu_dense_route(M, K) else f"cpu-{_ext._C.w4a16_cpu_kernel('', round_x)}"
    if device.type == "cuda":
        from pycomp.ops.int4_cuda import plan_cuda

        return plan_cuda(1024 if M is None else M, 4096 if K is None else K, dtype or torch.bfloat16)
    return "reference"


def _linear_cuda(x, packed, scales, zeros, bias, group_size, in_features, round_x=False):
    from pycomp.ops.int4_cuda import cuda_impl  # imports this module's _check and reference

    return cuda_impl(x, packed, scales, zeros, bias, group_size, in_features)  # x in 16 bits either way


def _linear_cpu(x, packed, scales, zeros, bias, group_size, in_features, round_x=False):
    """The C++ entry (csrc/cpu/int4/int4_ops.h: checks, rows, kernel; the result in x's dtype) for the kernels' x
    dtypes; the checked reference (exact: round_x only ever permits rounding) for the others (float64) and
    without the extension."""
    if x.dtype in CPU_KERNEL_DTYPES and _ext._C is not None:
        return _ext._C.w4a16_linear_op(x, packed, scales, zeros, bias, group_size, in_features, round_x)
    _check(x, packed, scales, zeros, bias, group_size, in_features)
    return w4a16_linear_ref(x, packed, scales, zeros, bias, group_size, in_features)


impl_cpu("w4a16_linear", _linear_cpu)
LIB.impl("w4a16_linear", _linear_cuda, "CUDA")


def _setup_ctx(ctx, inputs, output):
    x, packed, scales, zeros, bias, group_size, in_features, _round_x = inputs
    ctx.save_for_backward(packed, scales, zeros)
    ctx.shape = (group_size, in_features)
    ctx.x_dtype = x.dtype
    ctx.has_bias = bias is not None


def _backward(ctx, grad_out):
    packed, scales, zeros = ctx.saved_tensors
    w = dequantize_int4(packed, scales, zeros, *ctx.shape, dtype=grad_out.dtype)
    grad_x = (grad_out @ w).to(ctx.x_dtype)
    grad_bias = grad_out.reshape(-1, grad_out.shape[-1]).sum(0) if ctx.has_bias else None
    return grad_x, None, None, None, grad_bias, None, None, None


torch.library.register_autograd("pycomp::w4a16_linear", _backward, setup_context=_setup_ctx)


def w4a16_linear(x: Tensor, packed: Tensor, scales: Tensor, zeros: Tensor | None, bias: Tensor | None,
                 group_size: int, in_features: int, round_x: bool = False) -> Tensor:
    """W4A16: x (..., K) float -> (..., N) in x's dtype; group-wise int4 weights dequantized on the fly.
    round_x: the CPU kernels may round x to int16 per weight group (see the module docstring)."""
    return run(torch.ops.pycomp.w4a16_linear, x, packed, scales, zeros, bias, group_size, in_features, round_x)
