// AVX2 + FMA (+ F16C) int4 kernels: V = 8 fp32 lanes, 16-column chunks.
//
// Unpacking: vpmovzxbd widens 8 packed bytes (16 weights) to int32 lanes.
// GEMM dequantizes them (vpand 15 for the even columns, vpsrld 4 for the odd
// ones, vcvtdq2ps, one FMA code * s + (-zero * s), exact) into the fp32 panel.
// GEMV converts each lane's low nibble and its whole byte (see
// fold_high_nibbles in int4_driver.h) and applies zero point and scale once
// per group.
#if defined(__x86_64__)

#include <immintrin.h>

#include "cpu/avx2_common.h"
#include "cpu/int4/int4_driver.h"
#include "cpu/int4/int4_kernels.h"

#define PYCOMP_AVX2 __attribute__((target("avx2,fma,f16c")))
#define PYCOMP_AVX2_INLINE inline __attribute__((always_inline, target("avx2,fma,f16c")))
#define PYCOMP_AVX2_LAMBDA __attribute__((always_inline, target("avx2,fma,f16c")))

namespace pycomp::cpu::int4 {
namespace {

constexpr int V = 8;

using avx2::hsum;

// f(integral_constant<int, I>) for I < N: constant indices keep accumulator arrays in registers.
template <int N, class F, int... I>
PYCOMP_AVX2_INLINE void unroll_impl(F&& f, std::integer_sequence<int, I...>) {
  (f(std::integral_constant<int, I>{}), ...);
}
template <int N, class F>
PYCOMP_AVX2_INLINE void unroll(F&& f) {
  unroll_impl<N>(f, std::make_integer_sequence<int, N>{});
}

PYCOMP_AVX2_INLINE float half(uint16_t h) { return _cvtsh_ss(h); }

// The 2V weights of one chunk at p, dequantized: lo = even columns, hi = odd columns.
PYCOMP_AVX2_INLINE void dequant_chunk(const uint8_t* p, __m256 s, __m256 zs, __m256& lo, __m256& hi) {
  const __m256i v = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
  lo = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_and_si256(v, _mm256_set1_epi32(15))), s, zs);
  hi = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_srli_epi32(v, 4)), s, zs);
}

// ----------------------------------------------------------------- GEMV

// Weight rows per GEMV tile by M = 1..4, and accumulator sets: M = 1 keeps the
// two products of a chunk in separate accumulators (otherwise the FMA latency
// of two dependent FMAs per chunk bounds the loop); larger M has enough
// independent sums without, and not the registers for them.
template <int MR>
constexpr int kGemvNr = MR == 1 ? 4 : MR == 2 ? 3 : 2;
template <int MR>
constexpr int kSplit = MR == 1 ? 2 : 1;

// acc += x[i] . codes of row j over one chunk, in the folded form: low nibbles
// against x_even - x_odd / 16, whole bytes (low + 16 high) against x_odd / 16.
// Two conversions, one AND and two FMAs per 16 weights.
template <int MR, int NR, int S>
PYCOMP_AVX2_INLINE void gemv_step(__m256 (&acc)[S][MR][NR], const float* const (&x)[MR], const uint8_t* const (&p)[NR]) {
  unroll<NR>([&](auto j) PYCOMP_AVX2_LAMBDA {
    const __m256i v = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p[j])));
    const __m256 lo = _mm256_cvtepi32_ps(_mm256_and_si256(v, _mm256_set1_epi32(15)));
    const __m256 byte = _mm256_cvtepi32_ps(v);
    unroll<MR>([&](auto i) PYCOMP_AVX2_LAMBDA {
      acc[0][i][j] = _mm256_fmadd_ps(_mm256_load_ps(x[i]), lo, acc[0][i][j]);
      acc[S - 1][i][j] = _mm256_fmadd_ps(_mm256_load_ps(x[i] + V), byte, acc[S - 1][i][j]);
    });
  });
}

