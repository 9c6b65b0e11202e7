// AVX2 int4 kernels with x rounded to int16 per weight group (pycomp::w4a16_linear's round_x).
//
// The fp32 kernels (int4_avx2.cpp) spend an int->float conversion and an FMA on
// every 8 weights and fill both pipes at M=1; with fp32 arithmetic the GEMM is
// FMA-bound like the dense baseline. Here each row m of x is rounded per weight
// group g to q = rint(x / s), s = max|x_g| / 32767 (1 for an all-zero group, NaN
// when the group holds NaN or inf, so that the row's outputs are NaN as the fp32
// product's would be): at most s / 2 = 2^-16 max|x_g| per input. Codes meet q
// in vpmaddwd, 16 products per instruction, exact int32 sums per group (at most
// 2 * 15 * 32767 per pair, 64 pairs per group: below 2^26), and each group's
// sum becomes fp32 once:
//   out[m, n] = sum_g scale[n, g] s[m, g] (sum_k code q - zero[n, g] sum_k q) + bias[n].
// pycomp/ops/int4.py (round_x_ref) rounds x the same way, bit for bit.
//
// GEMV (M <= kGemvMaxM): the weights are unpacked in registers, a chunk of 16
// bytes (32 columns) at a time: vpmovzxbw, AND 15 gives the even columns and a
// 16-bit shift the odd ones, so x is stored per chunk as its 16 even then its 16
// odd values. The zero point is applied per group from the group's sum of q, in integers.
// GEMM: per (n panel, k block) the weights are decoded once into an int16 panel
// of code - zero pairs (two k per 32-bit lane, 16 weight rows per strip),
// transposed so that a 4 x 16 register tile broadcasts a pair of x values
// against 8 weight rows per vpmaddwd; the tile's int32 sums become fp32 at the
// end of each group.
#if defined(__x86_64__)

#include <immintrin.h>

#include <cfloat>
#include <cmath>

#include "cpu/avx2_common.h"
#include "cpu/int4/int4_driver.h"
#include "cpu/int4/int4_kernels.h"

#define PYCOMP_X16 __attribute__((target("avx2,fma,f16c")))
#define PYCOMP_X16_INLINE inline __attribute__((always_inline, target("avx2,fma,f16c")))
#define PYCOMP_X16_LAMBDA __attribute__((always_inline, target("avx2,fma,f16c")))

