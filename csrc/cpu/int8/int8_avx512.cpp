// AVX-512 VNNI int8 kernels (AVX512F/BW/VL + VNNI).
//
// Checked bit for bit against the portable kernels natively where the CPU has AVX-512 VNNI (first on a Zen 5,
// session 11) and, on AVX2 machines, with the intrinsics emulated in software (SIMDe;
// tests/test_cpu_int8_kernels.py, test_avx512_vnni_kernels_under_simde_emulation, which swaps the two asm
// statements below for the same intrinsics); compiled on every build.
//
// W8A8: vpdpbusd multiplies u8 by s8 and sums four products into an int32 lane
// with no int16 stage. The activations stay signed (q, zero-padded to a
// multiple of 64) and each weight vector is flipped to u8 in registers,
// w ^ 0x80 = w + 128, so a tile sums (w + 128) * q; the driver subtracts
// 128 * sum_k q[m, k], computed once per row while quantizing. The sums wrap
// modulo 2^32 and the correction cancels that, so the result is exact whenever
// the true dot product fits in int32. K tails use byte-masked loads (masked
// weights read 0, flip to 128, meet zero activations).
//
// W8A8 reduce-range (7-bit activations, u8 with a zero point): the activations are vpdpbusd's u8 operand as
// they are and the weights its s8 one, with no flip; the driver subtracts zp * sum_k w.
//
// W8A32: 16 weights per load widened to int32 and converted to fp32 in
// registers, FMAs into 16-lane accumulators, masked loads for K tails.
//
// Activation quantization reuses the AVX2 code (every AVX-512 VNNI CPU has AVX2).
#if defined(__x86_64__)

#include <immintrin.h>

#include <algorithm>
#include <cstddef>
#include <type_traits>
#include <utility>

#include "cpu/int8/int8_driver.h"
#include "cpu/int8/int8_tiles.h"

// GCC 12's AVX-512 headers spell "undefined" vectors as self-initialized
// variables, which -Wuninitialized reports when the intrinsics are inlined into
// target-attribute functions; the values are never read.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#define PYCOMP_AVX512_TARGET "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma"
#define PYCOMP_AVX512 __attribute__((target(PYCOMP_AVX512_TARGET)))
#define PYCOMP_AVX512_INLINE inline __attribute__((always_inline, target(PYCOMP_AVX512_TARGET)))
#define PYCOMP_AVX512_LAMBDA __attribute__((always_inline, target(PYCOMP_AVX512_TARGET)))

namespace pycomp::cpu::int8 {
namespace {

// f(integral_constant<int, I>) for I < N, as in int8_avx2.cpp: constant indices
// keep the accumulator arrays in registers.
template <int N, class F, int... I>
PYCOMP_AVX512_INLINE void unroll_impl(F&& f, std::integer_sequence<int, I...>) {
  (f(std::integral_constant<int, I>{}), ...);
}
template <int N, class F>
PYCOMP_AVX512_INLINE void unroll(F&& f) {
  unroll_impl<N>(f, std::make_integer_sequence<int, N>{});
}
template <int MR, int NR, class F>
PYCOMP_AVX512_INLINE void for_tile(F&& f) {
  unroll<MR>([&](auto i) PYCOMP_AVX512_LAMBDA { unroll<NR>([&](auto j) PYCOMP_AVX512_LAMBDA { f(i, j); }); });
}

// acc += dot4(u8 u, s8 s) and acc += a * w as single asm statements that
// update acc in place: from the intrinsics GCC 12 copies each accumulator to
// a scratch register and back, and stores it to the stack, on every step.
PYCOMP_AVX512_INLINE void dpbusd_accumulate(__m512i& acc, __m512i u, __m512i s) {
  __asm__("vpdpbusd %[s], %[u], %[acc]" : [acc] "+v"(acc) : [u] "v"(u), [s] "v"(s));
}
PYCOMP_AVX512_INLINE void fma_accumulate(__m512& acc, __m512 w, const float* a) {
  __asm__("vfmadd231ps %[a], %[w], %[acc]"
          : [acc] "+v"(acc)
          : [w] "v"(w), [a] "m"(*reinterpret_cast<const __m512*>(a)));
}

// --------------------------------------------------------------- blocking

Blocking avx512_blocking(int64_t M, int64_t gemm_kc) {
  // GEMV: one tile per panel, all of K per tile, each tile prefetching the
  // next one's weight rows (as on AVX2).
  static constexpr int kGemvNr[4] = {8, 6, 4, 4};
  if (M <= 4) return {int(M), kGemvNr[M - 1], M, kGemvNr[M - 1], int64_t(1) << 40};
  // GEMM: 6 x 4 tiles: 24 zmm registers accumulate, 6 hold the tile's activations, one the flipped weights.
  // The activations sit in registers, not in vpdpbusd's memory operand: a 64-byte load per vpdpbusd held the
  // loop to one vpdpbusd per cycle (one 64-byte load per cycle on Zen 5), against two. One m block of up to 132
  // rows, so that M = 128 streams the weights from memory once.
  return {6, 4, 132, 48, gemm_kc};
}

// --------------------------------------------------------------- W8A8 tiles

// The W8A8 tiles for both activation forms. Act = int8_t (W8A8): signed q meets the weights flipped to u8 (see
// the top). Act = uint8_t (reduce-range): the u8 activations meet the s8 weights as they are, and the driver
// subtracts zp * wsum.
template <class Act>
struct DpbusdTiles {
  static constexpr bool kFlip = std::is_same_v<Act, int8_t>;

