"""CUDA implementation of pycomp::w4a16_linear: the CUDA decode GEMV, the Triton GEMM, or the reference.

`plan_cuda(M, K, dtype)` names the backend and `cuda_impl` runs it; both read the canonical
k-nibble layout (pycomp.formats.int4), so a layer keeps one copy of its weight.

- "cuda": csrc/cuda/int4/w4a16_gemv.cu for M <= 16, float16/bfloat16 x and K % 32 == 0
  (memory-bound decode; split-K fills the SMs on small layers), in the launch variant that
  won at that M on the H200 (gemv_variant);
- "triton": triton_kernels/int4.py for everything else in float16/bfloat16/float32
  (larger M, odd K; from TRITON_DEQUANT_MIN_M on, the weight dequantized once per call for cuBLAS),
  and on CPU tensors under TRITON_INTERPRET=1 (the tests);
- "reference": w4a16_linear_ref, for other dtypes (float64) or when Triton is missing.

Registered by the ops layer with `LIB.impl("w4a16_linear", cuda_impl, "CUDA")`.
"""
from __future__ import annotations

import torch
from torch import Tensor

from pycomp import _ext
from pycomp.ops.int4 import _check, w4a16_linear_ref

# Largest M the CUDA GEMV serves; above it Triton. On the H200 run 3 of 2026-11-28 the GEMV's variant 11 took
# 28.5 / 90.1 us at M=16 against Triton's 34.4 / 105.3 (14336x4096 / 28672x8192).
CUDA_GEMV_MAX_M = 16
# From this M on, Triton dequantizes the whole weight to x's dtype and runs cuBLAS (w4a16_linear_dequant; an (N, K)
# temporary per call): at M=1024 on 14336x4096 it took 208.9 us against 310.9 for the fused W4A16 GEMM (bf16
# 162.9); at M=128 it lost (79.8 against 64.2). M between was not timed.
TRITON_DEQUANT_MIN_M = 512
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


def gemv_variant(M: int) -> int:
    """The GEMV launch variant for M rows (csrc/cuda/int4/w4a16_gemv.cu; shapes a variant does not take run
    variant 0). Fastest on the H200 runs of 2026-11-28 (benchmarks/gpu_sweep_gemv.py, cold weights, us,
    14336x4096 / 28672x8192):
    - M=1: variant 1 (scales and zeros copied raw with the first chunk, exact (code - zero), the scale applied
      per chunk): 14.6 / 40.6 against variant 0's 18.1 / 57.3;
    - M=2..4: variant 5 (64 rows per block): 17.8 / 57.2 at M=4 against 25.0 / 66.7;
    - M=5..8: variant 10 (variant 5 with the zero point folded into an fp32 correction): 22.7 / 66.9 at M=8
      against variant 5's 23.7 / 67.8 (session 6 run 1: 22.8 / 65.9 against 24.0 / 67.0; at M=4 the two tie);
    - M=9..16: variant 11 (128 rows per block, x through the copy ring, zero point folded into an fp32
      correction): 28.5 / 90.1 at M=16 against 36.5 / 111.6."""
    return 1 if M == 1 else 5 if M <= 4 else 10 if M <= 8 else 11


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
        out = _ext._C.w4a16_linear_cuda(x2, packed, scales.contiguous(), z, b, group_size, gemv_variant(M))
    else:
        tk = triton_int4()
        gemm = tk.w4a16_linear_dequant if M >= TRITON_DEQUANT_MIN_M else tk.w4a16_linear
        out = gemm(x2, packed, scales, z, bias, group_size, in_features)
    return out.reshape(*x.shape[:-1], N)
