// AVX2 + FMA sparse kernels.
//
// CSR and block-CSR: the generic code (sparse_generic.h) on 8-lane vectors; CSR gathers x with
// vgatherdps, int16 column indices widened by vpmovsxwd (half the index bytes of int32).
//
// 2:4: one int16 metadata word covers 16 columns of a row: 4 groups, two 2-bit indices each. A
// 256-entry table turns each byte (two groups) into 4 lane indices, and the word into a vpermps
// control: permuting x[16c..16c+7] by it gives groups 0-1's kept x values in lanes 0-3, permuting
// x[16c+8..16c+15] gives groups 2-3's in lanes 4-7; one blend and one FMA with the 8 kept weights.
// No gathers, and the decoded control is shared by up to 4 activation rows. int8 values are widened
// 8 at a time (vpmovsxbd + vcvtdq2ps) and the row scale applied once per output. From M = 8 on, the
// generic outer-product loop (x transposed once, a broadcast weight times 8-row vectors of x^T).
#if defined(__x86_64__)

#include <immintrin.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <vector>

#include "cpu/parallel.h"
#include "cpu/sparse/sparse_kernels.h"

#pragma GCC push_options
#pragma GCC target("avx2,fma")

namespace pycomp::cpu::sparse {
namespace {

struct V {
  static constexpr int W = 8;
  using F = __m256;
  using I = __m256i;
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
  static I idx(const int16_t* p) { return _mm256_cvtepi16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))); }
  static I idx(const int32_t* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }
  static F gather(const float* base, I i) { return _mm256_i32gather_ps(base, i, 4); }
};

#include "cpu/sparse/sparse_generic.h"

// byte (two 4-bit group codes) -> lane indices {i0, i1, 4 + j0, 4 + j1} into 8 consecutive x values.
struct PermTable {
  alignas(16) std::array<std::array<int32_t, 4>, 256> ctrl{};
  PermTable() {
    for (int b = 0; b < 256; ++b) ctrl[b] = {b & 3, (b >> 2) & 3, 4 + ((b >> 4) & 3), 4 + ((b >> 6) & 3)};
  }
};
const PermTable kPerm;

// The control vector of one metadata word (16 columns): lanes 0-3 index x[16c..16c+7], lanes 4-7 x[16c+8..].
inline __m256i perm_ctrl(uint32_t word) {
  const __m128i lo = _mm_load_si128(reinterpret_cast<const __m128i*>(kPerm.ctrl[word & 255u].data()));
  const __m128i hi = _mm_load_si128(reinterpret_cast<const __m128i*>(kPerm.ctrl[(word >> 8) & 255u].data()));
  return _mm256_set_m128i(hi, lo);
}

inline __m256 kept_x(const float* xc, __m256i ctrl) {
  const __m256 a = _mm256_permutevar8x32_ps(_mm256_loadu_ps(xc), ctrl);
  const __m256 b = _mm256_permutevar8x32_ps(_mm256_loadu_ps(xc + 8), ctrl);
  return _mm256_blend_ps(a, b, 0xF0);
}

inline __m256 load8(const float* p) { return _mm256_loadu_ps(p); }
inline __m256 load8(const int8_t* p) {
  return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))));
}

// Chunks go in pairs (Kp % 32 == 0): the pair's two words sit in one column pair of the metadata, and
// the two chunks feed separate accumulators, so the FMA latency does not chain.
template <class T, int MR>
void s24_rows(const float* x, int64_t ldx, const T* val, const float* scale, const int16_t* meta, int64_t Np,
              const float* bias, float* out, int64_t ldo, int64_t Kp, int64_t n0, int64_t n1) {
  const int64_t chunks = Kp / 16;
  for (int64_t n = n0; n < n1; ++n) {
    const MetaRow row(n);
    const T* v = val + n * (Kp / 2);
    __m256 acc[2][MR];
    for (int m = 0; m < MR; ++m) acc[0][m] = acc[1][m] = _mm256_setzero_ps();
    for (int64_t c = 0; c < chunks; c += 2) {
      const int16_t* pair = meta + (c >> 1) * 2 * Np;
      const __m256i ctrl0 = perm_ctrl(static_cast<uint16_t>(pair[row.slot[0]]));
      const __m256i ctrl1 = perm_ctrl(static_cast<uint16_t>(pair[row.slot[1]]));
      const __m256 w0 = load8(v + 8 * c), w1 = load8(v + 8 * c + 8);
      for (int m = 0; m < MR; ++m) {
        const float* xc = x + m * ldx + 16 * c;
        acc[0][m] = _mm256_fmadd_ps(w0, kept_x(xc, ctrl0), acc[0][m]);
        acc[1][m] = _mm256_fmadd_ps(w1, kept_x(xc + 16, ctrl1), acc[1][m]);
      }
    }
    const float bv = bias ? bias[n] : 0.0f;
    const float sc = scale ? scale[n] : 1.0f;
    for (int m = 0; m < MR; ++m) out[m * ldo + n] = V::hsum(_mm256_add_ps(acc[0][m], acc[1][m])) * sc + bv;
  }
}

template <class T>
void s24_driver(const float* x, int64_t ldx, const T* val, const float* scale, const int16_t* meta, int64_t Np,
                const float* bias, float* out, int64_t ldo, int64_t M, int64_t N, int64_t Kp) {
  if (M >= kCsrTransposeMinM) return s24_outer_driver(x, ldx, val, scale, meta, Np, bias, out, ldo, M, N, Kp);
  parallel_for(N, kRowGrain, [&](int64_t n0, int64_t n1) {
    for (int64_t m0 = 0; m0 < M; m0 += 4) {
      const float* xm = x + m0 * ldx;
      float* om = out + m0 * ldo;
      switch (std::min<int64_t>(4, M - m0)) {
        case 1: s24_rows<T, 1>(xm, ldx, val, scale, meta, Np, bias, om, ldo, Kp, n0, n1); break;
        case 2: s24_rows<T, 2>(xm, ldx, val, scale, meta, Np, bias, om, ldo, Kp, n0, n1); break;
        case 3: s24_rows<T, 3>(xm, ldx, val, scale, meta, Np, bias, om, ldo, Kp, n0, n1); break;
        default: s24_rows<T, 4>(xm, ldx, val, scale, meta, Np, bias, om, ldo, Kp, n0, n1); break;
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
