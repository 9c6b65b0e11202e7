// 2:4 sparse kernels for NVIDIA GPUs (raw pointers, CUDA runtime types only, no torch headers).
//
// The weight is in pycomp's 2:4 format (pycomp/formats/sparse.py): values (N, Kp/2) of type t,
// meta (Np, Kp/16) int16 in CUTLASS's reordered layout (Np = ceil(N/32)*32, Kp % 32 == 0). Read as
// int32, meta word (s * Np + r) holds rows n and n+8 of one 16-column chunk of k32 step s, which is
// what one thread hands to mma.sp; see the kernel file for the fragment mapping.
//
// Launchers check their preconditions and return cudaErrorInvalidValue when one fails (the torch
// wrapper checks them first, with messages); otherwise the launch's error code.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "cuda/int8/int8_cuda.h"  // DType

namespace pycomp::cuda {

// out[m, n] = sum_k x[m, k] * W[n, k] + bias[n], on sparse tensor cores (mma.sp m16n8k32, fp32
// accumulation). t: kF16 or kBF16 (x, values, bias and out share it). x: (M, Kp) row stride ldx
// (even), 4-byte aligned; out: (M, N) row stride ldo; bias (N) or nullptr.
// gemv=true: the decode configuration (M <= 16; warps split K, each weight value read once);
// gemv=false: the GEMM.
// variant (one of kSparse24GemvVariants or kSparse24GemmVariants) picks the kernel, so that candidates can be
// timed beside the default:
//   GEMV 0: 16 rows per block, 4 warps split K, 4-byte value loads (the default);
//   GEMV 1, 2: as 0, but 16-byte value loads in 64-column windows, 2 (1) or 4 (2) windows in flight per
//     warp, and one n8 token tile when M <= 8; needs values and meta 16-byte aligned;
//   GEMV 4, 5: as 1, with K split over 2 or 8 warps and 4 or 2 windows in flight per warp (longer runs of
//     each weight row per warp, or more warps per block);
//   GEMM 0: 64 rows of W by 64 rows of x per block, operands straight from global memory (the default);
//   GEMM 1: cp.async multistage tiles, ldmatrix, shared-memory epilogue: 128 weight rows x 128 tokens per
//     block, warps 64 x 32, 3 stages, 2 blocks per SM; needs x, values and meta 16-byte aligned and
//     ldx % 8 == 0;
//   GEMM 4, 5: such tiles with fragments loaded one k32 step ahead (ldmatrix of the next step issued among
//     the current step's mma.sp): 4 = 128 x 128, four warps of 64 x 64, 3 stages, 2 blocks per SM;
//     5 = 256 x 128, eight 64 x 64 warps, 4 stages, 1 block per SM; same alignment as 1.
// GEMV 3 and GEMM 2, 3 and 6 lost at every shape on the H200 runs of 2026-11-28 and were removed; their
// numbers stay unused, so that a number names the same kernel in every recorded result.
inline constexpr int kSparse24GemvVariants[] = {0, 1, 2, 4, 5};
inline constexpr int kSparse24GemmVariants[] = {0, 1, 4, 5};

constexpr bool sparse24_has_variant(bool gemv, int variant) {
  if (gemv) {
    for (int v : kSparse24GemvVariants)
      if (v == variant) return true;
  } else {
    for (int v : kSparse24GemmVariants)
      if (v == variant) return true;
  }
  return false;
}

cudaError_t sparse24_linear(DType t, const void* x, int64_t ldx, const void* values, const int16_t* meta, int64_t Np,
                            const void* bias, void* out, int64_t ldo, int64_t M, int64_t N, int64_t Kp, bool gemv,
                            cudaStream_t stream, int variant = 0);

}  // namespace pycomp::cuda
