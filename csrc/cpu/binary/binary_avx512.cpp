// AVX-512 binary kernels (AVX512F/BW/VL + VPOPCNTDQ), selected by CPUID.
//
// Compiled on every build (target attributes); tests/test_cpu_binary_kernels.py runs it on the CPU whenever it
// has VPOPCNTDQ (first on a Zen 5, session 11) and otherwise with the intrinsics emulated in software (SIMDe)
// through the driver, bit for bit against the portable kernels.
//
// W1A32: each 16-bit half of a packed word is a __mmask16 as it is, so vaddps {k} adds the
// 16 inputs whose bit is set: one masked add per 16 weights, subtracted twice from the plain sum.
// XNOR: vpxorq + vpopcntq + vpaddq per 512 bits for a 4 x 4 tile of activation and weight
// rows; K tails are masked loads (zeros never count).
#if defined(__x86_64__)

#include <immintrin.h>

#include "cpu/binary/binary_common.h"
#include "cpu/binary/binary_linear.h"

// GCC 12's AVX-512 headers spell "undefined" vectors as self-initialized variables (see int8_avx512.cpp).
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#define PYCOMP_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512vpopcntdq,avx2,fma,popcnt")))

namespace pycomp::cpu::binary::detail {
namespace {

constexpr int kNr = 4, kMr = 4;

// The sums of the x whose bit is set, for RN weight rows from `w` (stride ldw): one masked add per 16 weights,
// each 16-bit half of a word loaded straight into a mask register; 2 * RN independent accumulators (RN = 4:
// eight chains, enough to cover the add latency at two masked adds per cycle).
template <int RN>
PYCOMP_AVX512 void set_sums(const float* xi, const uint32_t* w, int64_t ldw, int64_t nwords, float* out) {
  __m512 acc[RN][2];
  for (int r = 0; r < RN; ++r) acc[r][0] = acc[r][1] = _mm512_setzero_ps();
  for (int64_t k = 0; k < nwords; ++k) {
    const __m512 x0 = _mm512_loadu_ps(xi + k * 32), x1 = _mm512_loadu_ps(xi + k * 32 + 16);
    for (int r = 0; r < RN; ++r) {
      const __mmask16* m = reinterpret_cast<const __mmask16*>(w + r * ldw + k);
      acc[r][0] = _mm512_mask_add_ps(acc[r][0], m[0], acc[r][0], x0);
      acc[r][1] = _mm512_mask_add_ps(acc[r][1], m[1], acc[r][1], x1);
    }
  }
  for (int r = 0; r < RN; ++r) out[r] = _mm512_reduce_add_ps(_mm512_add_ps(acc[r][0], acc[r][1]));
}

// s . x = sum(x) - 2 * (sum of the x whose bit is set): the plain sum once per x row, then set_sums over the
// weight rows four at a time.
PYCOMP_AVX512 void signed_dot(const float* x, int64_t ldx, int mr, const uint32_t* w, int64_t ldw, int nr,
                              int64_t nwords, float* sums) {
  for (int i = 0; i < mr; ++i) {
    const float* xi = x + i * ldx;
    __m512 all = _mm512_setzero_ps();
    for (int64_t k = 0; k < nwords; ++k)
      all = _mm512_add_ps(all, _mm512_add_ps(_mm512_loadu_ps(xi + k * 32), _mm512_loadu_ps(xi + k * 32 + 16)));
    const float total = _mm512_reduce_add_ps(all);
    float set[4];
    for (int r0 = 0; r0 < nr; r0 += 4) {
      const int rn = nr - r0 < 4 ? nr - r0 : 4;
      const uint32_t* wr = w + r0 * ldw;
      switch (rn) {
        case 4: set_sums<4>(xi, wr, ldw, nwords, set); break;
        case 3: set_sums<3>(xi, wr, ldw, nwords, set); break;
        case 2: set_sums<2>(xi, wr, ldw, nwords, set); break;
        default: set_sums<1>(xi, wr, ldw, nwords, set); break;
      }
      for (int r = 0; r < rn; ++r) sums[i * nr + r0 + r] = total - 2.f * set[r];
    }
  }
}

template <int MR, int NR>
PYCOMP_AVX512 void xor_popc_tile(const uint32_t* a, int64_t lda, const uint32_t* w, int64_t ldw, int64_t nwords,
                                 int64_t* counts, int ldc) {
  __m512i acc[MR][NR];
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j) acc[i][j] = _mm512_setzero_si512();
  for (int64_t k = 0; k < nwords; k += 16) {
    const int64_t rem = nwords - k;
    const __mmask16 mask = rem >= 16 ? static_cast<__mmask16>(0xffff) : static_cast<__mmask16>((1u << rem) - 1);
    __m512i av[MR];
    for (int i = 0; i < MR; ++i) av[i] = _mm512_maskz_loadu_epi32(mask, a + i * lda + k);
    for (int j = 0; j < NR; ++j) {
      const __m512i wv = _mm512_maskz_loadu_epi32(mask, w + j * ldw + k);
      for (int i = 0; i < MR; ++i)
        acc[i][j] = _mm512_add_epi64(acc[i][j], _mm512_popcnt_epi64(_mm512_xor_si512(av[i], wv)));
    }
  }
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j) counts[i * ldc + j] = _mm512_reduce_add_epi64(acc[i][j]);
}

PYCOMP_AVX512 void xor_popc(const uint32_t* a, int64_t lda, int mr, const uint32_t* w, int64_t ldw, int nr,
                            int64_t nwords, int64_t* counts) {
  if (mr == kMr && nr == kNr) return xor_popc_tile<kMr, kNr>(a, lda, w, ldw, nwords, counts, nr);
  for (int i = 0; i < mr; ++i)
    for (int j = 0; j < nr; ++j)
      xor_popc_tile<1, 1>(a + i * lda, lda, w + j * ldw, ldw, nwords, counts + i * nr + j, 1);
}

PYCOMP_AVX512 float binarize_row(const float* x, int64_t K, uint32_t* bits) {
  const __m512 zero = _mm512_setzero_ps();
  __m512 s = zero;
  int64_t w = 0;
  for (; (w + 1) * 32 <= K; ++w) {
    const __m512 v0 = _mm512_loadu_ps(x + w * 32), v1 = _mm512_loadu_ps(x + w * 32 + 16);
    const uint32_t lo = _mm512_cmp_ps_mask(v0, zero, _CMP_LT_OQ), hi = _mm512_cmp_ps_mask(v1, zero, _CMP_LT_OQ);
    bits[w] = lo | (hi << 16);
    s = _mm512_add_ps(s, _mm512_add_ps(_mm512_abs_ps(v0), _mm512_abs_ps(v1)));
  }
  return (_mm512_reduce_add_ps(s) + binarize_words(x, w, K, bits)) / static_cast<float>(K);
}

}  // namespace

// signed_dot takes one x row per call (rows share nothing but the x sum), 16 weight rows to spread that sum.
Kernels avx512_kernels() {
  return {&signed_dot, &xor_popc, &binarize_row, 1, 16, kMr, kNr, nullptr, nullptr, 0, 0, nullptr, nullptr, nullptr};
}

}  // namespace pycomp::cpu::binary::detail

#endif  // __x86_64__
