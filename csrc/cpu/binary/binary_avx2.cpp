// AVX2 binary kernels.
//
// W1A32, one row of x (GEMV): vpsllvd + vblendvps select/add (dot_row). Several rows of x: a sign table
// (kSigns: each weight byte -> 8 floats of +-1, 8 KB, L1-resident) turns one byte load into the 8 signs,
// and a 3 x 4 tile of x rows and weight rows runs FMAs on them, each sign vector serving 3 rows of x.
// The weights never become floats in memory.
//
// XNOR: AVX2 has no vector popcount, so bytes are counted with the vpshufb nibble table
// (popc(v) = lut[v & 15] + lut[v >> 4] per byte), 256 bits per step for a 2 x 4 tile of
// activation and weight rows; byte counts (at most 8 per step) are summed for up to 31 steps
// before vpsadbw widens them, so they never overflow. Group tails shorter than 8 words use
// scalar popcnt.
#if defined(__x86_64__)

#include <immintrin.h>

#include "cpu/binary/binary_common.h"
#include "cpu/binary/binary_linear.h"

#define PYCOMP_AVX2 __attribute__((target("avx2,fma,popcnt")))

namespace pycomp::cpu::binary::detail {
namespace {

// signed_dot tiles of x rows x weight rows: 3 x 4 accumulators, 3 x rows and a sign row fill the 16 ymm registers.
constexpr int kDotMr = 3, kDotNr = 4;
constexpr int kXorMr = 2, kXorNr = 4;

PYCOMP_AVX2 float hsum(__m256 v) {
  __m128 h = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  h = _mm_add_ps(h, _mm_movehl_ps(h, h));
  return _mm_cvtss_f32(_mm_add_ss(h, _mm_shuffle_ps(h, h, 1)));
}

// kSigns.v[b][i] = -1 where bit i of byte b is set, else +1: one 32-byte row per weight byte.
struct SignTable {
  alignas(32) float v[256][8];
};
constexpr SignTable make_signs() {
  SignTable t{};
  for (int b = 0; b < 256; ++b)
    for (int i = 0; i < 8; ++i) t.v[b][i] = (b >> i) & 1 ? -1.f : 1.f;
  return t;
}
constexpr SignTable kSigns = make_signs();

template <int MR, int NR>
PYCOMP_AVX2 void dot_tile(const float* x, int64_t ldx, const uint32_t* w, int64_t ldw, int64_t nwords, float* sums,
                          int ldc) {
  __m256 acc[MR][NR];
  for (int r = 0; r < MR; ++r)
    for (int j = 0; j < NR; ++j) acc[r][j] = _mm256_setzero_ps();
  // Byte c of little-endian word i holds the signs of inputs 32i + 8c .. 32i + 8c + 7; loading it on its own
  // costs one load instead of shifts and masks on the word.
  const uint8_t* wb = reinterpret_cast<const uint8_t*>(w);
  for (int64_t b = 0; b < nwords * 4; ++b) {
    __m256 xv[MR];
    for (int r = 0; r < MR; ++r) xv[r] = _mm256_loadu_ps(x + r * ldx + b * 8);
    for (int j = 0; j < NR; ++j) {
      const __m256 s = _mm256_load_ps(kSigns.v[wb[j * ldw * 4 + b]]);
      for (int r = 0; r < MR; ++r) acc[r][j] = _mm256_fmadd_ps(s, xv[r], acc[r][j]);
    }
  }
  for (int r = 0; r < MR; ++r)
    for (int j = 0; j < NR; ++j) sums[r * ldc + j] = hsum(acc[r][j]);
}

// acc + x in the lanes whose weight bit (b shifted left by sh) is set. Written as blend(acc, acc + x) rather
// than acc + blend(0, x): the compiler turns a blend with zero into compare + and, one uop more.
PYCOMP_AVX2 inline __m256 add_where(__m256 acc, __m256 x, __m256i b, __m256i sh) {
  return _mm256_blendv_ps(acc, _mm256_add_ps(acc, x), _mm256_castsi256_ps(_mm256_sllv_epi32(b, sh)));
}

// One row of x: s . x = sum(x) - 2 * (sum of the x whose bit is set). One packed word is broadcast to 8
// lanes and shifted left by a different amount per lane (vpsllvd), so lane i of chunk c has bit 8c + i in its
// sign position for vblendvps: per 8 weights 1 shift, 1 add, 1 blend, 2 rows of w per pass sharing the x
// loads. (The sign-table FMA of dot_tile measured slower here: two loads per 8 weights for one FMA.)
PYCOMP_AVX2 void dot_row(const float* x, const uint32_t* w, int64_t ldw, int nr, int64_t nwords, float* sums) {
  const __m256i sh0 = _mm256_setr_epi32(31, 30, 29, 28, 27, 26, 25, 24);
  const __m256i sh1 = _mm256_sub_epi32(sh0, _mm256_set1_epi32(8));
  const __m256i sh2 = _mm256_sub_epi32(sh0, _mm256_set1_epi32(16));
  const __m256i sh3 = _mm256_sub_epi32(sh0, _mm256_set1_epi32(24));
  const __m256 zero = _mm256_setzero_ps();
  __m256 all[4] = {zero, zero, zero, zero};
  for (int64_t i = 0; i < nwords; ++i)
    for (int c = 0; c < 4; ++c) all[c] = _mm256_add_ps(all[c], _mm256_loadu_ps(x + i * 32 + c * 8));
  const float total = hsum(_mm256_add_ps(_mm256_add_ps(all[0], all[1]), _mm256_add_ps(all[2], all[3])));
  for (int r0 = 0; r0 < nr; r0 += 2) {
    const int rn = nr - r0 < 2 ? nr - r0 : 2;
    __m256 acc[2][4];
    for (int r = 0; r < 2; ++r)
      for (int c = 0; c < 4; ++c) acc[r][c] = zero;
    for (int64_t i = 0; i < nwords; ++i) {
      const float* xi = x + i * 32;
      const __m256 x0 = _mm256_loadu_ps(xi), x1 = _mm256_loadu_ps(xi + 8), x2 = _mm256_loadu_ps(xi + 16),
                   x3 = _mm256_loadu_ps(xi + 24);
      for (int r = 0; r < 2; ++r) {
        if (r >= rn) break;
        const __m256i b = _mm256_set1_epi32(static_cast<int>(w[(r0 + r) * ldw + i]));
        acc[r][0] = add_where(acc[r][0], x0, b, sh0);
        acc[r][1] = add_where(acc[r][1], x1, b, sh1);
        acc[r][2] = add_where(acc[r][2], x2, b, sh2);
        acc[r][3] = add_where(acc[r][3], x3, b, sh3);
      }
    }
    for (int r = 0; r < rn; ++r)
      sums[r0 + r] =
          total - 2.f * hsum(_mm256_add_ps(_mm256_add_ps(acc[r][0], acc[r][1]), _mm256_add_ps(acc[r][2], acc[r][3])));
  }
}

PYCOMP_AVX2 void signed_dot(const float* x, int64_t ldx, int mr, const uint32_t* w, int64_t ldw, int nr,
                            int64_t nwords, float* sums) {
  const int nt = nr / kDotNr * kDotNr;  // weight rows the tiles cover; the rest go row by row
  int i = 0;
  for (; i + kDotMr <= mr; i += kDotMr) {
    for (int j = 0; j < nt; j += kDotNr)
      dot_tile<kDotMr, kDotNr>(x + i * ldx, ldx, w + j * ldw, ldw, nwords, sums + i * nr + j, nr);
    if (nt < nr)
      for (int r = i; r < i + kDotMr; ++r) dot_row(x + r * ldx, w + nt * ldw, ldw, nr - nt, nwords, sums + r * nr + nt);
  }
  for (; i < mr; ++i) dot_row(x + i * ldx, w, ldw, nr, nwords, sums + i * nr);
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
  return (hsum(_mm256_add_ps(s0, s1)) + binarize_words(x, w, K, bits)) / static_cast<float>(K);
}

}  // namespace

Kernels avx2_kernels() { return {&signed_dot, &xor_popc, &binarize_row, kDotMr, 16, kXorMr, kXorNr}; }

}  // namespace pycomp::cpu::binary::detail

#endif  // __x86_64__
