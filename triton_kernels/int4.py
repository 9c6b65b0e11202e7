"""Triton W4A16 GEMM: group-wise int4 weights dequantized in the main loop, fed to tl.dot.

Weights use the canonical k-nibble layout (pycomp/formats/int4.py), read as is:
packed (N, ceil(K/2)) uint8 with column 2j in the low nibble of byte j, scales (N, G)
float16 and zeros (N, G) uint8 (or None: zero point 8) per group of 32/64/128 along K,
W[n, k] = (code - zero) * scale. Each K tile of codes is unpacked (low nibble first),
dequantized in x's dtype ((code - zero) exact, the product rounded once; in bf16 the
float16 scale is rounded first) and multiplied on the tensor cores with fp32
accumulation; fp32 x runs 3xTF32.

Dequantization uses no int -> float conversion instructions (on Hopper they issue at a
quarter of the FP32 rate, and one per weight made the kernel conversion-bound, twice
slower than cuBLAS bf16 at M >= 128): a nibble OR-ed into the mantissa of a float whose
exponent makes one mantissa step worth 1 reads as OFF + code (bf16 0x4300 | c = 128 + c,
fp16 0x6400 | c = 1024 + c, fp32 0x4B000000 | c = 2**23 + c); subtracting OFF + zero
is exact, so the weights are bit for bit those of a plain conversion.

SWAP_AB configurations compute out^T = W x^T: the dequantized weight tile is the MMA's
A operand, which Hopper's wgmma reads from registers, while a dequantized B operand
must first be stored to shared memory (and the MMA waits on that store).

Meant for M above the CUDA decode kernel's range (M > 16), and for K that kernel does
not take (odd K, K % 32 != 0). On a GPU it is autotuned (key: M bucket, N, K, group
size); the first call of each key times the configs, so warm up before capturing a
CUDA graph. Under TRITON_INTERPRET=1 (CPU tensors, the tests) it runs one small fixed
configuration. Importing this module raises ImportError when triton is missing.
"""
import os

import torch
import triton
import triton.language as tl

from ._autotune import autotune

# Read at import, like @triton.jit does: "1" runs kernels on CPU tensors in the interpreter.
_INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"

_FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
GROUP_SIZES = (32, 64, 128)

# `MAGIC | code` read as the float type is OFF + code for 0 <= code < 16. Scalar constexprs:
# Triton 3.6 (on the card) and 3.9 (here) both take those as globals in a kernel.
BF16_MAGIC, BF16_OFF = tl.constexpr(0x4300), tl.constexpr(128.0)
FP16_MAGIC, FP16_OFF = tl.constexpr(0x6400), tl.constexpr(1024.0)
FP32_MAGIC, FP32_OFF = tl.constexpr(0x4B000000), tl.constexpr(8388608.0)


def is_available() -> bool:
    """True when this kernel can run: a CUDA device, or the Triton interpreter on CPU tensors."""
    return _INTERPRET or torch.cuda.is_available()


@triton.jit
def _tile_ids(M, N, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, GROUP_M: tl.constexpr):
    # Grouped ordering: GROUP_M row-blocks sweep the N tiles together, so the
    # weight tiles they share are still in L2 when the neighbours need them.
    pid = tl.program_id(0)
    num_pid_m = tl.cdiv(M, BLOCK_M)
    num_pid_n = tl.cdiv(N, BLOCK_N)
    num_pid_in_group = GROUP_M * num_pid_n
    group_id = pid // num_pid_in_group
    first_pid_m = group_id * GROUP_M
    group_size_m = min(num_pid_m - first_pid_m, GROUP_M)
    pid_m = first_pid_m + ((pid % num_pid_in_group) % group_size_m)
    pid_n = (pid % num_pid_in_group) // group_size_m
    return pid_m, pid_n