namespace pycomp::cpu::int4 {
namespace {

constexpr float kQMax = 32767.f;
constexpr int kChunkBytes = 16;  // GEMV: 32 columns per chunk
// GEMV passes up to this M, the GEMM above. Zen 3, 2 threads, 4096x4096 g128, cold weights, median of 40
// (ms, passes / GEMM): M=8 2.6-3.3 / 4.5-5.0, 16 5.1 / 5.9-6.1, 24 7.8 / 7.7-7.8, 32 10.2-10.6 / 9.2-9.4.
constexpr int64_t kGemvMaxM = 16;

using avx2::hmax;
using avx2::hsum;

template <int N, class F, int... I>
PYCOMP_X16_INLINE void unroll_impl(F&& f, std::integer_sequence<int, I...>) {
  (f(std::integral_constant<int, I>{}), ...);
}
template <int N, class F>
PYCOMP_X16_INLINE void unroll(F&& f) {
  unroll_impl<N>(f, std::make_integer_sequence<int, N>{});
}

// x rounded per group, rows of Kq = G * gs int16 in natural column order (zero past K), and s (M, G).
struct RoundedX {
  Scratch<int16_t> q;
  Scratch<float> s;
  int64_t Kq;
};

// 8 values of x from p as float32: bfloat16 and float16 convert exactly.
PYCOMP_X16_INLINE __m256 load8(const float* p) { return _mm256_loadu_ps(p); }
PYCOMP_X16_INLINE __m256 load8(const Bf16* p) {
  const __m256i v = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  return _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
}
PYCOMP_X16_INLINE __m256 load8(const F16* p) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}

// Row m's groups: s[g] and q[k] = rint(x[k] / s[g]) (the division, not a reciprocal: round_x_ref divides too).
template <class E>
PYCOMP_X16 void round_row(const E* x, int64_t K, int gs, int64_t G, int16_t* q, float* s) {
  const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff)), big = _mm256_set1_ps(FLT_MAX);
  for (int64_t g = 0; g < G; ++g) {
    const int64_t k0 = g * gs, k1 = std::min<int64_t>(K, k0 + gs);
    __m256 m = _mm256_setzero_ps(), bad = _mm256_setzero_ps();
    int64_t k = k0;
    for (; k + 8 <= k1; k += 8) {
      const __m256 a = _mm256_and_ps(abs_mask, load8(x + k));
      m = _mm256_max_ps(m, a);
      bad = _mm256_or_ps(bad, _mm256_cmp_ps(a, big, _CMP_NLE_UQ));  // NaN or inf
    }
    float mx = hmax(m);
    bool nonfinite = _mm256_movemask_ps(bad) != 0;
    for (; k < k1; ++k) {
      const float a = std::fabs(to_f32(x[k]));
      nonfinite |= !(a <= FLT_MAX);
      mx = std::max(mx, a);
    }
    const float sg = nonfinite ? NAN : mx > 0.f ? mx / kQMax : 1.f;
    s[g] = sg;
    const __m256 sv = _mm256_set1_ps(nonfinite ? 1.f : sg), lim = _mm256_set1_ps(kQMax);
    for (k = k0; k + 16 <= k1; k += 16) {
      // |x / s| <= 32767 up to the rounding of s; the clamp keeps NaN-free rows exact and the rest in range.
      const __m256 a = _mm256_min_ps(lim, _mm256_max_ps(-lim, _mm256_div_ps(load8(x + k), sv)));
      const __m256 b = _mm256_min_ps(lim, _mm256_max_ps(-lim, _mm256_div_ps(load8(x + k + 8), sv)));
      const __m256i p = _mm256_packs_epi32(_mm256_cvtps_epi32(a), _mm256_cvtps_epi32(b));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(q + k), _mm256_permute4x64_epi64(p, 0xD8));
    }
    for (; k < k1; ++k)
      q[k] = int16_t(std::nearbyint(std::min(kQMax, std::max(-kQMax, to_f32(x[k]) / (nonfinite ? 1.f : sg)))));
    for (k = k1; k < k0 + gs; ++k) q[k] = 0;
  }
}

RoundedX round_x(const XRows& x, int64_t M, int64_t K, int gs) {
  const int64_t G = ceil_div(K, gs), Kq = G * gs;
  RoundedX r{Scratch<int16_t>(M * Kq), Scratch<float>(M * G), Kq};
  visit(x, [&](const auto* xe) {
    parallel_for(M, std::max<int64_t>(1, 32768 / K), [&](int64_t b, int64_t e) {
      for (int64_t m = b; m < e; ++m) round_row(xe + m * x.ld, K, gs, G, r.q.get() + m * Kq, r.s.get() + m * G);
    });
  });
  return r;
}

// ----------------------------------------------------------------- GEMV

struct X16Gemv {
  const Int4Weights* w;  // chunk geometry for 16-byte chunks
  const int16_t* q;      // rows in chunk order: per chunk 16 even then 16 odd columns
  int64_t ldq;
  const float* s;     // (M, G)
  const int32_t* xg;  // (M, G): sum of q over the group, for the zero point
  int mr;
  int64_t n0, n1;
  const float* bias;
  float* out;
  int64_t ldo;
};

template <int MR>
constexpr int kGemvNr = MR == 1 ? 4 : 2;

