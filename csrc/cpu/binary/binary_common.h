// Pieces every ISA's binary kernels share (binary_portable.cpp, binary_avx2.cpp, binary_avx512.cpp).
#pragma once

#include <cmath>
#include <cstdint>

namespace pycomp::cpu::binary::detail {

// Sign bits (x < 0: -0.0 and NaN give 0) of x[32 * w0 .. K) into bits[w0 ..], bits past K zero; returns the
// sum of |x| over those inputs. The portable kernel's whole row; the SIMD ones' partial last word.
inline float binarize_words(const float* x, int64_t w0, int64_t K, uint32_t* bits) {
  float s = 0.f;
  for (int64_t w = w0; w * 32 < K; ++w) {
    uint32_t word = 0;
    for (int j = 0; j < 32 && w * 32 + j < K; ++j) {
      const float v = x[w * 32 + j];
      s += std::fabs(v);
      word |= static_cast<uint32_t>(v < 0.f) << j;
    }
    bits[w] = word;
  }
  return s;
}

}  // namespace pycomp::cpu::binary::detail