  // 64 values of K; in a K tail, `mask` selects the weight bytes that exist (the rest read 0 and meet zero
  // activations, flipped or not).
  template <bool kTail, int MR, int NR>
  PYCOMP_AVX512_INLINE static void step(__m512i (&acc)[MR][NR], const Act* const (&a)[MR],
                                        const int8_t* const (&w)[NR], int64_t k, __mmask64 mask) {
    const __m512i flip = _mm512_set1_epi8(static_cast<char>(0x80));
    __m512i av[MR];
    unroll<MR>([&](auto i) PYCOMP_AVX512_LAMBDA { av[i] = _mm512_loadu_si512(a[i] + k); });
    unroll<NR>([&](auto j) PYCOMP_AVX512_LAMBDA {
      const __m512i wv = kTail ? _mm512_maskz_loadu_epi8(mask, w[j] + k) : _mm512_loadu_si512(w[j] + k);
      if constexpr (kFlip) {
        const __m512i wj = _mm512_xor_si512(wv, flip);
        unroll<MR>([&](auto i) PYCOMP_AVX512_LAMBDA { dpbusd_accumulate(acc[i][j], wj, av[i]); });
      } else {
        unroll<MR>([&](auto i) PYCOMP_AVX512_LAMBDA { dpbusd_accumulate(acc[i][j], av[i], wv); });
      }
    });
  }

  // All whole steps; returns where the K tail starts. Versioned on whether there are weights to prefetch: the
  // tile's `rows` of them (Tile::next_rows, at most NR), a cache line per row and step, so the fetches spread
  // over the whole tile. A GEMV tile fetches the next tile's NR rows, as on AVX2; a GEMM tile its share of the
  // next block (run_blocks), one or two rows. Before, every tile issued NR lines per step, and a GEMM tile
  // issued its share in its first third: Zen 5, 4096x4096, M = 16, cold weights, 2 threads, 0.59-0.64 ms
  // against 0.66-0.71 (seven runs each).
  template <bool kNext, int MR, int NR>
  PYCOMP_AVX512_INLINE static int64_t steps(__m512i (&acc)[MR][NR], const Act* const (&a)[MR],
                                            const int8_t* const (&w)[NR], int64_t klen, RowPrefetcher& next,
                                            int rows) {
    int64_t k = 0;
    for (; k + 64 <= klen; k += 64) {
      if constexpr (kNext) unroll<NR>([&](auto j) PYCOMP_AVX512_LAMBDA { if (j < rows) next.step(); });
      step<false>(acc, a, w, k, 0);
    }
    return k;
  }