template <int MR, int NR>
PYCOMP_X16_INLINE void gemv_step(__m256i (&acc)[MR][NR], const int16_t* const (&x)[MR], const uint8_t* const (&p)[NR]) {
  const __m256i low = _mm256_set1_epi16(15);
  unroll<NR>([&](auto j) PYCOMP_X16_LAMBDA {
    const __m256i b = _mm256_cvtepu8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p[j])));
    const __m256i lo = _mm256_and_si256(b, low), hi = _mm256_srli_epi16(b, 4);
    unroll<MR>([&](auto i) PYCOMP_X16_LAMBDA {
      const __m256i xe = _mm256_load_si256(reinterpret_cast<const __m256i*>(x[i]));
      const __m256i xo = _mm256_load_si256(reinterpret_cast<const __m256i*>(x[i] + 16));
      acc[i][j] = _mm256_add_epi32(acc[i][j], _mm256_madd_epi16(lo, xe));
      acc[i][j] = _mm256_add_epi32(acc[i][j], _mm256_madd_epi16(hi, xo));
    });
  });
}

// Per (x row i, weight row j, group g) of a tile: sc = scale[j, g] s[i, g] and zx = zero[j, g] xg[i, g], so
// that a group ends in three instructions: (acc - zx in lane 0) -> fp32, times sc, into the total.
// sc and zx: MR * NR * G each, [(i * NR + j) * G + g].
template <int MR, int NR>
PYCOMP_X16 void tile_group_terms(const X16Gemv& t, int64_t n, float* sc, int32_t* zx) {
  const Int4Weights& w = *t.w;
  const int64_t G = w.G;
  for (int j = 0; j < NR; ++j) {
    const uint16_t* sh = w.scales + (n + j) * G;
    const uint8_t* zr = w.zeros ? w.zeros + (n + j) * G : nullptr;
    int64_t g = 0;
    for (; g + 8 <= G; g += 8) {
      const __m256 sw = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(sh + g)));
      const __m256i z = zr ? _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(zr + g)))
                           : _mm256_set1_epi32(kSymmetricZero);
      for (int i = 0; i < MR; ++i) {
        _mm256_storeu_ps(sc + (i * NR + j) * G + g, _mm256_mul_ps(sw, _mm256_loadu_ps(t.s + i * G + g)));
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(zx + (i * NR + j) * G + g),
                            _mm256_mullo_epi32(z, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(t.xg + i * G + g))));
      }
    }
    for (; g < G; ++g)
      for (int i = 0; i < MR; ++i) {
        sc[(i * NR + j) * G + g] = _cvtsh_ss(sh[g]) * t.s[i * G + g];
        zx[(i * NR + j) * G + g] = (zr ? zr[g] : kSymmetricZero) * t.xg[i * G + g];
      }
  }
}