// Rows [n, n + NR) against MR activation rows, all of K, with CPG chunks per
// group. Per group, lane-wise: total += scale * (sum x * code - zero * sum x),
// with sum x per lane and group from the driver (GemvTask::xsum) and the
// group's scale and zero point read as floats from sf (2 * NR * G floats of
// scratch, filled once per tile), so the inner loop only unpacks and multiplies.
template <int MR, int NR, int CPG>
PYCOMP_AVX2 void gemv_tile(const GemvTask& t, int64_t n, float* sf) {
  constexpr int S = kSplit<MR>;
  const Int4Weights& w = *t.w;
  // The tile's scales and zero points as fp32, sf[j * G + g] and zf[j * G + g].
  const int64_t G = w.G;
  float* zf = sf + NR * G;
  unroll<NR>([&](auto j) PYCOMP_AVX2_LAMBDA {
    const uint16_t* sh = w.scales + (n + j) * G;
    const uint8_t* zr = w.zeros ? w.zeros + (n + j) * G : nullptr;
    int64_t g = 0;
    for (; g + V <= G; g += V) {
      _mm256_storeu_ps(sf + j * G + g, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(sh + g))));
      _mm256_storeu_ps(zf + j * G + g, zr ? _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(zr + g))))
                                          : _mm256_set1_ps(float(kSymmetricZero)));
    }
    for (; g < G; ++g) {
      sf[j * G + g] = half(sh[g]);
      zf[j * G + g] = float(zr ? zr[g] : kSymmetricZero);
    }
  });

  const uint8_t* row[NR];
  unroll<NR>([&](auto j) PYCOMP_AVX2_LAMBDA { row[j] = w.packed + (n + j) * w.Kb; });
  __m256 total[MR][NR];
  unroll<MR>([&](auto i) PYCOMP_AVX2_LAMBDA {
    unroll<NR>([&](auto j) PYCOMP_AVX2_LAMBDA { total[i][j] = _mm256_setzero_ps(); });
  });
  // Groups wholly inside the rows' full chunks take a loop of CPG steps the compiler unrolls.
  const int64_t gfull = w.full / CPG;
  for (int64_t g = 0; g < G; ++g) {
    __m256 acc[S][MR][NR];
    unroll<S>([&](auto h) PYCOMP_AVX2_LAMBDA {
      unroll<MR>([&](auto i) PYCOMP_AVX2_LAMBDA {
        unroll<NR>([&](auto j) PYCOMP_AVX2_LAMBDA { acc[h][i][j] = _mm256_setzero_ps(); });
      });
    });
    const int64_t c0 = g * CPG, c1 = std::min<int64_t>(c0 + CPG, w.chunks);
    auto step = [&](int64_t c) PYCOMP_AVX2_LAMBDA {
      const float* x[MR];
      const uint8_t* p[NR];
      unroll<MR>([&](auto i) PYCOMP_AVX2_LAMBDA { x[i] = t.x.p + i * t.x.lda + c * 2 * V; });
      unroll<NR>([&](auto j) PYCOMP_AVX2_LAMBDA { p[j] = row[j] + c * V; });
      gemv_step<MR, NR, S>(acc, x, p);
    };
    // The next tile's rows at the same offset: a tile ahead is far enough to hide the memory latency.
    if ((c0 * V) % 64 == 0)
      unroll<NR>([&](auto j) PYCOMP_AVX2_LAMBDA {
        for (int64_t c = c0; c < c1; c += 64 / V)
          _mm_prefetch(reinterpret_cast<const char*>(row[j] + NR * w.Kb + c * V), _MM_HINT_T0);
      });
    if (g < gfull) {
      for (int c = 0; c < CPG; ++c) step(c0 + c);
    } else {
      const int64_t cf = std::min(c1, w.full);
      for (int64_t c = c0; c < cf; ++c) step(c);
      if (cf < c1) {  // the row's partial last chunk
        alignas(16) uint8_t tail[NR][V];
        const float* x[MR];
        const uint8_t* p[NR];
        unroll<MR>([&](auto i) PYCOMP_AVX2_LAMBDA { x[i] = t.x.p + i * t.x.lda + cf * 2 * V; });
        unroll<NR>([&](auto j) PYCOMP_AVX2_LAMBDA { p[j] = w.chunk(n + j, cf, V, tail[j]); });
        gemv_step<MR, NR, S>(acc, x, p);
      }
    }
    unroll<NR>([&](auto j) PYCOMP_AVX2_LAMBDA {
      const __m256 s = _mm256_broadcast_ss(sf + j * G + g), z = _mm256_broadcast_ss(zf + j * G + g);
      unroll<MR>([&](auto i) PYCOMP_AVX2_LAMBDA {
        const __m256 a = S == 2 ? _mm256_add_ps(acc[0][i][j], acc[S - 1][i][j]) : acc[0][i][j];
        const __m256 xs = _mm256_load_ps(t.xsum + i * t.ldxs + g * V);
        total[i][j] = _mm256_fmadd_ps(s, _mm256_fnmadd_ps(z, xs, a), total[i][j]);
      });
    });
  }
  unroll<MR>([&](auto i) PYCOMP_AVX2_LAMBDA {
    unroll<NR>([&](auto j) PYCOMP_AVX2_LAMBDA {
      const float v = hsum(total[i][j]);
      t.out[i * t.ldo + n + j] = t.bias ? v + t.bias[n + j] : v;
    });
  });
}

