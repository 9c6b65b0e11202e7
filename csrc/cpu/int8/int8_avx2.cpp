// AVX2 + FMA int8 kernels.
//
// W8A8: AVX2 has no exact int8 dot product (vpmaddubsw saturates its int16
// pair sums), so activations are quantized once per call into int16 rows and
// each weight vector is sign-extended to int16 in registers (vpmovsxbw, 16
// weights per load, shared by the tile's activation rows); vpmaddwd gives
// exact int32 pair sums and vpaddd accumulates them. Per 32 products that is
// 2 multiplies + 2 adds (+ widening / 4). The |q| x sign(w, q) scheme with
// vpmaddubsw costs 2 multiplies + vpsignb + vpaddd and measured 20% slower on
// Zen 3; fbgemm's 3-op u8 x s8 scheme is exact only for 7-bit activations.
//
// W8A8 reduce-range (7-bit activations, u8 in [0, 127] with a zero point):
// fbgemm's scheme, vpmaddubsw (u8 activations x s8 weights, pair sums below
// 2^15 so never saturated), vpmaddwd by ones to int32, vpaddd: 3 ops per 32
// products, weights read straight from memory (no widening), activations half
// the bytes of the exact path's int16 rows.
//
// W8A32: 8 weights per load are sign-extended to int32 and converted to fp32 in
// registers (vpmovsxbd + vcvtdq2ps) and fed to FMAs; wscale is applied once per
// output in the epilogue.
//
// Small N, large M (a conv layer's im2col GEMM; int8_driver.h, linear_small_n):
// 6 x 16 outer-product tiles over weights packed per call, the same
// arithmetic with the outputs in vector lanes (no horizontal sums). W8A8
// broadcasts an int16 pair of each row against int16 weight pairs (vpmaddwd);
// the vpsignb / vpmaddubsw / vpmaddwd-by-ones form of the same exact product
// measured no faster there. Reduce-range broadcasts 4 u8 activations against
// s8 weights (vpmaddubsw, vpmaddwd by ones). W8A32 broadcasts x[m, k] against
// fp32 weights. Their quantizers take K tails from masked loads.
//
// The 4 x 3 GEMM steps are written as inline asm (see step_4x3) because GCC 12
// schedules the intrinsics version into spills and address arithmetic.
#if defined(__x86_64__)

#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <type_traits>
#include <utility>

#include "cpu/avx2_common.h"
#include "cpu/int8/int8_driver.h"
#include "cpu/int8/int8_tiles.h"

#define PYCOMP_AVX2 __attribute__((target("avx2,fma")))
#define PYCOMP_AVX2_INLINE inline __attribute__((always_inline, target("avx2,fma")))
#define PYCOMP_AVX2_LAMBDA __attribute__((always_inline, target("avx2,fma")))

namespace pycomp::cpu::int8 {
namespace {

// --------------------------------------------------------------- quantization

PYCOMP_AVX2_INLINE float row_amax(const float* x, int64_t K) {
  const __m256 sign = _mm256_set1_ps(-0.f);
  __m256 m0 = _mm256_setzero_ps(), m1 = m0, m2 = m0, m3 = m0;
  int64_t k = 0;
  // max_ps returns its second operand when either is NaN, so NaN inputs are skipped.
  for (; k + 32 <= K; k += 32) {
    m0 = _mm256_max_ps(_mm256_andnot_ps(sign, _mm256_loadu_ps(x + k)), m0);
    m1 = _mm256_max_ps(_mm256_andnot_ps(sign, _mm256_loadu_ps(x + k + 8)), m1);
    m2 = _mm256_max_ps(_mm256_andnot_ps(sign, _mm256_loadu_ps(x + k + 16)), m2);
    m3 = _mm256_max_ps(_mm256_andnot_ps(sign, _mm256_loadu_ps(x + k + 24)), m3);
  }
  for (; k + 8 <= K; k += 8) m0 = _mm256_max_ps(_mm256_andnot_ps(sign, _mm256_loadu_ps(x + k)), m0);
  m0 = _mm256_max_ps(_mm256_max_ps(m0, m1), _mm256_max_ps(m2, m3));
  __m128 h = _mm_max_ps(_mm256_castps256_ps128(m0), _mm256_extractf128_ps(m0, 1));
  h = _mm_max_ps(h, _mm_movehl_ps(h, h));
  h = _mm_max_ss(h, _mm_shuffle_ps(h, h, 1));
  float amax = _mm_cvtss_f32(h);
  for (; k < K; ++k) amax = amax_step(amax, x[k]);
  return amax;
}

// rint(x * inv) clamped to [-127, 127] as int32 lanes; a NaN product becomes
// -127 (max_ps returns the constant), as in quantize_value.
PYCOMP_AVX2_INLINE __m256i quantize8(__m256 x, __m256 inv) {
  __m256 v = _mm256_round_ps(_mm256_mul_ps(x, inv), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  v = _mm256_min_ps(_mm256_max_ps(v, _mm256_set1_ps(-127.f)), _mm256_set1_ps(127.f));
  return _mm256_cvtps_epi32(v);
}
PYCOMP_AVX2_INLINE __m256i quantize8(const float* x, __m256 inv) { return quantize8(_mm256_loadu_ps(x), inv); }

// Quantizes x[0, K) into q (int8 or int16) and returns the row's scale.
template <class Q>
PYCOMP_AVX2 float quantize_row(const float* x, int64_t K, Q* q) {
  const float amax = row_amax(x, K);
  const float inv_s = quant_inverse(amax);
  const __m256 inv = _mm256_set1_ps(inv_s);
  int64_t k = 0;
  if constexpr (sizeof(Q) == 1) {
    const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    for (; k + 32 <= K; k += 32) {
      const __m256i ab = _mm256_packs_epi32(quantize8(x + k, inv), quantize8(x + k + 8, inv));
      const __m256i cd = _mm256_packs_epi32(quantize8(x + k + 16, inv), quantize8(x + k + 24, inv));
      const __m256i v = _mm256_permutevar8x32_epi32(_mm256_packs_epi16(ab, cd), order);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(q + k), v);
    }
  } else {
    for (; k + 16 <= K; k += 16) {
      const __m256i ab = _mm256_packs_epi32(quantize8(x + k, inv), quantize8(x + k + 8, inv));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(q + k), _mm256_permute4x64_epi64(ab, 0xD8));
    }
  }
  for (; k < K; ++k) q[k] = quantize_value(x[k], inv_s);
  return amax / 127.f;
}

// quantize_row into int16 for rows with room for whole vectors: writes
// q[0, round_up(K, 16)), the K tail (< 16 values) from masked loads instead of
// scalar code. Lanes past K read 0, which leaves amax alone and quantizes to
// 0 unless inv is infinite; the caller zero-fills q past K either way. Equal,
// value for value, to quantize_row.
PYCOMP_AVX2 float quantize_row_padded(const float* x, int64_t K, int16_t* q) {
  const __m256 sign = _mm256_set1_ps(-0.f);
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  __m256 m0 = _mm256_setzero_ps(), m1 = m0;
  int64_t k = 0;
  for (; k + 16 <= K; k += 16) {
    m0 = _mm256_max_ps(_mm256_andnot_ps(sign, _mm256_loadu_ps(x + k)), m0);
    m1 = _mm256_max_ps(_mm256_andnot_ps(sign, _mm256_loadu_ps(x + k + 8)), m1);
  }
  const int rem = int(K - k);
  __m256 t0 = _mm256_setzero_ps(), t1 = t0;
  if (rem > 0) {
    t0 = _mm256_maskload_ps(x + k, _mm256_cmpgt_epi32(_mm256_set1_epi32(rem), lane));
    t1 = _mm256_maskload_ps(x + k + 8, _mm256_cmpgt_epi32(_mm256_set1_epi32(rem - 8), lane));
    m0 = _mm256_max_ps(_mm256_andnot_ps(sign, t0), m0);
    m1 = _mm256_max_ps(_mm256_andnot_ps(sign, t1), m1);
  }
  m0 = _mm256_max_ps(m0, m1);
  __m128 h = _mm_max_ps(_mm256_castps256_ps128(m0), _mm256_extractf128_ps(m0, 1));
  h = _mm_max_ps(h, _mm_movehl_ps(h, h));
  const float amax = _mm_cvtss_f32(_mm_max_ss(h, _mm_shuffle_ps(h, h, 1)));
  const __m256 inv = _mm256_set1_ps(quant_inverse(amax));
  auto store16 = [&](int64_t at, __m256i lo, __m256i hi) PYCOMP_AVX2_LAMBDA {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(q + at), _mm256_permute4x64_epi64(_mm256_packs_epi32(lo, hi), 0xD8));
  };
  for (int64_t j = 0; j < k; j += 16) store16(j, quantize8(x + j, inv), quantize8(x + j + 8, inv));
  if (rem > 0) store16(k, quantize8(t0, inv), quantize8(t1, inv));
  return amax / 127.f;
}

