"""Sparse linear ops: 2:4 compressed (`sparse24_linear`), CSR (`csr_linear`) and block-CSR (`bsr_linear`).

Each op is one `torch.library` op in the `pycomp` namespace with a plain-PyTorch reference (densify the
format with pycomp.formats.sparse, then a float64 matmul), a fake impl for torch.compile and torch.export,
a CPU kernel (C++) and a CUDA dispatcher. Backward gives gradients for x, the bias and float values (the
dense weight's gradient at the stored positions: training moves the kept weights and never the pattern);
int8 values and the indices get none.

Shapes: x (..., K) float -> (..., N) in x's dtype; bias (N,) float or None. The buffers are those of
pycomp.formats.sparse (their invariants, such as column indices in range, are checked when a layer packs
or loads them, not per call):
  sparse24_linear: values (N, Kp/2), meta (Np, Kp/16) int16, Kp = ceil(K/32)*32, Np = ceil(N/32)*32;
    values float, or int8 with scale (N,) float32 (W = values * scale[:, None]);
  csr_linear: crow (N+1,) int32, col (nnz,) int16 (K <= 32768) or int32, values (nnz,);
  bsr_linear: crow (ceil(N/bn)+1,) int32, col (nblocks,) int32, values (nblocks, bn, bk).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from pycomp import _ext
from pycomp.formats import sparse as fmt
from pycomp.ops._library import LIB, check, cpu_dense_route, impl_cpu, rows, run

PATTERNS = ("2:4", "unstructured", "block")
# Largest M the CUDA 2:4 GEMV serves (it streams the kept values once for up to 16 rows); above, the mma.sp GEMM.
CUDA_GEMV_MAX_M = 16
# The kernels' variants (csrc/cuda/sparse/sparse24_mma.cu), fastest on the H200 run 3 of 2026-11-28
# (benchmarks/gpu_sweep_sparse.py, cold weights, us, 14336x4096 / 28672x8192; variant 0 was the first kernel):
# - GEMV variant 4 (K over two warps, four 64-column windows in flight per warp): 22.5 / 112.4 at M=1 against
#   32.6 / 170.8, 45.0 / 187.8 at M=16 against 54.9 / 293.9;
# - GEMM variant 4 (128x128 blocks of four 64x64 warp tiles, fragments loaded a k step ahead) below
#   CUDA_GEMM_WIDE_MIN_M: 51.9 / 172.8 at M=128 against 353.2 / 1210.5;
# - GEMM variant 5 (the same loop on 256x128 blocks, 4 stages) from it on: 270.3 / 980.7 at M=1024 against
#   2413.1 / 9421.9 (variant 4: 284.4 / 1009.9).
CUDA_GEMV_VARIANT = 4
CUDA_GEMM_VARIANT = 4
CUDA_GEMM_WIDE_VARIANT = 5
CUDA_GEMM_WIDE_MIN_M = 512
# The CPU 2:4 kernel runs at every M. It beats dense fp32 F.linear up to M=32 and loses from M=64 (0.77x at
# 64, 0.72x at 128; 4096x4096, 2 threads, benchmarks/RESULTS.md), but densifying per call costs ~150 ms,
# so no faster path exists without keeping a dense copy, which would undo the compression
# (benchmarks/sparse24_crossover.py).
_CUDA_DTYPES = (torch.float16, torch.bfloat16)

LIB.define("sparse24_linear(Tensor x, Tensor values, Tensor meta, int in_features, Tensor? bias=None, "
           "Tensor? scale=None) -> Tensor")
LIB.define("csr_linear(Tensor x, Tensor crow, Tensor col, Tensor values, int in_features, Tensor? bias=None) -> Tensor")
LIB.define("bsr_linear(Tensor x, Tensor crow, Tensor col, Tensor values, int out_features, int in_features, "
           "Tensor? bias=None) -> Tensor")


# ----------------------------------------------------------------------------- references


def _dense_ref(x: Tensor, w: Tensor, bias: Tensor | None) -> Tensor:
    out = x.double() @ w.double().t()
    if bias is not None:
        out = out + bias.double()
    return out.to(x.dtype)


def _weight_24(values: Tensor, meta: Tensor, in_features: int, scale: Tensor | None) -> Tensor:
    w = fmt.densify_24(values, meta, in_features)
    return w if scale is None else w.double() * scale.double().unsqueeze(1)


def sparse24_linear_ref(x: Tensor, values: Tensor, meta: Tensor, in_features: int, bias: Tensor | None = None,
                        scale: Tensor | None = None) -> Tensor:
    """x @ W.T + bias in float64, W = densify_24(values, meta) (times scale per row for int8 values)."""
    return _dense_ref(x, _weight_24(values, meta, in_features, scale), bias)


def csr_linear_ref(x: Tensor, crow: Tensor, col: Tensor, values: Tensor, in_features: int,
                   bias: Tensor | None = None) -> Tensor:
    """x @ densify_csr(...).T + bias, in float64."""
    return _dense_ref(x, fmt.densify_csr(crow, col, values, in_features), bias)


def bsr_linear_ref(x: Tensor, crow: Tensor, col: Tensor, values: Tensor, out_features: int, in_features: int,
                   bias: Tensor | None = None) -> Tensor:
    """x @ densify_bsr(...).T + bias, in float64."""
    return _dense_ref(x, fmt.densify_bsr(crow, col, values, out_features, in_features), bias)


# ----------------------------------------------------------------------------- checks and fakes


def _check_common(op: str, x: Tensor, n: int, k: int, bias: Tensor | None, tensors: dict) -> None:
    check(x.dtype.is_floating_point, lambda: f"pycomp.{op}: x must be a float tensor, got {x.dtype}")
    check(x.dim() >= 1, lambda: f"pycomp.{op}: x must have a feature dimension")
    check(x.shape[-1] == k, lambda: f"pycomp.{op}: x has {x.shape[-1]} features (last dim) but the "
                                           f"weight expects K={k}")
    check(bias is None or (bias.dim() == 1 and bias.shape[0] == n),
                 lambda: f"pycomp.{op}: bias must be a vector of N={n} values")
    for name, t in {**tensors, "bias": bias}.items():
        check(t is None or t.device == x.device, lambda: f"pycomp.{op}: {name} is on {t.device} but x is on "
                                                                f"{x.device}")


def _check_24(x, values, meta, in_features, bias, scale):
    op = "sparse24_linear"
    kp = -(-in_features // fmt.K_ALIGN_24) * fmt.K_ALIGN_24
    int8 = values.dtype == torch.int8
    check(values.dim() == 2 and (values.dtype.is_floating_point or int8) and values.shape[1] * 2 == kp,
                 lambda: f"pycomp.{op}: values must be a float or int8 (N, {kp // 2}) tensor for K={in_features}, "
                         f"got {values.dtype} {tuple(values.shape)}")
    check(int8 == (scale is not None),
                 lambda: f"pycomp.{op}: int8 values need a per-row scale and float values take none")
    check(scale is None or (scale.dtype == torch.float32 and tuple(scale.shape) == (values.shape[0],)),
                 lambda: f"pycomp.{op}: scale must be float32 of shape ({values.shape[0]},)")
    check(meta.dim() == 2 and meta.dtype == torch.int16 and meta.shape[1] * 16 == kp
                 and meta.shape[0] % fmt.N_ALIGN_24 == 0 and meta.shape[0] >= values.shape[0],
                 lambda: f"pycomp.{op}: meta must be int16 (Np, {kp // 16}), Np a multiple of 32 >= N, got "
                         f"{meta.dtype} {tuple(meta.shape)}")
    _check_common(op, x, values.shape[0], in_features, bias, {"values": values, "meta": meta, "scale": scale})


def _check_csr(x, crow, col, values, in_features, bias):
    op = "csr_linear"
    check(crow.dim() == 1 and crow.dtype == torch.int32 and crow.shape[0] >= 1,
                 lambda: f"pycomp.{op}: crow must be a 1-D int32 tensor of N+1 row offsets")
    check(col.dim() == 1 and col.dtype == fmt.index_dtype(in_features) and values.dim() == 1
                 and col.shape[0] == values.shape[0] and values.dtype.is_floating_point,
                 lambda: f"pycomp.{op}: col must be {fmt.index_dtype(in_features)} (K={in_features}) and values "
                         f"float, both 1-D of length nnz")
    _check_common(op, x, crow.shape[0] - 1, in_features, bias, {"crow": crow, "col": col, "values": values})


def _check_bsr(x, crow, col, values, out_features, in_features, bias):
    op = "bsr_linear"
    check(values.dim() == 3 and values.dtype.is_floating_point,
                 lambda: f"pycomp.{op}: values must be a float (nblocks, bn, bk) tensor")
    bn = values.shape[1]
    check(crow.dim() == 1 and crow.dtype == torch.int32 and crow.shape[0] == -(-out_features // bn) + 1,
                 lambda: f"pycomp.{op}: crow must be int32 with ceil(N/bn)+1 = {-(-out_features // bn) + 1} entries")
    check(col.dim() == 1 and col.dtype == torch.int32 and col.shape[0] == values.shape[0],
                 lambda: f"pycomp.{op}: col must be int32 with one block column per block")
    _check_common(op, x, out_features, in_features, bias, {"crow": crow, "col": col, "values": values})


def _out_like(x: Tensor, n: int) -> Tensor:
    return x.new_empty((*x.shape[:-1], n))


@torch.library.register_fake("pycomp::sparse24_linear")
def _sparse24_fake(x, values, meta, in_features, bias=None, scale=None):
    _check_24(x, values, meta, in_features, bias, scale)
    return _out_like(x, values.shape[0])


@torch.library.register_fake("pycomp::csr_linear")
def _csr_fake(x, crow, col, values, in_features, bias=None):
    _check_csr(x, crow, col, values, in_features, bias)
    return _out_like(x, crow.shape[0] - 1)


@torch.library.register_fake("pycomp::bsr_linear")
def _bsr_fake(x, crow, col, values, out_features, in_features, bias=None):
    _check_bsr(x, crow, col, values, out_features, in_features, bias)
    return _out_like(x, out_features)


# ----------------------------------------------------------------------------- routing

_CPU_KERNELS = {"2:4": "sparse24_linear_cpu", "unstructured": "csr_linear_cpu", "block": "bsr_linear_cpu"}

def triton_sparse():
    """pycomp.triton_kernels.sparse, or None when Triton cannot import it (why: _ext.TRITON_ERRORS)."""
    return _ext.triton_kernels("sparse")


def plan(pattern: str, device: torch.device | str, M: int | None = None, dtype: torch.dtype | None = None,
         block: tuple[int, int] | None = None, K: int | None = None) -> str:
    """Name of the backend that runs a `pattern` layer whose values are `dtype`, for a batch of M rows.

    CPU: the C++ kernels read float32 values, and int8 values for 2:4 (x of another float dtype is
    converted); other value dtypes run the reference. CUDA: 2:4 on the CUDA kernels (GEMV for M <= 16,
    mma.sp GEMM above) for float16 and bfloat16 values, and for int8 values widened to x's dtype per call
    (right, not fast: the CUDA kernels read 16-bit values); block-CSR on the Triton kernel when its blocks
    suit it (powers of two >= 16); CSR on the reference. With M left out: large M. With K given, the CPU says
    "cpu-dense" where the entry takes the dense route (pycomp.ops._library.cpu_dense_route, on K padded as the
    format pads it).
    """
    if pattern not in PATTERNS:
        raise ValueError(f"sparse: pattern must be one of {PATTERNS}, got {pattern!r}")
    device = torch.device(device)
    int8_24 = pattern == "2:4" and dtype == torch.int8
    if device.type == "cpu":
        if (dtype is None or dtype == torch.float32 or int8_24) and _ext.has_c(_CPU_KERNELS[pattern]):
            align = fmt.K_ALIGN_24 if pattern == "2:4" else block[1] if pattern == "block" and block else 1
            kp = None if K is None else -(-K // align) * align
            return "cpu-dense" if cpu_dense_route(M, kp) else f"cpu-{_ext._C.cpu_isa()}"
        return "reference"
    if device.type != "cuda" or (dtype is not None and dtype not in (*_CUDA_DTYPES, torch.float32) and not int8_24):
        return "reference"
    if pattern == "2:4" and (dtype is None or dtype in _CUDA_DTYPES or int8_24):
        kernel = "sparse24_gemv_cuda" if M is not None and M <= CUDA_GEMV_MAX_M else "sparse24_gemm_cuda"
        if _ext.has_c(kernel):
            return "cuda"
    if pattern == "block" and triton_sparse() is not None and (block is None or triton_sparse().supports(block)):
        return "triton"
    return "reference"


def _pad_k(x2: Tensor, kp: int) -> Tensor:
    return x2 if x2.shape[1] == kp else F.pad(x2, (0, kp - x2.shape[1]))


# ----------------------------------------------------------------------------- impls


def _sparse24_cuda(xp: Tensor, values: Tensor, meta: Tensor, bias: Tensor | None, scale: Tensor | None) -> Tensor:
    gemv = xp.shape[0] <= CUDA_GEMV_MAX_M
    kernel = getattr(_ext._C, "sparse24_gemv_cuda" if gemv else "sparse24_gemm_cuda")
    variant = CUDA_GEMV_VARIANT if gemv else CUDA_GEMM_WIDE_VARIANT if xp.shape[0] >= CUDA_GEMM_WIDE_MIN_M \
        else CUDA_GEMM_VARIANT
    if scale is None:
        b = None if bias is None else bias.to(values.dtype).contiguous()
        return kernel(xp.to(values.dtype).contiguous(), values, meta, b, variant)
    dtype = xp.dtype if xp.dtype in _CUDA_DTYPES else torch.bfloat16
    out = kernel(xp.to(dtype).contiguous(), values.to(dtype), meta, None, variant).float() * scale
    return out if bias is None else out + bias.float()


def _sparse24_impl(x, values, meta, in_features, bias=None, scale=None):
    _check_24(x, values, meta, in_features, bias, scale)
    N = values.shape[0]
    x2 = rows(x)
    if x2.shape[0] == 0:
        return _out_like(x, N)
    backend = plan("2:4", x.device, x2.shape[0], values.dtype)
    if backend == "reference":
        return sparse24_linear_ref(x, values, meta, in_features, bias, scale)
    out = _sparse24_cuda(_pad_k(x2, values.shape[1] * 2), values, meta, bias, scale)
    return out.to(x.dtype).reshape(*x.shape[:-1], N)


def _csr_impl(x, crow, col, values, in_features, bias=None):
    """Every backend but the CPU kernel runs the reference for CSR."""
    _check_csr(x, crow, col, values, in_features, bias)
    if x.numel() == 0:
        return _out_like(x, crow.shape[0] - 1)
    return csr_linear_ref(x, crow, col, values, in_features, bias)


def _bsr_impl(x, crow, col, values, out_features, in_features, bias=None):
    _check_bsr(x, crow, col, values, out_features, in_features, bias)
    x2 = rows(x)
    if x2.shape[0] == 0:
        return _out_like(x, out_features)
    backend = plan("block", x.device, x2.shape[0], values.dtype, tuple(values.shape[1:]))
    if backend == "reference":
        return bsr_linear_ref(x, crow, col, values, out_features, in_features, bias)
    bk = values.shape[2]
    xp = _pad_k(x2, -(-in_features // bk) * bk)
    out = triton_sparse().bsr_linear(xp.to(values.dtype), crow.contiguous(), col.contiguous(), values, out_features,
                                     bias)
    return out.to(x.dtype).reshape(*x.shape[:-1], out_features)


def _cpu(entry: str, values_at: int, kernel_dtypes: tuple, impl):
    """The C++ entry (csrc/cpu/sparse/sparse_ops.h: checks, rows, padding, float32 conversion, kernel) for the
    value dtypes the kernel reads; impl (which runs the reference on the CPU) for the others."""
    def run(*args):
        if args[values_at].dtype in kernel_dtypes and _ext._C is not None:
            return getattr(_ext._C, entry)(*args)
        return impl(*args)

    return run


impl_cpu("sparse24_linear", _cpu("sparse24_linear_op", 1, (torch.float32, torch.int8), _sparse24_impl))
impl_cpu("csr_linear", _cpu("csr_linear_op", 3, (torch.float32,), _csr_impl))
impl_cpu("bsr_linear", _cpu("bsr_linear_op", 3, (torch.float32,), _bsr_impl))
for _name, _impl in (("sparse24_linear", _sparse24_impl), ("csr_linear", _csr_impl), ("bsr_linear", _bsr_impl)):
    LIB.impl(_name, _impl, "CUDA")


# ----------------------------------------------------------------------------- autograd (fixed pattern)


def _grad_bias(ctx, grad_out: Tensor) -> Tensor | None:
    return grad_out.reshape(-1, grad_out.shape[-1]).sum(0).to(ctx.bias_dtype) if ctx.has_bias else None


def _save(ctx, x: Tensor, bias: Tensor | None, values_at: int, values: Tensor, *tensors: Tensor) -> None:
    # x is kept only when the values want a gradient (training a float sparse layer), not in inference
    ctx.values_grad = bool(ctx.needs_input_grad[values_at])
    ctx.save_for_backward(x if ctx.values_grad else None, values, *tensors)
    ctx.x_dtype, ctx.has_bias = x.dtype, bias is not None
    ctx.bias_dtype = None if bias is None else bias.dtype


def _grads(ctx, grad_out: Tensor, w: Tensor, gather) -> tuple[Tensor, Tensor | None]:
    """(grad of x, grad of the stored values: the dense weight's gradient gathered at their positions)."""
    grad_x = (grad_out @ w.to(grad_out.dtype)).to(ctx.x_dtype)
    if not ctx.values_grad:
        return grad_x, None
    x = ctx.saved_tensors[0]
    g2, x2 = grad_out.reshape(-1, grad_out.shape[-1]), x.reshape(-1, x.shape[-1])
    return grad_x, gather(g2.t().to(x2.dtype) @ x2).to(ctx.saved_tensors[1].dtype)


def _setup_24(ctx, inputs, output):
    x, values, meta, in_features, bias, scale = inputs
    _save(ctx, x, bias, 1, values, meta, scale)
    ctx.k = in_features


def _backward_24(ctx, grad_out):
    _, values, meta, scale = ctx.saved_tensors
    grad_x, grad_v = _grads(ctx, grad_out, _weight_24(values, meta, ctx.k, scale), lambda d: fmt.gather_24(d, meta))
    return grad_x, grad_v, None, None, _grad_bias(ctx, grad_out), None


def _setup_csr(ctx, inputs, output):
    x, crow, col, values, in_features, bias = inputs
    _save(ctx, x, bias, 3, values, crow, col)
    ctx.k = in_features


def _backward_csr(ctx, grad_out):
    _, values, crow, col = ctx.saved_tensors
    grad_x, grad_v = _grads(ctx, grad_out, fmt.densify_csr(crow, col, values, ctx.k),
                            lambda d: fmt.gather_csr(d, crow, col))
    return grad_x, None, None, grad_v, None, _grad_bias(ctx, grad_out)


def _setup_bsr(ctx, inputs, output):
    x, crow, col, values, out_features, in_features, bias = inputs
    _save(ctx, x, bias, 3, values, crow, col)
    ctx.n, ctx.k = out_features, in_features


def _backward_bsr(ctx, grad_out):
    _, values, crow, col = ctx.saved_tensors
    grad_x, grad_v = _grads(ctx, grad_out, fmt.densify_bsr(crow, col, values, ctx.n, ctx.k),
                            lambda d: fmt.gather_bsr(d, crow, col, tuple(values.shape[1:])))
    return grad_x, None, None, grad_v, None, None, _grad_bias(ctx, grad_out)


torch.library.register_autograd("pycomp::sparse24_linear", _backward_24, setup_context=_setup_24)
torch.library.register_autograd("pycomp::csr_linear", _backward_csr, setup_context=_setup_csr)
torch.library.register_autograd("pycomp::bsr_linear", _backward_bsr, setup_context=_setup_bsr)


# ----------------------------------------------------------------------------- public wrappers


def sparse24_linear(x: Tensor, values: Tensor, meta: Tensor, in_features: int, bias: Tensor | None = None,
                    scale: Tensor | None = None) -> Tensor:
    """2:4: x (..., K) float -> (..., N) in x's dtype; values (N, Kp/2) float, or int8 with scale (N,) float32;
    meta (Np, Kp/16) int16."""
    return run(torch.ops.pycomp.sparse24_linear, x, values, meta, in_features, bias, scale)


def sparse24_linear_dynamic(x: Tensor, values: Tensor, meta: Tensor, in_features: int, scale: Tensor,
                            bias: Tensor | None = None) -> Tensor:
    """2:4 W8A8: x quantized per token to int8 (pycomp.ops.int8's rule), the int8 2:4 product, then x's scale
    per row and the bias: pycomp.ops.int8.int8_linear_dynamic_ref of the densified weight. x (..., K) float ->
    (..., N) in x's dtype. The CPU kernel multiplies in float32 (exact while the integer sums stay under
    2**24; the rounding beyond is float32's)."""
    from pycomp.ops.int8 import quantize_per_token_int8

    q, sx = quantize_per_token_int8(x)
    out = run(torch.ops.pycomp.sparse24_linear, q.float(), values, meta, in_features, None, scale) * sx.unsqueeze(-1)
    return (out if bias is None else out + bias.float()).to(x.dtype)


def csr_linear(x: Tensor, crow: Tensor, col: Tensor, values: Tensor, in_features: int,
               bias: Tensor | None = None) -> Tensor:
    """CSR: x (..., K) float -> (..., N) in x's dtype, N = crow.numel() - 1."""
    return run(torch.ops.pycomp.csr_linear, x, crow, col, values, in_features, bias)


def bsr_linear(x: Tensor, crow: Tensor, col: Tensor, values: Tensor, out_features: int, in_features: int,
               bias: Tensor | None = None) -> Tensor:
    """Block-CSR: x (..., K) float -> (..., out_features) in x's dtype; values (nblocks, bn, bk)."""
    return run(torch.ops.pycomp.bsr_linear, x, crow, col, values, out_features, in_features, bias)
