// AVX-512 int4 kernels (AVX512F/BW/VL + F16C): V = 16 fp32 lanes, 32-column chunks.
//
// The AVX2 kernels (int4_avx2.cpp) on 512-bit registers: vpmovzxbd widens 16
// packed bytes (32 weights) to int32 lanes, vpandd 15 / vpsrld 4 split even
// and odd columns and vcvtdq2ps turns them into fp32. With 32 vector registers
// the GEMV tiles take more weight rows and the GEMM tile is 4 x 4. Run only on
// CPUs that report AVX-512 (dispatch in int4_linear.cpp). The development
// machine hides AVX-512: this file is compiled on every build, checked bit for
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

// Weight rows per GEMV tile by M = 1..4: group and total accumulators and the
// unpacked vectors fit the 32 zmm registers.
template <int MR>
constexpr int kGemvNr = MR == 1 ? 8 : MR == 2 ? 6 : 4;

// acc[i][j] += x[i] . codes of row j over one chunk (codes as floats, not yet dequantized).
template <int MR, int NR>
PYCOMP_AVX512_INLINE void gemv_step(__m512 (&acc)[MR][NR], const float* const (&x)[MR], const uint8_t* const (&p)[NR]) {
  unroll<NR>([&](auto j) PYCOMP_AVX512_LAMBDA {
    const __m512i v = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p[j])));
    const __m512 lo = _mm512_cvtepi32_ps(_mm512_and_si512(v, _mm512_set1_epi32(15)));
    const __m512 hi = _mm512_cvtepi32_ps(_mm512_srli_epi32(v, 4));
    unroll<MR>([&](auto i) PYCOMP_AVX512_LAMBDA {
      acc[i][j] = _mm512_fmadd_ps(_mm512_load_ps(x[i]), lo, acc[i][j]);
      acc[i][j] = _mm512_fmadd_ps(_mm512_load_ps(x[i] + V), hi, acc[i][j]);
    });
  });
}

