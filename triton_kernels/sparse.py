"""Triton block-sparse GEMM: out = x @ W^T + bias with W in pycomp's block-CSR format.

W (N, K) is stored as (bn, bk) blocks (pycomp/formats/sparse.py): crow (ceil(N/bn)+1,) int32,
col (nblocks,) int32 block columns, values (nblocks, bn, bk). One program computes a (BM, bn) output
tile of one block row and loops over that row's stored blocks only, so empty blocks cost nothing:
one (BM, bk) tile of x and one (bn, bk) block per step into tl.dot, fp32 accumulation.

Blocks must be powers of two with bn, bk >= 16 (tl.dot's minimum); `supports(block)` says whether a
block shape runs here. float32 inputs use IEEE fp32 products (no TF32), bf16/fp16 the tensor cores.
Under TRITON_INTERPRET=1 the kernel runs on CPU tensors (the tests).

Importing this module raises ImportError when triton is missing.
"""
import os

import torch
import triton
import triton.language as tl

_INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
_FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def is_available() -> bool:
    """True when these kernels can run: a CUDA device, or the Triton interpreter on CPU tensors."""
    return _INTERPRET or torch.cuda.is_available()


def supports(block: tuple[int, int]) -> bool:
    bn, bk = block
    return all(v >= 16 and v & (v - 1) == 0 for v in (bn, bk))


@triton.jit
def _bsr_kernel(x_ptr, crow_ptr, col_ptr, v_ptr, b_ptr, out_ptr, M, N, stride_xm, stride_om,
                BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, HAS_BIAS: tl.constexpr,
                IEEE: tl.constexpr):
    pid_m = tl.program_id(0)
    br = tl.program_id(1)
    rm = pid_m * BM + tl.arange(0, BM)
    rn = br * BN + tl.arange(0, BN)
    rk = tl.arange(0, BK)
    acc = tl.zeros((BM, BN), dtype=tl.float32)
    start = tl.load(crow_ptr + br)
    end = tl.load(crow_ptr + br + 1)
    w_row = v_ptr + start.to(tl.int64) * (BN * BK)  # this block row's first block; int64 past 2**31 values
    for b in range(start, end):
        c = tl.load(col_ptr + b)
        xt = tl.load(x_ptr + rm[:, None] * stride_xm + (c * BK + rk)[None, :], mask=rm[:, None] < M, other=0.0)
        wt = tl.load(w_row + (b - start) * (BN * BK) + tl.arange(0, BN)[:, None] * BK + rk[None, :])
        if IEEE:
            acc += tl.dot(xt, tl.trans(wt), input_precision="ieee")
        else:
            acc += tl.dot(xt, tl.trans(wt))
    if HAS_BIAS:
        acc += tl.load(b_ptr + rn, mask=rn < N, other=0.0).to(tl.float32)[None, :]
    mask = (rm[:, None] < M) & (rn[None, :] < N)
    tl.store(out_ptr + rm[:, None] * stride_om + rn[None, :], acc.to(out_ptr.dtype.element_ty), mask=mask)


def bsr_linear(x: torch.Tensor, crow: torch.Tensor, col: torch.Tensor, values: torch.Tensor, n: int,
               bias: torch.Tensor | None = None) -> torch.Tensor:
    """x (M, Kp) with Kp = block columns * bk, of values' dtype -> (M, n) in that dtype."""
    if x.dtype not in _FLOAT_DTYPES or values.dtype != x.dtype:
        raise TypeError(f"bsr_linear (Triton): x and values must share a float dtype, got {x.dtype}, {values.dtype}")
    nb, bn, bk = values.shape
    if not supports((bn, bk)):
        raise ValueError(f"bsr_linear (Triton): blocks must be powers of two >= 16, got ({bn}, {bk})")
    if x.dim() != 2 or x.shape[1] % bk or crow.numel() - 1 != -(-n // bn):
        raise ValueError(f"bsr_linear (Triton): x must be (M, a multiple of {bk}) and crow hold ceil(n/{bn})+1 "
                         "offsets")
    x = x if x.stride(1) == 1 else x.contiguous()
    M = x.shape[0]
    out = torch.empty(M, n, device=x.device, dtype=x.dtype)
    if M == 0 or n == 0:
        return out
    bm = 16 if M <= 16 or _INTERPRET else 64
    grid = (triton.cdiv(M, bm), crow.numel() - 1)
    _bsr_kernel[grid](x, crow, col, values.contiguous(), bias if bias is not None else x, out, M, n, x.stride(0),
                      out.stride(0), BM=bm, BN=bn, BK=bk, HAS_BIAS=bias is not None,
                      IEEE=x.dtype == torch.float32)
    return out
