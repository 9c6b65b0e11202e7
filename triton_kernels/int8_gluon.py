"""W8A8 GEMM in Gluon (Triton's explicit-layout dialect) for Hopper: variants 5 and 6 (the same
launched with PDL) of triton_kernels.int8.int8_gemm_dequant.

Why Gluon: Triton's pipeliner makes a wgmma "properly async" only when its accumulator is fp32,
so the tl.dot int8 GEMMs (variants 0-4) wait for every K step's wgmma to finish before issuing
the next loads and MMAs (wgmma.wait_group 0 in their PTX). Here the MMA of step k stays in
flight while step k+1's is issued (warpgroup_mma_wait(num_outstanding=1)), and the stage that
step k-1 read is refilled by TMA only after that wait has retired it.

Layout: the same as the other variants (xq (M, K) int8, qweight (N, K) int8, K contiguous; one
fp32 scale per row of each). Needs TMA: 16-byte aligned bases and row strides. GPU only: Gluon
has no interpreter, so under TRITON_INTERPRET=1 the caller runs variant 1 instead (the tests
compile this kernel for sm_90a there and check its PTX).

Imported lazily by triton_kernels.int8 (the Gluon API is experimental; this module is only
loaded when variant 5 or 6 runs on a GPU). Compiled for sm_90a with Triton 3.6 and 3.9.
"""
import triton
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import (fence_async_shared, mbarrier, tma, warpgroup_mma,
                                                              warpgroup_mma_wait)
from triton.experimental.gluon.nvidia.hopper import TensorDescriptor

# Triton 3.6 names the TMA copies async_copy_global_to_shared / async_copy_shared_to_global;
# 3.9 renamed them async_load / async_store (the old names now raise).
_tma_load = getattr(tma, "async_load", None) or tma.async_copy_global_to_shared
_tma_store = getattr(tma, "async_store", None) or tma.async_copy_shared_to_global