// Row minimum and maximum with 0 included (lo <= 0 <= hi); min/max_ps return
// the accumulator when the input is NaN, so NaN inputs are skipped.
PYCOMP_AVX2_INLINE Uint7Params row_uint7_params(const float* x, int64_t K) {
  __m256 l0 = _mm256_setzero_ps(), l1 = l0, h0 = l0, h1 = l0;
  int64_t k = 0;
  for (; k + 16 <= K; k += 16) {
    const __m256 a = _mm256_loadu_ps(x + k), b = _mm256_loadu_ps(x + k + 8);
    l0 = _mm256_min_ps(a, l0);
    l1 = _mm256_min_ps(b, l1);
    h0 = _mm256_max_ps(a, h0);
    h1 = _mm256_max_ps(b, h1);
  }
  for (; k + 8 <= K; k += 8) {
    const __m256 a = _mm256_loadu_ps(x + k);
    l0 = _mm256_min_ps(a, l0);
    h0 = _mm256_max_ps(a, h0);
  }
  l0 = _mm256_min_ps(l0, l1);
  h0 = _mm256_max_ps(h0, h1);
  __m128 l = _mm_min_ps(_mm256_castps256_ps128(l0), _mm256_extractf128_ps(l0, 1));
  __m128 h = _mm_max_ps(_mm256_castps256_ps128(h0), _mm256_extractf128_ps(h0, 1));
  l = _mm_min_ps(l, _mm_movehl_ps(l, l));
  h = _mm_max_ps(h, _mm_movehl_ps(h, h));
  float lo = _mm_cvtss_f32(_mm_min_ss(l, _mm_shuffle_ps(l, l, 1)));
  float hi = _mm_cvtss_f32(_mm_max_ss(h, _mm_shuffle_ps(h, h, 1)));
  for (; k < K; ++k) {
    lo = std::min(lo, x[k]);
    hi = std::max(hi, x[k]);
  }
  return uint7_params(lo, hi);
}

// clamp(rint(x * inv) + zp, 0, 127) as int32 lanes; a NaN product becomes 0
// (max_ps returns the constant), as in quantize_uint7.
PYCOMP_AVX2_INLINE __m256i quantize8_uint7(__m256 x, __m256 inv, __m256 zp) {
  __m256 v = _mm256_round_ps(_mm256_mul_ps(x, inv), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  v = _mm256_min_ps(_mm256_max_ps(_mm256_add_ps(v, zp), _mm256_setzero_ps()), _mm256_set1_ps(127.f));
  return _mm256_cvtps_epi32(v);
}
PYCOMP_AVX2_INLINE __m256i quantize8_uint7(const float* x, __m256 inv, __m256 zp) {
  return quantize8_uint7(_mm256_loadu_ps(x), inv, zp);
}

// The reduce-range quantization of x[0, K) into q; returns the row's parameters.
PYCOMP_AVX2 Uint7Params quantize_row_uint7(const float* x, int64_t K, uint8_t* q) {
  const Uint7Params p = row_uint7_params(x, K);
  const __m256 inv = _mm256_set1_ps(p.inv), zp = _mm256_set1_ps(p.zp);
  const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
  int64_t k = 0;
  for (; k + 32 <= K; k += 32) {
    const __m256i ab = _mm256_packs_epi32(quantize8_uint7(x + k, inv, zp), quantize8_uint7(x + k + 8, inv, zp));
    const __m256i cd = _mm256_packs_epi32(quantize8_uint7(x + k + 16, inv, zp), quantize8_uint7(x + k + 24, inv, zp));
    const __m256i v = _mm256_permutevar8x32_epi32(_mm256_packus_epi16(ab, cd), order);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(q + k), v);
  }
  for (; k < K; ++k) q[k] = quantize_uint7(x[k], p);
  return p;
}