// Rows [n, n + NR) against MR rows of x over all of K; sc, zx: scratch for tile_group_terms.
template <int MR, int NR, int CPG>
PYCOMP_X16 void gemv_tile(const X16Gemv& t, int64_t n, float* sc, int32_t* zx) {
  const Int4Weights& w = *t.w;
  const int64_t G = w.G;
  tile_group_terms<MR, NR>(t, n, sc, zx);
  const uint8_t* row[NR];
  unroll<NR>([&](auto j) PYCOMP_X16_LAMBDA { row[j] = w.packed + (n + j) * w.Kb; });
  __m256 total[MR][NR];
  unroll<MR>([&](auto i) PYCOMP_X16_LAMBDA {
    unroll<NR>([&](auto j) PYCOMP_X16_LAMBDA { total[i][j] = _mm256_setzero_ps(); });
  });
  const int64_t gfull = w.full / CPG;
  for (int64_t g = 0; g < G; ++g) {
    __m256i acc[MR][NR];
    unroll<MR>([&](auto i) PYCOMP_X16_LAMBDA {
      unroll<NR>([&](auto j) PYCOMP_X16_LAMBDA { acc[i][j] = _mm256_setzero_si256(); });
    });
    const int64_t c0 = g * CPG, c1 = std::min<int64_t>(c0 + CPG, w.chunks);
    auto step = [&](int64_t c, const uint8_t* const (&p)[NR]) PYCOMP_X16_LAMBDA {
      const int16_t* x[MR];
      unroll<MR>([&](auto i) PYCOMP_X16_LAMBDA { x[i] = t.q + i * t.ldq + c * 2 * kChunkBytes; });
      gemv_step<MR, NR>(acc, x, p);
    };
    // The next tile's rows at the same offset, a group at a time (as the fp32 GEMV does).
    unroll<NR>([&](auto j) PYCOMP_X16_LAMBDA {
      for (int64_t c = c0; c < c1; c += 64 / kChunkBytes)
        _mm_prefetch(reinterpret_cast<const char*>(row[j] + NR * w.Kb + c * kChunkBytes), _MM_HINT_T0);
    });
    const int64_t cf = g < gfull ? c1 : std::min(c1, w.full);
    for (int64_t c = c0; c < cf; ++c) {
      const uint8_t* p[NR];
      unroll<NR>([&](auto j) PYCOMP_X16_LAMBDA { p[j] = row[j] + c * kChunkBytes; });
      step(c, p);
    }
    if (cf < c1) {  // the rows' partial last chunk, from zero-filled copies
      alignas(16) uint8_t tail[NR][kChunkBytes];
      const uint8_t* p[NR];
      unroll<NR>([&](auto j) PYCOMP_X16_LAMBDA { p[j] = w.chunk(n + j, cf, kChunkBytes, tail[j]); });
      step(cf, p);
    }
    unroll<MR>([&](auto i) PYCOMP_X16_LAMBDA {
      unroll<NR>([&](auto j) PYCOMP_X16_LAMBDA {
        const int64_t e = (i * NR + j) * G + g;
        const __m256i a = _mm256_sub_epi32(acc[i][j], _mm256_castsi128_si256(_mm_cvtsi32_si128(zx[e])));
        total[i][j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(a), _mm256_broadcast_ss(sc + e), total[i][j]);
      });
    });
  }
  unroll<MR>([&](auto i) PYCOMP_X16_LAMBDA {
    unroll<NR>([&](auto j) PYCOMP_X16_LAMBDA {
      const float v = hsum(total[i][j]);
      t.out[i * t.ldo + n + j] = t.bias ? v + t.bias[n + j] : v;
    });
  });
}

template <int MR, int CPG>
void gemv_rows(const X16Gemv& t) {
  constexpr int NR = kGemvNr<MR>;
  Scratch<float> sc(MR * NR * t.w->G);
  Scratch<int32_t> zx(MR * NR * t.w->G);
  int64_t n = t.n0;
  for (; n + NR <= t.n1; n += NR) gemv_tile<MR, NR, CPG>(t, n, sc.get(), zx.get());
  for (; n < t.n1; ++n) gemv_tile<MR, 1, CPG>(t, n, sc.get(), zx.get());
}

template <int MR>
void gemv_rows(const X16Gemv& t) {
  switch (t.w->chunks_per_group) {  // group_size / 32
    case 1: return gemv_rows<MR, 1>(t);
    case 2: return gemv_rows<MR, 2>(t);
    default: return gemv_rows<MR, 4>(t);
  }
}

void gemv(const X16Gemv& t) {
  switch (t.mr) {
    case 1: return gemv_rows<1>(t);
    case 2: return gemv_rows<2>(t);
    case 3: return gemv_rows<3>(t);
    default: return gemv_rows<4>(t);
  }
}

