"""CUDA implementation of pycomp::w4a16_linear: the CUDA decode GEMV, the Triton GEMM, or the reference.

`plan_cuda(M, K, dtype)` names the backend and `cuda_impl` runs it; both read the canonical
k-nibble layout (pycomp.formats.int4), so a layer keeps one copy of its weight.

- "cuda": csrc/cuda/int4/w4a16_gemv.cu for M <= 16, float16/bfloat16 x and K % 32 == 0
  (memory-bound decode; split-K fills the SMs on small layers);
- "triton": triton_kernels/int4.py for everything else in float16/bfloat16/float32
  (larger M, odd K), and on CPU tensors under TRITON_INTERPRET=1 (the tests);
- "reference": w4a16_linear_ref, for other dtypes (float64) or when Triton is missing.

Registered by the ops layer with `LIB.impl("w4a16_linear", cuda_impl, "CUDA")`.
"""
from __future__ import annotations

import torch
from torch import Tensor

from pycomp import _ext
from pycomp.ops.int4 import _check, w4a16_linear_ref

CUDA_GEMV_MAX_M = 16
CUDA_K_MULTIPLE = 32
CUDA_DTYPES = (torch.float16, torch.bfloat16)
TRITON_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def triton_int4():
    """pycomp.triton_kernels.int4, or None when Triton cannot import it (why: _ext.TRITON_ERRORS)."""
    return _ext.triton_kernels("int4")


def plan_cuda(M: int, K: int, dtype: torch.dtype) -> str:
    """Backend for a CUDA w4a16_linear with M rows of K features in `dtype`: "cuda", "triton" or "reference"."""
    if dtype in CUDA_DTYPES and 1 <= M <= CUDA_GEMV_MAX_M and K % CUDA_K_MULTIPLE == 0 \
            and _ext.has_c("w4a16_linear_cuda"):
        return "cuda"
    if dtype in TRITON_DTYPES and triton_int4() is not None:
        return "triton"
    return "reference"


def _gemv_ok(x2: Tensor, packed: Tensor) -> bool:
    # The GEMV reads packed 16 bytes at a time from a contiguous, aligned buffer (x's rows it copies if it must).
    return x2.is_cuda and packed.is_contiguous() and packed.data_ptr() % 16 == 0


def cuda_impl(x: Tensor, packed: Tensor, scales: Tensor, zeros: Tensor | None, bias: Tensor | None,
              group_size: int, in_features: int) -> Tensor:
    """pycomp::w4a16_linear on CUDA tensors (and, for its Triton and reference branches, on CPU tensors)."""
    _check(x, packed, scales, zeros, bias, group_size, in_features)
    x2 = x.reshape(-1, x.shape[-1])
    M, N = x2.shape[0], packed.shape[0]
    if M == 0:
        return x.new_empty((*x.shape[:-1], N))
    path = plan_cuda(M, in_features, x.dtype)
    if path == "cuda" and not _gemv_ok(x2, packed):
        path = "triton" if triton_int4() is not None else "reference"
    if path == "reference":
        return w4a16_linear_ref(x, packed, scales, zeros, bias, group_size, in_features)
    z = None if zeros is None else zeros.contiguous()
    if path == "cuda":  # the kernel adds a bias of x's dtype
        b = None if bias is None else bias.to(x.dtype).contiguous()
        out = _ext._C.w4a16_linear_cuda(x2, packed, scales.contiguous(), z, b, group_size)
    else:
        out = triton_int4().w4a16_linear(x2, packed, scales, z, bias, group_size, in_features)
    return out.reshape(*x.shape[:-1], N)