// quantize_row_uint7 for rows with room for whole vectors: writes
// q[0, round_up(K, 32)), the K tails from masked loads instead of scalar code.
// Lanes past K read 0, which leaves lo <= 0 <= hi alone; their q (zp) is the
// caller's to zero-fill. Equal, value for value, to quantize_row_uint7.
PYCOMP_AVX2 Uint7Params quantize_row_uint7_padded(const float* x, int64_t K, uint8_t* q) {
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  auto masked = [&](int64_t at, int64_t n) PYCOMP_AVX2_LAMBDA {  // x[at, at + min(n, 8)), zeros after
    return _mm256_maskload_ps(x + at, _mm256_cmpgt_epi32(_mm256_set1_epi32(int(n)), lane));
  };
  __m256 l0 = _mm256_setzero_ps(), l1 = l0, h0 = l0, h1 = l0;
  int64_t k = 0;
  for (; k + 16 <= K; k += 16) {
    const __m256 a = _mm256_loadu_ps(x + k), b = _mm256_loadu_ps(x + k + 8);
    l0 = _mm256_min_ps(a, l0);
    l1 = _mm256_min_ps(b, l1);
    h0 = _mm256_max_ps(a, h0);
    h1 = _mm256_max_ps(b, h1);
  }
  if (k < K) {
    const __m256 a = masked(k, K - k), b = masked(k + 8, K - k - 8);
    l0 = _mm256_min_ps(a, l0);
    l1 = _mm256_min_ps(b, l1);
    h0 = _mm256_max_ps(a, h0);
    h1 = _mm256_max_ps(b, h1);
  }
  l0 = _mm256_min_ps(l0, l1);
  h0 = _mm256_max_ps(h0, h1);
  __m128 l = _mm_min_ps(_mm256_castps256_ps128(l0), _mm256_extractf128_ps(l0, 1));
  __m128 h = _mm_max_ps(_mm256_castps256_ps128(h0), _mm256_extractf128_ps(h0, 1));
  l = _mm_min_ps(l, _mm_movehl_ps(l, l));
  h = _mm_max_ps(h, _mm_movehl_ps(h, h));
  const Uint7Params p = uint7_params(_mm_cvtss_f32(_mm_min_ss(l, _mm_shuffle_ps(l, l, 1))),
                                     _mm_cvtss_f32(_mm_max_ss(h, _mm_shuffle_ps(h, h, 1))));
  const __m256 inv = _mm256_set1_ps(p.inv), zp = _mm256_set1_ps(p.zp);
  const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
  auto store32 = [&](int64_t at, __m256i a, __m256i b, __m256i c, __m256i d) PYCOMP_AVX2_LAMBDA {
    const __m256i v = _mm256_packus_epi16(_mm256_packs_epi32(a, b), _mm256_packs_epi32(c, d));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(q + at), _mm256_permutevar8x32_epi32(v, order));
  };
  int64_t j = 0;
  for (; j + 32 <= K; j += 32)
    store32(j, quantize8_uint7(x + j, inv, zp), quantize8_uint7(x + j + 8, inv, zp),
            quantize8_uint7(x + j + 16, inv, zp), quantize8_uint7(x + j + 24, inv, zp));
  if (j < K)
    store32(j, quantize8_uint7(masked(j, K - j), inv, zp), quantize8_uint7(masked(j + 8, K - j - 8), inv, zp),
            quantize8_uint7(masked(j + 16, K - j - 16), inv, zp), quantize8_uint7(masked(j + 24, K - j - 24), inv, zp));
  return p;
}

// --------------------------------------------------------------- horizontal sums

using avx2::hsum;

// Calls f(integral_constant<int, 0>) .. f(integral_constant<int, N - 1>): the
// indices are constants before any optimization pass runs, so GCC keeps
// accumulator arrays indexed by them in registers (loops unrolled later leave
// them on the stack).
template <int N, class F, int... I>
PYCOMP_AVX2_INLINE void unroll_impl(F&& f, std::integer_sequence<int, I...>) {
  (f(std::integral_constant<int, I>{}), ...);
}
template <int N, class F>
PYCOMP_AVX2_INLINE void unroll(F&& f) {
  unroll_impl<N>(f, std::make_integer_sequence<int, N>{});
}
template <int MR, int NR, class F>
PYCOMP_AVX2_INLINE void for_tile(F&& f) {
  unroll<MR>([&](auto i) PYCOMP_AVX2_LAMBDA { unroll<NR>([&](auto j) PYCOMP_AVX2_LAMBDA { f(i, j); }); });
}

// acc += vpmaddwd(a, w), as one asm statement so that the sum is formed in
// place: with plain intrinsics GCC 12 hoists every product of a step into its
// own register first and spills the accumulators of a 4x3 tile to the stack.
PYCOMP_AVX2_INLINE void madd_accumulate(__m256i& acc, const __m256i& a, __m256i w) {
  __m256i t;
  __asm__("vpmaddwd %[a], %[w], %[t]\n\tvpaddd %[t], %[acc], %[acc]"
          : [acc] "+x"(acc), [t] "=&x"(t)
          : [w] "x"(w), [a] "m"(a));
}

// acc += a * w, one asm statement for the same reason.
PYCOMP_AVX2_INLINE void fma_accumulate(__m256& acc, const __m256& a, __m256 w) {
  __asm__("vfmadd231ps %[a], %[w], %[acc]" : [acc] "+x"(acc) : [w] "x"(w), [a] "m"(a));
}

// --------------------------------------------------------------- blocking

// Weight rows per GEMV tile, by M = 1..4 (12 accumulators at most).
constexpr int kGemvNrDynamic[4] = {8, 6, 4, 3};
constexpr int kGemvNrWeightOnly[4] = {6, 6, 4, 3};

Blocking avx2_blocking(int64_t M, const int (&gemv_nr)[4]) {
  // M <= 4 (GEMV, memory-bound): one tile per panel and all of K per tile, nr
  // rows streamed at once (the W8A32 tiles also prefetch the next tile's rows,
  // see kGemvPrefetch).
  if (M <= 4) return {int(M), gemv_nr[M - 1], M, gemv_nr[M - 1], int64_t(1) << 40};
  // GEMM: 4 x 3 tiles over K blocks of 4096, weight panels of 24 rows x 4096
  // (96 KB, L2) met by up to 64 rows. Whole-K tiles beat L1-sized K blocks
  // (2048) here: fewer horizontal sums and tile calls.
  return {4, 3, 64, 24, 4096};
}