void linear_gemv(const XRows& x, const Int4Weights& w, const float* bias, float* out, int64_t ldo,
                 int64_t M, int64_t N) {
  const int gs = w.gs;
  const int64_t G = w.G;
  RoundedX r = round_x(x, M, w.K, gs);
  // Chunk order, and sums of q per group for the zero points.
  const int64_t Kq = r.Kq, ldq = (Kq * 2) % 1024 == 0 ? Kq + 32 : Kq;  // rows 1 KB apart would share L1 sets
  Scratch<int16_t> q(M * ldq);
  Scratch<int32_t> xg(M * G);
  for (int64_t m = 0; m < M; ++m) {
    const int16_t* src = r.q.get() + m * Kq;
    int16_t* dst = q.get() + m * ldq;
    for (int64_t c = 0; c < Kq; c += 32)
      for (int l = 0; l < 16; ++l) {
        dst[c + l] = src[c + 2 * l];
        dst[c + 16 + l] = src[c + 2 * l + 1];
      }
    for (int64_t g = 0; g < G; ++g) {
      int32_t sum = 0;
      for (int64_t k = g * gs; k < (g + 1) * gs; ++k) sum += src[k];
      xg[m * G + g] = sum;
    }
  }
  gemv_passes(M, N, w.K, w.Kb, kGemvNr<1>, [&](int64_t m0, int64_t m1, int64_t b0, int64_t b1) {
    gemv(X16Gemv{&w, q.get() + m0 * ldq, ldq, r.s.get() + m0 * G, xg.get() + m0 * G, int(m1 - m0), b0, b1, bias,
                 out + m0 * ldo, ldo});
  });
}

// ----------------------------------------------------------------- GEMM

constexpr int kMr = 4;           // x rows per register tile
constexpr int kStrip = 16;       // weight rows per strip (two vectors of 8)
constexpr int64_t kNc = 64;      // weight rows per panel
constexpr int64_t kKcPairs = 128;  // k pairs per block: whole groups of every size (16, 32, 64 pairs)

PYCOMP_X16_INLINE void transpose8(__m256i (&r)[8]) {
  __m256i t[8], u[8];
  for (int i = 0; i < 4; ++i) {
    t[2 * i] = _mm256_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm256_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
  }
  for (int h = 0; h < 2; ++h) {  // rows 0-3, then 4-7
    u[4 * h + 0] = _mm256_unpacklo_epi64(t[4 * h + 0], t[4 * h + 2]);
    u[4 * h + 1] = _mm256_unpackhi_epi64(t[4 * h + 0], t[4 * h + 2]);
    u[4 * h + 2] = _mm256_unpacklo_epi64(t[4 * h + 1], t[4 * h + 3]);
    u[4 * h + 3] = _mm256_unpackhi_epi64(t[4 * h + 1], t[4 * h + 3]);
  }
  for (int i = 0; i < 4; ++i) {
    r[i] = _mm256_permute2x128_si256(u[i], u[4 + i], 0x20);
    r[4 + i] = _mm256_permute2x128_si256(u[i], u[4 + i], 0x31);
  }
}

// Weight rows [nb, nb + nlen) (the strip rows past nlen read as zero), pairs [p0, p1) into the panel:
// panel[(strip * kKcPairs + p - p0) * 16 + j] = (lo - zero) | (hi - zero) << 16 of byte p of row
// nb + 16 strip + j; and the rows' scales, sw[(strip * gb + g - g0) * 16 + j].
PYCOMP_X16 void decode_panel(const Int4Weights& w, int64_t nb, int64_t nlen, int64_t p0, int64_t p1, int32_t* panel,
                             float* sw) {
  const int64_t gp = w.gs / 2, g0 = p0 / gp, g1 = ceil_div(p1, gp), gb = kKcPairs / gp;
  const __m256i m_lo = _mm256_set1_epi32(0x0F), m_hi = _mm256_set1_epi32(0xF0);
  for (int64_t s = 0; s * kStrip < nlen; ++s) {
    for (int64_t g = g0; g < g1; ++g)
      for (int j = 0; j < kStrip; ++j) {
        const int64_t n = nb + s * kStrip + j;
        sw[(s * gb + g - g0) * kStrip + j] = s * kStrip + j < nlen ? _cvtsh_ss(w.scales[n * w.G + g]) : 0.f;
      }
    for (int h = 0; h < 2; ++h) {
      const int64_t r0 = s * kStrip + 8 * h;
      for (int64_t p = p0; p < p1; p += 8) {
        const int64_t g = p / gp;
        alignas(32) int32_t zv[8];
        __m256i r[8];
        for (int j = 0; j < 8; ++j) {
          const int64_t n = nb + r0 + j;
          uint8_t tail[8] = {};
          const uint8_t* src = tail;
          if (r0 + j < nlen) {
            zv[j] = w.zero(n, g) * 0x10001;
            src = w.packed + n * w.Kb + p;
            if (p + 8 > w.Kb) {
              std::memcpy(tail, src, size_t(std::max<int64_t>(0, w.Kb - p)));
              src = tail;
            }
          } else {
            zv[j] = 0;
          }
          const __m256i b = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(src)));
          r[j] = _mm256_or_si256(_mm256_and_si256(b, m_lo), _mm256_slli_epi32(_mm256_and_si256(b, m_hi), 12));
        }
        transpose8(r);
        const __m256i z = _mm256_load_si256(reinterpret_cast<const __m256i*>(zv));
        int32_t* o = panel + (s * kKcPairs + p - p0) * kStrip + 8 * h;
        for (int i = 0; i < 8; ++i)
          _mm256_store_si256(reinterpret_cast<__m256i*>(o + i * kStrip), _mm256_sub_epi16(r[i], z));
      }
    }
  }
}

