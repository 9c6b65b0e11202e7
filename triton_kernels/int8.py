"""Triton int8 kernels: per-token activation quantization, W8A8 GEMM with a fused
dequantizing epilogue, and W8A16 (int8 weights widened in registers to the
activations' bf16/fp16, or fp32 through 3xTF32).

Weights are int8 (N, K) row-major with one fp32 scale per output row, the same
layout as the CPU and CUDA kernels: W[n, k] ~ qweight[n, k] * wscale[n].

On a GPU the GEMMs are autotuned (key: M bucket, N, K); the first call of each key
times the configs, so warm up before capturing a CUDA graph. Under TRITON_INTERPRET=1
(CPU tensors, used by the tests) each kernel runs one small fixed configuration,
since autotuning needs a GPU to time; both paths share the same kernel bodies.

Importing this module raises ImportError when triton is missing.
"""
import os

import torch
import triton
import triton.language as tl
from triton.language.extra import libdevice
from triton.language.extra.cuda import gdc_launch_dependents, gdc_wait

from ._autotune import autotune

# Read at import, like @triton.jit does: "1" runs kernels on CPU tensors in the interpreter.
_INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"

_HAS_DIV_RN = tl.constexpr(hasattr(tl.math, "div_rn"))

_FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def is_available() -> bool:
    """True when these kernels can run: a CUDA device, or the Triton interpreter on CPU tensors."""
    return _INTERPRET or torch.cuda.is_available()


# ----------------------------------------------------------------------------- device helpers


@triton.jit
def _div_rn(a, b):
    # Triton's `/` on fp32 lowers to an approximate division on NVIDIA GPUs; the
    # scales must match the reference bit for bit, so divide with IEEE rounding.
    if _HAS_DIV_RN:
        return tl.math.div_rn(a, b)
    else:
        return tl.fdiv(a, b, ieee_rounding=True)


@triton.jit
def _rint(y, INTERPRET: tl.constexpr):
    # Round half to even. libdevice has no interpreter implementation, so the
    # interpreter adds and subtracts 1.5 * 2**23 (exact for |y| < 2**22) in fp32.
    # On the GPU that trick is unsafe: fp fusion may turn x * inv + C into one
    # FMA and round the unrounded product, so use cvt.rni via libdevice.
    if INTERPRET:
        return (y + 12582912.0) - 12582912.0
    else:
        return libdevice.rint(y)


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


# ----------------------------------------------------------------------------- kernels


@triton.jit
def _quantize_row(x, inv, INTERPRET: tl.constexpr):
    q = _rint(x * inv, INTERPRET)
    return tl.minimum(tl.maximum(q, -127.0), 127.0).to(tl.int8)


@triton.jit
def _quantize_per_token_kernel(x_ptr, q_ptr, scale_ptr, K, stride_xm, stride_qm,
                               BLOCK_K: tl.constexpr, ONE_TILE: tl.constexpr, INTERPRET: tl.constexpr,
                               PDL: tl.constexpr = False):
    # ONE_TILE (K <= BLOCK_K): the row stays in registers between its amax and its rounding,
    # so x is read from memory once; longer rows are read twice.
    if PDL:  # let the GEMM that follows (launched with launch_pdl) start its prologue now
        gdc_launch_dependents()
    row = tl.program_id(0).to(tl.int64)
    x_row = x_ptr + row * stride_xm
    q_row = q_ptr + row * stride_qm
    cols = tl.arange(0, BLOCK_K)

    if ONE_TILE:
        x = tl.load(x_row + cols, mask=cols < K, other=0.0).to(tl.float32)
        amax_row = tl.max(tl.abs(x), axis=0)
    else:
        amax = tl.zeros([BLOCK_K], dtype=tl.float32)
        for k0 in range(0, K, BLOCK_K):
            x = tl.load(x_row + k0 + cols, mask=k0 + cols < K, other=0.0).to(tl.float32)
            amax = tl.maximum(amax, tl.abs(x))
        amax_row = tl.max(amax, axis=0)
    inv = tl.where(amax_row > 0, _div_rn(127.0, tl.where(amax_row > 0, amax_row, 1.0)), 0.0)
    tl.store(scale_ptr + row, _div_rn(amax_row, 127.0))

    if ONE_TILE:
        tl.store(q_row + cols, _quantize_row(x, inv, INTERPRET), mask=cols < K)
    else:
        for k0 in range(0, K, BLOCK_K):
            mask = k0 + cols < K
            x = tl.load(x_row + k0 + cols, mask=mask, other=0.0).to(tl.float32)
            tl.store(q_row + k0 + cols, _quantize_row(x, inv, INTERPRET), mask=mask)


@triton.jit
def _int8_gemm_kernel(a_ptr, ascale_ptr, w_ptr, wscale_ptr, bias_ptr, out_ptr,
                      M, N, K, stride_am, stride_wn, stride_om, M_BUCKET,
                      HAS_BIAS: tl.constexpr, EVEN_K: tl.constexpr,
                      BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                      GROUP_M: tl.constexpr):
    # M_BUCKET is only an autotune key.
    pid_m, pid_n = _tile_ids(M, N, BLOCK_M, BLOCK_N, GROUP_M)
    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    rk = tl.arange(0, BLOCK_K)
    # Out-of-range rows/columns wrap onto valid ones (their results are never
    # stored), so only the K tail needs load masks. int64: M*K may exceed 2**31.
    a_ptrs = a_ptr + (rm % M).to(tl.int64)[:, None] * stride_am + rk[None, :]
    # (BLOCK_K, BLOCK_N) tile of W^T, K contiguous: the K-major operand int8 MMA wants.
    w_ptrs = w_ptr + (rn % N).to(tl.int64)[None, :] * stride_wn + rk[:, None]

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.int32)
    for kb in range(0, tl.cdiv(K, BLOCK_K)):
        if EVEN_K:
            a = tl.load(a_ptrs)
            b = tl.load(w_ptrs)
        else:
            k_left = K - kb * BLOCK_K
            a = tl.load(a_ptrs, mask=rk[None, :] < k_left, other=0)
            b = tl.load(w_ptrs, mask=rk[:, None] < k_left, other=0)
        acc = tl.dot(a, b, acc, out_dtype=tl.int32)
        a_ptrs += BLOCK_K
        w_ptrs += BLOCK_K

    mask_m = rm < M
    mask_n = rn < N
    a_scale = tl.load(ascale_ptr + rm, mask=mask_m, other=0.0)
    w_scale = tl.load(wscale_ptr + rn, mask=mask_n, other=0.0)
    out = acc.to(tl.float32) * a_scale[:, None] * w_scale[None, :]
    if HAS_BIAS:
        out += tl.load(bias_ptr + rn, mask=mask_n, other=0.0).to(tl.float32)[None, :]
    out_ptrs = out_ptr + rm.to(tl.int64)[:, None] * stride_om + rn[None, :]
    tl.store(out_ptrs, out.to(out_ptr.dtype.element_ty), mask=mask_m[:, None] & mask_n[None, :])