// --------------------------------------------------------------- W8A8 tiles

struct DynamicTiles {
  // 16 values of K at offset k: int16 activations (aligned rows of the packed
  // buffer) times int8 weights widened in registers. Rows are passed as
  // pointers so that every load is one base + index address. kAsm: the full
  // tile may take the asm path (not for the K tail, see step_4x3).
  template <bool kAsm, int MR, int NR>
  PYCOMP_AVX2_INLINE static void step(__m256i (&acc)[MR][NR], const int16_t* const (&a)[MR],
                                      const int8_t* const (&w)[NR], int64_t k) {
    if constexpr (kAsm && MR == 4 && NR == 3) {
      step_4x3(acc, a, w, k);
      return;
    }
    unroll<NR>([&](auto j) PYCOMP_AVX2_LAMBDA {
      const __m256i wj = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w[j] + k)));
      unroll<MR>([&](auto i) PYCOMP_AVX2_LAMBDA {
        madd_accumulate(acc[i][j], *reinterpret_cast<const __m256i*>(a[i] + k), wj);
      });
    });
  }

  // The full GEMM tile written out, a weight column per asm statement: 12
  // accumulators, one widened weight vector and one product in flight (14 of
  // the 16 ymm registers), every operand addressed as row base + k. From the
  // intrinsics GCC 12 spends a lea per activation row and step. The asm reads
  // memory through pointers without telling GCC (a "memory" clobber or "m"
  // operands cost the loop reloads and leas): sound because the rows it reads
  // are written before the tile function is called, never inside it. The K
  // tail, which reads a stack copy of the weights, takes the intrinsics path.
  PYCOMP_AVX2_INLINE static void step_4x3(__m256i (&c)[4][3], const int16_t* const (&a)[4],
                                          const int8_t* const (&w)[3], int64_t k) {
    unroll<3>([&](auto j) PYCOMP_AVX2_LAMBDA {
      __m256i wv, t;
#define PYCOMP_MADD(i) "vpmaddwd (%[a" #i "],%[k],2), %[wv], %[t]\n\tvpaddd %[t], %[c" #i "], %[c" #i "]\n\t"
      __asm__("vpmovsxbw (%[w],%[k]), %[wv]\n\t" PYCOMP_MADD(0) PYCOMP_MADD(1) PYCOMP_MADD(2) PYCOMP_MADD(3)
              : [c0] "+x"(c[0][j]), [c1] "+x"(c[1][j]), [c2] "+x"(c[2][j]), [c3] "+x"(c[3][j]), [wv] "=&x"(wv),
                [t] "=&x"(t)
              : [a0] "r"(a[0]), [a1] "r"(a[1]), [a2] "r"(a[2]), [a3] "r"(a[3]), [w] "r"(w[j]), [k] "r"(k));
#undef PYCOMP_MADD
    });
  }

  // All whole steps of the tile; returns where the K tail starts. Two
  // versions, so that tiles without weights to prefetch run a loop without
  // the prefetcher's branches.
  template <bool kNext, int MR, int NR>
  PYCOMP_AVX2_INLINE static int64_t steps(__m256i (&acc)[MR][NR], const int16_t* const (&a)[MR],
                                          const int8_t* const (&w)[NR], int64_t klen, RowPrefetcher& next) {
    int64_t k = 0;
    for (; k + 16 <= klen; k += 16) {
      if constexpr (kNext) {
        next.step();
        if constexpr (NR > 4) next.step();
      }
      step<true>(acc, a, w, k);
    }
    return k;
  }

  template <int MR, int NR>
  PYCOMP_AVX2 static void run(const Tile<int16_t, int32_t>& t) {
    const int16_t* a[MR];
    const int8_t* w[NR];
    unroll<MR>([&](auto i) PYCOMP_AVX2_LAMBDA { a[i] = t.a + i * t.lda; });
    unroll<NR>([&](auto j) PYCOMP_AVX2_LAMBDA { w[j] = t.w + j * t.ldw; });
    const int64_t klen = t.klen;
    __m256i acc[MR][NR];
    for_tile<MR, NR>([&](auto i, auto j) PYCOMP_AVX2_LAMBDA { acc[i][j] = _mm256_setzero_si256(); });
    RowPrefetcher next(t.next, t.ldw, t.next_rows, klen);
    const int64_t k = t.next ? steps<true>(acc, a, w, klen, next) : steps<false>(acc, a, w, klen, next);
    if (k < klen) {
      // K tail: weights past the row end are not ours to read; the activation
      // rows are zero-padded, so a zero-padded copy of the weights completes the step.
      alignas(16) int8_t tail[NR][16] = {};
      const int8_t* wt[NR];
      const int16_t* at[MR];
      for (int j = 0; j < NR; ++j) {
        std::memcpy(tail[j], w[j] + k, size_t(klen - k));
        wt[j] = tail[j];
      }
      for (int i = 0; i < MR; ++i) at[i] = a[i] + k;
      step<false>(acc, at, wt, 0);
    }
    for_tile<MR, NR>([&](auto i, auto j) PYCOMP_AVX2_LAMBDA {
      int32_t& c = t.c[i * t.ldc + j];
      c = (t.accumulate ? c : 0) + hsum(acc[i][j]);
    });
  }
};

struct Dynamic {
  using Act = int16_t;
  static constexpr int64_t kStep = 16;
  static constexpr bool kGemvPrefetch = false;  // see run_blocks
  static constexpr bool kCorrection = false;

  static void pack_row(const float* x, int64_t K, int64_t Kp, int16_t* a, DynamicAux aux, int64_t m) {
    aux.scale[m] = quantize_row(x, K, a);
    std::fill(a + K, a + Kp, int16_t(0));
  }

  static Blocking blocking(int64_t M, int64_t) { return avx2_blocking(M, kGemvNrDynamic); }

  static void tile(const Blocking&, const Tile<int16_t, int32_t>& t) { TileTable<DynamicTiles, 4, 8>::call(t); }
};

// --------------------------------------------------------------- W8A8 reduce-range tiles

