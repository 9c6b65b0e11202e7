// AVX2 + FMA sparse kernels.
//
// CSR and block-CSR: the generic code (sparse_generic.h) on 8-lane vectors. For M < 3, CSR builds each
// vector of 8 x values from scalar loads at the column indices (vmovss + vinsertps): on Zen 3 that beats
// vgatherdps (A/B, one thread, 4096x4096 at 90%, cold, with the value prefetch: M=1 1.02 -> 0.77 ms).
//
// 2:4: one int16 metadata word covers 16 columns of a row: 4 groups, two 2-bit indices each. For
// M < 8 (s24_rows), the word becomes a vpermilps control that picks each group's two kept x values
// inside a 128-bit lane; one blend and one FMA with the 8 kept weights. No gathers, and the decoded
// control is shared by up to 4 activation rows. int8 values are widened 8 at a time (vpmovsxbd +
// vcvtdq2ps) and the row scale applied once per output. From M = 8 on, the generic cache-blocked
// outer-product loop (sparse_generic.h: x^T in panels, a broadcast weight times 8-row vectors of a panel).
#if defined(__x86_64__)

#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "cpu/parallel.h"
#include "cpu/scratch.h"
#include "cpu/sparse/sparse_kernels.h"

#pragma GCC push_options
#pragma GCC target("avx2,fma")

namespace pycomp::cpu::sparse {
namespace {

struct V {
  static constexpr int W = 8;
  using F = __m256;
  static F zero() { return _mm256_setzero_ps(); }
  static F set1(float a) { return _mm256_set1_ps(a); }
  static F loadu(const float* p) { return _mm256_loadu_ps(p); }
  static void storeu(float* p, F a) { _mm256_storeu_ps(p, a); }
  static F fma(F a, F b, F c) { return _mm256_fmadd_ps(a, b, c); }
  static float hsum(F a) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
  }
  // eight scalar loads and inserts: vgatherdps costs more per element on Zen 3
  template <class Idx>
  static F gather(const float* b, const Idx* c) {
    return _mm256_setr_ps(b[c[0]], b[c[1]], b[c[2]], b[c[3]], b[c[4]], b[c[5]], b[c[6]], b[c[7]]);
  }
};

#include "cpu/sparse/sparse_generic.h"

inline __m256 load8(const float* p) { return _mm256_loadu_ps(p); }
inline __m256 load8(const int8_t* p) {
  return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))));
}

// x with the middle quads of every 16 columns swapped, [0-3, 8-11 | 4-7, 12-15], so that each 128-bit
// lane of the two 8-column loads holds one group, and in-lane permutes can pick the kept columns.
inline void swap_quads(const float* x, int64_t ldx, int64_t M, int64_t Kp, float* xr) {
  for (int64_t m = 0; m < M; ++m)
    for (int64_t k = 0; k < Kp; k += 16) {
      const __m256 a = _mm256_loadu_ps(x + m * ldx + k), b = _mm256_loadu_ps(x + m * ldx + k + 8);
      _mm256_storeu_ps(xr + m * Kp + k, _mm256_permute2f128_ps(a, b, 0x20));
      _mm256_storeu_ps(xr + m * Kp + k + 8, _mm256_permute2f128_ps(a, b, 0x31));
    }
}

constexpr int64_t kValuePrefetchBytes = 2048;  // ahead of the row's value stream (A/B: 1024 and 2048 beat none)

