"""Triton W1A16: 1-bit weights unpacked to ±1 tiles in registers and fed to tl.dot (bf16/fp16 tensor cores).

Weights are the packed format of pycomp.formats.binary: (N, ceil(K/32)) uint32 sign bits (bit j of word w
is 1 when W[n, 32w + j] < 0) and alpha (N, G) float32, one scale per output channel (group_size=0) or per
group of inputs. ±1 is exact in every float type, so each tile's dot product is exact up to fp32
accumulation; α is applied once per K tile (groups) or once per output (per channel).

Used by the CUDA dispatch for mid and large M (above the CUDA GEMV's M <= 16). On a GPU the kernel is
autotuned (key: M bucket, N, K, group size); under TRITON_INTERPRET=1 it runs one small fixed configuration.
Importing this module raises ImportError when triton is missing.
"""
import os

import torch
import triton
import triton.language as tl

# Read at import, like @triton.jit does: "1" runs kernels on CPU tensors in the interpreter.
_INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"

_FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


@triton.jit
def _w1a16_kernel(x_ptr, w_ptr, alpha_ptr, bias_ptr, out_ptr,
                  M, N, K, KW, G, TILES_PER_GROUP, stride_xm, stride_om, M_BUCKET,
                  GROUPED: tl.constexpr, HAS_BIAS: tl.constexpr, INTERPRET: tl.constexpr,
                  BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    WORDS: tl.constexpr = BLOCK_K // 32
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    rk = tl.arange(0, BLOCK_K)
    rw = tl.arange(0, WORDS)
    shifts = tl.arange(0, 32)
    x_ptrs = x_ptr + (rm % M).to(tl.int64)[:, None] * stride_xm + rk[None, :]
    w_ptrs = w_ptr + (rn % N).to(tl.int64)[:, None] * KW + rw[None, :]
    mask_n = rn < N

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for kb in range(0, tl.cdiv(K, BLOCK_K)):
        # Past K, x reads 0 and the (zero) padding bits are +1: their products vanish.
        a = tl.load(x_ptrs, mask=rk[None, :] < K - kb * BLOCK_K, other=0.0)
        words = tl.load(w_ptrs, mask=rw[None, :] < KW - kb * WORDS, other=0)
        bits = (words[:, :, None] >> shifts[None, None, :]) & 1
        sign = 1.0 - 2.0 * tl.reshape(bits, (BLOCK_N, BLOCK_K)).to(tl.float32)
        if INTERPRET:
            # The interpreter's tl.dot cannot multiply bf16 (it keeps raw bits); fp32 is exact here too.
            a = a.to(tl.float32)
        else:
            sign = sign.to(x_ptr.dtype.element_ty)
        if GROUPED:
            # BLOCK_K divides group_size, so this tile lies in one group.
            al = tl.load(alpha_ptr + rn * G + kb // TILES_PER_GROUP, mask=mask_n, other=0.0)
            acc += tl.dot(a, tl.trans(sign)) * al[None, :]
        else:
            acc = tl.dot(a, tl.trans(sign), acc)
        x_ptrs += BLOCK_K
        w_ptrs += WORDS

    out = acc
    if not GROUPED:
        out = out * tl.load(alpha_ptr + rn, mask=mask_n, other=0.0)[None, :]
    if HAS_BIAS:
        out += tl.load(bias_ptr + rn, mask=mask_n, other=0.0).to(tl.float32)[None, :]
    out_ptrs = out_ptr + rm.to(tl.int64)[:, None] * stride_om + rn[None, :]
    tl.store(out_ptrs, out.to(out_ptr.dtype.element_ty), mask=(rm < M)[:, None] & mask_n[None, :])


def _cfg(bm, bn, bk, stages, warps):
    return triton.Config({"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk}, num_stages=stages, num_warps=warps)


_CONFIGS = [
    _cfg(32, 128, 128, 4, 4),
    _cfg(64, 128, 128, 4, 4),
    _cfg(128, 128, 64, 4, 8),
    _cfg(128, 256, 64, 3, 8),
    _cfg(64, 64, 256, 4, 4),
    _cfg(128, 128, 128, 3, 8),
]


def _prune(configs, named_args, **kwargs):
    bucket = named_args["M_BUCKET"]
    kept = [c for c in configs if c.kwargs["BLOCK_M"] <= bucket]
    return kept or configs[:1]


_w1a16 = _w1a16_kernel if _INTERPRET else triton.autotune(
    configs=_CONFIGS, key=["M_BUCKET", "N", "K", "G"], prune_configs_by={"early_config_prune": _prune})(_w1a16_kernel)


def w1a16_linear(x: torch.Tensor, packed: torch.Tensor, alpha: torch.Tensor, group_size: int = 0,
                 bias: torch.Tensor = None) -> torch.Tensor:
    """x (M, K) bfloat16/float16/float32, packed (N, ceil(K/32)) uint32, alpha (N, G) float32 -> (M, N) x.dtype.

    group_size must be 0 (per-channel α) or a multiple of 32; grouped α needs group_size to be a multiple
    of the tile's BLOCK_K, so grouped calls run BLOCK_K = the largest of 128, 64, 32 dividing group_size.
    float32 inputs run the dot in TF32 on a GPU (±1 is exact in TF32; x is rounded to 10 bits).
    """
    if x.dim() != 2 or x.dtype not in _FLOAT_DTYPES:
        raise TypeError(f"w1a16_linear: x must be 2-D {_FLOAT_DTYPES}, got {x.dtype} {tuple(x.shape)}")
    x = x if x.stride(1) == 1 else x.contiguous()
    M, K = x.shape
    KW = (K + 31) // 32
    if packed.dtype != torch.uint32 or packed.dim() != 2 or packed.shape[1] != KW:
        raise TypeError(f"w1a16_linear: packed must be uint32 (N, {KW}) for K={K}, got {packed.dtype} "
                        f"{tuple(packed.shape)}")
    if group_size < 0 or group_size % 32:
        raise ValueError(f"w1a16_linear: group_size must be 0 or a multiple of 32, got {group_size}")
    N = packed.shape[0]
    G = 1 if group_size == 0 else -(-K // group_size)
    if alpha.dtype != torch.float32 or tuple(alpha.shape) != (N, G):
        raise TypeError(f"w1a16_linear: alpha must be float32 ({N}, {G}), got {alpha.dtype} {tuple(alpha.shape)}")
    if not _INTERPRET and x.device.type != "cuda":
        raise ValueError(f"w1a16_linear: Triton kernels need CUDA tensors (or TRITON_INTERPRET=1), got {x.device}")
    out = torch.empty((M, N), dtype=x.dtype, device=x.device)
    if M == 0 or N == 0:
        return out
    packed = packed.contiguous().view(torch.int32)
    alpha = alpha.contiguous()
    bias = bias.contiguous() if bias is not None else None
    m_bucket = min(max(16, triton.next_power_of_2(M)), 512)
    grouped = group_size != 0
    meta = {}
    if _INTERPRET:
        meta = {"BLOCK_M": 16, "BLOCK_N": 16, "BLOCK_K": 32 if grouped else 64}
    if grouped:
        bk = next(b for b in (128, 64, 32) if group_size % b == 0)
        meta = {**meta, "BLOCK_K": min(bk, meta.get("BLOCK_K", bk))}
        if not _INTERPRET:
            # Autotuned configs choose BLOCK_K; grouped calls pin it, so run the kernel untuned.
            meta.update({"BLOCK_M": 16 if M <= 16 else 64, "BLOCK_N": 128, "num_warps": 4, "num_stages": 4})
    grid = lambda meta_: (triton.cdiv(M, meta_["BLOCK_M"]), triton.cdiv(N, meta_["BLOCK_N"]))  # noqa: E731
    kernel = _w1a16_kernel if grouped else _w1a16
    tiles_per_group = group_size // meta["BLOCK_K"] if grouped else 1
    kernel[grid](x, packed, alpha, bias if bias is not None else alpha, out, M, N, K, KW, G, tiles_per_group, x.stride(0),
                 out.stride(0), m_bucket, GROUPED=grouped, HAS_BIAS=bias is not None, INTERPRET=_INTERPRET, **meta)
    return out
