// int8 linear kernels for the CPU (raw pointers, no torch headers).
//
// Weights are int8, row-major (N, K), symmetric per output channel, values in
// [-127, 127] (never -128), with an fp32 scale per row: W[n, k] ~= w[n, k] * wscale[n].
// That canonical layout is what every backend reads, so no repacking is needed.
//
// Activation quantization (W8A8, "dynamic"), per row m of x, identical on every
// backend and in the PyTorch reference:
//   amax = max_k |x[m, k]|;  scale[m] = amax / 127
//   inv  = amax > 0 ? 127 / amax : 0   (fp32 division)
//   q[m, k] = clamp(rint(x[m, k] * inv), -127, 127)   (round half to even)
#pragma once

#include <cstdint>

#include "cpu/cpu_features.h"

namespace pycomp::cpu {

// x: (M, K) fp32, row stride ldx -> q: (M, K) int8 (row stride K), scale: (M) fp32.
void quantize_per_token_int8_f32(Isa isa, const float* x, int64_t ldx, int8_t* q, float* scale, int64_t M,
                                 int64_t K);

// W8A8: out[m, n] = (sum_k q[m, k] * w[n, k]) * scale[m] * wscale[n] + bias[n]
// with q, scale from the activation quantization above (fused: no int8 copy of x
// leaves the kernel's working buffers), exact int32 accumulation.
// x: (M, K) fp32 stride ldx; w: (N, K) int8 stride K; wscale: (N) fp32;
// bias: (N) fp32 or nullptr; out: (M, N) fp32 stride ldo. Any M, N, K >= 1.
void int8_linear_dynamic_f32(Isa isa, const float* x, int64_t ldx, const int8_t* w, const float* wscale,
                             const float* bias, float* out, int64_t ldo, int64_t M, int64_t N, int64_t K);

// W8A32 weight-only: out[m, n] = sum_k x[m, k] * (w[n, k] * wscale[n]) + bias[n],
// fp32 accumulation, weights converted in registers (never expanded in memory).
void int8_linear_weight_only_f32(Isa isa, const float* x, int64_t ldx, const int8_t* w, const float* wscale,
                                 const float* bias, float* out, int64_t ldo, int64_t M, int64_t N, int64_t K);

}  // namespace pycomp::cpu