// acc += pair sums of u8 a times s8 w (vpmaddubsw, exact for a <= 127),
// widened to int32 by vpmaddwd with ones: one asm statement, as madd_accumulate.
PYCOMP_AVX2_INLINE void maddubs_accumulate(__m256i& acc, __m256i a, const int8_t* w, __m256i ones) {
  __m256i t;
  __asm__("vpmaddubsw %[w], %[a], %[t]\n\tvpmaddwd %[t], %[ones], %[t]\n\tvpaddd %[t], %[acc], %[acc]"
          : [acc] "+x"(acc), [t] "=&x"(t)
          : [a] "x"(a), [w] "m"(*reinterpret_cast<const __m256i*>(w)), [ones] "x"(ones));
}

// Weight rows per GEMV tile, by M = 1..4 (12 accumulators at most).
constexpr int kGemvNrReduceRange[4] = {8, 6, 4, 3};

struct ReduceRangeTiles {
  // 32 values of K at offset k: each activation row is loaded once into a
  // register and meets every weight row as a memory operand (vpmaddubsw takes
  // its signed operand from memory). kAsm as in DynamicTiles::step.
  template <bool kAsm, int MR, int NR>
  PYCOMP_AVX2_INLINE static void step(__m256i (&acc)[MR][NR], const uint8_t* const (&a)[MR],
                                      const int8_t* const (&w)[NR], int64_t k, __m256i ones) {
    if constexpr (kAsm && MR == 4 && NR == 3) {
      step_4x3(acc, a, w, k, ones);
      return;
    }
    unroll<MR>([&](auto i) PYCOMP_AVX2_LAMBDA {
      const __m256i ai = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a[i] + k));
      unroll<NR>([&](auto j) PYCOMP_AVX2_LAMBDA { maddubs_accumulate(acc[i][j], ai, w[j] + k, ones); });
    });
  }

  // The full GEMM tile, an activation row per asm statement: 12 accumulators,
  // the row, one product and the ones (15 of 16 ymm), operands addressed as
  // row base + k. Memory is read as in DynamicTiles::step_4x3.
  PYCOMP_AVX2_INLINE static void step_4x3(__m256i (&c)[4][3], const uint8_t* const (&a)[4],
                                          const int8_t* const (&w)[3], int64_t k, __m256i ones) {
    unroll<4>([&](auto i) PYCOMP_AVX2_LAMBDA {
      __m256i av, t;
#define PYCOMP_MADDUBS(j)                                                      \
  "vpmaddubsw (%[w" #j "],%[k]), %[av], %[t]\n\tvpmaddwd %[t], %[ones], %[t]\n\t" \
  "vpaddd %[t], %[c" #j "], %[c" #j "]\n\t"
      __asm__("vmovdqu (%[a],%[k]), %[av]\n\t" PYCOMP_MADDUBS(0) PYCOMP_MADDUBS(1) PYCOMP_MADDUBS(2)
              : [c0] "+x"(c[i][0]), [c1] "+x"(c[i][1]), [c2] "+x"(c[i][2]), [av] "=&x"(av), [t] "=&x"(t)
              : [a] "r"(a[i]), [w0] "r"(w[0]), [w1] "r"(w[1]), [w2] "r"(w[2]), [k] "r"(k), [ones] "x"(ones));
#undef PYCOMP_MADDUBS
    });
  }

  // All whole steps of the tile; returns where the K tail starts. A step
  // covers 32 bytes of each of NR rows, so (NR + 1) / 2 prefetched lines keep
  // pace with the next tile's NR rows.
  template <bool kNext, int MR, int NR>
  PYCOMP_AVX2_INLINE static int64_t steps(__m256i (&acc)[MR][NR], const uint8_t* const (&a)[MR],
                                          const int8_t* const (&w)[NR], int64_t klen, RowPrefetcher& next,
                                          __m256i ones) {
    int64_t k = 0;
    for (; k + 32 <= klen; k += 32) {
      if constexpr (kNext) unroll<(NR + 1) / 2>([&](auto) PYCOMP_AVX2_LAMBDA { next.step(); });
      step<true>(acc, a, w, k, ones);
    }
    return k;
  }

  template <int MR, int NR>
  PYCOMP_AVX2 static void run(const Tile<uint8_t, int32_t>& t) {
    const uint8_t* a[MR];
    const int8_t* w[NR];
    unroll<MR>([&](auto i) PYCOMP_AVX2_LAMBDA { a[i] = t.a + i * t.lda; });
    unroll<NR>([&](auto j) PYCOMP_AVX2_LAMBDA { w[j] = t.w + j * t.ldw; });
    const int64_t klen = t.klen;
    const __m256i ones = _mm256_set1_epi16(1);
    __m256i acc[MR][NR];
    for_tile<MR, NR>([&](auto i, auto j) PYCOMP_AVX2_LAMBDA { acc[i][j] = _mm256_setzero_si256(); });
    RowPrefetcher next(t.next, t.ldw, t.next_rows, klen);
    const int64_t k = t.next ? steps<true>(acc, a, w, klen, next, ones) : steps<false>(acc, a, w, klen, next, ones);
    if (k < klen) {
      // K tail: a zero-padded copy of the weights meets the zero-padded activations.
      alignas(32) int8_t tail[NR][32] = {};
      const int8_t* wt[NR];
      const uint8_t* at[MR];
      for (int j = 0; j < NR; ++j) {
        std::memcpy(tail[j], w[j] + k, size_t(klen - k));
        wt[j] = tail[j];
      }
      for (int i = 0; i < MR; ++i) at[i] = a[i] + k;
      step<false>(acc, at, wt, 0, ones);
    }
    for_tile<MR, NR>([&](auto i, auto j) PYCOMP_AVX2_LAMBDA {
      int32_t& c = t.c[i * t.ldc + j];
      c = (t.accumulate ? c : 0) + hsum(acc[i][j]);
    });
  }
};

struct ReduceRange {
  using Act = uint8_t;
  static constexpr int64_t kStep = 32;
  static constexpr bool kGemvPrefetch = false;

  static void pack_row(const float* x, int64_t K, int64_t Kp, uint8_t* a, ReduceRangeAux aux, int64_t m) {
    const Uint7Params p = quantize_row_uint7(x, K, a);
    aux.scale[m] = p.scale;
    aux.zp[m] = int32_t(p.zp);
    std::fill(a + K, a + Kp, uint8_t(0));
  }

  static Blocking blocking(int64_t M, int64_t) { return avx2_blocking(M, kGemvNrReduceRange); }

  static void tile(const Blocking&, const Tile<uint8_t, int32_t>& t) {
    TileTable<ReduceRangeTiles, 4, 8>::call(t);
  }
};

// --------------------------------------------------------------- W8A32 tiles

