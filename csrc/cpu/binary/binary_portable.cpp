// Plain C++ binary kernels: the definition the SIMD ones are tested against, and the path
// on CPUs without AVX2.
#include <cmath>

#include "cpu/binary/binary_linear.h"

namespace pycomp::cpu::binary::detail {
namespace {

void masked_sum(const float* x, const uint32_t* w, int64_t ldw, int nr, int64_t nwords, float* sums) {
  for (int r = 0; r < nr; ++r) {
    float s = 0.f;
    for (int64_t i = 0; i < nwords; ++i) {
      const uint32_t bits = w[r * ldw + i];
      for (int j = 0; j < 32; ++j) s += (bits >> j) & 1u ? x[i * 32 + j] : 0.f;
    }
    sums[r] = s;
  }
}

void xor_popc(const uint32_t* a, int64_t lda, int mr, const uint32_t* w, int64_t ldw, int nr, int64_t nwords,
              int64_t* counts) {
  for (int i = 0; i < mr; ++i)
    for (int r = 0; r < nr; ++r) {
      int64_t c = 0;
      for (int64_t k = 0; k < nwords; ++k) c += __builtin_popcount(a[i * lda + k] ^ w[r * ldw + k]);
      counts[i * nr + r] = c;
    }
}

float binarize_row(const float* x, int64_t K, uint32_t* bits) {
  float s = 0.f;
  for (int64_t w = 0; w < (K + 31) / 32; ++w) {
    uint32_t word = 0;
    for (int j = 0; j < 32 && w * 32 + j < K; ++j) {
      const float v = x[w * 32 + j];
      s += std::fabs(v);
      word |= static_cast<uint32_t>(v < 0.f) << j;
    }
    bits[w] = word;
  }
  return s / static_cast<float>(K);
}

}  // namespace

Kernels portable_kernels() { return {&masked_sum, &xor_popc, &binarize_row, 4, 4}; }

}  // namespace pycomp::cpu::binary::detail