// Rows [n, n + NR) against MR activation rows, all of K. Per group, lane-wise:
// total += scale * (sum x * code - zero * sum x), with sum x per lane and group
// from the driver (GemvTask::xsum). Dequantizing each weight in registers
// instead costs two more FMAs per 16 weights, a quarter more work in the
// compute-bound part of the loop.
template <int MR, int NR>
PYCOMP_AVX512 void gemv_tile(const GemvTask& t, int64_t n) {
  const Int4Weights& w = *t.w;
  const uint8_t* row[NR];
  unroll<NR>([&](auto j) PYCOMP_AVX512_LAMBDA { row[j] = w.packed + (n + j) * w.Kb; });
  __m512 total[MR][NR];
  unroll<MR>([&](auto i) PYCOMP_AVX512_LAMBDA {
    unroll<NR>([&](auto j) PYCOMP_AVX512_LAMBDA { total[i][j] = _mm512_setzero_ps(); });
  });
  for (int64_t g = 0; g < w.G; ++g) {
    __m512 acc[MR][NR];
    unroll<MR>([&](auto i) PYCOMP_AVX512_LAMBDA {
      unroll<NR>([&](auto j) PYCOMP_AVX512_LAMBDA { acc[i][j] = _mm512_setzero_ps(); });
    });
    const int64_t c0 = g * w.chunks_per_group, c1 = std::min<int64_t>(c0 + w.chunks_per_group, w.chunks);
    const int64_t cf = std::min(c1, w.full);
    for (int64_t c = c0; c < cf; ++c) {
      const float* x[MR];
      const uint8_t* p[NR];
      unroll<MR>([&](auto i) PYCOMP_AVX512_LAMBDA { x[i] = t.x.p + i * t.x.lda + c * 2 * V; });
      unroll<NR>([&](auto j) PYCOMP_AVX512_LAMBDA { p[j] = row[j] + c * V; });
      gemv_step<MR, NR>(acc, x, p);
    }
    if (cf < c1) {  // the row's partial last chunk
      alignas(64) uint8_t tail[NR][V];
      const float* x[MR];
      const uint8_t* p[NR];
      unroll<MR>([&](auto i) PYCOMP_AVX512_LAMBDA { x[i] = t.x.p + i * t.x.lda + cf * 2 * V; });
      unroll<NR>([&](auto j) PYCOMP_AVX512_LAMBDA { p[j] = w.chunk(n + j, cf, V, tail[j]); });
      gemv_step<MR, NR>(acc, x, p);
    }
    unroll<NR>([&](auto j) PYCOMP_AVX512_LAMBDA {
      const __m512 s = _mm512_set1_ps(half(w.scales[(n + j) * w.G + g]));
      const __m512 z = _mm512_set1_ps(float(w.zero(n + j, g)));
      unroll<MR>([&](auto i) PYCOMP_AVX512_LAMBDA {
        const __m512 xs = _mm512_load_ps(t.xsum + i * t.ldxs + g * V);
        total[i][j] = _mm512_fmadd_ps(s, _mm512_fnmadd_ps(z, xs, acc[i][j]), total[i][j]);
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

template <int MR>
void gemv_rows(const GemvTask& t) {
  constexpr int NR = kGemvNr<MR>;
  int64_t n = t.n0;
  for (; n + NR <= t.n1; n += NR) gemv_tile<MR, NR>(t, n);
  for (; n < t.n1; ++n) gemv_tile<MR, 1>(t, n);
}

// ----------------------------------------------------------------- GEMM

struct Gemm {
  // c[i][j] += a[i] . w[j] over klen (a multiple of 2V): 16 accumulators, the
  // four weight vectors of a step and one activation vector in registers.
  template <int MR, int NR>
  PYCOMP_AVX512 static void run(const GemmTile& t) {
    const float* a[MR];
    const float* w[NR];
    unroll<MR>([&](auto i) PYCOMP_AVX512_LAMBDA { a[i] = t.a + i * t.lda; });
    unroll<NR>([&](auto j) PYCOMP_AVX512_LAMBDA { w[j] = t.w + j * t.ldw; });
    __m512 acc[MR][NR];
    unroll<MR>([&](auto i) PYCOMP_AVX512_LAMBDA {
      unroll<NR>([&](auto j) PYCOMP_AVX512_LAMBDA { acc[i][j] = _mm512_setzero_ps(); });
    });
    for (int64_t k = 0; k < t.klen; k += V) {
      __m512 wv[NR];
      unroll<NR>([&](auto j) PYCOMP_AVX512_LAMBDA { wv[j] = _mm512_load_ps(w[j] + k); });
      unroll<MR>([&](auto i) PYCOMP_AVX512_LAMBDA {
        const __m512 av = _mm512_load_ps(a[i] + k);
        unroll<NR>([&](auto j) PYCOMP_AVX512_LAMBDA { acc[i][j] = _mm512_fmadd_ps(av, wv[j], acc[i][j]); });
      });
    }
    unroll<MR>([&](auto i) PYCOMP_AVX512_LAMBDA {
      unroll<NR>([&](auto j) PYCOMP_AVX512_LAMBDA {
        float& c = t.c[i * t.ldc + j];
        c = (t.accumulate ? c : t.init ? t.init[j] : 0.f) + hsum(acc[i][j]);
      });
    });
  }
};

struct Avx512 {
  static constexpr int V = int4::V;
  static constexpr int kGemvNr = 8, kMr = 4, kNr = 4;
  static constexpr int64_t kPanelRows = 32, kPanelK = 512;

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
    alignas(64) uint8_t tail[V];
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t n = n0 + r;
      float* o = panel + r * ldp - c0 * 2 * V;
      for (int64_t c = c0; c < c1;) {
        const int64_t g = c / w.chunks_per_group, ce = std::min(c1, (g + 1) * w.chunks_per_group);
        const float sf = half(w.scales[n * w.G + g]);
        const __m512 s = _mm512_set1_ps(sf), zs = _mm512_set1_ps(-float(w.zero(n, g)) * sf);
        for (; c < ce; ++c) {
          __m512 lo, hi;
          dequant_chunk(w.chunk(n, c, V, tail), s, zs, lo, hi);
          _mm512_store_ps(o + c * 2 * V, lo);
          _mm512_store_ps(o + c * 2 * V + V, hi);
        }
      }
    }
  }

  static void gemm_tile(const GemmTile& t) { TileTable<Gemm, kMr, kNr, GemmTile>::call(t.mr, t.nr, t); }
};

}  // namespace

void w4a16_linear_avx512(const float* x, int64_t ldx, const uint8_t* packed, const uint16_t* scales,
                       const uint8_t* zeros, const float* bias, float* out, int64_t ldo, int64_t M, int64_t N,
                       int64_t K, int group_size) {
  w4a16_linear<Avx512>(x, ldx, packed, scales, zeros, bias, out, ldo, M, N, K, group_size);
}

}  // namespace pycomp::cpu::int4

#endif  // __x86_64__