struct WeightOnlyTiles {
  // 8 values of K at offset k: each weight row's 8 int8 are widened to fp32 in
  // registers and met by every activation row with an FMA. kAsm as in
  // DynamicTiles::step.
  template <bool kAsm, int MR, int NR>
  PYCOMP_AVX2_INLINE static void step(__m256 (&acc)[MR][NR], const float* const (&a)[MR], const int8_t* const (&w)[NR],
                                      int64_t k) {
    if constexpr (kAsm && MR == 4 && NR == 3) {
      step_4x3(acc, a, w, k);
      return;
    }
    unroll<NR>([&](auto j) PYCOMP_AVX2_LAMBDA {
      const __m256 wj =
          _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(w[j] + k))));
      unroll<MR>([&](auto i) PYCOMP_AVX2_LAMBDA {
        fma_accumulate(acc[i][j], *reinterpret_cast<const __m256*>(a[i] + k), wj);
      });
    });
  }

  // The full GEMM tile written out: the three widened weight vectors and one
  // activation row in registers (16 of 16 ymm with the 12 accumulators), so a
  // step makes 7 loads for 12 FMAs; with the activations as FMA memory
  // operands (15 loads) it measured a quarter slower. Memory is read as in
  // DynamicTiles::step_4x3.
  PYCOMP_AVX2_INLINE static void step_4x3(__m256 (&c)[4][3], const float* const (&a)[4], const int8_t* const (&w)[3],
                                          int64_t k) {
    __m256 w0, w1, w2;
    __asm__(
        "vpmovsxbd (%[p0],%[k]), %[w0]\n\tvcvtdq2ps %[w0], %[w0]\n\t"
        "vpmovsxbd (%[p1],%[k]), %[w1]\n\tvcvtdq2ps %[w1], %[w1]\n\t"
        "vpmovsxbd (%[p2],%[k]), %[w2]\n\tvcvtdq2ps %[w2], %[w2]"
        : [w0] "=&x"(w0), [w1] "=&x"(w1), [w2] "=&x"(w2)
        : [p0] "r"(w[0]), [p1] "r"(w[1]), [p2] "r"(w[2]), [k] "r"(k));
    unroll<4>([&](auto i) PYCOMP_AVX2_LAMBDA {
      __m256 av;
      __asm__(
          "vmovups (%[a],%[k],4), %[av]\n\t"
          "vfmadd231ps %[av], %[w0], %[c0]\n\tvfmadd231ps %[av], %[w1], %[c1]\n\tvfmadd231ps %[av], %[w2], %[c2]"
          : [c0] "+x"(c[i][0]), [c1] "+x"(c[i][1]), [c2] "+x"(c[i][2]), [av] "=&x"(av)
          : [a] "r"(a[i]), [k] "r"(k), [w0] "x"(w0), [w1] "x"(w1), [w2] "x"(w2));
    });
  }

  // All whole steps of the tile, as DynamicTiles::steps.
  template <bool kNext, int MR, int NR>
  PYCOMP_AVX2_INLINE static int64_t steps(__m256 (&acc)[MR][NR], const float* const (&a)[MR],
                                          const int8_t* const (&w)[NR], int64_t klen, RowPrefetcher& next) {
    int64_t k = 0;
    for (; k + 16 <= klen; k += 16) {
      if constexpr (kNext) {
        next.step();
        if constexpr (NR > 4) next.step();
      }
      step<true>(acc, a, w, k);
      step<true>(acc, a, w, k + 8);
    }
    for (; k + 8 <= klen; k += 8) step<true>(acc, a, w, k);
    return k;
  }

  template <int MR, int NR>
  PYCOMP_AVX2 static void run(const Tile<float, float>& t) {
    const float* a[MR];
    const int8_t* w[NR];
    unroll<MR>([&](auto i) PYCOMP_AVX2_LAMBDA { a[i] = t.a + i * t.lda; });
    unroll<NR>([&](auto j) PYCOMP_AVX2_LAMBDA { w[j] = t.w + j * t.ldw; });
    const int64_t klen = t.klen;
    __m256 acc[MR][NR];
    for_tile<MR, NR>([&](auto i, auto j) PYCOMP_AVX2_LAMBDA { acc[i][j] = _mm256_setzero_ps(); });
    RowPrefetcher next(t.next, t.ldw, t.next_rows, klen);
    const int64_t k = t.next ? steps<true>(acc, a, w, klen, next) : steps<false>(acc, a, w, klen, next);
    if (k < klen) {
      // K tail: a zero-padded copy of the weights, as in DynamicTiles::run.
      alignas(16) int8_t tail[NR][8] = {};
      const int8_t* wt[NR];
      const float* at[MR];
      for (int j = 0; j < NR; ++j) {
        std::memcpy(tail[j], w[j] + k, size_t(klen - k));
        wt[j] = tail[j];
      }
      for (int i = 0; i < MR; ++i) at[i] = a[i] + k;
      step<false>(acc, at, wt, 0);
    }
    for_tile<MR, NR>([&](auto i, auto j) PYCOMP_AVX2_LAMBDA {
      float& c = t.c[i * t.ldc + j];
      c = (t.accumulate ? c : 0.f) + hsum(acc[i][j]);
    });
  }
};

struct WeightOnly {
  using Act = float;
  static constexpr int64_t kStep = 8;
  static constexpr bool kGemvPrefetch = true;

  static void pack_row(const float* x, int64_t K, int64_t Kp, float* a, std::nullptr_t, int64_t) {
    std::copy(x, x + K, a);
    std::fill(a + K, a + Kp, 0.f);
  }

  static Blocking blocking(int64_t M, int64_t) { return avx2_blocking(M, kGemvNrWeightOnly); }

  static void tile(const Blocking&, const Tile<float, float>& t) { TileTable<WeightOnlyTiles, 4, 8>::call(t); }
};

// --------------------------------------------------------------- small-N tiles

// a * b + c with two roundings, as the drivers' scalar epilogues do it: the
// empty asm hides the product, so GCC cannot fuse the two into an FMA (C++
// compiles with -ffp-contract=fast), which would change the bits.
PYCOMP_AVX2_INLINE __m256 mul_add_unfused(__m256 a, __m256 b, __m256 c) {
  __m256 p = _mm256_mul_ps(a, b);
  __asm__("" : "+x"(p));
  return _mm256_add_ps(p, c);
}

