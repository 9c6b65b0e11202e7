"""Triton W1A16: 1-bit weights unpacked to ±1 tiles in registers and fed to tl.dot (bf16/fp16 tensor cores).

Weights are the packed format of pycomp.formats.binary: (N, ceil(K/32)) uint32 sign bits (bit j of word w
is 1 when W[n, 32w + j] < 0) and alpha (N, G) float32, one scale per output channel (group_size=0) or per
group of inputs. ±1 is exact in every float type, so each tile's dot product is exact up to fp32
accumulation; α is applied once per K tile (groups) or once per output (per channel).

A bit becomes ±1 with integer operations only: (bit << 15) | 0x3F80 is the bf16 encoding of
+1 or -1 (fp16 0x3C00, fp32 bit << 31 | 0x3F800000); Hopper issues int -> float conversions
at a quarter of the FP32 rate, and the former 1 - 2 * bit in fp32 cost one and a half per
weight. SWAP_AB configurations compute out^T = W x^T, so the ±1 tile is the wgmma's A
operand, read from registers, instead of a B operand stored to shared memory first.

Used by the CUDA dispatch for mid and large M (above the CUDA GEMV's M <= 16). On a GPU the kernel is
autotuned (key: M bucket, N, K, group size); under TRITON_INTERPRET=1 it runs one small fixed configuration.
Importing this module raises ImportError when triton is missing.
"""
import os

import torch
import triton
import triton.language as tl

from ._autotune import autotune

# Read at import, like @triton.jit does: "1" runs kernels on CPU tensors in the interpreter.
_INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"

_FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


# Sign bit position and encoding of +1 per float type: (bit << POS) | ONE is +1 or -1. Scalar
# constexprs: Triton 3.6 (on the card) and 3.9 (here) both take those as globals in a kernel.
BF16_POS, BF16_ONE = tl.constexpr(15), tl.constexpr(0x3F80)
FP16_POS, FP16_ONE = tl.constexpr(15), tl.constexpr(0x3C00)
FP32_POS, FP32_ONE = tl.constexpr(31), tl.constexpr(0x3F800000)


# ±1 tiles from (N, W) words, (N, 32 W) in k order: bit j of word w lands at column 32 w + j.
# Built by interleaving halves (the way the int4 kernel joins its nibbles) rather than by reshaping
# an (N, W, 32) tensor: compiled for sm_90a (Triton 3.9), that reshape sent the tile through shared
# memory and made ptxas serialize the swapped tiles' wgmmas; the interleaves did not, and the
# unswapped 32x128x128 tile needs 155 registers instead of 255. _signs_S takes bits s, s + S,
# s + 2S, ... of each word; the levels are written out (no recursive @jit calls).
@triton.jit
def _signs_32(words, s: tl.constexpr, POS: tl.constexpr, ONE: tl.constexpr, BITS: tl.constexpr):
    return ((((words >> s) & 1) << POS) | ONE).to(BITS)


@triton.jit
def _signs_16(words, s: tl.constexpr, POS: tl.constexpr, ONE: tl.constexpr, BITS: tl.constexpr):
    return tl.interleave(_signs_32(words, s, POS, ONE, BITS), _signs_32(words, s + 16, POS, ONE, BITS))


@triton.jit
def _signs_8(words, s: tl.constexpr, POS: tl.constexpr, ONE: tl.constexpr, BITS: tl.constexpr):
    return tl.interleave(_signs_16(words, s, POS, ONE, BITS), _signs_16(words, s + 8, POS, ONE, BITS))


@triton.jit
def _signs_4(words, s: tl.constexpr, POS: tl.constexpr, ONE: tl.constexpr, BITS: tl.constexpr):
    return tl.interleave(_signs_8(words, s, POS, ONE, BITS), _signs_8(words, s + 4, POS, ONE, BITS))


@triton.jit
def _signs_2(words, s: tl.constexpr, POS: tl.constexpr, ONE: tl.constexpr, BITS: tl.constexpr):
    return tl.interleave(_signs_4(words, s, POS, ONE, BITS), _signs_4(words, s + 2, POS, ONE, BITS))


@triton.jit
def _signs(words, POS: tl.constexpr, ONE: tl.constexpr, BITS: tl.constexpr):
    return tl.interleave(_signs_2(words, 0, POS, ONE, BITS), _signs_2(words, 1, POS, ONE, BITS))


