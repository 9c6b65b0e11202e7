"""Sparse linear ops: 2:4 compressed (`sparse24_linear`), CSR (`csr_linear`) and block-CSR (`bsr_linear`).

Each op is one `torch.library` op in the `pycomp` namespace with a plain-PyTorch reference (densify the
format with pycomp.formats.sparse, then a float64 matmul), a fake impl for torch.compile and torch.export,
a CPU kernel (C++) and a CUDA dispatcher. The weight is frozen: backward gives gradients for x (and the
bias), none for the packed buffers.

Shapes: x (..., K) float -> (..., N) in x's dtype; bias (N,) float or None. The buffers are those of
pycomp.formats.sparse (their invariants, such as column indices in range, are checked when a layer packs
or loads them, not per call):
  sparse24_linear: values (N, Kp/2), meta (Np, Kp/16) int16, Kp = ceil(K/32)*32, Np = ceil(N/32)*32;
  csr_linear: crow (N+1,) int32, col (nnz,) int16 (K <= 32768) or int32, values (nnz,);
  bsr_linear: crow (ceil(N/bn)+1,) int32, col (nblocks,) int32, values (nblocks, bn, bk).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from pycomp import _ext
from pycomp.formats import sparse as fmt
from pycomp.ops._library import LIB

PATTERNS = ("2:4", "unstructured", "block")
# Largest M the CUDA 2:4 GEMV serves (it streams the kept values once for up to 16 rows); above, the mma.sp GEMM.
CUDA_GEMV_MAX_M = 16
# The CPU 2:4 kernel runs at every M. It beats dense fp32 F.linear up to M=32 and loses from M=64 (0.77x at
# 64, 0.72x at 128; 4096x4096, 2 threads, benchmarks/RESULTS.md), but densifying per call costs ~150 ms,
# so no faster path exists without keeping a dense copy, which would undo the compression
# (benchmarks/sparse24_crossover.py).
_CUDA_DTYPES = (torch.float16, torch.bfloat16)

LIB.define("sparse24_linear(Tensor x, Tensor values, Tensor meta, int in_features, Tensor? bias=None) -> Tensor")
LIB.define("csr_linear(Tensor x, Tensor crow, Tensor col, Tensor values, int in_features, Tensor? bias=None) -> Tensor")
LIB.define("bsr_linear(Tensor x, Tensor crow, Tensor col, Tensor values, int out_features, int in_features, "
           "Tensor? bias=None) -> Tensor")


# ----------------------------------------------------------------------------- references


def _dense_ref(x: Tensor, w: Tensor, bias: Tensor | None) -> Tensor:
    out = x.double() @ w.double().t()
    if bias is not None:
        out = out + bias.double()
    return out.to(x.dtype)


def sparse24_linear_ref(x: Tensor, values: Tensor, meta: Tensor, in_features: int, bias: Tensor | None = None) -> Tensor:
    """x @ densify_24(values, meta).T + bias, in float64."""
    return _dense_ref(x, fmt.densify_24(values, meta, in_features), bias)


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
    torch._check(x.dtype.is_floating_point, lambda: f"pycomp.{op}: x must be a float tensor, got {x.dtype}")
    torch._check(x.dim() >= 1, lambda: f"pycomp.{op}: x must have a feature dimension")
    torch._check(x.shape[-1] == k, lambda: f"pycomp.{op}: x has {x.shape[-1]} features (last dim) but the "
                                           f"weight expects K={k}")
    torch._check(bias is None or (bias.dim() == 1 and bias.shape[0] == n),
                 lambda: f"pycomp.{op}: bias must be a vector of N={n} values")
    for name, t in {**tensors, "bias": bias}.items():
        torch._check(t is None or t.device == x.device, lambda: f"pycomp.{op}: {name} is on {t.device} but x is on "
                                                                f"{x.device}")


def _check_24(x, values, meta, in_features, bias):
    op = "sparse24_linear"
    kp = -(-in_features // fmt.K_ALIGN_24) * fmt.K_ALIGN_24
    torch._check(values.dim() == 2 and values.dtype.is_floating_point and values.shape[1] * 2 == kp,
                 lambda: f"pycomp.{op}: values must be a float (N, {kp // 2}) tensor for K={in_features}, "
                         f"got {values.dtype} {tuple(values.shape)}")
    torch._check(meta.dim() == 2 and meta.dtype == torch.int16 and meta.shape[1] * 16 == kp
                 and meta.shape[0] % fmt.N_ALIGN_24 == 0 and meta.shape[0] >= values.shape[0],
                 lambda: f"pycomp.{op}: meta must be int16 (Np, {kp // 16}), Np a multiple of 32 >= N, got "
                         f"{meta.dtype} {tuple(meta.shape)}")
    _check_common(op, x, values.shape[0], in_features, bias, {"values": values, "meta": meta})


def _check_csr(x, crow, col, values, in_features, bias):
    op = "csr_linear"
    torch._check(crow.dim() == 1 and crow.dtype == torch.int32 and crow.shape[0] >= 1,
                 lambda: f"pycomp.{op}: crow must be a 1-D int32 tensor of N+1 row offsets")
    torch._check(col.dim() == 1 and col.dtype == fmt.index_dtype(in_features) and values.dim() == 1
                 and col.shape[0] == values.shape[0] and values.dtype.is_floating_point,
                 lambda: f"pycomp.{op}: col must be {fmt.index_dtype(in_features)} (K={in_features}) and values "
                         f"float, both 1-D of length nnz")
    _check_common(op, x, crow.shape[0] - 1, in_features, bias, {"crow": crow, "col": col, "values": values})


def _check_bsr(x, crow, col, values, out_features, in_features, bias):
    op = "bsr_linear"
    torch._check(values.dim() == 3 and values.dtype.is_floating_point,
                 lambda: f"pycomp.{op}: values must be a float (nblocks, bn, bk) tensor")
    bn = values.shape[1]
    torch._check(crow.dim() == 1 and crow.dtype == torch.int32 and crow.shape[0] == -(-out_features // bn) + 1,
                 lambda: f"pycomp.{op}: crow must be int32 with ceil(N/bn)+1 = {-(-out_features // bn) + 1} entries")
    torch._check(col.dim() == 1 and col.dtype == torch.int32 and col.shape[0] == values.shape[0],
                 lambda: f"pycomp.{op}: col must be int32 with one block column per block")
    _check_common(op, x, out_features, in_features, bias, {"crow": crow, "col": col, "values": values})


def _out_like(x: Tensor, n: int) -> Tensor:
    return x.new_empty((*x.shape[:-1], n))


@torch.library.register_fake("pycomp::sparse24_linear")
def _sparse24_fake(x, values, meta, in_features, bias=None):
    _check_24(x, values, meta, in_features, bias)
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
         block: tuple[int, int] | None = None) -> str:
    """Name of the backend that runs a `pattern` layer whose values are `dtype`, for a batch of M rows.

    CPU: the C++ kernels read float32 values (x of another float dtype is converted); other value dtypes
    run the reference. CUDA: 2:4 on the CUDA kernels (GEMV for M <= 16, mma.sp GEMM above) for float16 and
    bfloat16; block-CSR on the Triton kernel when its blocks suit it (powers of two >= 16); CSR on the
    reference. With M left out: large M.
    """
    if pattern not in PATTERNS:
        raise ValueError(f"sparse: pattern must be one of {PATTERNS}, got {pattern!r}")
    device = torch.device(device)
    if device.type == "cpu":
        if (dtype is None or dtype == torch.float32) and _ext.has_c(_CPU_KERNELS[pattern]):
            return f"cpu-{_ext._C.cpu_isa()}"
        return "reference"
    if device.type != "cuda" or (dtype is not None and dtype not in (*_CUDA_DTYPES, torch.float32)):
        return "reference"
    if pattern == "2:4" and (dtype is None or dtype in _CUDA_DTYPES):
        kernel = "sparse24_gemv_cuda" if M is not None and M <= CUDA_GEMV_MAX_M else "sparse24_gemm_cuda"
        if _ext.has_c(kernel):
            return "cuda"
    if pattern == "block" and triton_sparse() is not None and (block is None or triton_sparse().supports(block)):
        return "triton"
    return "reference"


def _rows(x: Tensor) -> Tensor:
    """(..., K) -> (M, K) with unit column stride (a view when possible)."""
    x2 = x.reshape(-1, x.shape[-1])
    return x2 if x2.stride(-1) == 1 else x2.contiguous()


def _pad_k(x2: Tensor, kp: int) -> Tensor:
    return x2 if x2.shape[1] == kp else F.pad(x2, (0, kp - x2.shape[1]))


# ----------------------------------------------------------------------------- impls


def _sparse24_impl(x, values, meta, in_features, bias=None):
    _check_24(x, values, meta, in_features, bias)
    N = values.shape[0]
    x2 = _rows(x)
    if x2.shape[0] == 0:
        return _out_like(x, N)
    backend = plan("2:4", x.device, x2.shape[0], values.dtype)
    if backend == "reference":
        return sparse24_linear_ref(x, values, meta, in_features, bias)
    xp = _pad_k(x2, values.shape[1] * 2)
    if backend == "cuda":
        kernel = "sparse24_gemv_cuda" if x2.shape[0] <= CUDA_GEMV_MAX_M else "sparse24_gemm_cuda"
        b = None if bias is None else bias.to(values.dtype).contiguous()
        out = getattr(_ext._C, kernel)(xp.to(values.dtype).contiguous(), values, meta, b).to(x.dtype)
    else:
        b = None if bias is None else bias.float().contiguous()
        out = _ext._C.sparse24_linear_cpu(xp.float(), values.contiguous(), meta.contiguous(), b).to(x.dtype)
    return out.reshape(*x.shape[:-1], N)


def _csr_impl(x, crow, col, values, in_features, bias=None):
    _check_csr(x, crow, col, values, in_features, bias)
    N = crow.shape[0] - 1
    x2 = _rows(x)
    if x2.shape[0] == 0:
        return _out_like(x, N)
    if plan("unstructured", x.device, x2.shape[0], values.dtype) == "reference":
        return csr_linear_ref(x, crow, col, values, in_features, bias)
    b = None if bias is None else bias.float().contiguous()
    out = _ext._C.csr_linear_cpu(x2.float(), crow.contiguous(), col.contiguous(), values.contiguous(), in_features, b)
    return out.to(x.dtype).reshape(*x.shape[:-1], N)


def _bsr_impl(x, crow, col, values, out_features, in_features, bias=None):
    _check_bsr(x, crow, col, values, out_features, in_features, bias)
    x2 = _rows(x)
    if x2.shape[0] == 0:
        return _out_like(x, out_features)
    backend = plan("block", x.device, x2.shape[0], values.dtype, tuple(values.shape[1:]))
    if backend == "reference":
        return bsr_linear_ref(x, crow, col, values, out_features, in_features, bias)
    bk = values.shape[2]
    xp = _pad_k(x2, -(-in_features // bk) * bk)
    if backend == "triton":
        out = triton_sparse().bsr_linear(xp.to(values.dtype), crow.contiguous(), col.contiguous(), values,
                                         out_features, bias)
    else:
        b = None if bias is None else bias.float().contiguous()
        out = _ext._C.bsr_linear_cpu(xp.float(), crow.contiguous(), col.contiguous(), values.contiguous(),
                                     out_features, b)
    return out.to(x.dtype).reshape(*x.shape[:-1], out_features)


for _name, _impl in (("sparse24_linear", _sparse24_impl), ("csr_linear", _csr_impl), ("bsr_linear", _bsr_impl)):
    LIB.impl(_name, _impl, "CPU")
    LIB.impl(_name, _impl, "CUDA")


# ----------------------------------------------------------------------------- autograd (frozen weight)


def _grad_bias(ctx, grad_out: Tensor) -> Tensor | None:
    return grad_out.reshape(-1, grad_out.shape[-1]).sum(0).to(ctx.bias_dtype) if ctx.has_bias else None


def _save(ctx, x: Tensor, bias: Tensor | None, *tensors: Tensor) -> None:
    ctx.save_for_backward(*tensors)
    ctx.x_dtype, ctx.has_bias = x.dtype, bias is not None
    ctx.bias_dtype = None if bias is None else bias.dtype


def _grad_x(ctx, grad_out: Tensor, w: Tensor) -> Tensor:
    return (grad_out @ w.to(grad_out.dtype)).to(ctx.x_dtype)


def _setup_24(ctx, inputs, output):
    x, values, meta, in_features, bias = inputs
    _save(ctx, x, bias, values, meta)
    ctx.k = in_features


def _backward_24(ctx, grad_out):
    values, meta = ctx.saved_tensors
    return _grad_x(ctx, grad_out, fmt.densify_24(values, meta, ctx.k)), None, None, None, _grad_bias(ctx, grad_out)


def _setup_csr(ctx, inputs, output):
    x, crow, col, values, in_features, bias = inputs
    _save(ctx, x, bias, crow, col, values)
    ctx.k = in_features


def _backward_csr(ctx, grad_out):
    w = fmt.densify_csr(*ctx.saved_tensors, ctx.k)
    return _grad_x(ctx, grad_out, w), None, None, None, None, _grad_bias(ctx, grad_out)


def _setup_bsr(ctx, inputs, output):
    x, crow, col, values, out_features, in_features, bias = inputs
    _save(ctx, x, bias, crow, col, values)
    ctx.n, ctx.k = out_features, in_features


def _backward_bsr(ctx, grad_out):
    w = fmt.densify_bsr(*ctx.saved_tensors, ctx.n, ctx.k)
    return _grad_x(ctx, grad_out, w), None, None, None, None, None, _grad_bias(ctx, grad_out)


torch.library.register_autograd("pycomp::sparse24_linear", _backward_24, setup_context=_setup_24)
torch.library.register_autograd("pycomp::csr_linear", _backward_csr, setup_context=_setup_csr)
torch.library.register_autograd("pycomp::bsr_linear", _backward_bsr, setup_context=_setup_bsr)


# ----------------------------------------------------------------------------- public wrappers


def sparse24_linear(x: Tensor, values: Tensor, meta: Tensor, in_features: int, bias: Tensor | None = None) -> Tensor:
    """2:4: x (..., K) float -> (..., N) in x's dtype; values (N, Kp/2), meta (Np, Kp/16) int16."""
    return torch.ops.pycomp.sparse24_linear(x, values, meta, in_features, bias)


def csr_linear(x: Tensor, crow: Tensor, col: Tensor, values: Tensor, in_features: int,
               bias: Tensor | None = None) -> Tensor:
    """CSR: x (..., K) float -> (..., N) in x's dtype, N = crow.numel() - 1."""
    return torch.ops.pycomp.csr_linear(x, crow, col, values, in_features, bias)


def bsr_linear(x: Tensor, crow: Tensor, col: Tensor, values: Tensor, out_features: int, in_features: int,
               bias: Tensor | None = None) -> Tensor:
    """Block-CSR: x (..., K) float -> (..., out_features) in x's dtype; values (nblocks, bn, bk)."""
    return torch.ops.pycomp.bsr_linear(x, crow, col, values, out_features, in_features, bias)
