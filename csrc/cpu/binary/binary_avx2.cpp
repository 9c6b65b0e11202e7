// AVX2 binary kernels.
//
// W1A32 up to 64 rows of x (the driver's choice): table lookup (lut_tables, lut_dot), per 3 inputs and 8 weight
// rows one vpermps. More rows: a sign table (kSigns: each weight byte -> 8 floats of +-1, 8 KB, L1-resident)
// turns one byte load into the 8 signs, and a 3 x 4 tile of x rows and weight rows runs FMAs on them, each sign
// vector serving 3 rows of x; leftover rows of x go through vpsllvd + vblendvps select/add (dot_row). The weights
// never become floats in memory.
//
// XNOR from 4 rows of x: table lookup on pairs of x rows (xnor_pair), per 4 inputs, 32 weight rows and 2 rows of x
// one vpshufb. Fewer rows:
// AVX2 has no vector popcount, so bytes are counted with the vpshufb nibble table
// (popc(v) = lut[v & 15] + lut[v >> 4] per byte), 256 bits per step for a 2 x 4 tile of
// activation and weight rows; byte counts (at most 8 per step) are summed for up to 31 steps
// before vpsadbw widens them, so they never overflow. Group tails shorter than 8 words use
// scalar popcnt.
#if defined(__x86_64__)

#include <immintrin.h>

#include "cpu/avx2_common.h"
#include "cpu/binary/binary_common.h"
#include "cpu/binary/binary_linear.h"

#define PYCOMP_AVX2 __attribute__((target("avx2,fma,popcnt")))

namespace pycomp::cpu::binary::detail {
namespace {

// signed_dot tiles of x rows x weight rows: 3 x 4 accumulators, 3 x rows and a sign row fill the 16 ymm registers.
constexpr int kDotMr = 3, kDotNr = 4;
constexpr int kXorMr = 2, kXorNr = 4;

using avx2::hsum;

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

// W1A32 by table lookup. Each word's 32 inputs form 11 triples (the last a pair); per triple the 8 signed sums
// +-x0 +-x1 +-x2 (entry i: minus where bit b of i is set) are one __m256 table, built once per call. Eight weight
// rows sit in the 8 lanes of a vector (their words transposed), and vpermps looks up each lane's 3 sign bits: per
// 3 inputs and 8 weight rows one shift, plus one permute and one add per row of x, a third of the instructions
// of dot_row (vpsllvd, vaddps, vblendvps per 8 inputs of one weight row). vpermps issues once per cycle on
// Zen 3, which bounds it.
PYCOMP_AVX2 void lut_tables(const float* xp, int64_t KW, float* tables) {
  __m256 s[3];
  for (int b = 0; b < 3; ++b)
    s[b] = _mm256_setr_ps(1.f, (1 >> b) & 1 ? -1.f : 1.f, (2 >> b) & 1 ? -1.f : 1.f, (3 >> b) & 1 ? -1.f : 1.f,
                          (4 >> b) & 1 ? -1.f : 1.f, (5 >> b) & 1 ? -1.f : 1.f, (6 >> b) & 1 ? -1.f : 1.f,
                          (7 >> b) & 1 ? -1.f : 1.f);
  for (int64_t w = 0; w < KW; ++w) {
    const float* x = xp + w * 32;
    float* t = tables + w * kLutFloatsPerWord;
    for (int j = 0; j < 10; ++j) {
      const __m256 e = _mm256_fmadd_ps(s[2], _mm256_set1_ps(x[3 * j + 2]),
                                       _mm256_fmadd_ps(s[1], _mm256_set1_ps(x[3 * j + 1]),
                                                       _mm256_mul_ps(s[0], _mm256_set1_ps(x[3 * j]))));
      _mm256_store_ps(t + 8 * j, e);
    }
    // Inputs 30 and 31: the index word >> 30 is 0..3, so entries 4..7 are never read.
    _mm256_store_ps(t + 80, _mm256_fmadd_ps(s[1], _mm256_set1_ps(x[31]), _mm256_mul_ps(s[0], _mm256_set1_ps(x[30]))));
  }
}

// Words w .. w + 7 of 8 weight rows (row pointers p, nw <= 8 valid words) as 8 vectors, vector j holding word
// w + j of rows 0..7.
PYCOMP_AVX2 inline void transpose_words(const uint32_t* const* p, int64_t w, int64_t nw, __m256i* out) {
  __m256i r[8];
  if (nw == 8) {
    for (int i = 0; i < 8; ++i) r[i] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p[i] + w));
  } else {
    const __m256i mask =
        _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(nw)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    for (int i = 0; i < 8; ++i) r[i] = _mm256_maskload_epi32(reinterpret_cast<const int*>(p[i] + w), mask);
  }
  __m256i t[8], u[8];
  for (int i = 0; i < 4; ++i) {
    t[2 * i] = _mm256_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm256_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
  }
  for (int h = 0; h < 2; ++h) {  // rows 4h .. 4h + 3
    u[4 * h] = _mm256_unpacklo_epi64(t[4 * h], t[4 * h + 2]);
    u[4 * h + 1] = _mm256_unpackhi_epi64(t[4 * h], t[4 * h + 2]);
    u[4 * h + 2] = _mm256_unpacklo_epi64(t[4 * h + 1], t[4 * h + 3]);
    u[4 * h + 3] = _mm256_unpackhi_epi64(t[4 * h + 1], t[4 * h + 3]);
  }
  for (int j = 0; j < 4; ++j) {
    out[j] = _mm256_permute2x128_si256(u[j], u[4 + j], 0x20);
    out[j + 4] = _mm256_permute2x128_si256(u[j], u[4 + j], 0x31);
  }
}