template <int MR, int CPG>
void gemv_rows(const GemvTask& t) {
  constexpr int NR = kGemvNr<MR>;
  Scratch<float> sf(2 * NR * t.w->G);
  int64_t n = t.n0;
  for (; n + NR <= t.n1; n += NR) gemv_tile<MR, NR, CPG>(t, n, sf.get());
  for (; n < t.n1; ++n) gemv_tile<MR, 1, CPG>(t, n, sf.get());
}

// chunks_per_group = group_size / 16: 2, 4 or 8.
template <int MR>
void gemv_rows(const GemvTask& t) {
  switch (t.w->chunks_per_group) {
    case 2: return gemv_rows<MR, 2>(t);
    case 4: return gemv_rows<MR, 4>(t);
    default: return gemv_rows<MR, 8>(t);
  }
}

// ----------------------------------------------------------------- GEMM

struct Gemm {
  static constexpr int kMt = 2 * V;

  // c[j][i] += w[j] . xt[., i]: per k, MV activation vectors and NR broadcast
  // weights meet in NR * MV FMAs (12 accumulators for 6 x 16). Each lane sums
  // one output serially, so the sums restart from zero every kSumK values of k
  // and are added to c: short running sums keep the rounding error near that
  // of the dot-product form's partial sums.
  static constexpr int64_t kSumK = 64;
  template <int MV, int NR>
  PYCOMP_AVX2 static void run(const GemmTile& t) {
    const float* w[NR];
    unroll<NR>([&](auto j) PYCOMP_AVX2_LAMBDA { w[j] = t.w + j * t.ldw; });
    for (int64_t k0 = 0; k0 < t.klen; k0 += kSumK) {
      __m256 acc[NR][MV];
      unroll<NR>([&](auto j) PYCOMP_AVX2_LAMBDA {
        unroll<MV>([&](auto v) PYCOMP_AVX2_LAMBDA { acc[j][v] = _mm256_setzero_ps(); });
      });
      const float* xt = t.xt + k0 * kMt;
      for (int64_t k = k0, k1 = std::min(k0 + kSumK, t.klen); k < k1; ++k, xt += kMt) {
        __m256 xv[MV];
        unroll<MV>([&](auto v) PYCOMP_AVX2_LAMBDA { xv[v] = _mm256_load_ps(xt + v * V); });
        unroll<NR>([&](auto j) PYCOMP_AVX2_LAMBDA {
          const __m256 b = _mm256_broadcast_ss(w[j] + k);
          unroll<MV>([&](auto v) PYCOMP_AVX2_LAMBDA { acc[j][v] = _mm256_fmadd_ps(b, xv[v], acc[j][v]); });
        });
      }
      const bool first = k0 == 0 && !t.accumulate;
      unroll<NR>([&](auto j) PYCOMP_AVX2_LAMBDA {
        unroll<MV>([&](auto v) PYCOMP_AVX2_LAMBDA {
          float* c = t.c + j * t.ldc + v * V;
          _mm256_storeu_ps(c, first ? acc[j][v] : _mm256_add_ps(_mm256_loadu_ps(c), acc[j][v]));
        });
      });
    }
  }
};