@triton.jit
def _w1a16_kernel(x_ptr, w_ptr, alpha_ptr, bias_ptr, out_ptr,
                  M, N, K, KW, G, TILES_PER_GROUP, stride_xm, stride_om, M_BUCKET,
                  GROUPED: tl.constexpr, HAS_BIAS: tl.constexpr, INTERPRET: tl.constexpr, SWAP_AB: tl.constexpr,
                  BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    WORDS: tl.constexpr = BLOCK_K // 32
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    rk = tl.arange(0, BLOCK_K)
    rw = tl.arange(0, WORDS)
    x_ptrs = x_ptr + (rm % M).to(tl.int64)[:, None] * stride_xm + rk[None, :]
    w_ptrs = w_ptr + (rn % N).to(tl.int64)[:, None] * KW + rw[None, :]
    mask_n = rn < N
    # The ±1 dtype: x's on a GPU; the interpreter cannot do bf16 arithmetic or dots (it keeps raw
    # bits), so bf16 builds fp32 signs there.
    DQ: tl.constexpr = x_ptr.dtype.element_ty
    if INTERPRET:
        if DQ == tl.bfloat16:
            DQ: tl.constexpr = tl.float32
    if DQ == tl.float32:
        BITS: tl.constexpr = tl.uint32
        POS: tl.constexpr = FP32_POS
        ONE: tl.constexpr = FP32_ONE
    elif DQ == tl.float16:
        BITS: tl.constexpr = tl.uint16
        POS: tl.constexpr = FP16_POS
        ONE: tl.constexpr = FP16_ONE
    else:
        BITS: tl.constexpr = tl.uint16
        POS: tl.constexpr = BF16_POS
        ONE: tl.constexpr = BF16_ONE

    if SWAP_AB:
        acc = tl.zeros((BLOCK_N, BLOCK_M), dtype=tl.float32)
    else:
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for kb in range(0, tl.cdiv(K, BLOCK_K)):
        # Past K, x reads 0 and the (zero) padding bits are +1: their products vanish.
        a = tl.load(x_ptrs, mask=rk[None, :] < K - kb * BLOCK_K, other=0.0)
        words = tl.load(w_ptrs, mask=rw[None, :] < KW - kb * WORDS, other=0).to(tl.uint32)
        sign = _signs(words, POS, ONE, BITS).to(DQ, bitcast=True)
        if INTERPRET:
            a = a.to(tl.float32)
            sign = sign.to(tl.float32)
        if GROUPED:
            # BLOCK_K divides group_size, so this tile lies in one group.
            al = tl.load(alpha_ptr + rn * G + kb // TILES_PER_GROUP, mask=mask_n, other=0.0)
            if SWAP_AB:
                acc += tl.dot(sign, tl.trans(a)) * al[:, None]
            else:
                acc += tl.dot(a, tl.trans(sign)) * al[None, :]
        elif SWAP_AB:
            acc = tl.dot(sign, tl.trans(a), acc)
        else:
            acc = tl.dot(a, tl.trans(sign), acc)
        x_ptrs += BLOCK_K
        w_ptrs += WORDS
    if SWAP_AB:
        acc = tl.trans(acc)

    out = acc
    if not GROUPED:
        out = out * tl.load(alpha_ptr + rn, mask=mask_n, other=0.0)[None, :]
    if HAS_BIAS:
        out += tl.load(bias_ptr + rn, mask=mask_n, other=0.0).to(tl.float32)[None, :]
    out_ptrs = out_ptr + rm.to(tl.int64)[:, None] * stride_om + rn[None, :]
    tl.store(out_ptrs, out.to(out_ptr.dtype.element_ty), mask=(rm < M)[:, None] & mask_n[None, :])


def _cfg(bm, bn, bk, stages, warps, swap=False):
    return triton.Config({"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, "SWAP_AB": swap},
                         num_stages=stages, num_warps=warps)


# A short list per M bucket (each config compiles on a key's first call; the autotuner keeps the
# fastest on the card). The unswapped tiles are the previous version's (M <= 16 ran its first,
# 32x128x128). The swapped ones keep BLOCK_N = 16 * num_warps and BLOCK_K = 128: compiled for
# sm_90a without a GPU (Triton 3.9, ptxas 13.0), those build the ±1 A operand in registers with
# no spills and no serialization warning, while swapped BLOCK_K = 64 tiles with 8 warps got one.
_OLD = [_cfg(32, 128, 128, 4, 4), _cfg(64, 128, 128, 4, 4), _cfg(128, 128, 64, 4, 8), _cfg(128, 256, 64, 3, 8),
        _cfg(64, 64, 256, 4, 4), _cfg(128, 128, 128, 3, 8)]
_CONFIGS_BY_BUCKET = {
    16: [_OLD[0], _cfg(16, 64, 128, 4, 4, True), _cfg(16, 128, 128, 4, 8, True)],
    32: [_OLD[0], _cfg(32, 64, 128, 4, 4, True), _cfg(32, 128, 128, 4, 8, True)],
    64: [_OLD[0], _OLD[1], _OLD[4], _cfg(64, 64, 128, 4, 4, True), _cfg(64, 128, 128, 4, 8, True)],
    128: [_OLD[1], _OLD[2], _OLD[3], _OLD[5], _cfg(64, 128, 128, 4, 8, True), _cfg(128, 64, 128, 4, 4, True),
          _cfg(128, 128, 128, 4, 8, True)],
    256: [_OLD[2], _OLD[3], _OLD[5], _cfg(128, 64, 128, 4, 4, True), _cfg(128, 128, 128, 4, 8, True),
          _cfg(256, 128, 128, 3, 8, True)],
}
_CONFIGS_BY_BUCKET[512] = _CONFIGS_BY_BUCKET[256]


def _config_id(c):
    return tuple(sorted(c.kwargs.items())), c.num_warps, c.num_stages


def _prune(configs, named_args, **kwargs):
    wanted = {_config_id(c) for c in _CONFIGS_BY_BUCKET[named_args["M_BUCKET"]]}
    return [c for c in configs if _config_id(c) in wanted] or configs[:1]


_CONFIGS = list({_config_id(c): c for cs in _CONFIGS_BY_BUCKET.values() for c in cs}.values())
_w1a16 = _w1a16_kernel if _INTERPRET else autotune(
    configs=_CONFIGS, key=["M_BUCKET", "N", "K", "G"], prune_configs_by={"early_config_prune": _prune})(_w1a16_kernel)


def w1a16_linear(x: torch.Tensor, packed: torch.Tensor, alpha: torch.Tensor, group_size: int = 0,
                 bias: torch.Tensor = None, config: dict | None = None) -> torch.Tensor:
    """x (M, K) bfloat16/float16/float32, packed (N, ceil(K/32)) uint32, alpha (N, G) float32 -> (M, N) x.dtype.

    group_size must be 0 (per-channel α) or a multiple of 32; grouped α needs group_size to be a multiple
    of the tile's BLOCK_K, so grouped calls run BLOCK_K = the largest of 128, 64, 32 dividing group_size.
    float32 inputs run the dot in TF32 on a GPU (±1 is exact in TF32; x is rounded to 10 bits).
    config: on a GPU and with group_size 0, a fixed tile (BLOCK_M, BLOCK_N, BLOCK_K, SWAP_AB,
    num_warps, num_stages) instead of the autotuned choice; ignored otherwise.
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
    if _INTERPRET:  # swapped for M <= 16, so the tests' shapes take both orientations
        meta = {"BLOCK_M": 16, "BLOCK_N": 16, "BLOCK_K": 32 if grouped else 64, "SWAP_AB": M <= 16}
    if grouped:
        bk = next(b for b in (128, 64, 32) if group_size % b == 0)
        meta = {**meta, "BLOCK_K": min(bk, meta.get("BLOCK_K", bk))}
        if not _INTERPRET:
            # Autotuned configs choose BLOCK_K; grouped calls pin it, so run the kernel untuned.
            meta.update({"BLOCK_M": 16 if M <= 16 else 64, "BLOCK_N": 128, "SWAP_AB": False, "num_warps": 4,
                         "num_stages": 4})
    grid = lambda meta_: (triton.cdiv(M, meta_["BLOCK_M"]), triton.cdiv(N, meta_["BLOCK_N"]))  # noqa: E731
    kernel = _w1a16_kernel if grouped else _w1a16
    if config is not None and not grouped and not _INTERPRET:
        kernel, meta = _w1a16_kernel, {"SWAP_AB": False, **config}
    tiles_per_group = group_size // meta["BLOCK_K"] if grouped else 1
    kernel[grid](x, packed, alpha, bias if bias is not None else alpha, out, M, N, K, KW, G, tiles_per_group, x.stride(0),
                 out.stride(0), m_bucket, GROUPED=grouped, HAS_BIAS=bias is not None, INTERPRET=_INTERPRET, **meta)
    return out