constexpr int kLutR = 4;  // blocks of 8 weight rows per pass: each table load serves 4 x MR lookups
constexpr int kLutMr = 4;

// sums[i * lds + r] for MR rows of x (tables at stride ldt) and nr <= 8 * kLutR weight rows.
template <int MR>
PYCOMP_AVX2 void lut_pass(const float* tables, int64_t ldt, const uint32_t* w, int64_t ldw, int nr, int64_t nwords,
                          float* sums, int lds) {
  const uint32_t* rows[8 * kLutR];
  // Rows past nr read row 0 again (their lanes are dropped), so every pass runs whole blocks.
  for (int r = 0; r < 8 * kLutR; ++r) rows[r] = w + (r < nr ? r : 0) * ldw;
  __m256 acc[MR][kLutR];
  for (int i = 0; i < MR; ++i)
    for (int b = 0; b < kLutR; ++b) acc[i][b] = _mm256_setzero_ps();
  for (int64_t w0 = 0; w0 < nwords; w0 += 8) {
    const int64_t nw = nwords - w0 < 8 ? nwords - w0 : 8;
    alignas(32) __m256i tw[8][kLutR];
    for (int b = 0; b < kLutR; ++b) {
      __m256i t[8];
      transpose_words(rows + 8 * b, w0, nw, t);
      for (int j = 0; j < 8; ++j) tw[j][b] = t[j];
    }
    for (int64_t j = 0; j < nw; ++j) {
      // The next pass's rows, spread over the pass (line w0 / 16 of 16 rows per chunk, 2 per word): the hardware
      // prefetcher follows the 32 row streams of a pass poorly, and cold weights cost more than the lookups.
      for (int r = 16 * (w0 / 8 % 2) + 2 * static_cast<int>(j); r < 16 * (w0 / 8 % 2) + 2 * j + 2; ++r)
        _mm_prefetch(reinterpret_cast<const char*>(reinterpret_cast<uintptr_t>(rows[r] + w0 / 16 * 16) +
                                                   8 * kLutR * ldw * 4),
                     _MM_HINT_T0);
      const float* tab = tables + (w0 + j) * kLutFloatsPerWord;
      __m256i v[kLutR];
      for (int b = 0; b < kLutR; ++b) v[b] = tw[j][b];
      for (int t = 0; t < 11; ++t) {
        for (int i = 0; i < MR; ++i) {
          const __m256 e = _mm256_load_ps(tab + i * ldt + 8 * t);
          for (int b = 0; b < kLutR; ++b) acc[i][b] = _mm256_add_ps(acc[i][b], _mm256_permutevar8x32_ps(e, v[b]));
        }
        for (int b = 0; b < kLutR; ++b) v[b] = _mm256_srli_epi32(v[b], 3);
        // Left alone, GCC hoists all 11 x MR x kLutR lookups of the word ahead of their adds and spills them to
        // the stack; an empty asm per step keeps each step's lookups next to their adds.
        for (int b = 0; b < kLutR; ++b) asm volatile("" : "+x"(v[b]));
        for (int i = 0; i < MR; ++i)
          for (int b = 0; b < kLutR; ++b) asm volatile("" : "+x"(acc[i][b]));
      }
    }
  }
  alignas(32) float tmp[8 * kLutR];
  for (int i = 0; i < MR; ++i) {
    for (int b = 0; b < kLutR; ++b) _mm256_store_ps(tmp + 8 * b, acc[i][b]);
    for (int r = 0; r < nr; ++r) sums[i * lds + r] = tmp[r];
  }
}

