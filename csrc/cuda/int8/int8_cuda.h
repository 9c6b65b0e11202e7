// int8 kernels for NVIDIA GPUs (raw pointers, CUDA runtime types only, no torch headers).
//
// Weights use the canonical layout every backend shares: int8, row-major (N, K),
// values in [-127, 127], an fp32 scale per row: W[n, k] ~= w[n, k] * wscale[n].
//
// Activation quantization, per row m (identical to the CPU kernels and the
// PyTorch reference in pycomp/ops/int8.py):
//   amax = max_k |x[m, k]|;  scale[m] = amax / 127
//   inv  = amax > 0 ? 127 / amax : 0   (IEEE fp32 division)
//   q[m, k] = clamp(rint(x[m, k] * inv), -127, 127)   (round half to even)
//
// Every launcher checks the preconditions it documents and returns
// cudaErrorInvalidValue when one fails (the torch wrapper checks them first, with
// messages); otherwise it returns the launch's error code.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace pycomp::cuda {

// Element type of activations, outputs and biases.
enum class DType : int { kF32 = 0, kF16 = 1, kBF16 = 2 };

// x: (M, K) of type xt with row stride ldx (elements) -> q: (M, K) int8 with row
// stride K, scale: (M) fp32. Any M, K >= 1; 16-byte loads when x's rows allow it.
cudaError_t quantize_per_token_int8(DType xt, const void* x, int64_t ldx, int8_t* q, float* scale, int64_t M,
                                    int64_t K, cudaStream_t stream);

// Weight-only linear for small M (decode):
//   out[m, n] = sum_k x[m, k] * w[n, k] * wscale[n] + bias[n]
// x: (M, K) of type t, row stride ldx; w: (N, K) int8 row stride K; wscale: (N)
// fp32; bias: (N) of type t or nullptr; out: (M, N) of type t, row stride ldo.
// Requires K % 16 == 0, x, w and each x row 16-byte aligned (ldx * sizeof(t) % 16
// == 0). Any M >= 1 is correct; the kernel is built for M <= 16 (larger M re-reads W).
// variant: 0 (the default kernel) .. w8a16_gemv_variants() - 1, candidate launch shapes
// for 16-bit x (float32 x always runs variant 0).
cudaError_t w8a16_linear(DType t, const void* x, int64_t ldx, const int8_t* w, const float* wscale, const void* bias,
                         void* out, int64_t ldo, int64_t M, int64_t N, int64_t K, cudaStream_t stream,
                         int variant = 0);

// Number of w8a16_linear variants (0 is the default).
int w8a16_gemv_variants();

// The launch shape w8a16_linear uses for M rows of 16-bit x with this variant (for benchmarks and info).
struct W8A16GemvShape {
  int unroll;      // chunks of 64 k in flight per warp
  int warps;       // warps per block (16 rows of W per block)
  int min_blocks;  // blocks per SM the register budget allows at least
};
W8A16GemvShape w8a16_gemv_shape(int64_t M, int variant);

// Block tile of the W8A8 GEMM. kAuto picks by shape and SM count.
enum class GemmTile : int { kAuto = 0, k128x256 = 1, k64x128 = 2 };

// W8A8 GEMM on int8 tensor cores with the dequantization epilogue fused:
//   out[m, n] = (sum_k xq[m, k] * w[n, k]) * xscale[m] * wscale[n] + bias[n]
// xq: (M, K) int8 row stride ldxq; xscale: (M) fp32; w: (N, K) int8 row stride K;
// wscale: (N) fp32; bias: (N) of type out_t or nullptr; out: (M, N) of type out_t,
// row stride N. Requires K % 16 == 0, xq and w 16-byte aligned, ldxq % 16 == 0
// (rows may overlap: ldxq = 0 broadcasts one row).
// Any 1 <= M, N <= INT32_MAX - 256; out needs only element alignment.
cudaError_t w8a8_gemm(const int8_t* xq, int64_t ldxq, const float* xscale, const int8_t* w, const float* wscale,
                      const void* bias, DType out_t, void* out, int64_t M, int64_t N, int64_t K, GemmTile tile,
                      cudaStream_t stream);

// The tile kAuto picks on the current device for this shape (for benchmarks and info).
GemmTile w8a8_gemm_auto_tile(int64_t M, int64_t N);

}  // namespace pycomp::cuda