  template <int MR, int NR>
  PYCOMP_AVX512 static void run(const Tile<Act, int32_t>& t) {
    const Act* a[MR];
    const int8_t* w[NR];
    unroll<MR>([&](auto i) PYCOMP_AVX512_LAMBDA { a[i] = t.a + i * t.lda; });
    unroll<NR>([&](auto j) PYCOMP_AVX512_LAMBDA { w[j] = t.w + j * t.ldw; });
    __m512i acc[MR][NR];
    for_tile<MR, NR>([&](auto i, auto j) PYCOMP_AVX512_LAMBDA { acc[i][j] = _mm512_setzero_si512(); });
    const int64_t klen = t.klen;
    RowPrefetcher next(t.next, t.ldw, t.next_rows, klen);
    const int64_t k =
        t.next ? steps<true>(acc, a, w, klen, next, t.next_rows) : steps<false>(acc, a, w, klen, next, 0);
    if (k < klen) step<true>(acc, a, w, k, (__mmask64(1) << (klen - k)) - 1);
    for_tile<MR, NR>([&](auto i, auto j) PYCOMP_AVX512_LAMBDA {
      int32_t& c = t.c[i * t.ldc + j];
      c = int32_t(uint32_t(t.accumulate ? c : 0) + uint32_t(_mm512_reduce_add_epi32(acc[i][j])));
    });
  }
};

// What the two W8A8 forms share: 64 values of K per step, GEMV tiles that prefetch the next tile's weight rows,
// K blocks of 4096 (a 6 x 4096 activation tile, 24 KB, stays in L1) and the vpdpbusd tiles.
template <class A>
struct DpbusdTraits {
  using Act = A;
  static constexpr int64_t kStep = 64;
  static constexpr bool kGemvPrefetch = true;

  static Blocking blocking(int64_t M, int64_t) { return avx512_blocking(M, 4096); }

  static void tile(const Blocking&, const Tile<A, int32_t>& t) { TileTable<DpbusdTiles<A>, 6, 8>::call(t); }
};

struct Dynamic : DpbusdTraits<int8_t> {
  static constexpr bool kCorrection = true;

  static void pack_row(const float* x, int64_t K, int64_t Kp, int8_t* a, DynamicAux aux, int64_t m) {
    aux.scale[m] = quantize_row_avx2(x, K, a);
    std::fill(a + K, a + Kp, int8_t(0));
    int32_t s = 0;
    for (int64_t k = 0; k < K; ++k) s += a[k];
    aux.qsum[m] = s;
  }
};

struct ReduceRange : DpbusdTraits<uint8_t> {
  static void pack_row(const float* x, int64_t K, int64_t Kp, uint8_t* a, ReduceRangeAux aux, int64_t m) {
    aux.scale[m] = quantize_row_uint7_avx2(x, K, a, aux.zp + m);
    std::fill(a + K, a + Kp, uint8_t(0));
  }
};

// --------------------------------------------------------------- W8A32 tiles

struct WeightOnlyTiles {
  // 16 values of K; in a K tail, `mask` selects the weight bytes that exist.
  template <bool kTail, int MR, int NR>
  PYCOMP_AVX512_INLINE static void step(__m512 (&acc)[MR][NR], const float* const (&a)[MR],
                                        const int8_t* const (&w)[NR], int64_t k, __mmask16 mask) {
    unroll<NR>([&](auto j) PYCOMP_AVX512_LAMBDA {
      const __m128i wb = kTail ? _mm_maskz_loadu_epi8(mask, w[j] + k)
                               : _mm_loadu_si128(reinterpret_cast<const __m128i*>(w[j] + k));
      const __m512 wj = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(wb));
      unroll<MR>([&](auto i) PYCOMP_AVX512_LAMBDA { fma_accumulate(acc[i][j], wj, a[i] + k); });
    });
  }