@triton.jit
def _w8a16_kernel(x_ptr, w_ptr, wscale_ptr, bias_ptr, out_ptr,
                  M, N, K, stride_xm, stride_wn, stride_om, M_BUCKET,
                  HAS_BIAS: tl.constexpr, EVEN_K: tl.constexpr, INTERPRET: tl.constexpr,
                  PRECISION: tl.constexpr, SWAP_AB: tl.constexpr,
                  BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                  GROUP_M: tl.constexpr):
    # SWAP_AB computes out^T = W x^T: the weight tile becomes the MMA's M side
    # (>= 64 rows) and the few tokens its N side, which suits small M on Hopper.
    pid_m, pid_n = _tile_ids(M, N, BLOCK_M, BLOCK_N, GROUP_M)
    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    rk = tl.arange(0, BLOCK_K)
    x_ptrs = x_ptr + (rm % M).to(tl.int64)[:, None] * stride_xm + rk[None, :]
    w_ptrs = w_ptr + (rn % N).to(tl.int64)[:, None] * stride_wn + rk[None, :]

    if SWAP_AB:
        acc = tl.zeros((BLOCK_N, BLOCK_M), dtype=tl.float32)
    else:
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for kb in range(0, tl.cdiv(K, BLOCK_K)):
        if EVEN_K:
            a = tl.load(x_ptrs)
            w = tl.load(w_ptrs)
        else:
            k_left = K - kb * BLOCK_K
            a = tl.load(x_ptrs, mask=rk[None, :] < k_left, other=0.0)
            w = tl.load(w_ptrs, mask=rk[None, :] < k_left, other=0)
        if INTERPRET:
            # The interpreter stores bf16 as raw uint16 bits, and both its tl.dot and
            # its int8 -> bf16 cast treat them as integers; fp32 holds the operands
            # and their products exactly, so widen to fp32 there instead.
            a = a.to(tl.float32)
            w = w.to(tl.float32)
        else:
            w = w.to(x_ptr.dtype.element_ty)  # exact: |q| <= 127 fits bf16, fp16 and tf32
        if SWAP_AB:
            acc = tl.dot(w, tl.trans(a), acc, input_precision=PRECISION)
        else:
            acc = tl.dot(a, tl.trans(w), acc, input_precision=PRECISION)
        x_ptrs += BLOCK_K
        w_ptrs += BLOCK_K
    if SWAP_AB:
        acc = tl.trans(acc)

    mask_m = rm < M
    mask_n = rn < N
    w_scale = tl.load(wscale_ptr + rn, mask=mask_n, other=0.0)
    out = acc * w_scale[None, :]
    if HAS_BIAS:
        out += tl.load(bias_ptr + rn, mask=mask_n, other=0.0).to(tl.float32)[None, :]
    out_ptrs = out_ptr + rm.to(tl.int64)[:, None] * stride_om + rn[None, :]
    tl.store(out_ptrs, out.to(out_ptr.dtype.element_ty), mask=mask_m[:, None] & mask_n[None, :])


@triton.jit
def _tma_tile(tile, M, N, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, GROUP_M: tl.constexpr):
    # Grouped order over a persistent walk: GROUP_M row blocks share each weight tile while it is in L2.
    num_pid_m = tl.cdiv(M, BLOCK_M)
    num_pid_in_group = GROUP_M * tl.cdiv(N, BLOCK_N)
    first_pid_m = (tile // num_pid_in_group) * GROUP_M
    group_size_m = min(num_pid_m - first_pid_m, GROUP_M)
    pid_m = first_pid_m + ((tile % num_pid_in_group) % group_size_m)
    pid_n = (tile % num_pid_in_group) // group_size_m
    return pid_m * BLOCK_M, pid_n * BLOCK_N


@triton.jit
def _tma_gemm_tiles(a_desc, ascale_ptr, w_desc, wscale_ptr, bias_ptr, out_desc, M, N, K, PROGRAMS,
                    HAS_BIAS: tl.constexpr, FLATTEN: tl.constexpr,
                    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr):
    # Persistent: PROGRAMS programs; each walks the tiles in grouped order, so the
    # next tile's TMA loads overlap this tile's epilogue once the loops are flattened. TMA
    # zero-fills the M, N and K tails (no masks, no wrapped rows), and the output goes out
    # through a descriptor in two (BLOCK_M, BLOCK_N / 2) halves, which halves the epilogue's
    # shared-memory buffer.
    num_tiles = tl.cdiv(M, BLOCK_M) * tl.cdiv(N, BLOCK_N)
    k_tiles = tl.cdiv(K, BLOCK_K)
    HALF: tl.constexpr = BLOCK_N // 2
    for tile in tl.range(tl.program_id(0), num_tiles, PROGRAMS, flatten=FLATTEN):
        off_m, off_n = _tma_tile(tile, M, N, BLOCK_M, BLOCK_N, GROUP_M)

        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.int32)
        for kb in range(k_tiles):
            a = a_desc.load([off_m, kb * BLOCK_K])
            b = w_desc.load([off_n, kb * BLOCK_K])
            acc = tl.dot(a, b.T, acc, out_dtype=tl.int32)

        rm = off_m + tl.arange(0, BLOCK_M)
        a_scale = tl.load(ascale_ptr + rm, mask=rm < M, other=0.0)
        out = acc.to(tl.float32) * a_scale[:, None]
        out0, out1 = tl.split(tl.permute(tl.reshape(out, (BLOCK_M, 2, HALF)), (0, 2, 1)))
        rn0 = off_n + tl.arange(0, HALF)
        rn1 = rn0 + HALF
        out0 = out0 * tl.load(wscale_ptr + rn0, mask=rn0 < N, other=0.0)[None, :]
        out1 = out1 * tl.load(wscale_ptr + rn1, mask=rn1 < N, other=0.0)[None, :]
        if HAS_BIAS:
            out0 += tl.load(bias_ptr + rn0, mask=rn0 < N, other=0.0).to(tl.float32)[None, :]
            out1 += tl.load(bias_ptr + rn1, mask=rn1 < N, other=0.0).to(tl.float32)[None, :]
        out_desc.store([off_m, off_n], out0.to(out_desc.dtype))
        out_desc.store([off_m, off_n + HALF], out1.to(out_desc.dtype))


