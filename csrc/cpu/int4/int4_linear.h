// int4 weight-only linear (W4A16) kernels for the CPU (raw pointers, no torch headers).
//
// Weights arrive in the canonical "k-nibble" layout of pycomp/formats/int4.py,
// read in place (no repacking): packed (N, ceil(K/2)) uint8, byte j of row n
// holding column 2j in its low nibble and column 2j+1 in its high nibble;
// scales (N, G) float16 (passed as their bits), zeros (N, G) uint8 in [0, 15]
// or nullptr (symmetric: zero point 8), G = ceil(K / group_size), group g
// covering columns [g * group_size, (g + 1) * group_size).
//
//   out[m, n] = sum_k x[m, k] * ((code[n, k] - zero[n, g(k)]) * scale[n, g(k)]) + bias[n]
//
// Accumulation is fp32. The GEMM path and the portable kernels form each
// weight exactly as the reference dequantizer does ((code - zero) * scale is
// exact in fp32: one FMA, code * scale - zero * scale), so they differ from the
// reference only by the order of the sums. The x86 GEMV path (small M: int4_driver.h) sums
// x * code per group and applies the group's zero point and scale once,
// scale * (sum x * code - zero * sum x), and forms x * code from a pair's low
// nibble and whole byte (int4_driver.h, fold_high_nibbles): its rounding error
// scales with sum |x| (code + zero + 2) scale rather than sum |x| |code - zero| scale.
#pragma once

#include <cstdint>

#include "cpu/cpu_features.h"
#include "cpu/xrows.h"

namespace pycomp::cpu {

// x: (M, K) fp32, bf16 or fp16 rows (cpu/xrows.h), read where they lie and converted exactly as the kernels
// permute or round them; out: (M, N) fp32, row stride ldo; bias (N) fp32 or nullptr. group_size is 32, 64 or
// 128; any M, N, K >= 1.
//
// round_x: allow the kernels to round x to int16 per (row, weight group),
// q = rint(x / s), s = max|x_g| / 32767, and multiply in integers
// (int4_avx2_x16.cpp; every AVX2 + F16C CPU, AVX-512 ones included). The
// error is at most 2^-16 max|x_g| per input, finer than bfloat16's rounding of
// every input within 2^7 of its group's largest. Without AVX2 the fp32 kernels
// run either way.
void w4a16_linear(Isa isa, const XRows& x, const uint8_t* packed, const uint16_t* scales, const uint8_t* zeros,
                  const float* bias, float* out, int64_t ldo, int64_t M, int64_t N, int64_t K, int group_size,
                  bool round_x = false);

// The kernel family that `isa` runs: "avx512", "avx2" or "portable" (an AVX2
// CPU without F16C runs the portable kernels); with round_x, "avx2-x16" where
// the int16 kernels run.
const char* w4a16_kernel_name(Isa isa, bool round_x = false);

}  // namespace pycomp::cpu
