// AVX-512 int4 kernels (AVX512F/BW/VL + F16C): V = 16 fp32 lanes, 32-column chunks.
//
// The AVX2 kernels (int4_avx2.cpp) on 512-bit registers: vpmovzxbd widens 16
// packed bytes (32 weights) to int32 lanes, which the GEMV converts as low
// nibbles and whole bytes and the GEMM dequantizes as even and odd columns.
// With 32 vector registers the GEMV tiles take more weight rows and the GEMM
// tile is 12 weight rows x 32 activation rows. Run only on CPUs that report
// AVX-512 (dispatch in int4_linear.cpp). The development machine hides AVX-512: this file is compiled on every build, checked bit for
// bit against the portable kernels with its intrinsics emulated by SIMDe
// (tests/test_cpu_int4_kernels.py), and run by the kernel tests wherever the
// CPU has AVX-512.
#if defined(__x86_64__)

#include <immintrin.h>

#include "cpu/int4/int4_driver.h"
#include "cpu/int4/int4_kernels.h"

// GCC 12's AVX-512 headers spell "undefined" vectors as self-initialized
// variables, which -Wuninitialized reports once the intrinsics are inlined; the values are never read.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#define PYCOMP_AVX512_TARGET "avx512f,avx512bw,avx512vl,avx2,fma,f16c"
#define PYCOMP_AVX512 __attribute__((target(PYCOMP_AVX512_TARGET)))
#define PYCOMP_AVX512_INLINE inline __attribute__((always_inline, target(PYCOMP_AVX512_TARGET)))
#define PYCOMP_AVX512_LAMBDA __attribute__((always_inline, target(PYCOMP_AVX512_TARGET)))

namespace pycomp::cpu::int4 {
namespace {

constexpr int V = 16;

// f(integral_constant<int, I>) for I < N: constant indices keep accumulator arrays in registers.
template <int N, class F, int... I>
PYCOMP_AVX512_INLINE void unroll_impl(F&& f, std::integer_sequence<int, I...>) {
  (f(std::integral_constant<int, I>{}), ...);
}
template <int N, class F>
PYCOMP_AVX512_INLINE void unroll(F&& f) {
  unroll_impl<N>(f, std::make_integer_sequence<int, N>{});
}

PYCOMP_AVX512_INLINE float hsum(__m512 v) { return _mm512_reduce_add_ps(v); }

PYCOMP_AVX512_INLINE float half(uint16_t h) { return _cvtsh_ss(h); }

// The 2V weights of one chunk at p, dequantized: lo = even columns, hi = odd columns.
PYCOMP_AVX512_INLINE void dequant_chunk(const uint8_t* p, __m512 s, __m512 zs, __m512& lo, __m512& hi) {
  const __m512i v = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  lo = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_and_si512(v, _mm512_set1_epi32(15))), s, zs);
  hi = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_srli_epi32(v, 4)), s, zs);
}

// ----------------------------------------------------------------- GEMV

// Weight rows per GEMV tile by M = 1..4, and accumulator sets (as in
// int4_avx2.cpp): the accumulators and the unpacked vectors fit the 32 zmm registers.
template <int MR>
constexpr int kGemvNr = MR == 1 ? 8 : MR == 2 ? 6 : 4;
template <int MR>
constexpr int kSplit = MR == 1 ? 2 : 1;

// acc += x[i] . codes of row j over one chunk, in the folded form (fold_high_nibbles in
// int4_driver.h): low nibbles against x_even - x_odd / 16, whole bytes against x_odd / 16.
template <int MR, int NR, int S>
PYCOMP_AVX512_INLINE void gemv_step(__m512 (&acc)[S][MR][NR], const float* const (&x)[MR], const uint8_t* const (&p)[NR]) {
  unroll<NR>([&](auto j) PYCOMP_AVX512_LAMBDA {
    const __m512i v = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p[j])));
    const __m512 lo = _mm512_cvtepi32_ps(_mm512_and_si512(v, _mm512_set1_epi32(15)));
    const __m512 byte = _mm512_cvtepi32_ps(v);
    unroll<MR>([&](auto i) PYCOMP_AVX512_LAMBDA {
      acc[0][i][j] = _mm512_fmadd_ps(_mm512_load_ps(x[i]), lo, acc[0][i][j]);
      acc[S - 1][i][j] = _mm512_fmadd_ps(_mm512_load_ps(x[i] + V), byte, acc[S - 1][i][j]);
    });
  });
}