@triton.jit
def _prefetch_first_weights(w_ptr, stride_wn, M, N, K, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                            GROUP_M: tl.constexpr, PREFETCH_K: tl.constexpr):
    # L2 prefetch of the first PREFETCH_K bytes of each weight row of this program's first tile,
    # issued while the activations are not ready yet: the pipeline's first TMA loads then hit L2
    # instead of waiting on cold HBM. Addresses are clamped into the tensor (prefetch has no mask).
    off_m, off_n = _tma_tile(tl.program_id(0), M, N, BLOCK_M, BLOCK_N, GROUP_M)
    rows = tl.minimum(off_n + tl.arange(0, BLOCK_N), N - 1).to(tl.int64)
    cols = tl.minimum(tl.arange(0, PREFETCH_K // 128) * 128, K - 1)
    ptrs = w_ptr + rows[:, None] * stride_wn + cols[None, :]
    tl.inline_asm_elementwise("prefetch.global.L2 [$1]; // dummy $0", "=r,l", [ptrs], dtype=tl.int32,
                              is_pure=False, pack=1)


@triton.jit
def _int8_gemm_tma_kernel(a_desc, ascale_ptr, w_ptr, w_desc, wscale_ptr, bias_ptr, out_desc,
                          M, N, K, stride_wn, M_BUCKET, NUM_SMS,
                          HAS_BIAS: tl.constexpr, FLATTEN: tl.constexpr, PDL: tl.constexpr,
                          BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                          GROUP_M: tl.constexpr, CTAS_PER_SM: tl.constexpr):
    # M_BUCKET is only an autotune key. PDL (variant 3; launched with launch_pdl behind the
    # quantization kernel): this program starts while the quantization finishes, prefetches its
    # first weights into L2 (they do not depend on it), then waits for it before touching xq.
    # CTAS_PER_SM = 2: up to twice NUM_SMS programs, two per SM (see _INT8_TMA2_BY_BUCKET).
    if PDL:
        _prefetch_first_weights(w_ptr, stride_wn, M, N, K, BLOCK_M, BLOCK_N, GROUP_M, 4 * BLOCK_K)
        gdc_wait()
    # The grid is min(NUM_SMS * CTAS_PER_SM, tiles): with fewer tiles each program takes one.
    _tma_gemm_tiles(a_desc, ascale_ptr, w_desc, wscale_ptr, bias_ptr, out_desc, M, N, K, NUM_SMS * CTAS_PER_SM,
                    HAS_BIAS, FLATTEN, BLOCK_M, BLOCK_N, BLOCK_K, GROUP_M)


@triton.jit
def _quantize_rows(x_ptr, q_ptr, scale_ptr, M, K, stride_xm, first, step,
                   QROWS: tl.constexpr, QBLOCK_K: tl.constexpr, INTERPRET: tl.constexpr):
    # Rows [r0, r0 + QROWS) for r0 = first, first + step, ...: whole rows (K <= QBLOCK_K) in
    # registers, QROWS at a time so that each program has many loads in flight. Same arithmetic
    # as _quantize_per_token_kernel, so the result is bit-identical. q has row stride K.
    rows = tl.arange(0, QROWS)
    cols = tl.arange(0, QBLOCK_K)
    for r0 in range(first, M, step):
        r = r0 + rows
        mask = (r < M)[:, None] & (cols < K)[None, :]
        x = tl.load(x_ptr + r.to(tl.int64)[:, None] * stride_xm + cols[None, :], mask=mask, other=0.0)
        x = x.to(tl.float32)
        amax = tl.max(tl.abs(x), axis=1)
        inv = tl.where(amax > 0, _div_rn(127.0, tl.where(amax > 0, amax, 1.0)), 0.0)
        tl.store(scale_ptr + r, _div_rn(amax, 127.0), mask=r < M)
        tl.store(q_ptr + r.to(tl.int64)[:, None] * K + cols[None, :], _quantize_row(x, inv[:, None], INTERPRET),
                 mask=mask)


@triton.jit
def _quantize_rows_kernel(x_ptr, q_ptr, scale_ptr, M, K, stride_xm, QROWS: tl.constexpr, QBLOCK_K: tl.constexpr,
                          INTERPRET: tl.constexpr, PDL: tl.constexpr):
    # Quantization variant 1: QROWS whole rows a program (see quantize_per_token_int8).
    if PDL:  # let the GEMM that follows (launched with launch_pdl) start its prologue now
        gdc_launch_dependents()
    _quantize_rows(x_ptr, q_ptr, scale_ptr, M, K, stride_xm, tl.program_id(0) * QROWS, tl.num_programs(0) * QROWS,
                   QROWS, QBLOCK_K, INTERPRET)


@triton.jit
def _fence_proxy_async():
    # Orders generic-proxy global stores and acquires against TMA (async-proxy) reads.
    tl.inline_asm_elementwise("fence.proxy.async.global; // dummy $0", "=r", [], dtype=tl.int32,
                              is_pure=False, pack=1)


# About 0.05-0.1 s of polling; a legitimate wait is microseconds (the slowest program's share of
# the quantization, or a late start behind the previous kernel's last programs).
_SPIN_LIMIT = tl.constexpr(1 << 16)


@triton.jit
def _grid_barrier(counter_ptr, NUM_PROGS, INTERPRET: tl.constexpr):
    # Every program of the (cooperative, all co-resident) grid waits here for all the others.
    # The int64 counter only ever grows: a launch's NUM_PROGS arrivals take it from one multiple
    # of NUM_PROGS to the next, so it needs no reset between launches or CUDA-graph replays.
    # The spin is bounded so that a broken invariant can never hang the GPU; returns False
    # when it gave up.
    if not INTERPRET:
        _fence_proxy_async()
    tl.debug_barrier()
    old = tl.atomic_add(counter_ptr, 1, sem="acq_rel", scope="gpu")
    target = (old // NUM_PROGS + 1) * NUM_PROGS
    cur = old + 1
    spins = 0
    while (cur < target) & (spins < _SPIN_LIMIT):
        cur = tl.atomic_add(counter_ptr, 0, sem="acquire", scope="gpu")
        spins += 1
    if not INTERPRET:
        _fence_proxy_async()
    tl.debug_barrier()
    return cur >= target


@triton.jit
def _int8_linear_fused_kernel(x_ptr, q_ptr, ascale_ptr, counter_ptr, a_desc, w_ptr, w_desc, wscale_ptr, bias_ptr,
                              out_desc, M, N, K, stride_xm, stride_wn, M_BUCKET, NUM_SMS,
                              QROWS: tl.constexpr, QBLOCK_K: tl.constexpr, QUANT: tl.constexpr,
                              BARRIER: tl.constexpr, GEMM: tl.constexpr, INTERPRET: tl.constexpr,
                              HAS_BIAS: tl.constexpr, FLATTEN: tl.constexpr,
                              BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                              GROUP_M: tl.constexpr, CTAS_PER_SM: tl.constexpr):
    # Variant 2: the per-token quantization and the persistent TMA GEMM in one launch of exactly
    # NUM_SMS * CTAS_PER_SM programs. Each program quantizes its share of the rows into q (QROWS
    # at a time, round robin; QROWS is sized for one program per SM, so two a SM take half),
    # then all meet at a grid barrier, then walk the GEMM tiles; while they quantize, each
    # program's first weight tile is being prefetched into L2. The interpreter runs programs one
    # after another, so there the phases run as separate launches (QUANT, then GEMM) or a
    # one-program launch crosses the barrier.
    programs = NUM_SMS * CTAS_PER_SM
    QR: tl.constexpr = max(QROWS // CTAS_PER_SM, 1)
    if GEMM and not INTERPRET:
        _prefetch_first_weights(w_ptr, stride_wn, M, N, K, BLOCK_M, BLOCK_N, GROUP_M, 4 * BLOCK_K)
    if QUANT:
        _quantize_rows(x_ptr, q_ptr, ascale_ptr, M, K, stride_xm, tl.program_id(0) * QR, programs * QR,
                       QR, QBLOCK_K, INTERPRET)
    if BARRIER:  # one counter per grid size (see _barrier_counter)
        if not _grid_barrier(counter_ptr + CTAS_PER_SM - 1, programs, INTERPRET):
            # Gave up waiting: poison every row's scale so the output is NaN, never silently wrong.
            for r0 in range(0, M, 1024):
                r = r0 + tl.arange(0, 1024)
                tl.store(ascale_ptr + r, float("nan"), mask=r < M)
    if GEMM:
        _tma_gemm_tiles(a_desc, ascale_ptr, w_desc, wscale_ptr, bias_ptr, out_desc, M, N, K, programs,
                        HAS_BIAS, FLATTEN, BLOCK_M, BLOCK_N, BLOCK_K, GROUP_M)


# ----------------------------------------------------------------------------- configurations


def _cfg(bm, bn, bk, stages, warps, **extra):
    return triton.Config({"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, "GROUP_M": 8, **extra},
                         num_stages=stages, num_warps=warps)


# Hopper/Ampere. Each M bucket gets a short explicit list (every config compiles on the
# first call of a key, 1-3 s, and the autotuner keeps the fastest on the card); a list keeps
# the tiles the previous BLOCK_M-window rule gave that M (W8A16 drops a few where the list
# grew long) and adds a few. M = 1024 gets its own key.
# int8 MMA wants BLOCK_K >= 64 and 128-wide tiles at large M; at M >= 512 4-stage variants
# of the two large tiles (48 KB a stage) are added.
_G = {"128x256": _cfg(128, 256, 128, 3, 8), "256x128": _cfg(256, 128, 128, 3, 8), "128x128": _cfg(128, 128, 128, 4, 8),
      "128x128k64": _cfg(128, 128, 64, 4, 4), "64": _cfg(64, 128, 128, 4, 4), "32": _cfg(32, 128, 128, 4, 4),
      "16": _cfg(16, 128, 128, 4, 4), "16k256": _cfg(16, 64, 256, 4, 4)}
_INT8_GEMM_BY_BUCKET = {
    16: [_G["16"], _G["16k256"]],
    32: [_G["16"], _G["16k256"], _G["32"]],
    64: [_G["16"], _G["16k256"], _G["32"], _G["64"]],
    128: [_G["32"], _G["64"], _G["128x256"], _G["128x128"], _G["128x128k64"]],
    256: [_G["64"], _G["128x256"], _G["256x128"], _G["128x128"], _G["128x128k64"]],
    512: [_G["128x256"], _G["256x128"], _G["128x128"], _G["128x128k64"], _cfg(128, 256, 128, 4, 8)],
    1024: [_G["128x256"], _G["256x128"], _G["128x128"], _cfg(128, 256, 128, 4, 8), _cfg(256, 128, 128, 4, 8)],
}

# Small M is weight-bandwidth-bound: deep K pipelines, narrow N tiles for enough CTAs.
# SWAP_AB (out^T = W x^T) makes the widened weight tile the wgmma's A operand, read from
# registers; unswapped, the widened tile is a B operand that must be stored to shared
# memory first. Swapped tiles for M >= 128 were added for that reason; compiled for sm_90a
# without a GPU (Triton 3.9), swapped BLOCK_K = 64 tiles with 8 warps and BLOCK_K = 128
# tiles with 4 warps keep the A operand in registers with no serialization warning from
# ptxas (BLOCK_K = 128 with 8 warps, or 32 weight rows per warp, got one), and none spills.
_S = {"16": _cfg(16, 64, 128, 4, 4, SWAP_AB=True), "16k256": _cfg(16, 64, 256, 4, 4, SWAP_AB=True),
      "16x128": _cfg(16, 128, 128, 4, 4, SWAP_AB=True), "32": _cfg(32, 128, 128, 4, 4, SWAP_AB=True),
      "64": _cfg(64, 128, 64, 4, 4, SWAP_AB=True), "n16": _cfg(16, 64, 256, 3, 4, SWAP_AB=False),
      "n64": _cfg(64, 128, 64, 4, 4, SWAP_AB=False), "n128": _cfg(128, 128, 64, 4, 8, SWAP_AB=False),
      "n128w": _cfg(128, 256, 64, 3, 8, SWAP_AB=False)}
_W8A16_BY_BUCKET = {
    16: [_S["16"], _S["16k256"], _S["16x128"], _S["n16"]],
    32: [_S["16"], _S["16x128"], _S["32"], _S["n16"]],
    64: [_S["16x128"], _S["32"], _S["64"], _S["n64"]],
    128: [_S["32"], _S["64"], _S["n64"], _S["n128"], _S["n128w"], _cfg(128, 128, 64, 4, 8, SWAP_AB=True),
          _cfg(128, 64, 128, 4, 4, SWAP_AB=True)],
    256: [_S["64"], _S["n128"], _S["n128w"], _cfg(128, 128, 64, 4, 8, SWAP_AB=True),
          _cfg(256, 128, 64, 4, 8, SWAP_AB=True)],
    512: [_S["n128"], _S["n128w"], _cfg(128, 128, 64, 4, 8, SWAP_AB=True), _cfg(256, 128, 64, 4, 8, SWAP_AB=True),
          _cfg(128, 64, 128, 4, 4, SWAP_AB=True)],
    1024: [_S["n128"], _S["n128w"], _cfg(128, 128, 64, 4, 8, SWAP_AB=True), _cfg(256, 128, 64, 4, 8, SWAP_AB=True),
           _cfg(128, 64, 128, 4, 4, SWAP_AB=True)],
}

# TMA persistent int8 GEMM (variant 1 of int8_gemm_dequant). BLOCK_K = 128 (one 128-byte
# swizzled row of int8 per TMA box row) or 256 (Triton splits the box in two). Compiled for
# sm_90a with Triton 3.6 and 3.9: TMA loads with mbarriers, async s8 wgmma (m64n128k32 /
# m64n64k32) with one group in flight, up to 254 registers and no spills. Shared memory:
# 128x256x128 s3 176 KB, s4 224 KB; 128x256x256 s2 224 KB; 128x128x256 s3 208 KB (Hopper
# allows 227 KB). 64-token tiles (one warpgroup) give small M more programs than SMs.
def _tma_block_shapes(nargs):
    bm, bn, bk = nargs["BLOCK_M"], nargs["BLOCK_N"], nargs["BLOCK_K"]
    nargs["a_desc"].block_shape = [bm, bk]
    nargs["w_desc"].block_shape = [bn, bk]
    nargs["out_desc"].block_shape = [bm, bn // 2]


def _tma_cfg(bm, bn, stages, warps=8, bk=128, ctas_per_sm=1):
    return triton.Config({"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, "GROUP_M": 8, "FLATTEN": True,
                          "CTAS_PER_SM": ctas_per_sm},
                         num_stages=stages, num_warps=warps, pre_hook=_tma_block_shapes)


_T = {"64x64": _tma_cfg(64, 64, 6, 4), "64x128": _tma_cfg(64, 128, 4, 4), "128x128": _tma_cfg(128, 128, 4),
      "128x256": _tma_cfg(128, 256, 3), "256x128": _tma_cfg(256, 128, 3)}
_INT8_TMA_BY_BUCKET = {
    16: [_T["64x64"], _T["64x128"]],
    32: [_T["64x64"], _T["64x128"]],
    64: [_T["64x64"], _T["64x128"]],
    128: [_T["64x64"], _T["64x128"], _T["128x128"]],
    256: [_T["64x128"], _T["128x128"], _T["128x256"]],
    512: [_T["128x128"], _T["128x256"], _T["256x128"]],
    1024: [_T["128x256"], _T["256x128"], _tma_cfg(128, 256, 4), _tma_cfg(128, 256, 2, bk=256),
           _tma_cfg(128, 128, 3, bk=256)],
}

# Variants 3 and 4: the same kernel with two programs per SM added at M >= 512. Triton never
# keeps an int32-accumulator wgmma in flight across loop iterations (its pipeliner makes only
# fp32-accumulator dots "properly async"; int8 gets wgmma.wait_group 0 after every K step, seen
# in the PTX of both 3.6 and 3.9), so one program per SM leaves the tensor cores idle while
# that program waits, releases the stage and issues the next loads. A second program on the
# SM fills those gaps. 128x128x128 tiles with 3 stages take 112.5 KB of shared memory, under
# the 113 KB a program may have for two to fit in 228 KB; 4 warps (one warpgroup, 207
# registers) or 8 (128 registers: two programs fill the register file exactly); no spills.
_T2 = {"w4": _tma_cfg(128, 128, 3, 4, ctas_per_sm=2), "w8": _tma_cfg(128, 128, 3, 8, ctas_per_sm=2)}
_INT8_TMA2_BY_BUCKET = {
    16: [_T["64x64"]], 32: [_T["64x64"]], 64: [_T["64x128"]], 128: [_T["64x128"]],
    256: [_T["64x128"], _T["128x128"]],
    512: [_T["128x256"], _tma_cfg(128, 128, 3, bk=256), _T2["w4"], _T2["w8"]],
    1024: [_T["128x256"], _tma_cfg(128, 128, 3, bk=256), _T2["w4"], _T2["w8"]],
}

# Variant 2 (quantization fused into the persistent TMA GEMM): short lists, since every config
# compiles once more for this kernel. At M >= 512 the two tiles that tied or won for variant 1
# on the H200 (run 3), 128x256x128 s3 and 128x128x256 s3, and two programs per SM (as above).
_FUSED_BY_BUCKET = {**_INT8_TMA2_BY_BUCKET, 512: _INT8_TMA2_BY_BUCKET[512][:3], 1024: _INT8_TMA2_BY_BUCKET[1024][:3]}
# The fused kernel keeps whole rows of x in registers: K up to this, else variant 2 runs variant 3.
FUSED_MAX_K = 16384

# Under the interpreter: small tiles so the tests' odd shapes cross tile and K-tail edges.
_INTERP_META = {"BLOCK_M": 16, "BLOCK_N": 16, "BLOCK_K": 32, "GROUP_M": 2}


def _m_bucket(M):
    return min(max(16, triton.next_power_of_2(M)), 1024)


def _config_id(c):
    return tuple(sorted(c.kwargs.items())), c.num_warps, c.num_stages


_even_k = triton.heuristics({"EVEN_K": lambda args: args["K"] % args["BLOCK_K"] == 0})


def _build(kernel, by_bucket, wrap=_even_k):
    if _INTERPRET:
        return wrap(kernel)
    configs = list({_config_id(c): c for cs in by_bucket.values() for c in cs}.values())

    def prune(configs, named_args, **kwargs):
        # The configs listed for this M bucket: tuning stays short.
        wanted = {_config_id(c) for c in by_bucket[named_args["M_BUCKET"]]}
        return [c for c in configs if _config_id(c) in wanted] or configs[:1]

    return autotune(configs=configs, key=["M_BUCKET", "N", "K"],
                    prune_configs_by={"early_config_prune": prune})(wrap(kernel))


_int8_gemm = _build(_int8_gemm_kernel, _INT8_GEMM_BY_BUCKET)
_w8a16 = _build(_w8a16_kernel, _W8A16_BY_BUCKET)
_int8_gemm_tma = _build(_int8_gemm_tma_kernel, _INT8_TMA_BY_BUCKET, wrap=lambda k: k)
_int8_gemm_tma2 = _build(_int8_gemm_tma_kernel, _INT8_TMA2_BY_BUCKET, wrap=lambda k: k)
_int8_linear_fused = _build(_int8_linear_fused_kernel, _FUSED_BY_BUCKET, wrap=lambda k: k)
# Untuned, for a caller's fixed `config` (benchmarks time each config with cold weights; the
# autotuner times them with the weights hot in L2).
_int8_gemm_fixed = _even_k(_int8_gemm_kernel)
_w8a16_fixed = _even_k(_w8a16_kernel)
_int8_gemm_tma_fixed = _int8_gemm_tma_kernel
_int8_linear_fused_fixed = _int8_linear_fused_kernel
# Under the interpreter: K tiles of 32 so the tests' K = 48 has a zero-filled tail, and two
# persistent programs so each walks several tiles.
_INTERP_TMA_META = {"BLOCK_M": 16, "BLOCK_N": 16, "BLOCK_K": 32, "GROUP_M": 2, "FLATTEN": True, "CTAS_PER_SM": 1}
_INTERP_PROGRAMS = 2


def _launch(tuned, fixed, config, interp_meta):
    """(kernel, meta): the interpreter's fixed tile, the autotuner, or the caller's config."""
    if _INTERPRET:
        return fixed, interp_meta
    return (tuned, {}) if config is None else (fixed, dict(config))


def _grid(M, N):
    return lambda meta: (triton.cdiv(M, meta["BLOCK_M"]) * triton.cdiv(N, meta["BLOCK_N"]),)


# ----------------------------------------------------------------------------- checks


def _check_device(*tensors):
    device = tensors[0].device
    for t in tensors:
        if t is not None and t.device != device:
            raise ValueError(f"all tensors must be on one device, got {device} and {t.device}")
    if device.type != "cuda" and not _INTERPRET:
        raise ValueError(f"Triton int8 kernels need CUDA tensors (or TRITON_INTERPRET=1), got {device}")


def _activation(x, name, dtypes):
    if x.dim() != 2:
        raise ValueError(f"{name} must be 2-D (M, K), got shape {tuple(x.shape)}")
    if x.dtype not in dtypes:
        raise TypeError(f"{name} must be one of {dtypes}, got {x.dtype}")
    return x if x.stride(1) == 1 else x.contiguous()


def _weight(qweight, wscale, bias, K):
    if qweight.dim() != 2 or qweight.dtype != torch.int8:
        raise TypeError(f"qweight must be 2-D int8 (N, K), got {qweight.dtype} {tuple(qweight.shape)}")
    if qweight.shape[1] != K:
        raise ValueError(f"qweight has K={qweight.shape[1]} but the activations have K={K}")
    if qweight.stride(1) != 1:
        raise ValueError("qweight must have unit column stride (pack it once, ahead of time)")
    N = qweight.shape[0]
    if wscale.dtype != torch.float32 or wscale.shape != (N,):
        raise TypeError(f"wscale must be float32 of shape ({N},), got {wscale.dtype} {tuple(wscale.shape)}")
    if bias is not None:
        if bias.dtype not in _FLOAT_DTYPES or bias.shape != (N,):
            raise TypeError(f"bias must be a float tensor of shape ({N},), got {bias.dtype} {tuple(bias.shape)}")
        bias = bias.contiguous()
    return wscale.contiguous(), bias


# ----------------------------------------------------------------------------- launchers


def quantize_per_token_int8(x: torch.Tensor, pdl: bool = False, variant: int = 0):
    """Per-row symmetric int8 quantization.

    x: (M, K) float32/float16/bfloat16 -> q: (M, K) int8, scale: (M,) float32, with
    scale = amax/127 and q = clamp(rint(x * 127/amax), -127, 127) (0 for all-zero rows).
    pdl: signal at once that a kernel launched next with programmatic dependent launch (the
    GEMM's variants 3 and 6) may start (it still waits for this kernel's results); off under
    the interpreter.
    variant: 0 one program a row; 1 several whole rows a program (K <= FUSED_MAX_K, else 0):
    at M = 1024, K = 4096 two rows a program of 8 warps (64 registers, four programs a SM):
    512 programs, all on 132 SMs at once, where one a row is 1024 programs of 256 threads at
    36 (allocated 40) registers, six a SM, so about 230 wait for a second round (sm_90a, Triton
    3.6 and 3.9). Bit-identical results.
    """
    if variant not in (0, 1):
        raise ValueError(f"triton quantize_per_token_int8: variant must be 0 or 1, got {variant}")
    x = _activation(x, "x", _FLOAT_DTYPES)
    _check_device(x)
    M, K = x.shape
    q = torch.empty((M, K), dtype=torch.int8, device=x.device)
    scale = torch.empty((M,), dtype=torch.float32, device=x.device)
    if M == 0:
        return q, scale
    if variant == 1 and K <= FUSED_MAX_K:
        # Rows of up to 8192 values a program (32 a thread at 8 warps): 8 rows at K = 1024, 2 at 4096.
        qblock_k = triton.next_power_of_2(max(K, 1))
        # (The interpreter: 2, so that the tests' odd M leave a masked last program.)
        qrows = 2 if _INTERPRET else max(1, min(8, 8192 // qblock_k))
        _quantize_rows_kernel[(triton.cdiv(M, qrows),)](x, q, scale, M, K, x.stride(0), QROWS=qrows, QBLOCK_K=qblock_k,
                                                        INTERPRET=_INTERPRET, PDL=pdl and not _INTERPRET,
                                                        num_warps=8 if qrows * qblock_k >= 4096 else 4)
        return q, scale
    if _INTERPRET:  # 64: the tests' K take both the one-tile and the two-pass paths
        block_k, warps = min(triton.next_power_of_2(max(K, 1)), 64), 4
    else:  # rows up to 16384 in one tile: at most 64 fp32 values a thread
        block_k = min(triton.next_power_of_2(max(K, 1)), 16384)
        warps = 4 if block_k <= 1024 else 8
    _quantize_per_token_kernel[(M,)](x, q, scale, K, x.stride(0), q.stride(0), BLOCK_K=block_k,
                                     ONE_TILE=K <= block_k, INTERPRET=_INTERPRET, PDL=pdl and not _INTERPRET,
                                     num_warps=warps)
    return q, scale


def int8_gemm_dequant(xq: torch.Tensor, xscale: torch.Tensor, qweight: torch.Tensor,
                      wscale: torch.Tensor, bias: torch.Tensor = None,
                      out_dtype: torch.dtype = torch.bfloat16, config: dict | None = None,
                      variant: int = 0) -> torch.Tensor:
    """W8A8 GEMM with the dequantization fused into the epilogue.

    xq: (M, K) int8, xscale: (M,) float32, qweight: (N, K) int8, wscale: (N,) float32,
    bias: (N,) float or None -> (M, N) out_dtype,
    out = (xq @ qweight.T as int32) * xscale[:, None] * wscale[None, :] + bias.
    variant: 0 the pointer-load kernel (the default); 1 the persistent TMA kernel, which
    needs 16-byte aligned rows (K % 16 == 0, N * out element size % 16 == 0, aligned base
    pointers) and runs variant 0 where they are not (tma_eligible says which); 4 the TMA
    kernel tuned over a list with two programs per SM at M >= 512 (_INT8_TMA2_BY_BUCKET);
    3 variant 4 launched with programmatic dependent launch: it starts (and prefetches its
    first weight tiles into L2) while the kernel before it finishes, then waits for that
    kernel's results (plain variant 4 under the interpreter); 5 the Gluon kernel of
    triton_kernels/int8_gluon.py, which keeps one wgmma in flight across K steps (GPU only:
    variant 1 under the interpreter); 6 variant 5 launched with programmatic dependent launch
    (as 3 is to 4). Variant 2 exists only in int8_linear_dynamic.
    config: on a GPU, a fixed tile (BLOCK_M, BLOCK_N, BLOCK_K, GROUP_M, num_warps, num_stages;
    FLATTEN and CTAS_PER_SM for variants 1, 3, 4; for variant 5 a key of int8_gluon.CONFIGS)
    instead of the autotuned (variant 5: int8_gluon.default_config) choice; ignored by the
    interpreter.
    """
    if variant not in (0, 1, 3, 4, 5, 6):
        raise ValueError(f"triton int8_gemm_dequant: variant must be 0, 1, 3, 4, 5 or 6, got {variant}")
    xq = _activation(xq, "xq", (torch.int8,))
    M, K = xq.shape
    if xscale.dtype != torch.float32 or xscale.shape != (M,):
        raise TypeError(f"xscale must be float32 of shape ({M},), got {xscale.dtype} {tuple(xscale.shape)}")
    if out_dtype not in _FLOAT_DTYPES:
        raise TypeError(f"out_dtype must be one of {_FLOAT_DTYPES}, got {out_dtype}")
    wscale, bias = _weight(qweight, wscale, bias, K)
    _check_device(xq, xscale, qweight, wscale, bias)
    N = qweight.shape[0]
    out = torch.empty((M, N), dtype=out_dtype, device=xq.device)
    if M == 0 or N == 0:
        return out
    if variant in (5, 6):
        if not _INTERPRET and tma_eligible(xq, qweight, out):
            from . import int8_gluon  # the experimental Gluon API: loaded only when this variant runs

            config = config or int8_gluon.default_config(M, N, _programs(xq.device))
            return int8_gluon.int8_gemm_gluon(xq, xscale.contiguous(), qweight, wscale, bias, out, config,
                                              pdl=variant == 6)
        config = None  # a Gluon config names no tile of the variants that stand in for it
    if variant in (1, 3, 4, 5, 6) and tma_eligible(xq, qweight, out):
        _int8_gemm_tma_launch(xq, xscale.contiguous(), qweight, wscale, bias, out, config,
                              _int8_gemm_tma if variant in (1, 5, 6) else _int8_gemm_tma2, pdl=variant in (3, 6))
        return out
    kernel, meta = _launch(_int8_gemm, _int8_gemm_fixed, config, _INTERP_META)
    kernel[_grid(M, N)](xq, xscale.contiguous(), qweight, wscale,
                            bias if bias is not None else wscale, out,
                            M, N, K, xq.stride(0), qweight.stride(0), out.stride(0), _m_bucket(M),
                            HAS_BIAS=bias is not None, **meta)
    return out


def tma_eligible(xq: torch.Tensor, qweight: torch.Tensor, out: torch.Tensor) -> bool:
    """True when int8_gemm_dequant's variant 1 runs (TMA: 16-byte aligned bases and row strides)."""
    return all(t.data_ptr() % 16 == 0 and (t.stride(0) * t.element_size()) % 16 == 0 for t in (xq, qweight, out))


_SM_COUNT = {}


def _programs(device) -> int:
    if _INTERPRET:
        return _INTERP_PROGRAMS
    if device not in _SM_COUNT:
        _SM_COUNT[device] = torch.cuda.get_device_properties(device).multi_processor_count
    return _SM_COUNT[device]


def _tma_kernel_meta(tuned, fixed, config, interp_meta):
    if _INTERPRET:
        return fixed, dict(interp_meta)
    if config is None:
        return tuned, {}
    return fixed, {"FLATTEN": True, "CTAS_PER_SM": 1, **config}


def _tma_descriptors(xq, qweight, out, meta):
    # Imported here: the module stays importable on a Triton without host-side descriptors.
    from triton.tools.tensor_descriptor import TensorDescriptor

    (M, K), N = xq.shape, qweight.shape[0]
    # The autotuner's pre_hook sets each config's block shapes; a fixed tile sets them here.
    bm, bn, bk = (meta.get(k, 1) for k in ("BLOCK_M", "BLOCK_N", "BLOCK_K"))
    return (TensorDescriptor(xq, [M, K], [xq.stride(0), 1], [bm, bk]),
            TensorDescriptor(qweight, [N, K], [qweight.stride(0), 1], [bn, bk]),
            TensorDescriptor(out, [M, N], [out.stride(0), 1], [bm, max(bn // 2, 1)]))


def _int8_gemm_tma_launch(xq, xscale, qweight, wscale, bias, out, config, tuned, pdl=False):
    M, K = xq.shape
    N = qweight.shape[0]
    kernel, meta = _tma_kernel_meta(tuned, _int8_gemm_tma_fixed, config, _INTERP_TMA_META)
    a_desc, w_desc, out_desc = _tma_descriptors(xq, qweight, out, meta)
    pdl = pdl and not _INTERPRET
    if pdl:
        meta["launch_pdl"] = True
    programs = _programs(xq.device)

    def grid(m):
        return (min(programs * m["CTAS_PER_SM"], triton.cdiv(M, m["BLOCK_M"]) * triton.cdiv(N, m["BLOCK_N"])),)

    kernel[grid](a_desc, xscale, qweight, w_desc, wscale, bias if bias is not None else wscale, out_desc,
                 M, N, K, qweight.stride(0), _m_bucket(M), programs, HAS_BIAS=bias is not None, PDL=pdl, **meta)


_BARRIER_COUNTERS = {}


def _barrier_counter(device, programs):
    # One counter per grid size: the barrier needs it at a multiple of the grid size when a
    # launch starts, which every completed launch of that grid size leaves it at. Slot c - 1
    # serves grids of c * programs (CTAS_PER_SM = c).
    key = (str(device), programs)
    if key not in _BARRIER_COUNTERS:
        if device.type == "cuda" and torch.cuda.is_current_stream_capturing():
            raise RuntimeError("triton int8_linear_dynamic variant 2: call it once before CUDA-graph capture "
                               "(it allocates its grid-barrier counter and autotunes on the first call)")
        _BARRIER_COUNTERS[key] = torch.zeros(2, dtype=torch.int64, device=device)
    return _BARRIER_COUNTERS[key]


def fused_eligible(x: torch.Tensor, qweight: torch.Tensor, out: torch.Tensor) -> bool:
    """True when int8_linear_dynamic's variant 2 runs: TMA-aligned rows and K <= FUSED_MAX_K."""
    # x is read with plain loads; the int8 copy it is quantized into has rows of K bytes.
    return x.shape[1] <= FUSED_MAX_K and x.shape[1] % 16 == 0 and all(
        t.data_ptr() % 16 == 0 and (t.stride(0) * t.element_size()) % 16 == 0 for t in (qweight, out))


def _int8_linear_fused_launch(x, qweight, wscale, bias, out, config, programs=None):
    M, K = x.shape
    N = qweight.shape[0]
    q = torch.empty((M, K), dtype=torch.int8, device=x.device)
    xscale = torch.empty((M,), dtype=torch.float32, device=x.device)
    kernel, meta = _tma_kernel_meta(_int8_linear_fused, _int8_linear_fused_fixed, config, _INTERP_TMA_META)
    a_desc, w_desc, out_desc = _tma_descriptors(q, qweight, out, meta)
    programs = programs or _programs(x.device)
    # Whole rows, QROWS of them a program at a time: up to 32768 values (128 fp32 a thread at
    # 8 warps, loaded before the GEMM's accumulators are live), enough rows for one round at M = 1024.
    qblock_k = triton.next_power_of_2(K)
    qrows = min(triton.next_power_of_2(triton.cdiv(M, programs)), max(1, 32768 // qblock_k))
    args = (x, q, xscale, _barrier_counter(x.device, programs), a_desc, qweight, w_desc, wscale,
            bias if bias is not None else wscale, out_desc, M, N, K, x.stride(0), qweight.stride(0), _m_bucket(M),
            programs)
    common = dict(QROWS=qrows, QBLOCK_K=qblock_k, INTERPRET=_INTERPRET, HAS_BIAS=bias is not None, **meta)
    grid = lambda m: (programs * m["CTAS_PER_SM"],)  # noqa: E731
    if not _INTERPRET:
        kernel[grid](*args, QUANT=True, BARRIER=True, GEMM=True, launch_cooperative_grid=True, **common)
    elif grid(meta) == (1,):
        kernel[grid](*args, QUANT=True, BARRIER=True, GEMM=True, **common)
    else:  # the interpreter runs programs in turn: a barrier between them would never open
        kernel[grid](*args, QUANT=True, BARRIER=False, GEMM=False, **common)
        kernel[grid](*args, QUANT=False, BARRIER=False, GEMM=True, **common)
    return q, xscale


def int8_linear_dynamic(x: torch.Tensor, qweight: torch.Tensor, wscale: torch.Tensor,
                        bias: torch.Tensor = None, variant: int = 0, config: dict | None = None) -> torch.Tensor:
    """W8A8 linear with per-token dynamic activation quantization.

    x: (M, K) float32/float16/bfloat16, qweight: (N, K) int8, wscale: (N,) float32,
    bias: (N,) or None -> (M, N) x.dtype. variant: 0, 1, 3, 4, 5 or 6, the GEMM's (see
    int8_gemm_dequant; 3 and 6 also have the quantization kernel release the GEMM early; 3 to
    6 quantize with quantize_per_token_int8's variant 1, 0 and 1 with its variant 0); 2 one
    launch: the quantization fused into the persistent TMA GEMM ahead of a grid barrier (a
    cooperative launch of one or two programs per SM), where fused_eligible, else variant 3.
    config: a fixed GEMM tile on a GPU (see int8_gemm_dequant).
    """
    if variant not in (0, 1, 2, 3, 4, 5, 6):
        raise ValueError(f"triton int8_linear_dynamic: variant must be 0 to 6, got {variant}")
    if variant == 2:
        x = _activation(x, "x", _FLOAT_DTYPES)
        M, K = x.shape
        wscale, bias = _weight(qweight, wscale, bias, K)
        _check_device(x, qweight, wscale, bias)
        out = torch.empty((M, qweight.shape[0]), dtype=x.dtype, device=x.device)
        if M == 0 or out.shape[1] == 0:
            return out
        if fused_eligible(x, qweight, out):
            _int8_linear_fused_launch(x, qweight, wscale, bias, out, config)
            return out
        variant = 3
    # The new GEMM variants take the new quantization (variant 1); 0 and 1 keep the original.
    xq, xscale = quantize_per_token_int8(x, pdl=variant in (3, 6), variant=int(variant >= 3))
    return int8_gemm_dequant(xq, xscale, qweight, wscale, bias, out_dtype=x.dtype, config=config, variant=variant)


def w8a16_linear(x: torch.Tensor, qweight: torch.Tensor, wscale: torch.Tensor,
                 bias: torch.Tensor = None, config: dict | None = None) -> torch.Tensor:
    """Weight-only int8 linear: weights widened to x.dtype in registers, fp32 accumulation.

    x: (M, K) bfloat16/float16/float32, qweight: (N, K) int8, wscale: (N,) float32,
    bias: (N,) or None -> (M, N) x.dtype, out = (x @ qweight.T) * wscale + bias.
    bf16/fp16 run the 16-bit MMA; float32 (W8A32) runs 3xTF32, close to fp32 accuracy.
    config: on a GPU, a fixed tile (BLOCK_M, BLOCK_N, BLOCK_K, GROUP_M, SWAP_AB, num_warps,
    num_stages) instead of the autotuned choice; ignored by the interpreter.
    """
    x = _activation(x, "x", _FLOAT_DTYPES)
    M, K = x.shape
    wscale, bias = _weight(qweight, wscale, bias, K)
    _check_device(x, qweight, wscale, bias)
    N = qweight.shape[0]
    out = torch.empty((M, N), dtype=x.dtype, device=x.device)
    if M == 0 or N == 0:
        return out
    # Under the interpreter, both tile orientations get exercised: swapped for M <= 16.
    kernel, meta = _launch(_w8a16, _w8a16_fixed, config, {**_INTERP_META, "SWAP_AB": M <= 16})
    kernel[_grid(M, N)](x, qweight, wscale, bias if bias is not None else wscale, out,
                        M, N, K, x.stride(0), qweight.stride(0), out.stride(0), _m_bucket(M),
                        HAS_BIAS=bias is not None, INTERPRET=_INTERPRET,
                        PRECISION="tf32x3" if x.dtype == torch.float32 else "tf32", **meta)
    return out