// Rows n0..n1 for MR activation rows of swapped x (ldx = Kp).
//
// Metadata: a 32-row tile's words for one column pair are 64 consecutive int16 (128 bytes), the pairs
// 2*Np words apart. Read in place, every row touches Kp/32 lines 4*Np bytes apart, which alias in L1/L2
// and are gone before the tile's next row; so each tile's words are copied once into a contiguous
// buffer, with its quads (r, c0), (r+1, c0), (r, c1), (r+1, c1) reordered so that dword r holds row r's
// two words (r the row's place in CUTLASS's permutation): generic tile_words' layout, copied with one
// vpshufb per 32 bytes (the scalar tile_words was 2-6% slower here). The next tile's lines are prefetched
// a few per row. Decoding: the dword broadcast and shifted right by 2j puts group j/2's j%2-th index in bits 0-1 of
// lane j, all vpermilps reads; permuting the two swapped 8-column loads by it and blending lanes 2, 3, 6,
// 7 of the second gives the 8 kept x values in the values' order. No table, no cross-lane permute.
template <class T, int MR>
void s24_rows(const float* x, int64_t ldx, const T* val, const float* scale, const int16_t* meta, int64_t Np,
              const float* bias, float* out, int64_t ldo, int64_t Kp, int64_t n0, int64_t n1) {
  const int64_t pairs = Kp / 32;
  Scratch<int32_t> words(pairs * 32);
  const __m256i quad = _mm256_setr_epi8(0, 1, 4, 5, 2, 3, 6, 7, 8, 9, 12, 13, 10, 11, 14, 15, 0, 1, 4, 5, 2, 3, 6, 7,
                                        8, 9, 12, 13, 10, 11, 14, 15);
  const __m256i shift0 = _mm256_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14);
  const __m256i shift1 = _mm256_setr_epi32(16, 18, 20, 22, 24, 26, 28, 30);
  const int64_t per_row = ceil_div(pairs, 32);  // next-tile pairs prefetched per row
  for (int64_t t0 = n0 / 32 * 32; t0 < n1; t0 += 32) {
    const int16_t* tile = meta + 2 * t0;
    for (int64_t p = 0; p < pairs; ++p) {
      const __m256i* s = reinterpret_cast<const __m256i*>(tile + p * 2 * Np);
      __m256i* d = reinterpret_cast<__m256i*>(words.get() + p * 32);
      for (int i = 0; i < 4; ++i) _mm256_store_si256(d + i, _mm256_shuffle_epi8(_mm256_loadu_si256(s + i), quad));
    }
    for (int64_t n = std::max(n0, t0); n < std::min(n1, t0 + 32); ++n) {
      if (t0 + 32 < n1) {
        const int64_t i = n - t0;
        for (int64_t p = i * per_row; p < std::min(pairs, (i + 1) * per_row); ++p) {
          _mm_prefetch(reinterpret_cast<const char*>(tile + 64 + p * 2 * Np), _MM_HINT_T0);
          _mm_prefetch(reinterpret_cast<const char*>(tile + 64 + p * 2 * Np + 32), _MM_HINT_T0);
        }
      }
      const int32_t* w = words.get() + (n % 8) * 4 + (n % 32) / 8;
      const T* v = val + n * (Kp / 2);
      __m256 acc[2][MR];
      for (int m = 0; m < MR; ++m) acc[0][m] = acc[1][m] = _mm256_setzero_ps();
      for (int64_t p = 0; p < pairs; ++p) {
        if ((16 * p * sizeof(T)) % 64 == 0)
          _mm_prefetch(reinterpret_cast<const char*>(v + 16 * p) + kValuePrefetchBytes, _MM_HINT_T0);
        const __m256i both = _mm256_set1_epi32(w[p * 32]);
        const __m256i ctrl0 = _mm256_srlv_epi32(both, shift0), ctrl1 = _mm256_srlv_epi32(both, shift1);
        const __m256 u0 = load8(v + 16 * p), u1 = load8(v + 16 * p + 8);
        for (int m = 0; m < MR; ++m) {
          const float* xc = x + m * ldx + 32 * p;
          const __m256 k0 = _mm256_blend_ps(_mm256_permutevar_ps(_mm256_loadu_ps(xc), ctrl0),
                                            _mm256_permutevar_ps(_mm256_loadu_ps(xc + 8), ctrl0), 0xCC);
          const __m256 k1 = _mm256_blend_ps(_mm256_permutevar_ps(_mm256_loadu_ps(xc + 16), ctrl1),
                                            _mm256_permutevar_ps(_mm256_loadu_ps(xc + 24), ctrl1), 0xCC);
          acc[0][m] = _mm256_fmadd_ps(u0, k0, acc[0][m]);
          acc[1][m] = _mm256_fmadd_ps(u1, k1, acc[1][m]);
        }
      }
      const float bv = bias ? bias[n] : 0.0f;
      const float sc = scale ? scale[n] : 1.0f;
      for (int m = 0; m < MR; ++m) out[m * ldo + n] = V::hsum(_mm256_add_ps(acc[0][m], acc[1][m])) * sc + bv;
    }
  }
}

template <class T>
void s24_driver(const float* x, int64_t ldx, const T* val, const float* scale, const int16_t* meta, int64_t Np,
                const float* bias, float* out, int64_t ldo, int64_t M, int64_t N, int64_t Kp) {
  if (M >= kS24BlockedMinM) return s24_blocked_driver(x, ldx, val, scale, meta, Np, bias, out, ldo, M, N, Kp);
  Scratch<float> xr(M * Kp);
  swap_quads(x, ldx, M, Kp, xr.get());
  parallel_for(N, kRowGrain, [&](int64_t n0, int64_t n1) {
    for (int64_t m0 = 0; m0 < M; m0 += 4) {
      const float* xm = xr.get() + m0 * Kp;
      float* om = out + m0 * ldo;
      switch (std::min<int64_t>(4, M - m0)) {
        case 1: s24_rows<T, 1>(xm, Kp, val, scale, meta, Np, bias, om, ldo, Kp, n0, n1); break;
        case 2: s24_rows<T, 2>(xm, Kp, val, scale, meta, Np, bias, om, ldo, Kp, n0, n1); break;
        case 3: s24_rows<T, 3>(xm, Kp, val, scale, meta, Np, bias, om, ldo, Kp, n0, n1); break;
        default: s24_rows<T, 4>(xm, Kp, val, scale, meta, Np, bias, om, ldo, Kp, n0, n1); break;
      }
    }
  });
}

}  // namespace

void csr_avx2(const float* x, int64_t ldx, const int32_t* crow, const int16_t* col16, const int32_t* col32,
              const float* val, const float* bias, float* out, int64_t ldo, int64_t M, int64_t N, int64_t K) {
  csr_entry(x, ldx, crow, col16, col32, val, bias, out, ldo, M, N, K);
}

void bsr_avx2(const float* x, int64_t ldx, const int32_t* crow, const int32_t* col, const float* val, int64_t bn,
              int64_t bk, const float* bias, float* out, int64_t ldo, int64_t M, int64_t N) {
  bsr_driver(x, ldx, crow, col, val, bn, bk, bias, out, ldo, M, N);
}

void s24_avx2(const float* x, int64_t ldx, const float* val, const float* scale, const int16_t* meta, int64_t Np,
              const float* bias, float* out, int64_t ldo, int64_t M, int64_t N, int64_t Kp) {
  s24_driver(x, ldx, val, scale, meta, Np, bias, out, ldo, M, N, Kp);
}

void s24_avx2(const float* x, int64_t ldx, const int8_t* val, const float* scale, const int16_t* meta, int64_t Np,
              const float* bias, float* out, int64_t ldo, int64_t M, int64_t N, int64_t Kp) {
  s24_driver(x, ldx, val, scale, meta, Np, bias, out, ldo, M, N, Kp);
}

}  // namespace pycomp::cpu::sparse

#pragma GCC pop_options

#endif  // __x86_64__