@triton.jit
def _w4a16_kernel(x_ptr, w_ptr, s_ptr, z_ptr, bias_ptr, out_ptr,
                  M, N, K, G, stride_xm, stride_wn, stride_om, M_BUCKET,
                  GS: tl.constexpr, HAS_ZEROS: tl.constexpr, HAS_BIAS: tl.constexpr, EVEN_K: tl.constexpr,
                  INTERPRET: tl.constexpr, PRECISION: tl.constexpr, SWAP_AB: tl.constexpr,
                  BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr):
    # M_BUCKET is only an autotune key. BLOCK_K and GS are powers of two, so a K tile
    # lies inside one group (BLOCK_K <= GS) or covers BLOCK_K // GS whole groups.
    pid_m, pid_n = _tile_ids(M, N, BLOCK_M, BLOCK_N, GROUP_M)
    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    rk = tl.arange(0, BLOCK_K)
    rb = tl.arange(0, BLOCK_K // 2)
    # Out-of-range rows/columns wrap onto valid ones (their results are never stored),
    # so only the K tail needs load masks. int64: N*K/2 may exceed 2**31.
    rn_w = (rn % N).to(tl.int64)
    x_ptrs = x_ptr + (rm % M).to(tl.int64)[:, None] * stride_xm + rk[None, :]
    w_ptrs = w_ptr + rn_w[:, None] * stride_wn + rb[None, :]
    s_row = s_ptr + rn_w * G
    z_row = z_ptr + rn_w * G
    k_bytes = (K + 1) // 2
    TILE_GROUPS: tl.constexpr = BLOCK_K // GS if BLOCK_K > GS else 1

    # DQ: the dequantization dtype. On a GPU, x's dtype ((code - zero) is exact there, the product
    # rounds once more than the reference's). The interpreter stores bf16 as raw uint16 bits and
    # cannot do bf16 arithmetic or tl.dot, so bf16 dequantizes in fp32 there; fp16 keeps its GPU
    # arithmetic and is widened to fp32 only for the interpreter's dot.
    DQ: tl.constexpr = x_ptr.dtype.element_ty
    if INTERPRET:
        if DQ == tl.bfloat16:
            DQ: tl.constexpr = tl.float32
    if DQ == tl.float32:
        BITS: tl.constexpr = tl.uint32
        MAGIC: tl.constexpr = FP32_MAGIC
        OFF: tl.constexpr = FP32_OFF
    elif DQ == tl.float16:
        BITS: tl.constexpr = tl.uint16
        MAGIC: tl.constexpr = FP16_MAGIC
        OFF: tl.constexpr = FP16_OFF
    else:
        BITS: tl.constexpr = tl.uint16
        MAGIC: tl.constexpr = BF16_MAGIC
        OFF: tl.constexpr = BF16_OFF

    if SWAP_AB:
        acc = tl.zeros((BLOCK_N, BLOCK_M), dtype=tl.float32)
    else:
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for kb in range(0, tl.cdiv(K, BLOCK_K)):
        k0 = kb * BLOCK_K
        if EVEN_K:
            a = tl.load(x_ptrs)
            b = tl.load(w_ptrs)
        else:
            # x is zero past K, so the padding nibble of odd K and the masked bytes add nothing.
            a = tl.load(x_ptrs, mask=rk[None, :] < K - k0, other=0.0)
            b = tl.load(w_ptrs, mask=rb[None, :] < k_bytes - k0 // 2, other=0)
        # (BLOCK_N, BLOCK_K) of OFF + code, low nibble first; integer ops only (see the module doc).
        lo = (b & 0xF).to(BITS) | MAGIC
        hi = (b >> 4).to(BITS) | MAGIC
        codes = tl.interleave(lo, hi).to(DQ, bitcast=True)
        # (BLOCK_N, TILE_GROUPS) scales and zeros: the groups this K tile touches.
        rg = k0 // GS + tl.arange(0, TILE_GROUPS)
        g_ok = rg[None, :] < G  # groups past K get scale 0: their codes weigh nothing
        s = tl.load(s_row[:, None] + rg[None, :], mask=g_ok, other=0.0).to(DQ)
        if HAS_ZEROS:
            z = tl.load(z_row[:, None] + rg[None, :], mask=g_ok, other=0).to(DQ) + OFF
        else:
            z = tl.full((BLOCK_N, TILE_GROUPS), 8.0 + OFF, DQ)
        if TILE_GROUPS == 1:
            w = (codes - z) * s
        else:
            w = (tl.reshape(codes, (BLOCK_N, TILE_GROUPS, GS)) - z[:, :, None]) * s[:, :, None]
            w = tl.reshape(w, (BLOCK_N, BLOCK_K))
        if INTERPRET:
            a = a.to(tl.float32)
            w = w.to(tl.float32)
        if SWAP_AB:
            acc = tl.dot(w, tl.trans(a), acc, input_precision=PRECISION)
        else:
            acc = tl.dot(a, tl.trans(w), acc, input_precision=PRECISION)
        x_ptrs += BLOCK_K
        w_ptrs += BLOCK_K // 2
    if SWAP_AB:
        acc = tl.trans(acc)

    mask_m = rm < M
    mask_n = rn < N
    out = acc
    if HAS_BIAS:
        out += tl.load(bias_ptr + rn, mask=mask_n, other=0.0).to(tl.float32)[None, :]
    out_ptrs = out_ptr + rm.to(tl.int64)[:, None] * stride_om + rn[None, :]
    tl.store(out_ptrs, out.to(out_ptr.dtype.element_ty), mask=mask_m[:, None] & mask_n[None, :])



@triton.jit
def _dequant_kernel(w_ptr, s_ptr, z_ptr, out_ptr, N, K, G, stride_wn, stride_on,
                    GS: tl.constexpr, HAS_ZEROS: tl.constexpr, EVEN_K: tl.constexpr,
                    BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    # Memory-bound, so plain conversions and fp32 arithmetic: (code - zero) * scale is exact in
    # fp32 and rounds once to the output dtype, like the reference dequantizer. BLOCK_K is a
    # multiple of GS, so a tile covers whole groups.
    TILE_GROUPS: tl.constexpr = BLOCK_K // GS
    rn = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    k0 = tl.program_id(1) * BLOCK_K
    rb = k0 // 2 + tl.arange(0, BLOCK_K // 2)
    rn64 = rn.to(tl.int64)
    n_ok = rn[:, None] < N
    # EVEN_K: no column masks, so the byte loads vectorize.
    if EVEN_K:
        b = tl.load(w_ptr + rn64[:, None] * stride_wn + rb[None, :], mask=n_ok, other=0)
    else:
        b = tl.load(w_ptr + rn64[:, None] * stride_wn + rb[None, :], mask=n_ok & (rb[None, :] < (K + 1) // 2),
                    other=0)
    codes = tl.interleave(b & 0xF, b >> 4).to(tl.float32)
    rg = k0 // GS + tl.arange(0, TILE_GROUPS)
    g_ok = n_ok & (rg[None, :] < G)
    s = tl.load(s_ptr + rn64[:, None] * G + rg[None, :], mask=g_ok, other=0.0).to(tl.float32)
    if HAS_ZEROS:
        z = tl.load(z_ptr + rn64[:, None] * G + rg[None, :], mask=g_ok, other=0).to(tl.float32)
    else:
        z = tl.full((BLOCK_N, TILE_GROUPS), 8.0, tl.float32)
    w = (tl.reshape(codes, (BLOCK_N, TILE_GROUPS, GS)) - z[:, :, None]) * s[:, :, None]
    w = tl.reshape(w, (BLOCK_N, BLOCK_K))
    rk = k0 + tl.arange(0, BLOCK_K)
    if EVEN_K:
        tl.store(out_ptr + rn64[:, None] * stride_on + rk[None, :], w.to(out_ptr.dtype.element_ty), mask=n_ok)
    else:
        tl.store(out_ptr + rn64[:, None] * stride_on + rk[None, :], w.to(out_ptr.dtype.element_ty),
                 mask=n_ok & (rk[None, :] < K))

# ----------------------------------------------------------------------------- configurations


def _cfg(bm, bn, bk, stages, warps, swap=False):
    return triton.Config({"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, "GROUP_M": 8, "SWAP_AB": swap},
                         num_stages=stages, num_warps=warps)


# Hopper/Ampere; the autotuner times each key's list on the card and keeps the fastest, so a
# list keeps the previous version's tiles for its M and adds a few; lists stay short since
# each config compiles on the first call (1-3 s). BLOCK_M is the token tile, BLOCK_N the
# weight rows. SWAP_AB tiles put the weight rows on the wgmma's M side and the tokens on its
# N side (up to 256). They keep BLOCK_N = 16 * num_warps: compiled for sm_90a without a GPU
# (Triton 3.9), those build the A operand in registers straight from the unpacked nibbles,
# while 32 rows per warp went through shared memory and ptxas serialized the wgmmas. M = 1024
# gets its own key with 256-token tiles: each token tile dequantizes the whole weight once more.
# Checked again for sm_90a: 256x128x128 s3 w8 swap (the M = 1024 winner on the H200) uses 254
# registers with Triton 3.6 (255 and a 32-byte spill with 3.9), while the BLOCK_K = 64 swapped
# tiles 256x128x64 w8 (about 195 registers) and 128x128x64 w8 (about 120) spill with neither,
# store nothing to shared memory for the A operand and draw no ptxas serialization warning
# (3.9); they are added from M = 128 up.
_OLD = {16: _cfg(16, 128, 128, 4, 4), 64: _cfg(64, 128, 64, 4, 4), "64w": _cfg(64, 256, 64, 3, 8),
        128: _cfg(128, 128, 64, 3, 8), "128w": _cfg(128, 256, 64, 3, 8)}
_K64 = {128: _cfg(128, 128, 64, 4, 8, True), 256: _cfg(256, 128, 64, 4, 8, True)}
_CONFIGS_BY_BUCKET = {
    16: [_OLD[16], _cfg(16, 64, 128, 4, 4, True), _cfg(16, 128, 128, 4, 8, True)],
    32: [_OLD[16], _cfg(32, 64, 128, 4, 4, True), _cfg(32, 128, 128, 4, 8, True)],
    64: [_OLD[16], _OLD[64], _cfg(64, 64, 128, 4, 4, True), _cfg(64, 128, 128, 4, 8, True)],
    128: [_OLD[64], _OLD["64w"], _OLD[128], _cfg(64, 128, 128, 4, 8, True), _cfg(128, 128, 128, 3, 8, True),
          _cfg(128, 64, 128, 4, 4, True), _K64[128]],
    256: [_OLD[64], _OLD["64w"], _OLD[128], _OLD["128w"], _cfg(128, 128, 128, 3, 8, True),
          _cfg(256, 128, 128, 3, 8, True), _K64[128], _K64[256]],
    512: [_OLD[128], _OLD["128w"], _cfg(128, 128, 128, 3, 8, True), _cfg(256, 128, 128, 3, 8, True), _K64[256]],
    1024: [_OLD["128w"], _cfg(256, 128, 64, 3, 8), _cfg(128, 128, 128, 3, 8, True), _cfg(256, 128, 128, 3, 8, True),
           _cfg(128, 64, 128, 4, 4, True), _K64[256], _cfg(256, 128, 64, 3, 8, True)],
}


def _config_id(c):
    return tuple(sorted(c.kwargs.items())), c.num_warps, c.num_stages


_CONFIGS = list({_config_id(c): c for cs in _CONFIGS_BY_BUCKET.values() for c in cs}.values())

# Small tiles so the tests' odd shapes cross tile and K-tail edges; BLOCK_K 64 takes both
# scale paths (two groups of 32 per tile, or part of one group). The interpreter always
# runs it (with SWAP_AB chosen by the caller or the M rule of w4a16_linear); tests on a GPU
# pass it as `config` to skip autotuning every small shape.
SMALL_CONFIG = {"BLOCK_M": 16, "BLOCK_N": 16, "BLOCK_K": 64, "GROUP_M": 2}


def _m_bucket(M):
    return min(max(16, triton.next_power_of_2(M)), 1024)


def _prune_by_m(configs, named_args, **kwargs):
    # The configs listed for this M bucket: tuning stays short.
    wanted = {_config_id(c) for c in _CONFIGS_BY_BUCKET[named_args["M_BUCKET"]]}
    kept = [c for c in configs if _config_id(c) in wanted]
    return kept or configs[:1]


_even_k = triton.heuristics({"EVEN_K": lambda args: args["K"] % args["BLOCK_K"] == 0})

_w4a16_fixed = _even_k(_w4a16_kernel)
_w4a16 = _w4a16_fixed if _INTERPRET else autotune(configs=_CONFIGS, key=["M_BUCKET", "N", "K", "GS"],
                     prune_configs_by={"early_config_prune": _prune_by_m})(_even_k(_w4a16_kernel))


# ----------------------------------------------------------------------------- launcher


def _check_weight(op, packed, scales, zeros, bias, group_size, K, device, on="x"):
    if group_size not in GROUP_SIZES:
        raise ValueError(f"{op}: group_size must be one of {GROUP_SIZES}, got {group_size}")
    if packed.dim() != 2 or packed.dtype != torch.uint8 or packed.shape[1] != (K + 1) // 2:
        raise TypeError(f"{op}: packed must be uint8 of shape (N, {(K + 1) // 2}) for K={K}, "
                        f"got {packed.dtype} {tuple(packed.shape)}")
    N, G = packed.shape[0], -(-K // group_size)
    if scales.dtype != torch.float16 or scales.shape != (N, G):
        raise TypeError(f"{op}: scales must be float16 of shape ({N}, {G}), got {scales.dtype} {tuple(scales.shape)}")
    if zeros is not None and (zeros.dtype != torch.uint8 or zeros.shape != (N, G)):
        raise TypeError(f"{op}: zeros must be None or uint8 of shape ({N}, {G}), got {zeros.dtype} "
                        f"{tuple(zeros.shape)}")
    if bias is not None and (bias.dtype not in _FLOAT_DTYPES or bias.shape != (N,)):
        raise TypeError(f"{op}: bias must be a float tensor of shape ({N},), got {bias.dtype} {tuple(bias.shape)}")
    for name, t in (("packed", packed), ("scales", scales), ("zeros", zeros), ("bias", bias)):
        if t is not None and t.device != device:
            raise ValueError(f"{op}: {name} is on {t.device} but {on} is on {device}")
    if device.type != "cuda" and not _INTERPRET:
        raise ValueError(f"{op}: needs CUDA tensors (or TRITON_INTERPRET=1), got {device}")


def w4a16_linear(x: torch.Tensor, packed: torch.Tensor, scales: torch.Tensor, zeros, bias,
                 group_size: int, in_features: int, config: dict | None = None) -> torch.Tensor:
    """W4A16: x (M, K) bfloat16/float16/float32 -> (M, N) x.dtype, out = x @ W.T + bias.

    packed (N, ceil(K/2)) uint8 (unit column stride), scales (N, G) float16, zeros (N, G)
    uint8 or None (zero point 8), bias (N,) float or None, G = ceil(K / group_size).
    config: a fixed tile (BLOCK_M, BLOCK_N, BLOCK_K, GROUP_M; SWAP_AB, num_warps, num_stages
    optional) instead of the autotuned choice; under the interpreter it may only set SWAP_AB
    (default: swapped for M <= 16, so the tests' shapes take both orientations).
    """
    op = "triton w4a16_linear"
    if x.dim() != 2:
        raise ValueError(f"{op}: x must be 2-D (M, K), got shape {tuple(x.shape)}")
    if x.dtype not in _FLOAT_DTYPES:
        raise TypeError(f"{op}: x must be one of {_FLOAT_DTYPES}, got {x.dtype}")
    M, K = x.shape
    if K != in_features:
        raise ValueError(f"{op}: x has K={K} features but the weight has in_features={in_features}")
    _check_weight(op, packed, scales, zeros, bias, group_size, K, x.device)
    N, G = packed.shape[0], -(-K // group_size)

    x = x if x.stride(1) == 1 else x.contiguous()
    packed = packed if packed.stride(1) == 1 else packed.contiguous()
    scales = scales.contiguous()
    zeros = zeros.contiguous() if zeros is not None else None
    bias = bias.contiguous() if bias is not None else None
    out = torch.empty((M, N), dtype=x.dtype, device=x.device)
    if M == 0 or N == 0:
        return out
    if _INTERPRET:
        kernel, meta = _w4a16_fixed, {**SMALL_CONFIG, "SWAP_AB": (config or {}).get("SWAP_AB", M <= 16)}
    elif config is None:
        kernel, meta = _w4a16, {}
    else:
        kernel, meta = _w4a16_fixed, {"SWAP_AB": False, **config}
    grid = lambda m: (triton.cdiv(M, m["BLOCK_M"]) * triton.cdiv(N, m["BLOCK_N"]),)  # noqa: E731
    kernel[grid](x, packed, scales, zeros if zeros is not None else packed, bias if bias is not None else scales, out,
                 M, N, K, G, x.stride(0), packed.stride(0), out.stride(0), _m_bucket(M),
                 GS=group_size, HAS_ZEROS=zeros is not None, HAS_BIAS=bias is not None, INTERPRET=_INTERPRET,
                 PRECISION="tf32x3" if x.dtype == torch.float32 else "tf32", **meta)
    return out



def dequantize_int4(packed: torch.Tensor, scales: torch.Tensor, zeros, group_size: int, in_features: int,
                    dtype: torch.dtype = torch.bfloat16) -> torch.Tensor:
    """The weight as a dense (N, K) `dtype` tensor, equal to pycomp.formats.int4.dequantize_int4 (fp32
    arithmetic, one rounding to `dtype`). Tensors as in w4a16_linear."""
    op = "triton dequantize_int4"
    if dtype not in _FLOAT_DTYPES:
        raise TypeError(f"{op}: dtype must be one of {_FLOAT_DTYPES}, got {dtype}")
    _check_weight(op, packed, scales, zeros, None, group_size, in_features, packed.device, on="packed")
    N, K, G = packed.shape[0], in_features, -(-in_features // group_size)
    packed = packed if packed.stride(1) == 1 else packed.contiguous()
    out = torch.empty((N, K), dtype=dtype, device=packed.device)
    if N == 0 or K == 0:
        return out
    # Interpreter: 64-column tiles (two groups of 32, or part of none: BLOCK_K >= GS always).
    block_k = max(64 if _INTERPRET else 256, group_size)
    block_n = 16 if _INTERPRET else 32
    zeros = zeros.contiguous() if zeros is not None else None
    grid = (triton.cdiv(N, block_n), triton.cdiv(K, block_k))
    _dequant_kernel[grid](packed, scales.contiguous(), zeros if zeros is not None else packed, out,
                          N, K, G, packed.stride(0), out.stride(0), GS=group_size, HAS_ZEROS=zeros is not None,
                          EVEN_K=K % block_k == 0, BLOCK_N=block_n, BLOCK_K=block_k, num_warps=4)
    return out


def w4a16_linear_dequant(x: torch.Tensor, packed: torch.Tensor, scales: torch.Tensor, zeros, bias,
                         group_size: int, in_features: int) -> torch.Tensor:
    """W4A16 for large M: dequantize the whole weight to x.dtype (dequantize_int4), then the dense
    F.linear (cuBLAS on a GPU). Costs one (N, K) x.dtype temporary per call; pays off where the GEMM
    dominates the extra weight write and read (large M). Arguments as in w4a16_linear."""
    op = "triton w4a16_linear_dequant"
    if x.dim() != 2:
        raise ValueError(f"{op}: x must be 2-D (M, K), got shape {tuple(x.shape)}")
    if x.dtype not in _FLOAT_DTYPES:
        raise TypeError(f"{op}: x must be one of {_FLOAT_DTYPES}, got {x.dtype}")
    if x.shape[1] != in_features:
        raise ValueError(f"{op}: x has K={x.shape[1]} features but the weight has in_features={in_features}")
    _check_weight(op, packed, scales, zeros, bias, group_size, in_features, x.device)
    w = dequantize_int4(packed, scales, zeros, group_size, in_features, x.dtype)
    return torch.nn.functional.linear(x, w, bias.to(x.dtype) if bias is not None else None)