  // All whole steps, as DpbusdTiles::steps (64 bytes of each weight row per 4 steps).
  template <bool kNext, int MR, int NR>
  PYCOMP_AVX512_INLINE static int64_t steps(__m512 (&acc)[MR][NR], const float* const (&a)[MR],
                                            const int8_t* const (&w)[NR], int64_t klen, RowPrefetcher& next) {
    int64_t k = 0;
    for (; k + 64 <= klen; k += 64) {
      if constexpr (kNext) unroll<NR>([&](auto) PYCOMP_AVX512_LAMBDA { next.step(); });
      unroll<4>([&](auto s) PYCOMP_AVX512_LAMBDA { step<false>(acc, a, w, k + 16 * s, 0); });
    }
    for (; k + 16 <= klen; k += 16) step<false>(acc, a, w, k, 0);
    return k;
  }

  template <int MR, int NR>
  PYCOMP_AVX512 static void run(const Tile<float, float>& t) {
    const float* a[MR];
    const int8_t* w[NR];
    unroll<MR>([&](auto i) PYCOMP_AVX512_LAMBDA { a[i] = t.a + i * t.lda; });
    unroll<NR>([&](auto j) PYCOMP_AVX512_LAMBDA { w[j] = t.w + j * t.ldw; });
    __m512 acc[MR][NR];
    for_tile<MR, NR>([&](auto i, auto j) PYCOMP_AVX512_LAMBDA { acc[i][j] = _mm512_setzero_ps(); });
    const int64_t klen = t.klen;
    RowPrefetcher next(t.next, t.ldw, t.next_rows, klen);
    const int64_t k = t.next ? steps<true>(acc, a, w, klen, next) : steps<false>(acc, a, w, klen, next);
    if (k < klen) step<true>(acc, a, w, k, __mmask16((1u << (klen - k)) - 1));
    for_tile<MR, NR>([&](auto i, auto j) PYCOMP_AVX512_LAMBDA {
      float& c = t.c[i * t.ldc + j];
      c = (t.accumulate ? c : 0.f) + _mm512_reduce_add_ps(acc[i][j]);
    });
  }
};

struct WeightOnly {
  using Act = float;
  static constexpr int64_t kStep = 16;
  static constexpr bool kGemvPrefetch = true;

  static void pack_row(const float* x, int64_t K, int64_t Kp, float* a, std::nullptr_t, int64_t) {
    std::copy(x, x + K, a);
    std::fill(a + K, a + Kp, 0.f);
  }

  // K blocks of 2048: a 6 x 2048 fp32 activation tile is 48 KB.
  static Blocking blocking(int64_t M, int64_t) { return avx512_blocking(M, 2048); }

  static void tile(const Blocking&, const Tile<float, float>& t) { TileTable<WeightOnlyTiles, 6, 8>::call(t); }
};

}  // namespace

void linear_dynamic_avx512(const float* x, int64_t ldx, const int8_t* w, const float* wscale, const float* bias,
                           float* out, int64_t ldo, int64_t M, int64_t N, int64_t K) {
  linear_dynamic<Dynamic>(x, ldx, w, wscale, bias, out, ldo, M, N, K);
}

// A conv layer's im2col shape (small N, large M) runs the AVX2 small-N kernels, as on AVX2 CPUs.
void linear_reduce_range_avx512(const float* x, int64_t ldx, const int8_t* w, const float* wscale,
                                const int32_t* wsum, const float* bias, float* out, int64_t ldo, int64_t M, int64_t N,
                                int64_t K) {
  if (small_n_shape(M, N, K)) return linear_reduce_range_avx2(x, ldx, w, wscale, wsum, bias, out, ldo, M, N, K);
  linear_reduce_range<ReduceRange>(x, ldx, w, wscale, wsum, bias, out, ldo, M, N, K);
}

void linear_weight_only_avx512(const float* x, int64_t ldx, const int8_t* w, const float* wscale, const float* bias,
                               float* out, int64_t ldo, int64_t M, int64_t N, int64_t K) {
  linear_weight_only<WeightOnly>(x, ldx, w, wscale, bias, out, ldo, M, N, K);
}

}  // namespace pycomp::cpu::int8

#endif  // __x86_64__