PYCOMP_AVX2 void lut_dot(const float* tables, int64_t ldt, int mr, const uint32_t* w, int64_t ldw, int nr,
                         int64_t nwords, float* sums) {
  switch (mr) {
    case 1: return lut_pass<1>(tables, ldt, w, ldw, nr, nwords, sums, nr);
    case 2: return lut_pass<2>(tables, ldt, w, ldw, nr, nwords, sums, nr);
    case 3: return lut_pass<3>(tables, ldt, w, ldw, nr, nwords, sums, nr);
    default: return lut_pass<4>(tables, ldt, w, ldw, nr, nwords, sums, nr);
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

// XNOR by table lookup on pairs of activation rows. vpshufb's 32 byte lanes are 32 weight rows (one nibble of
// each, xnor_pair_prep) and its 16-byte table, the same for all lanes, is kPairPop[a1 | a2 << 4] for the nibbles
// a1, a2 of two activation rows at that position: entry v = popc(a1 xor v) + 16 popc(a2 xor v), both counts in one
// byte. Per 4 inputs, 32 weight rows and 2 activation rows: one vpshufb, one vpaddb, and a third of a 3-op flush.
// (The single-row table it replaced spent a vpshufb and a vpaddb per 4 inputs x 32 rows x 1 activation row.)
//
// Counting: each nibble field of a byte holds at most 4 per step, so 3 steps are summed bytewise (at most 12 per
// field) before a flush adds them to two byte accumulators, A1 += acc and A2 += acc >> 4 (a 16-bit shift). The
// fields are not separated there; with L, H the true sums of the low and high fields of a byte and e, o the even
// and odd byte of each 16-bit word, the accumulators hold (mod 256)
//   A1_e = L_e + 16 H_e,   A1_o = L_o + 16 H_o,   A2_e = H_e + 16 L_o,   A2_o = H_o,
// from which pair_recover takes L = A1 - 16 A2 (bytewise: the 16 L_o term drops out mod 256) and then
// H = A2 - 16 L_o (even bytes), exact while every true sum is at most 255: kPairChunkSteps steps (4 per step).
struct PairPopTable {
  alignas(16) uint8_t v[256][16];
};
constexpr PairPopTable make_pair_pop() {
  PairPopTable t{};
  for (int a = 0; a < 256; ++a)
    for (int v = 0; v < 16; ++v) {
      const int d1 = (a & 15) ^ v, d2 = (a >> 4) ^ v;
      const int p1 = (d1 & 1) + (d1 >> 1 & 1) + (d1 >> 2 & 1) + (d1 >> 3 & 1);
      const int p2 = (d2 & 1) + (d2 >> 1 & 1) + (d2 >> 2 & 1) + (d2 >> 3 & 1);
      t.v[a][v] = static_cast<uint8_t>(p1 + 16 * p2);
    }
  return t;
}
constexpr PairPopTable kPairPop = make_pair_pop();
constexpr int64_t kPairChunkSteps = 60;  // 60 steps x 4 = 240 <= 255; a multiple of the 3-step flush

// Which of its 32 rows xnor_pair_prep reads for each lane. Its shuffles leave virtual row 8 (d % 4) + 4 (d / 4) + e
// in byte lane p = 4 d + e, and xnor_pair widens byte lanes to 16-bit counts with unpacklo/unpackhi, whose
// element order is lanes 0-7, 16-23 (lo), 8-15, 24-31 (hi): kPrepRow maps each virtual row to the row that makes
// count element e that of row e, so no permutation is left for the counts.
struct PrepRows {
  int v[32];
};
constexpr PrepRows make_prep_rows() {
  PrepRows t{};
  for (int e = 0; e < 32; ++e) {
    const int lane = e < 16 ? (e < 8 ? e : e + 8) : (e < 24 ? e - 8 : e);
    const int d = lane / 4, b = lane % 4;
    t.v[8 * (d % 4) + 4 * (d / 4) + b] = e;
  }
  return t;
}
constexpr PrepRows kPrepRow = make_prep_rows();

// off[c] = 16 * (nibble c of a1 | nibble c of a2 << 4): the byte offset of the step's table in kPairPop.
PYCOMP_AVX2 void xnor_pair_offsets(const uint32_t* a1, const uint32_t* a2, int64_t nwords, uint16_t* off) {
  const uint8_t* b1 = reinterpret_cast<const uint8_t*>(a1);
  const uint8_t* b2 = reinterpret_cast<const uint8_t*>(a2);
  for (int64_t i = 0; i < nwords * 4; ++i) {
    off[2 * i] = static_cast<uint16_t>(16 * ((b1[i] & 15) | (b2[i] & 15) << 4));
    off[2 * i + 1] = static_cast<uint16_t>(16 * ((b1[i] >> 4) | (b2[i] & 0xf0)));
  }
}

// idx[(w * 8 + q) * 128 + 32 * h + p]: nibble q of word w of the weight row of 32 * h .. 32 * h + 31 that kPrepRow
// puts in lane p, for nr <= 128 rows (rows past nr repeat row 0; their lanes are dropped).
PYCOMP_AVX2 void xnor_pair_prep(const uint32_t* w, int64_t ldw, int nr, int64_t nwords, uint8_t* idx) {
  constexpr int kRows = 128;
  const uint32_t* rows[kRows];
  for (int r = 0; r < kRows; ++r) {
    const int row = 32 * (r / 32) + kPrepRow.v[r % 32];
    rows[r] = w + (row < nr ? row : 0) * ldw;
  }
  // Within each 128-bit lane (4 rows, a word each): dword d <- byte d of the 4 rows.
  const __m256i gather = _mm256_setr_epi8(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15, 0, 4, 8, 12, 1, 5, 9,
                                          13, 2, 6, 10, 14, 3, 7, 11, 15);
  const __m256i low = _mm256_set1_epi8(0x0f);
  for (int64_t w0 = 0; w0 < nwords; w0 += 8) {
    const int64_t nw = nwords - w0 < 8 ? nwords - w0 : 8;
    for (int h = 0; h < kRows / 32; ++h) {
      __m256i t[4][8];  // t[k][j]: word w0 + j of rows 32h + 8k .. + 7
      for (int k = 0; k < 4; ++k) transpose_words(rows + 32 * h + 8 * k, w0, nw, t[k]);
      for (int64_t j = 0; j < nw; ++j) {
        __m256i p[4];
        for (int k = 0; k < 4; ++k) p[k] = _mm256_shuffle_epi8(t[k][j], gather);
        const __m256i u0 = _mm256_unpacklo_epi32(p[0], p[1]), u1 = _mm256_unpackhi_epi32(p[0], p[1]),
                      u2 = _mm256_unpacklo_epi32(p[2], p[3]), u3 = _mm256_unpackhi_epi32(p[2], p[3]);
        const __m256i v[4] = {_mm256_unpacklo_epi64(u0, u2), _mm256_unpackhi_epi64(u0, u2),
                              _mm256_unpacklo_epi64(u1, u3), _mm256_unpackhi_epi64(u1, u3)};
        uint8_t* out = idx + (w0 + j) * 8 * kRows + 32 * h;
        for (int b = 0; b < 4; ++b) {  // byte b of the word: nibbles 2b and 2b + 1
          _mm256_store_si256(reinterpret_cast<__m256i*>(out + (2 * b) * kRows), _mm256_and_si256(v[b], low));
          _mm256_store_si256(reinterpret_cast<__m256i*>(out + (2 * b + 1) * kRows),
                             _mm256_and_si256(_mm256_srli_epi16(v[b], 4), low));
        }
      }
    }
  }
}

// L, H from the accumulators (see above); c1, c2 += their 32 lanes as 16-bit counts.
PYCOMP_AVX2 inline void pair_recover(__m256i a1, __m256i a2, uint16_t* c1, uint16_t* c2) {
  const __m256i zero = _mm256_setzero_si256();
  const __m256i l = _mm256_sub_epi8(a1, _mm256_and_si256(_mm256_slli_epi16(a2, 4), _mm256_set1_epi8(-16)));
  const __m256i h = _mm256_sub_epi8(a2, _mm256_and_si256(_mm256_srli_epi16(l, 4), _mm256_set1_epi16(0xf0)));
  __m256i* p1 = reinterpret_cast<__m256i*>(c1);
  __m256i* p2 = reinterpret_cast<__m256i*>(c2);
  _mm256_storeu_si256(p1, _mm256_add_epi16(_mm256_loadu_si256(p1), _mm256_unpacklo_epi8(l, zero)));
  _mm256_storeu_si256(p1 + 1, _mm256_add_epi16(_mm256_loadu_si256(p1 + 1), _mm256_unpackhi_epi8(l, zero)));
  _mm256_storeu_si256(p2, _mm256_add_epi16(_mm256_loadu_si256(p2), _mm256_unpacklo_epi8(h, zero)));
  _mm256_storeu_si256(p2 + 1, _mm256_add_epi16(_mm256_loadu_si256(p2 + 1), _mm256_unpackhi_epi8(h, zero)));
}

// One step's lookups (table offset o, 4 index vectors at ix), summed into acc.
PYCOMP_AVX2 inline void pair_step(const uint8_t* tab, uint16_t o, const uint8_t* ix, __m256i* acc) {
  const __m256i t = _mm256_broadcastsi128_si256(_mm_load_si128(reinterpret_cast<const __m128i*>(tab + o)));
  for (int j = 0; j < 4; ++j)
    acc[j] = _mm256_add_epi8(acc[j], _mm256_shuffle_epi8(t, _mm256_load_si256(reinterpret_cast<const __m256i*>(ix + 32 * j))));
}

// c1[r] += popc(a1 xor w_r), c2[r] += popc(a2 xor w_r) over nwords words, for the 128 rows of idx
// (xnor_pair_prep) and the offsets of a1, a2 (xnor_pair_offsets), both at the same first word.
PYCOMP_AVX2 void xnor_pair(const uint16_t* off, const uint8_t* idx, int64_t nwords, uint16_t* c1, uint16_t* c2) {
  const uint8_t* tab = &kPairPop.v[0][0];
  const int64_t steps = nwords * 8;
  for (int64_t s0 = 0; s0 < steps; s0 += kPairChunkSteps) {
    const int64_t s1 = s0 + kPairChunkSteps < steps ? s0 + kPairChunkSteps : steps;
    __m256i a10 = _mm256_setzero_si256(), a11 = a10, a12 = a10, a13 = a10, a20 = a10, a21 = a10, a22 = a10,
            a23 = a10;
    int64_t s = s0;
    // Three steps and their flush, register by register: written with intrinsics, GCC keeps the accumulators
    // in registers only with extra moves and spills one of them (measured 25% slower in a harness).
    for (; s + 3 <= s1; s += 3) {
      const uint16_t* o = off + s;
      const uint8_t* ix = idx + 128 * s;
      asm("movzwl (%[o]), %%eax\n\t"
          "vbroadcasti128 (%[tab],%%rax), %%ymm0\n\t"
          "vpshufb (%[ix]), %%ymm0, %%ymm1\n\t"
          "vpshufb 32(%[ix]), %%ymm0, %%ymm2\n\t"
          "vpshufb 64(%[ix]), %%ymm0, %%ymm3\n\t"
          "vpshufb 96(%[ix]), %%ymm0, %%ymm4\n\t"
          "movzwl 2(%[o]), %%eax\n\t"
          "vbroadcasti128 (%[tab],%%rax), %%ymm0\n\t"
          "vpshufb 128(%[ix]), %%ymm0, %%ymm5\n\t"
          "vpaddb %%ymm5, %%ymm1, %%ymm1\n\t"
          "vpshufb 160(%[ix]), %%ymm0, %%ymm5\n\t"
          "vpaddb %%ymm5, %%ymm2, %%ymm2\n\t"
          "vpshufb 192(%[ix]), %%ymm0, %%ymm5\n\t"
          "vpaddb %%ymm5, %%ymm3, %%ymm3\n\t"
          "vpshufb 224(%[ix]), %%ymm0, %%ymm5\n\t"
          "vpaddb %%ymm5, %%ymm4, %%ymm4\n\t"
          "movzwl 4(%[o]), %%eax\n\t"
          "vbroadcasti128 (%[tab],%%rax), %%ymm0\n\t"
          "vpshufb 256(%[ix]), %%ymm0, %%ymm5\n\t"
          "vpaddb %%ymm5, %%ymm1, %%ymm1\n\t"
          "vpshufb 288(%[ix]), %%ymm0, %%ymm5\n\t"
          "vpaddb %%ymm5, %%ymm2, %%ymm2\n\t"
          "vpshufb 320(%[ix]), %%ymm0, %%ymm5\n\t"
          "vpaddb %%ymm5, %%ymm3, %%ymm3\n\t"
          "vpshufb 352(%[ix]), %%ymm0, %%ymm5\n\t"
          "vpaddb %%ymm5, %%ymm4, %%ymm4\n\t"
          "vpaddb %%ymm1, %[a10], %[a10]\n\t"
          "vpsrlw $4, %%ymm1, %%ymm1\n\t"
          "vpaddb %%ymm1, %[a20], %[a20]\n\t"
          "vpaddb %%ymm2, %[a11], %[a11]\n\t"
          "vpsrlw $4, %%ymm2, %%ymm2\n\t"
          "vpaddb %%ymm2, %[a21], %[a21]\n\t"
          "vpaddb %%ymm3, %[a12], %[a12]\n\t"
          "vpsrlw $4, %%ymm3, %%ymm3\n\t"
          "vpaddb %%ymm3, %[a22], %[a22]\n\t"
          "vpaddb %%ymm4, %[a13], %[a13]\n\t"
          "vpsrlw $4, %%ymm4, %%ymm4\n\t"
          "vpaddb %%ymm4, %[a23], %[a23]"
          : [a10] "+x"(a10), [a11] "+x"(a11), [a12] "+x"(a12), [a13] "+x"(a13), [a20] "+x"(a20),
            [a21] "+x"(a21), [a22] "+x"(a22), [a23] "+x"(a23)
          : [o] "r"(o), [ix] "r"(ix), [tab] "r"(tab), "m"(*reinterpret_cast<const uint8_t(*)[384]>(ix)),
            "m"(*reinterpret_cast<const uint16_t(*)[3]>(o)), "m"(kPairPop)
          : "rax", "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5");
    }
    if (s < s1) {  // the last 1 or 2 steps of the call
      const __m256i zero = _mm256_setzero_si256();
      __m256i acc[4] = {zero, zero, zero, zero};
      for (; s < s1; ++s) pair_step(tab, off[s], idx + 128 * s, acc);
      __m256i* a1[4] = {&a10, &a11, &a12, &a13};
      __m256i* a2[4] = {&a20, &a21, &a22, &a23};
      for (int j = 0; j < 4; ++j) {
        *a1[j] = _mm256_add_epi8(*a1[j], acc[j]);
        *a2[j] = _mm256_add_epi8(*a2[j], _mm256_srli_epi16(acc[j], 4));
      }
    }
    pair_recover(a10, a20, c1, c2);
    pair_recover(a11, a21, c1 + 32, c2 + 32);
    pair_recover(a12, a22, c1 + 64, c2 + 64);
    pair_recover(a13, a23, c1 + 96, c2 + 96);
  }
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

Kernels avx2_kernels() {
  return {&signed_dot, &xor_popc, &binarize_row, kDotMr, 16, kXorMr, kXorNr, &lut_tables, &lut_dot, kLutMr, 8 * kLutR,
          &xnor_pair_offsets, &xnor_pair_prep, &xnor_pair};
}

}  // namespace pycomp::cpu::binary::detail

#endif  // __x86_64__