// c[i * ldc + j] += sum over the block's groups of sw[g][j] sx[i][g] sum_p panel[p][j] . xt[p][i]
// for i < kMr, j < 16; xt: (pairs, kMr) int16 pairs; sx: (kMr, G) row scales from the block's first group.
PYCOMP_X16 void gemm_tile(const int32_t* xt, const int32_t* panel, const float* sw, const float* sx, int64_t G,
                          int64_t groups, int64_t gp, float* c, int64_t ldc) {
  for (int64_t g = 0; g < groups; ++g) {
    __m256i acc[kMr][2];
    unroll<kMr>([&](auto i) PYCOMP_X16_LAMBDA {
      acc[i][0] = _mm256_setzero_si256();
      acc[i][1] = _mm256_setzero_si256();
    });
    const int32_t* pp = panel + g * gp * kStrip;
    const int32_t* xp = xt + g * gp * kMr;
    for (int64_t p = 0; p < gp; ++p, pp += kStrip, xp += kMr) {
      const __m256i w0 = _mm256_load_si256(reinterpret_cast<const __m256i*>(pp));
      const __m256i w1 = _mm256_load_si256(reinterpret_cast<const __m256i*>(pp + 8));
      unroll<kMr>([&](auto i) PYCOMP_X16_LAMBDA {
        const __m256i b = _mm256_set1_epi32(xp[i]);
        acc[i][0] = _mm256_add_epi32(acc[i][0], _mm256_madd_epi16(w0, b));
        acc[i][1] = _mm256_add_epi32(acc[i][1], _mm256_madd_epi16(w1, b));
        // Row by row: left alone, GCC hoists every row's broadcast and products first, runs out of the 16
        // registers and keeps an accumulator on the stack, a store-to-load chain that halved the loop's speed.
        asm volatile("" : "+x"(acc[i][0]), "+x"(acc[i][1])::"memory");
      });
    }
    const __m256 s0 = _mm256_load_ps(sw + g * kStrip), s1 = _mm256_load_ps(sw + g * kStrip + 8);
    unroll<kMr>([&](auto i) PYCOMP_X16_LAMBDA {
      const __m256 si = _mm256_set1_ps(sx[i * G + g]);
      float* ci = c + i * ldc;
      _mm256_storeu_ps(ci, _mm256_fmadd_ps(_mm256_cvtepi32_ps(acc[i][0]), _mm256_mul_ps(s0, si), _mm256_loadu_ps(ci)));
      _mm256_storeu_ps(ci + 8,
                       _mm256_fmadd_ps(_mm256_cvtepi32_ps(acc[i][1]), _mm256_mul_ps(s1, si), _mm256_loadu_ps(ci + 8)));
    });
  }
}

