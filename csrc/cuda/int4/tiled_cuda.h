// int4 W4A16 decode GEMV on the "tile16x64" layout (pycomp/formats/int4.py): an experiment beside the
// k-nibble GEMV of w4a16_gemv.cu, to learn whether reading whole 512-byte tiles (one 16-byte load per lane,
// consecutive in memory across a block's warps) streams faster than 64-byte row pieces. Raw pointers, CUDA
// runtime types only.
//
// tiles: (N / 16) * (K / 64) tiles of 512 bytes, row-block major (tile (tn, tk) at (tn * K / 64 + tk) * 512);
// scales (N, G) float16, zeros (N, G) uint8 or nullptr (zero point 8), as in the k-nibble layout.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "cuda/int8/int8_cuda.h"  // DType

namespace pycomp::cuda {

// Number of launch configurations of w4a16_tiled_gemv (warps per block, ring stages; see w4a16_tiled.cu).
int w4a16_tiled_configs();

// out[m, n] = sum_k x[m, k] * W[n, k] + bias[n] for 1 <= M <= 16. t: kF16 or kBF16 (x, bias, out);
// x (M, K) row stride ldx, 16-byte aligned rows; N % 16 == 0, group_size 64 or 128, K a multiple of
// 16 groups and at most 128 groups;
// tiles 16-byte aligned. Returns cudaErrorInvalidValue when a precondition fails.
cudaError_t w4a16_tiled_gemv(DType t, const void* x, int64_t ldx, const uint8_t* tiles, const void* scales,
                             const uint8_t* zeros, const void* bias, void* out, int64_t ldo, int64_t M, int64_t N,
                             int64_t K, int group_size, int config, cudaStream_t stream);

}  // namespace pycomp::cuda
