// AVX2 binary kernels.
//
// W1A32: one packed word is broadcast to 8 lanes and shifted left by a different amount per
// lane (vpsllvd), so lane i of chunk c has bit 8c + i in its sign position; vblendvps picks x
// where that bit is set (0 elsewhere) and vaddps sums the picks. Per 8 weights: 1 shift,
// 1 blend, 1 add; the weights never become floats.
//
// XNOR: AVX2 has no vector popcount, so bytes are counted with the vpshufb nibble table
// (popc(v) = lut[v & 15] + lut[v >> 4] per byte), 256 bits per step for a 2 x 4 tile of
// activation and weight rows; byte counts (at most 8 per step) are summed for up to 31 steps
// before vpsadbw widens them, so they never overflow. Group tails shorter than 8 words use
// scalar popcnt.
#if defined(__x86_64__)

#include <immintrin.h>

#include <cmath>

#include "cpu/binary/binary_linear.h"

#define PYCOMP_AVX2 __attribute__((target("avx2,fma,popcnt")))

namespace pycomp::cpu::binary::detail {
namespace {

constexpr int kNr = 2;  // weight rows per masked_sum call: 2 x 4 accumulators fit the 16 ymm registers
constexpr int kXorMr = 2, kXorNr = 4;

PYCOMP_AVX2 float hsum(__m256 v) {
  __m128 h = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  h = _mm_add_ps(h, _mm_movehl_ps(h, h));
  return _mm_cvtss_f32(_mm_add_ss(h, _mm_shuffle_ps(h, h, 1)));
}

PYCOMP_AVX2 void masked_sum(const float* x, const uint32_t* w, int64_t ldw, int nr, int64_t nwords, float* sums) {
  // Lane i of chunk c shifts bit 8c + i to bit 31.
  const __m256i sh0 = _mm256_setr_epi32(31, 30, 29, 28, 27, 26, 25, 24);
  const __m256i sh1 = _mm256_sub_epi32(sh0, _mm256_set1_epi32(8));
  const __m256i sh2 = _mm256_sub_epi32(sh0, _mm256_set1_epi32(16));
  const __m256i sh3 = _mm256_sub_epi32(sh0, _mm256_set1_epi32(24));
  const __m256 zero = _mm256_setzero_ps();
  for (int r0 = 0; r0 < nr; r0 += kNr) {
    const int rn = nr - r0 < kNr ? nr - r0 : kNr;
    __m256 acc[kNr][4];
    for (int r = 0; r < kNr; ++r)
      for (int c = 0; c < 4; ++c) acc[r][c] = zero;
    for (int64_t i = 0; i < nwords; ++i) {
      const float* xi = x + i * 32;
      const __m256 x0 = _mm256_loadu_ps(xi), x1 = _mm256_loadu_ps(xi + 8), x2 = _mm256_loadu_ps(xi + 16),
                   x3 = _mm256_loadu_ps(xi + 24);
      for (int r = 0; r < kNr; ++r) {
        if (r >= rn) break;
        const __m256i b = _mm256_set1_epi32(static_cast<int>(w[(r0 + r) * ldw + i]));
        acc[r][0] = _mm256_add_ps(acc[r][0], _mm256_blendv_ps(zero, x0, _mm256_castsi256_ps(_mm256_sllv_epi32(b, sh0))));
        acc[r][1] = _mm256_add_ps(acc[r][1], _mm256_blendv_ps(zero, x1, _mm256_castsi256_ps(_mm256_sllv_epi32(b, sh1))));
        acc[r][2] = _mm256_add_ps(acc[r][2], _mm256_blendv_ps(zero, x2, _mm256_castsi256_ps(_mm256_sllv_epi32(b, sh2))));
        acc[r][3] = _mm256_add_ps(acc[r][3], _mm256_blendv_ps(zero, x3, _mm256_castsi256_ps(_mm256_sllv_epi32(b, sh3))));
      }
    }
    for (int r = 0; r < rn; ++r)
      sums[r0 + r] = hsum(_mm256_add_ps(_mm256_add_ps(acc[r][0], acc[r][1]), _mm256_add_ps(acc[r][2], acc[r][3])));
  }
}

PYCOMP_AVX2 inline __m256i popc_bytes(__m256i v, __m256i lut, __m256i low) {
  const __m256i lo = _mm256_and_si256(v, low), hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), low);
  return _mm256_add_epi8(_mm256_shuffle_epi8(lut, lo), _mm256_shuffle_epi8(lut, hi));
}