// Stores the 16 outputs v0, v1 of one row, only the first `cols` when the
// panel is the last, partial one.
PYCOMP_AVX2_INLINE void store_row16(float* o, __m256 v0, __m256 v1, int cols) {
  if (cols == 16) {
    _mm256_storeu_ps(o, v0);
    _mm256_storeu_ps(o + 8, v1);
    return;
  }
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  _mm256_maskstore_ps(o, _mm256_cmpgt_epi32(_mm256_set1_epi32(cols), lane), v0);
  _mm256_maskstore_ps(o + 8, _mm256_cmpgt_epi32(_mm256_set1_epi32(cols - 8), lane), v1);
}

// The 6 rows a small-N tile reads; rows past t.rows repeat the last one (their results are not stored).
template <class Act, class WAct>
PYCOMP_AVX2_INLINE void tile_rows(const SmallNTile<Act, WAct>& t, const Act* (&a)[6]) {
  unroll<6>([&](auto i) PYCOMP_AVX2_LAMBDA { a[i] = t.a + std::min<int>(i, t.rows - 1) * t.lda; });
}

// The columns' side of the drivers' epilogue, out = d * wscale (+ bias), for the 16 columns of a panel.
struct PanelEpilogue {
  __m256 ws0, ws1, bs0, bs1;
  const float* bias;

  template <class Tile>
  PYCOMP_AVX2_INLINE explicit PanelEpilogue(const Tile& t)
      : ws0(_mm256_loadu_ps(t.wscale)), ws1(_mm256_loadu_ps(t.wscale + 8)),
        bs0(t.bias ? _mm256_loadu_ps(t.bias) : _mm256_setzero_ps()),
        bs1(t.bias ? _mm256_loadu_ps(t.bias + 8) : _mm256_setzero_ps()), bias(t.bias) {}

  // Row i's 16 values d0, d1 (already scaled per row) to out.
  template <class Tile>
  PYCOMP_AVX2_INLINE void store(const Tile& t, int i, __m256 d0, __m256 d1) const {
    if (bias)
      store_row16(t.out + i * t.ldo, mul_add_unfused(d0, ws0, bs0), mul_add_unfused(d1, ws1, bs1), t.cols);
    else
      store_row16(t.out + i * t.ldo, _mm256_mul_ps(d0, ws0), _mm256_mul_ps(d1, ws1), t.cols);
  }
};

// W8A8, 6 rows x 16 columns: per K pair, the two panel vectors of 8 columns x
// (w[k], w[k + 1]) int16 pairs, and each row's (q[k], q[k + 1]) broadcast to
// every lane; vpmaddwd gives exact int32 pair sums, vpaddd accumulates. 12
// accumulators, 2 weight vectors, the broadcast and a product: all 16 ymm; a
// row per asm statement (memory read as in DynamicTiles::step_4x3).
struct SmallNDynamic {
  using Act = int16_t;
  using WAct = int16_t;
  static constexpr int kRows = 6, kCols = 16, kKStep = 2;
  static constexpr bool kPackRows = true;

  static float pack_row(const float* x, int64_t K, int64_t Kp, int16_t* a, int32_t*) {
    const float s = quantize_row_padded(x, K, a);
    std::fill(a + K, a + Kp, int16_t(0));
    return s;
  }

  PYCOMP_AVX2 static void tile(const SmallNTile<int16_t, int16_t>& t) {
    const int16_t* a[6];
    tile_rows(t, a);
    __m256i c[6][2];
    for_tile<6, 2>([&](auto i, auto j) PYCOMP_AVX2_LAMBDA { c[i][j] = _mm256_setzero_si256(); });
    const int16_t* w = t.w;
    const int64_t kend = t.steps * 4;  // bytes of a row's K pairs
    for (int64_t k = 0; k < kend; k += 4, w += 32) {
      const __m256i w0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w));
      const __m256i w1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + 16));
      unroll<6>([&](auto i) PYCOMP_AVX2_LAMBDA {
        __m256i b, p;
        __asm__(
            "vpbroadcastd (%[a],%[k]), %[b]\n\t"
            "vpmaddwd %[b], %[w0], %[p]\n\tvpaddd %[p], %[c0], %[c0]\n\t"
            "vpmaddwd %[b], %[w1], %[p]\n\tvpaddd %[p], %[c1], %[c1]"
            : [c0] "+x"(c[i][0]), [c1] "+x"(c[i][1]), [b] "=&x"(b), [p] "=&x"(p)
            : [a] "r"(a[i]), [k] "r"(k), [w0] "x"(w0), [w1] "x"(w1));
      });
    }
    // The drivers' epilogue in vector form, the same fp32 operations in the same order.
    const PanelEpilogue epi(t);
    unroll<6>([&](auto i) PYCOMP_AVX2_LAMBDA {
      if (i >= t.rows) return;
      const __m256 s = _mm256_set1_ps(t.row_scale[i]);
      epi.store(t, i, _mm256_mul_ps(_mm256_cvtepi32_ps(c[i][0]), s), _mm256_mul_ps(_mm256_cvtepi32_ps(c[i][1]), s));
    });
  }
};

// W8A8 reduce-range, 6 rows x 16 columns, 4 values of K per step: per step,
// the panel's two vectors of 8 columns x 4 int8 weights and each row's u8
// q[k..k+4) broadcast; vpmaddubsw gives exact int16 pair sums (q <= 127),
// vpmaddwd with ones (from memory: 16 ymm are taken) widens them to int32 and
// vpaddd accumulates. The epilogue subtracts zp * wsum as the driver does.
alignas(32) constexpr int16_t kOnes16[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1};

struct SmallNReduceRange {
  using Act = uint8_t;
  using WAct = int8_t;
  static constexpr int kRows = 6, kCols = 16, kKStep = 4;
  static constexpr bool kPackRows = true;

  static float pack_row(const float* x, int64_t K, int64_t Kp, uint8_t* a, int32_t* zp) {
    const Uint7Params p = quantize_row_uint7_padded(x, K, a);
    std::fill(a + K, a + Kp, uint8_t(0));
    *zp = int32_t(p.zp);
    return p.scale;
  }

