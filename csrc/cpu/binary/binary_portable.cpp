// Plain C++ binary kernels: the definition the SIMD ones are tested against, and the path
// on CPUs without AVX2.
#include "cpu/binary/binary_common.h"
#include "cpu/binary/binary_linear.h"

namespace pycomp::cpu::binary::detail {
namespace {

void signed_dot(const float* x, int64_t ldx, int mr, const uint32_t* w, int64_t ldw, int nr, int64_t nwords,
                float* sums) {
  for (int i = 0; i < mr; ++i)
    for (int r = 0; r < nr; ++r) {
      float s = 0.f;
      for (int64_t k = 0; k < nwords * 32; ++k) {
        const float v = x[i * ldx + k];
        s += (w[r * ldw + k / 32] >> (k % 32)) & 1u ? -v : v;
      }
      sums[i * nr + r] = s;
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
  return binarize_words(x, 0, K, bits) / static_cast<float>(K);
}

}  // namespace

Kernels portable_kernels() {
  return {&signed_dot, &xor_popc, &binarize_row, 4, 4, 4, 4, nullptr, nullptr, 0, 0, nullptr, nullptr, nullptr};
}

}  // namespace pycomp::cpu::binary::detail
