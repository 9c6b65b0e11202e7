// int4 weight-only (W4A16) kernels for NVIDIA GPUs (raw pointers, CUDA runtime types only, no torch headers).
//
// Weights use the canonical "k-nibble" layout (pycomp/formats/int4.py), read as is:
//   packed (N, K/2) uint8, byte j of row n = column 2j (low nibble) | column 2j+1 (high nibble);
//   scales (N, G) float16 and zeros (N, G) uint8 in [0, 15], or zeros == nullptr meaning a zero point of 8,
//   G = ceil(K / group_size), group g covering columns [g * group_size, (g + 1) * group_size);
//   W[n, k] = (code[n, k] - zero[n, k / group_size]) * scale[n, k / group_size].
//
// Each launcher checks the preconditions it documents and returns cudaErrorInvalidValue
// when one fails (the torch wrapper checks them first, with messages); otherwise it
// returns the launch's error code.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "cuda/int8/int8_cuda.h"  // DType

namespace pycomp::cuda {

// Kernel variants of w4a16_gemv, by number: 0 is the default; the others are candidates for
// the decode path (see w4a16_gemv.cu), each run only where it applies (group_size 128,
// K % 512 == 0, 4-byte aligned scales and zeros), else variant 0 runs. 12 and 14 are
// persistent: a grid of at most the blocks that fit the SMs at once, each looping over row
// tiles (no split-K, no workspace). 3, 4, 8, 9 and 13 lost at every shape on the H200 runs of
// 2026-11-28 and were removed; their numbers stay unused, so that a number names the same
// kernel in every recorded result.
inline constexpr int kW4A16GemvVariants[] = {0, 1, 2, 5, 6, 7, 10, 11, 12, 14};

constexpr bool w4a16_gemv_has_variant(int variant) {
  for (int v : kW4A16GemvVariants)
    if (v == variant) return true;
  return false;
}

// The launch a variant makes for this shape on the current device (for benchmarks and info).
// variant 0, or a shape the variant does not take (ok = false): the default kernel's plan.
struct W4A16GemvLaunch {
  bool ok;          // the variant's kernel runs (group 128, K % 512 == 0)
  int rows;         // rows of W per block
  int warps;        // warps per block
  int stages;       // cp.async ring depth per warp
  bool fold;        // zero point folded into an fp32 correction
  bool x_ring;      // x through the ring with the weights (else staged per slice)
  int64_t blocks;   // row blocks (grid.x); persistent variants: blocks looping over ceil(N / rows) row tiles
  int64_t splits;   // K slices (grid.y); > 1 adds the split-K sum kernel
  int64_t smem;     // dynamic shared memory per block, bytes
  bool persistent;  // a persistent variant (12, 14): blocks loop over row tiles (when ok)
};
W4A16GemvLaunch w4a16_gemv_launch(int64_t M, int64_t N, int64_t K, int group_size, int variant);

// Float32 elements of split-K workspace that w4a16_gemv needs for this shape and variant on
// the current device (0: no split, no workspace).
int64_t w4a16_gemv_workspace(int64_t M, int64_t N, int64_t K, int variant = 0);

// Weight-only int4 linear for decode (1 <= M <= 16):
//   out[m, n] = sum_k x[m, k] * W[n, k] + bias[n]
// t: kF16 or kBF16 (x, bias and out); x: (M, K) row stride ldx (elements); packed,
// scales, zeros as above (contiguous); bias: (N) or nullptr; out: (M, N) row stride
// ldo; workspace: w4a16_gemv_workspace(M, N, K) floats (nullptr when that is 0).
// Requires K % 32 == 0, group_size in {32, 64, 128}, x, packed and each x row
// 16-byte aligned (ldx * 2 % 16 == 0); variant one of kW4A16GemvVariants.
cudaError_t w4a16_gemv(DType t, const void* x, int64_t ldx, const uint8_t* packed, const void* scales,
                       const uint8_t* zeros, const void* bias, void* out, int64_t ldo, float* workspace, int64_t M,
                       int64_t N, int64_t K, int group_size, cudaStream_t stream, int variant = 0);

}  // namespace pycomp::cuda