  PYCOMP_AVX2 static void tile(const SmallNTile<uint8_t, int8_t>& t) {
    const uint8_t* a[6];
    tile_rows(t, a);
    __m256i c[6][2];
    for_tile<6, 2>([&](auto i, auto j) PYCOMP_AVX2_LAMBDA { c[i][j] = _mm256_setzero_si256(); });
    const int8_t* w = t.w;
    const int64_t kend = t.steps * 4;  // bytes of a row's K quads
    for (int64_t k = 0; k < kend; k += 4, w += 64) {
      const __m256i w0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w));
      const __m256i w1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + 32));
      unroll<6>([&](auto i) PYCOMP_AVX2_LAMBDA {
        __m256i b, p;
        __asm__(
            "vpbroadcastd (%[a],%[k]), %[b]\n\t"
            "vpmaddubsw %[w0], %[b], %[p]\n\tvpmaddwd (%[ones]), %[p], %[p]\n\tvpaddd %[p], %[c0], %[c0]\n\t"
            "vpmaddubsw %[w1], %[b], %[p]\n\tvpmaddwd (%[ones]), %[p], %[p]\n\tvpaddd %[p], %[c1], %[c1]"
            : [c0] "+x"(c[i][0]), [c1] "+x"(c[i][1]), [b] "=&x"(b), [p] "=&x"(p)
            : [a] "r"(a[i]), [k] "r"(k), [w0] "x"(w0), [w1] "x"(w1), [ones] "r"(kOnes16));
      });
    }
    const PanelEpilogue epi(t);
    const __m256i sum0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(t.wsum));
    const __m256i sum1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(t.wsum + 8));
    unroll<6>([&](auto i) PYCOMP_AVX2_LAMBDA {
      if (i >= t.rows) return;
      const __m256 s = _mm256_set1_ps(t.row_scale[i]);
      const __m256i z = _mm256_set1_epi32(t.row_zp[i]);
      const __m256i dot0 = _mm256_sub_epi32(c[i][0], _mm256_mullo_epi32(z, sum0));
      const __m256i dot1 = _mm256_sub_epi32(c[i][1], _mm256_mullo_epi32(z, sum1));
      epi.store(t, i, _mm256_mul_ps(_mm256_cvtepi32_ps(dot0), s), _mm256_mul_ps(_mm256_cvtepi32_ps(dot1), s));
    });
  }
};

// W8A32, 6 rows x 16 columns: per K value, the two panel vectors of 8 fp32
// weights (converted once per call) and each row's x[k] broadcast, 12 FMAs
// into 12 accumulators (15 ymm with the weights and the broadcast). The rows
// are read in place.
struct SmallNWeightOnly {
  using Act = float;
  using WAct = float;
  static constexpr int kRows = 6, kCols = 16, kKStep = 1;
  static constexpr bool kPackRows = false;

  PYCOMP_AVX2 static void tile(const SmallNTile<float, float>& t) {
    const float* a[6];
    tile_rows(t, a);
    __m256 c[6][2];
    for_tile<6, 2>([&](auto i, auto j) PYCOMP_AVX2_LAMBDA { c[i][j] = _mm256_setzero_ps(); });
    const float* w = t.w;
    const int64_t kend = t.steps * 4;  // bytes of a row's K values
    for (int64_t k = 0; k < kend; k += 4, w += 16) {
      const __m256 w0 = _mm256_loadu_ps(w), w1 = _mm256_loadu_ps(w + 8);
      unroll<6>([&](auto i) PYCOMP_AVX2_LAMBDA {
        __m256 b;
        __asm__(
            "vbroadcastss (%[a],%[k]), %[b]\n\t"
            "vfmadd231ps %[b], %[w0], %[c0]\n\tvfmadd231ps %[b], %[w1], %[c1]"
            : [c0] "+x"(c[i][0]), [c1] "+x"(c[i][1]), [b] "=&x"(b)
            : [a] "r"(a[i]), [k] "r"(k), [w0] "x"(w0), [w1] "x"(w1));
      });
    }
    const PanelEpilogue epi(t);
    unroll<6>([&](auto i) PYCOMP_AVX2_LAMBDA {
      if (i < t.rows) epi.store(t, i, c[i][0], c[i][1]);
    });
  }
};

}  // namespace

float quantize_row_avx2(const float* x, int64_t K, int8_t* q) { return quantize_row(x, K, q); }

float quantize_row_uint7_avx2(const float* x, int64_t K, uint8_t* q, int32_t* zp) {
  const Uint7Params p = quantize_row_uint7(x, K, q);
  *zp = int32_t(p.zp);
  return p.scale;
}

void quantize_avx2(const float* x, int64_t ldx, int8_t* q, float* scale, int64_t M, int64_t K) {
  quantize_rows(x, ldx, q, scale, M, K, [](const float* xr, int64_t k, int8_t* qr) { return quantize_row(xr, k, qr); });
}

void linear_dynamic_avx2(const float* x, int64_t ldx, const int8_t* w, const float* wscale, const float* bias,
                         float* out, int64_t ldo, int64_t M, int64_t N, int64_t K) {
  if (small_n_shape(M, N, K))
    return linear_small_n<SmallNDynamic>(x, ldx, w, wscale, bias, out, ldo, M, N, K);
  linear_dynamic<Dynamic>(x, ldx, w, wscale, bias, out, ldo, M, N, K);
}

void quantize_uint7_avx2(const float* x, int64_t ldx, uint8_t* q, float* scale, int32_t* zp, int64_t M,
                         int64_t K) {
  quantize_uint7_rows(x, ldx, q, scale, zp, M, K, quantize_row_uint7);
}

void linear_reduce_range_avx2(const float* x, int64_t ldx, const int8_t* w, const float* wscale,
                              const int32_t* wsum, const float* bias, float* out, int64_t ldo, int64_t M, int64_t N,
                              int64_t K) {
  if (small_n_shape(M, N, K))
    return linear_small_n<SmallNReduceRange>(x, ldx, w, wscale, bias, out, ldo, M, N, K, wsum);
  linear_reduce_range<ReduceRange>(x, ldx, w, wscale, wsum, bias, out, ldo, M, N, K);
}

void linear_weight_only_avx2(const float* x, int64_t ldx, const int8_t* w, const float* wscale, const float* bias,
                             float* out, int64_t ldo, int64_t M, int64_t N, int64_t K) {
  if (small_n_shape(M, N, K))
    return linear_small_n<SmallNWeightOnly>(x, ldx, w, wscale, bias, out, ldo, M, N, K);
  linear_weight_only<WeightOnly>(x, ldx, w, wscale, bias, out, ldo, M, N, K);
}

}  // namespace pycomp::cpu::int8

#endif  // __x86_64__