PYCOMP_AVX2 int64_t hsum_bytes(__m256i v) {
  const __m256i s = _mm256_sad_epu8(v, _mm256_setzero_si256());
  return _mm256_extract_epi64(s, 0) + _mm256_extract_epi64(s, 1) + _mm256_extract_epi64(s, 2) +
         _mm256_extract_epi64(s, 3);
}

template <int MR, int NR>
PYCOMP_AVX2 void xor_popc_tile(const uint32_t* a, int64_t lda, const uint32_t* w, int64_t ldw, int64_t nwords,
                               int64_t* counts, int ldc) {
  const __m256i lut = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4, 0, 1, 1, 2, 1, 2, 2, 3, 1, 2,
                                       2, 3, 2, 3, 3, 4);
  const __m256i low = _mm256_set1_epi8(0x0f);
  int64_t total[MR][NR] = {};
  const int64_t vec_words = nwords / 8 * 8;
  for (int64_t k0 = 0; k0 < vec_words; k0 += 31 * 8) {
    const int64_t k1 = k0 + 31 * 8 < vec_words ? k0 + 31 * 8 : vec_words;
    __m256i acc[MR][NR];
    for (int i = 0; i < MR; ++i)
      for (int j = 0; j < NR; ++j) acc[i][j] = _mm256_setzero_si256();
    for (int64_t k = k0; k < k1; k += 8) {
      __m256i av[MR];
      for (int i = 0; i < MR; ++i) av[i] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a + i * lda + k));
      for (int j = 0; j < NR; ++j) {
        const __m256i wv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + j * ldw + k));
        for (int i = 0; i < MR; ++i)
          acc[i][j] = _mm256_add_epi8(acc[i][j], popc_bytes(_mm256_xor_si256(av[i], wv), lut, low));
      }
    }
    for (int i = 0; i < MR; ++i)
      for (int j = 0; j < NR; ++j) total[i][j] += hsum_bytes(acc[i][j]);
  }
  for (int64_t k = vec_words; k < nwords; ++k)
    for (int i = 0; i < MR; ++i)
      for (int j = 0; j < NR; ++j) total[i][j] += _mm_popcnt_u32(a[i * lda + k] ^ w[j * ldw + k]);
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j) counts[i * ldc + j] = total[i][j];
}

PYCOMP_AVX2 void xor_popc(const uint32_t* a, int64_t lda, int mr, const uint32_t* w, int64_t ldw, int nr,
                          int64_t nwords, int64_t* counts) {
  if (mr == kXorMr && nr == kXorNr) return xor_popc_tile<kXorMr, kXorNr>(a, lda, w, ldw, nwords, counts, nr);
  // Edge tiles: one weight row at a time (any mr, nr).
  for (int i = 0; i < mr; ++i)
    for (int j = 0; j < nr; ++j) xor_popc_tile<1, 1>(a + i * lda, lda, w + j * ldw, ldw, nwords, counts + i * nr + j, 1);
}

PYCOMP_AVX2 float binarize_row(const float* x, int64_t K, uint32_t* bits) {
  const __m256 zero = _mm256_setzero_ps(), sign = _mm256_set1_ps(-0.f);
  __m256 s0 = zero, s1 = zero;
  int64_t w = 0;
  for (; (w + 1) * 32 <= K; ++w) {
    const float* xi = x + w * 32;
    uint32_t word = 0;
    for (int c = 0; c < 4; ++c) {
      const __m256 v = _mm256_loadu_ps(xi + 8 * c);
      // x < 0 (ordered): -0.0 and NaN give 0, as in the reference's (x < 0).
      word |= static_cast<uint32_t>(_mm256_movemask_ps(_mm256_cmp_ps(v, zero, _CMP_LT_OQ))) << (8 * c);
      if (c & 1)
        s1 = _mm256_add_ps(s1, _mm256_andnot_ps(sign, v));
      else
        s0 = _mm256_add_ps(s0, _mm256_andnot_ps(sign, v));
    }
    bits[w] = word;
  }
  float s = hsum(_mm256_add_ps(s0, s1));
  if (w * 32 < K) {
    uint32_t word = 0;
    for (int j = 0; w * 32 + j < K; ++j) {
      const float v = x[w * 32 + j];
      s += std::fabs(v);
      word |= static_cast<uint32_t>(v < 0.f) << j;
    }
    bits[w] = word;
  }
  return s / static_cast<float>(K);
}

}  // namespace

Kernels avx2_kernels() { return {&masked_sum, &xor_popc, &binarize_row, 4, kXorMr}; }

}  // namespace pycomp::cpu::binary::detail

#endif  // __x86_64__