struct Avx2 {
  static constexpr int V = int4::V;
  // GEMV passes up to M = 24: measured against the GEMM on 4096x4096 (one thread, cold weights),
  // they win up to 24 rows and tie at 32.
  static constexpr int64_t kGemvMaxM = 24;
  // The GEMM's k block keeps a 16-row activation tile (16 KB) in L1 while the
  // 48-row panel (48 KB) streams from L2.
  static constexpr int kGemvNr = 4, kMt = Gemm::kMt, kNr = 6;
  static constexpr int64_t kPanelRows = 48, kPanelK = 256;

  static void prepare_gemv_x(float* xp, int64_t lda, int64_t M, int64_t Kp) { fold_high_nibbles<V>(xp, lda, M, Kp); }

  static void gemv(const GemvTask& t) {
    switch (t.mr) {
      case 1: return gemv_rows<1>(t);
      case 2: return gemv_rows<2>(t);
      case 3: return gemv_rows<3>(t);
      default: return gemv_rows<4>(t);
    }
  }

  PYCOMP_AVX2 static void dequant(const Int4Weights& w, int64_t n0, int64_t rows, int64_t c0, int64_t c1,
                                  float* panel, int64_t ldp) {
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t n = n0 + r;
      const uint8_t* p = w.packed + n * w.Kb;
      float* o = panel + r * ldp - c0 * 2 * V;
      for (int64_t c = c0; c < c1;) {
        const int64_t g = c / w.chunks_per_group, ce = std::min(c1, (g + 1) * w.chunks_per_group);
        const float sf = half(w.scales[n * w.G + g]);
        const __m256 s = _mm256_set1_ps(sf), zs = _mm256_set1_ps(-float(w.zero(n, g)) * sf);
        for (const int64_t cf = std::min(ce, w.full); c < cf; ++c) {
          __m256 lo, hi;
          dequant_chunk(p + c * V, s, zs, lo, hi);
          _mm256_store_ps(o + c * 2 * V, lo);
          _mm256_store_ps(o + c * 2 * V + V, hi);
        }
        for (; c < ce; ++c) {  // the row's partial last chunk
          alignas(16) uint8_t tail[V];
          __m256 lo, hi;
          dequant_chunk(w.chunk(n, c, V, tail), s, zs, lo, hi);
          _mm256_store_ps(o + c * 2 * V, lo);
          _mm256_store_ps(o + c * 2 * V + V, hi);
        }
      }
    }
  }

  static void gemm_tile(const GemmTile& t) { TileTable<Gemm, kMt / V, kNr, GemmTile>::call(t.mv, t.nr, t); }
};

}  // namespace

void w4a16_linear_avx2(const XRows& x, const uint8_t* packed, const uint16_t* scales, const uint8_t* zeros,
                       const float* bias, float* out, int64_t ldo, int64_t M, int64_t N, int64_t K, int group_size) {
  w4a16_linear<Avx2>(x, packed, scales, zeros, bias, out, ldo, M, N, K, group_size);
}

}  // namespace pycomp::cpu::int4

#endif  // __x86_64__