// Rows [n, n + NR) against MR activation rows, all of K, with CPG chunks per
// group, as in int4_avx2.cpp. sf: 2 * NR * G floats of scratch.
template <int MR, int NR, int CPG>
PYCOMP_AVX512 void gemv_tile(const GemvTask& t, int64_t n, float* sf) {
  constexpr int S = kSplit<MR>;
  const Int4Weights& w = *t.w;
  // The tile's scales and zero points as fp32, sf[j * G + g] and zf[j * G + g], 8 groups at a
  // time (F16C converts 8 halves per instruction).
  const int64_t G = w.G;
  float* zf = sf + NR * G;
  unroll<NR>([&](auto j) PYCOMP_AVX512_LAMBDA {
    const uint16_t* sh = w.scales + (n + j) * G;
    const uint8_t* zr = w.zeros ? w.zeros + (n + j) * G : nullptr;
    int64_t g = 0;
    for (; g + 8 <= G; g += 8) {
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
  unroll<NR>([&](auto j) PYCOMP_AVX512_LAMBDA { row[j] = w.packed + (n + j) * w.Kb; });
  __m512 total[MR][NR];
  unroll<MR>([&](auto i) PYCOMP_AVX512_LAMBDA {
    unroll<NR>([&](auto j) PYCOMP_AVX512_LAMBDA { total[i][j] = _mm512_setzero_ps(); });
  });
  const int64_t gfull = w.full / CPG;
  for (int64_t g = 0; g < G; ++g) {
    __m512 acc[S][MR][NR];
    unroll<S>([&](auto h) PYCOMP_AVX512_LAMBDA {
      unroll<MR>([&](auto i) PYCOMP_AVX512_LAMBDA {
        unroll<NR>([&](auto j) PYCOMP_AVX512_LAMBDA { acc[h][i][j] = _mm512_setzero_ps(); });
      });
    });
    const int64_t c0 = g * CPG, c1 = std::min<int64_t>(c0 + CPG, w.chunks);
    auto step = [&](int64_t c) PYCOMP_AVX512_LAMBDA {
      const float* x[MR];
      const uint8_t* p[NR];
      unroll<MR>([&](auto i) PYCOMP_AVX512_LAMBDA { x[i] = t.x.p + i * t.x.lda + c * 2 * V; });
      unroll<NR>([&](auto j) PYCOMP_AVX512_LAMBDA { p[j] = row[j] + c * V; });
      gemv_step<MR, NR, S>(acc, x, p);
    };
    // The next tile's rows at the same offset.
    if ((c0 * V) % 64 == 0)
      unroll<NR>([&](auto j) PYCOMP_AVX512_LAMBDA {
        for (int64_t c = c0; c < c1; c += 64 / V)
          _mm_prefetch(reinterpret_cast<const char*>(row[j] + NR * w.Kb + c * V), _MM_HINT_T0);
      });
    if (g < gfull) {
      for (int c = 0; c < CPG; ++c) step(c0 + c);
    } else {
      const int64_t cf = std::min(c1, w.full);
      for (int64_t c = c0; c < cf; ++c) step(c);
      if (cf < c1) {  // the row's partial last chunk
        alignas(64) uint8_t tail[NR][V];
        const float* x[MR];
        const uint8_t* p[NR];
        unroll<MR>([&](auto i) PYCOMP_AVX512_LAMBDA { x[i] = t.x.p + i * t.x.lda + cf * 2 * V; });
        unroll<NR>([&](auto j) PYCOMP_AVX512_LAMBDA { p[j] = w.chunk(n + j, cf, V, tail[j]); });
        gemv_step<MR, NR, S>(acc, x, p);
      }
    }
    unroll<NR>([&](auto j) PYCOMP_AVX512_LAMBDA {
      const __m512 s = _mm512_set1_ps(sf[j * G + g]), z = _mm512_set1_ps(zf[j * G + g]);
      unroll<MR>([&](auto i) PYCOMP_AVX512_LAMBDA {
        const __m512 a = S == 2 ? _mm512_add_ps(acc[0][i][j], acc[S - 1][i][j]) : acc[0][i][j];
        const __m512 xs = _mm512_load_ps(t.xsum + i * t.ldxs + g * V);
        total[i][j] = _mm512_fmadd_ps(s, _mm512_fnmadd_ps(z, xs, a), total[i][j]);
      });
    });
  }
  unroll<MR>([&](auto i) PYCOMP_AVX512_LAMBDA {
    unroll<NR>([&](auto j) PYCOMP_AVX512_LAMBDA {
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

// chunks_per_group = group_size / 32: 1, 2 or 4.
template <int MR>
void gemv_rows(const GemvTask& t) {
  switch (t.w->chunks_per_group) {
    case 1: return gemv_rows<MR, 1>(t);
    case 2: return gemv_rows<MR, 2>(t);
    default: return gemv_rows<MR, 4>(t);
  }
}

// ----------------------------------------------------------------- GEMM

struct Gemm {
  static constexpr int kMt = 2 * V;

  // c[j][i] += w[j] . xt[., i] over the block, as in int4_avx2.cpp: 24
  // accumulators for 12 weight rows x 32 activation rows, restarted every kSumK.
  static constexpr int64_t kSumK = 64;
  template <int MV, int NR>
  PYCOMP_AVX512 static void run(const GemmTile& t) {
    const float* w[NR];
    unroll<NR>([&](auto j) PYCOMP_AVX512_LAMBDA { w[j] = t.w + j * t.ldw; });
    for (int64_t k0 = 0; k0 < t.klen; k0 += kSumK) {
      __m512 acc[NR][MV];
      unroll<NR>([&](auto j) PYCOMP_AVX512_LAMBDA {
        unroll<MV>([&](auto v) PYCOMP_AVX512_LAMBDA { acc[j][v] = _mm512_setzero_ps(); });
      });
      const float* xt = t.xt + k0 * kMt;
      for (int64_t k = k0, k1 = std::min(k0 + kSumK, t.klen); k < k1; ++k, xt += kMt) {
        __m512 xv[MV];
        unroll<MV>([&](auto v) PYCOMP_AVX512_LAMBDA { xv[v] = _mm512_load_ps(xt + v * V); });
        unroll<NR>([&](auto j) PYCOMP_AVX512_LAMBDA {
          const __m512 b = _mm512_set1_ps(w[j][k]);
          unroll<MV>([&](auto v) PYCOMP_AVX512_LAMBDA { acc[j][v] = _mm512_fmadd_ps(b, xv[v], acc[j][v]); });
        });
      }
      const bool first = k0 == 0 && !t.accumulate;
      unroll<NR>([&](auto j) PYCOMP_AVX512_LAMBDA {
        unroll<MV>([&](auto v) PYCOMP_AVX512_LAMBDA {
          float* c = t.c + j * t.ldc + v * V;
          _mm512_storeu_ps(c, first ? acc[j][v] : _mm512_add_ps(_mm512_loadu_ps(c), acc[j][v]));
        });
      });
    }
  }
};

struct Avx512 {
  static constexpr int V = int4::V;
  // GEMV passes up to M = 16 (unmeasured: no AVX-512 machine here; below 16 rows the GEMM
  // pads its 32-row activation tile, so passes should win there as they do on AVX2).
  static constexpr int64_t kGemvMaxM = 16;
  // k block: a 32-row activation tile of 128 k is 16 KB, for L1.
  static constexpr int kGemvNr = 8, kMt = Gemm::kMt, kNr = 12;
  static constexpr int64_t kPanelRows = 48, kPanelK = 128;

  static void prepare_gemv_x(float* xp, int64_t lda, int64_t M, int64_t Kp) { fold_high_nibbles<V>(xp, lda, M, Kp); }

  static void gemv(const GemvTask& t) {
    switch (t.mr) {
      case 1: return gemv_rows<1>(t);
      case 2: return gemv_rows<2>(t);
      case 3: return gemv_rows<3>(t);
      default: return gemv_rows<4>(t);
    }
  }

  PYCOMP_AVX512 static void dequant(const Int4Weights& w, int64_t n0, int64_t rows, int64_t c0, int64_t c1,
                                    float* panel, int64_t ldp) {
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t n = n0 + r;
      const uint8_t* p = w.packed + n * w.Kb;
      float* o = panel + r * ldp - c0 * 2 * V;
      for (int64_t c = c0; c < c1;) {
        const int64_t g = c / w.chunks_per_group, ce = std::min(c1, (g + 1) * w.chunks_per_group);
        const float sf = half(w.scales[n * w.G + g]);
        const __m512 s = _mm512_set1_ps(sf), zs = _mm512_set1_ps(-float(w.zero(n, g)) * sf);
        for (const int64_t cf = std::min(ce, w.full); c < cf; ++c) {
          __m512 lo, hi;
          dequant_chunk(p + c * V, s, zs, lo, hi);
          _mm512_store_ps(o + c * 2 * V, lo);
          _mm512_store_ps(o + c * 2 * V + V, hi);
        }
        for (; c < ce; ++c) {  // the row's partial last chunk
          alignas(64) uint8_t tail[V];
          __m512 lo, hi;
          dequant_chunk(w.chunk(n, c, V, tail), s, zs, lo, hi);
          _mm512_store_ps(o + c * 2 * V, lo);
          _mm512_store_ps(o + c * 2 * V + V, hi);
        }
      }
    }
  }

  static void gemm_tile(const GemmTile& t) { TileTable<Gemm, kMt / V, kNr, GemmTile>::call(t.mv, t.nr, t); }
};

}  // namespace

void w4a16_linear_avx512(const XRows& x, const uint8_t* packed, const uint16_t* scales, const uint8_t* zeros,
                         const float* bias, float* out, int64_t ldo, int64_t M, int64_t N, int64_t K, int group_size) {
  w4a16_linear<Avx512>(x, packed, scales, zeros, bias, out, ldo, M, N, K, group_size);
}

}  // namespace pycomp::cpu::int4

#endif  // __x86_64__