@gluon.jit
def _int8_gemm_gluon_kernel(a_desc, w_desc, out_desc, ascale_ptr, wscale_ptr, bias_ptr, M, N, K,
                            HAS_BIAS: gl.constexpr, GROUP_M: gl.constexpr, STAGES: gl.constexpr,
                            INSTR_N: gl.constexpr, PDL: gl.constexpr, num_warps: gl.constexpr):
    # PDL (variant 6: launched with launch_pdl behind a quantization kernel that releases it
    # early): set up, then wait for that kernel's results before the first load of xq.
    BLOCK_M: gl.constexpr = a_desc.block_type.shape[0]
    BLOCK_K: gl.constexpr = a_desc.block_type.shape[1]
    BLOCK_N: gl.constexpr = w_desc.block_type.shape[0]

    # Grouped tile order: GROUP_M row blocks share each weight tile while it is in L2.
    pid = gl.program_id(0)
    num_pid_m = gl.cdiv(M, BLOCK_M)
    num_pid_in_group = GROUP_M * gl.cdiv(N, BLOCK_N)
    first_pid_m = (pid // num_pid_in_group) * GROUP_M
    group_size_m = min(num_pid_m - first_pid_m, GROUP_M)
    off_m = (first_pid_m + ((pid % num_pid_in_group) % group_size_m)) * BLOCK_M
    off_n = ((pid % num_pid_in_group) // group_size_m) * BLOCK_N

    a_bufs = gl.allocate_shared_memory(a_desc.dtype, [STAGES, BLOCK_M, BLOCK_K], a_desc.layout)
    w_bufs = gl.allocate_shared_memory(w_desc.dtype, [STAGES, BLOCK_N, BLOCK_K], w_desc.layout)
    ready = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    for i in gl.static_range(STAGES):
        mbarrier.init(ready.index(i), count=1)

    # Warpgroups stacked along M (64 rows each); 8-bit wgmma takes N up to 224, so INSTR_N
    # is the largest allowed size that divides BLOCK_N.
    mma_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[num_warps, 1],
                                                          instr_shape=[16, INSTR_N, 32])
    acc = gl.zeros((BLOCK_M, BLOCK_N), dtype=gl.int32, layout=mma_layout)

    k_tiles = gl.cdiv(K, BLOCK_K)
    stage_bytes: gl.constexpr = a_desc.block_type.nbytes + w_desc.block_type.nbytes
    if PDL:
        gl.inline_asm_elementwise("griddepcontrol.wait; // dummy $0", "=r", [], dtype=gl.int32, is_pure=False,
                                  pack=1)
    # Prologue: STAGES - 1 loads in flight (TMA zero-fills K beyond the tensor).
    for i in gl.static_range(STAGES - 1):
        pred = i < k_tiles
        mbarrier.expect(ready.index(i), stage_bytes, pred=pred)
        _tma_load(a_desc, [off_m, i * BLOCK_K], ready.index(i), a_bufs.index(i), pred=pred)
        _tma_load(w_desc, [off_n, i * BLOCK_K], ready.index(i), w_bufs.index(i), pred=pred)

    for kb in range(k_tiles):
        s = kb % STAGES
        mbarrier.wait(ready.index(s), (kb // STAGES) & 1)
        a_s = a_bufs.index(s)
        w_s = w_bufs.index(s)
        acc = warpgroup_mma(a_s, w_s.permute((1, 0)), acc, is_async=True)
        # One MMA group stays in flight: after this, step kb-1's MMA is done and its stage is free.
        acc, a_s, w_s = warpgroup_mma_wait(num_outstanding=1, deps=(acc, a_s, w_s))
        nxt = kb + STAGES - 1
        pred = nxt < k_tiles
        ns = nxt % STAGES
        mbarrier.expect(ready.index(ns), stage_bytes, pred=pred)
        _tma_load(a_desc, [off_m, nxt * BLOCK_K], ready.index(ns), a_bufs.index(ns), pred=pred)
        _tma_load(w_desc, [off_n, nxt * BLOCK_K], ready.index(ns), w_bufs.index(ns), pred=pred)
    acc = warpgroup_mma_wait(num_outstanding=0, deps=(acc, ))
    for i in gl.static_range(STAGES):
        mbarrier.invalidate(ready.index(i))

    # Epilogue: out = acc * ascale[row] * wscale[col] (+ bias[col]), through shared memory and TMA.
    rows = off_m + gl.arange(0, BLOCK_M, layout=gl.SliceLayout(1, mma_layout))
    cols = off_n + gl.arange(0, BLOCK_N, layout=gl.SliceLayout(0, mma_layout))
    a_scale = gl.load(ascale_ptr + rows, mask=rows < M, other=0.0)
    w_scale = gl.load(wscale_ptr + cols, mask=cols < N, other=0.0)
    out = acc.to(gl.float32) * gl.expand_dims(a_scale, 1) * gl.expand_dims(w_scale, 0)
    if HAS_BIAS:
        out = out + gl.expand_dims(gl.load(bias_ptr + cols, mask=cols < N, other=0.0).to(gl.float32), 0)
    out_smem = gl.allocate_shared_memory(out_desc.dtype, [BLOCK_M, BLOCK_N], out_desc.layout)
    out_smem.store(out.to(out_desc.dtype))
    fence_async_shared()
    _tma_store(out_desc, [off_m, off_n], out_smem)
    tma.store_wait(pendings=0)


_GL_DTYPES = {"torch.int8": gl.int8, "torch.bfloat16": gl.bfloat16, "torch.float16": gl.float16,
              "torch.float32": gl.float32}

# (BLOCK_M, BLOCK_N, BLOCK_K, STAGES, num_warps). The output tile reuses the operand stages'
# shared memory (dead by then): 128x256 takes 144 KB with 3 stages, 192 KB with 4 (one program
# per SM); 128x128 with 3 stages takes 96 KB and 127 registers, so two programs share an SM,
# which at N = 14336 also evens out the last wave (896 tiles instead of 448 on 132 SMs).
CONFIGS = {"128x256": (128, 256, 128, 3, 8), "128x256s4": (128, 256, 128, 4, 8), "128x128": (128, 128, 128, 3, 8)}


def default_config(M, N, sms):
    """128x256 tiles while they fit in one wave, else 128x128 (two programs per SM)."""
    return "128x256" if triton.cdiv(M, 128) * triton.cdiv(N, 256) <= sms else "128x128"


def _desc(t, block):
    layout = gl.NVMMASharedLayout.get_default_for(block, _GL_DTYPES[str(t.dtype)])
    return TensorDescriptor(t, list(t.shape), [t.stride(0), 1], block, layout)


def int8_gemm_gluon(xq, xscale, qweight, wscale, bias, out, config="128x256", pdl=False):
    """out = (xq @ qweight.T) * xscale[:, None] * wscale[None, :] (+ bias), written into out.

    pdl: launch with programmatic dependent launch, waiting in the kernel for the one before.
    """
    bm, bn, bk, stages, warps = CONFIGS[config]
    M, N = out.shape
    instr_n = max(n for n in range(8, 225, 8) if bn % n == 0 and n <= bn)
    grid = (triton.cdiv(M, bm) * triton.cdiv(N, bn),)
    _int8_gemm_gluon_kernel[grid](_desc(xq, [bm, bk]), _desc(qweight, [bn, bk]), _desc(out, [bm, bn]), xscale, wscale,
                                  bias if bias is not None else wscale, M, N, xq.shape[1],
                                  HAS_BIAS=bias is not None, GROUP_M=8, STAGES=stages, INSTR_N=instr_n, PDL=pdl,
                                  num_warps=warps, launch_pdl=pdl)
    return out
