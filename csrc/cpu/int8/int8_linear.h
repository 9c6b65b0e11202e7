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
//
// The reduce-range form (W8A8 with 7-bit activations, fbgemm's x86 numerics,
// per token instead of per tensor): asymmetric, unsigned, 0..127 with a zero
// point, so that u8 x s8 products summed in pairs (vpmaddubsw) never saturate:
//   lo = min(0, min_k x[m, k]);  hi = max(0, max_k x[m, k]);  r = hi - lo
//   scale[m] = r / 127;  inv = r > 0 ? 127 / r : 0   (fp32)
//   zp[m] = clamp(rint(-lo * inv), 0, 127)
//   q[m, k] = clamp(rint(x[m, k] * inv) + zp[m], 0, 127)
// and x[m, k] ~= (q[m, k] - zp[m]) * scale[m].
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

// x: (M, K) fp32, row stride ldx -> q: (M, K) uint8 in [0, 127] (row stride K),
// scale: (M) fp32, zp: (M) int32; the reduce-range quantization above.
void quantize_per_token_uint7_f32(Isa isa, const float* x, int64_t ldx, uint8_t* q, float* scale, int32_t* zp,
                                  int64_t M, int64_t K);

// W8A8 reduce-range: out[m, n] = float(dot) * scale[m] * wscale[n] + bias[n] (fp32, in that order) with
// dot = sum_k q[m, k] * w[n, k] - zp[m] * wsum[n] = sum_k (q[m, k] - zp[m]) * w[n, k], exact in int32,
// q, scale, zp from the reduce-range quantization (fused). wsum: (N) int32, sum_k w[n, k], computed
// once with the weights (fbgemm's column offsets); the caller guarantees it. Any M, N, K >= 1.
void int8_linear_dynamic_reduce_range_f32(Isa isa, const float* x, int64_t ldx, const int8_t* w,
                                          const float* wscale, const int32_t* wsum, const float* bias, float* out,
                                          int64_t ldo, int64_t M, int64_t N, int64_t K);

// W8A32 weight-only: out[m, n] = sum_k x[m, k] * (w[n, k] * wscale[n]) + bias[n],
// fp32 accumulation, weights converted in registers (never expanded in memory).
void int8_linear_weight_only_f32(Isa isa, const float* x, int64_t ldx, const int8_t* w, const float* wscale,
                                 const float* bias, float* out, int64_t ldo, int64_t M, int64_t N, int64_t K);

}  // namespace pycomp::cpu