void linear_gemm(const XRows& x, const Int4Weights& w, const float* bias, float* out, int64_t ldo,
                 int64_t M, int64_t N) {
  const int gs = w.gs;
  const int64_t G = w.G, gp = gs / 2;
  RoundedX r = round_x(x, M, w.K, gs);
  const int64_t P = r.Kq / 2, tiles = ceil_div(M, kMr);
  // xt[(tile * P + p) * kMr + i]: the pair (q[2p], q[2p + 1]) of row tile * kMr + i, zero past M;
  // sxt[(tile * kMr + i) * G + g]: its scales, zero past M.
  Scratch<int32_t> xt(tiles * P * kMr);
  Scratch<float> sxt(tiles * kMr * G);
  parallel_for(tiles, 1, [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; ++t)
      for (int i = 0; i < kMr; ++i) {
        const int64_t m = t * kMr + i;
        const int32_t* src = m < M ? reinterpret_cast<const int32_t*>(r.q.get() + m * r.Kq) : nullptr;
        int32_t* o = xt.get() + t * P * kMr + i;
        for (int64_t p = 0; p < P; ++p) o[p * kMr] = src ? src[p] : 0;
        for (int64_t g = 0; g < G; ++g) sxt[(t * kMr + i) * G + g] = m < M ? r.s[m * G + g] : 0.f;
      }
  });
  parallel_tasks(M, N, w.K, kMr, kStrip, [&](int64_t m0, int64_t m1, int64_t n0, int64_t n1) {
    const int64_t ldc = kNc;
    Scratch<int32_t> panel(kNc / kStrip * kKcPairs * kStrip);
    Scratch<float> sw(kNc / kStrip * (kKcPairs / gp) * kStrip);
    Scratch<float> ct(round_up(m1 - m0, kMr) * ldc);
    for (int64_t nb = n0; nb < n1; nb += kNc) {
      const int64_t nlen = std::min(kNc, n1 - nb), strips = ceil_div(nlen, kStrip);
      std::fill(ct.get(), ct.get() + round_up(m1 - m0, kMr) * ldc, 0.f);
      for (int64_t p0 = 0; p0 < P; p0 += kKcPairs) {
        const int64_t p1 = std::min(P, p0 + kKcPairs), groups = (p1 - p0) / gp;
        decode_panel(w, nb, nlen, p0, p1, panel.get(), sw.get());
        // The next block's weight bytes, fetched while this one's tiles compute.
        const bool last = p1 >= P;
        const int64_t pn = last ? nb + kNc : nb, b0 = last ? 0 : p1;
        prefetch_rows(w, pn, std::min(pn + kNc, n1), b0, std::min(b0 + kKcPairs, w.Kb));
        // A strip (8 KB) stays in L1 while the x tiles stream past it.
        for (int64_t s = 0; s < strips; ++s)
          for (int64_t mt = m0; mt < m1; mt += kMr)
            gemm_tile(xt.get() + (mt / kMr * P + p0) * kMr, panel.get() + s * kKcPairs * kStrip,
                      sw.get() + s * (kKcPairs / gp) * kStrip, sxt.get() + mt * G + p0 / gp, G, groups, gp,
                      ct.get() + (mt - m0) * ldc + s * kStrip, ldc);
      }
      for (int64_t m = m0; m < m1; ++m)
        for (int64_t j = 0; j < nlen; ++j)
          out[m * ldo + nb + j] = ct[(m - m0) * ldc + j] + (bias ? bias[nb + j] : 0.f);
    }
  });
}

}  // namespace

void w4a16_linear_x16_avx2(const XRows& x, const uint8_t* packed, const uint16_t* scales, const uint8_t* zeros,
                           const float* bias, float* out, int64_t ldo, int64_t M, int64_t N, int64_t K,
                           int group_size) {
  const int64_t Kb = (K + 1) / 2;
  const Int4Weights w{packed, scales, zeros, K, Kb, ceil_div(K, group_size), group_size,
                      ceil_div(Kb, kChunkBytes), Kb / kChunkBytes, group_size / (2 * kChunkBytes)};
  if (M <= kGemvMaxM)
    linear_gemv(x, w, bias, out, ldo, M, N);
  else
    linear_gemm(x, w, bias, out, ldo, M, N);
}

}  // namespace pycomp::cpu::int4

#endif  // __x86_64__
