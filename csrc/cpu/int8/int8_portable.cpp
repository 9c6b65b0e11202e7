// Portable int8 kernels: plain C++ for any architecture, on the shared driver
// (the compiler vectorizes the K loops where it can).
#include <algorithm>
#include <cstddef>

#include "cpu/int8/int8_driver.h"
#include "cpu/int8/int8_tiles.h"

namespace pycomp::cpu::int8 {
namespace {

float quantize_row(const float* x, int64_t K, int8_t* q) {
  float amax = 0.f;
  for (int64_t k = 0; k < K; ++k) amax = amax_step(amax, x[k]);
  const float inv = quant_inverse(amax);
  for (int64_t k = 0; k < K; ++k) q[k] = quantize_value(x[k], inv);
  return amax / 127.f;
}

Uint7Params quantize_row_uint7(const float* x, int64_t K, uint8_t* q) {
  float lo = 0.f, hi = 0.f;
  for (int64_t k = 0; k < K; ++k) {
    lo = std::min(lo, x[k]);
    hi = std::max(hi, x[k]);
  }
  const Uint7Params p = uint7_params(lo, hi);
  for (int64_t k = 0; k < K; ++k) q[k] = quantize_uint7(x[k], p);
  return p;
}

// Dot products one (row, row) pair at a time. Eight partial sums, k mod 8, let
// the compiler vectorize the fp32 sums too (it may not reorder a single one).
template <class Act, class Acc>
struct Tiles {
  template <int MR, int NR>
  static void run(const Tile<Act, Acc>& t) {
    for (int i = 0; i < MR; ++i)
      for (int j = 0; j < NR; ++j) {
        const Act* ai = t.a + i * t.lda;
        const int8_t* wj = t.w + j * t.ldw;
        Acc part[8] = {};
        int64_t k = 0;
        for (; k + 8 <= t.klen; k += 8)
          for (int l = 0; l < 8; ++l) part[l] += Acc(ai[k + l]) * Acc(wj[k + l]);
        for (; k < t.klen; ++k) part[0] += Acc(ai[k]) * Acc(wj[k]);
        Acc s = 0;
        for (Acc p : part) s += p;
        Acc& c = t.c[i * t.ldc + j];
        c = (t.accumulate ? c : Acc(0)) + s;
      }
  }
};

Blocking portable_blocking(int64_t M) {
  if (M <= 4) return {int(M), 4, M, 64, 4096};
  return {4, 4, 64, 64, 1024};
}

struct Dynamic {
  using Act = int8_t;
  static constexpr int64_t kStep = 1;
  static constexpr bool kGemvPrefetch = false;  // the portable tiles do not prefetch
  static constexpr bool kCorrection = false;

  static void pack_row(const float* x, int64_t K, int64_t, int8_t* a, DynamicAux aux, int64_t m) {
    aux.scale[m] = quantize_row(x, K, a);
  }
  static Blocking blocking(int64_t M, int64_t) { return portable_blocking(M); }
  static void tile(const Blocking&, const Tile<int8_t, int32_t>& t) {
    TileTable<Tiles<int8_t, int32_t>, 4, 4>::call(t);
  }
};

struct ReduceRange {
  using Act = uint8_t;
  static constexpr int64_t kStep = 1;
  static constexpr bool kGemvPrefetch = false;

  static void pack_row(const float* x, int64_t K, int64_t, uint8_t* a, ReduceRangeAux aux, int64_t m) {
    const Uint7Params p = quantize_row_uint7(x, K, a);
    aux.scale[m] = p.scale;
    aux.zp[m] = int32_t(p.zp);
  }
  static Blocking blocking(int64_t M, int64_t) { return portable_blocking(M); }
  static void tile(const Blocking&, const Tile<uint8_t, int32_t>& t) {
    TileTable<Tiles<uint8_t, int32_t>, 4, 4>::call(t);
  }
};

struct WeightOnly {
  using Act = float;
  static constexpr int64_t kStep = 1;
  static constexpr bool kGemvPrefetch = false;

  static void pack_row(const float* x, int64_t K, int64_t, float* a, std::nullptr_t, int64_t) {
    std::copy(x, x + K, a);
  }
  static Blocking blocking(int64_t M, int64_t) { return portable_blocking(M); }
  static void tile(const Blocking&, const Tile<float, float>& t) { TileTable<Tiles<float, float>, 4, 4>::call(t); }
};

}  // namespace

void quantize_portable(const float* x, int64_t ldx, int8_t* q, float* scale, int64_t M, int64_t K) {
  quantize_rows(x, ldx, q, scale, M, K, quantize_row);
}

void linear_dynamic_portable(const float* x, int64_t ldx, const int8_t* w, const float* wscale, const float* bias,
                             float* out, int64_t ldo, int64_t M, int64_t N, int64_t K) {
  linear_dynamic<Dynamic>(x, ldx, w, wscale, bias, out, ldo, M, N, K);
}

void quantize_uint7_portable(const float* x, int64_t ldx, uint8_t* q, float* scale, int32_t* zp, int64_t M,
                             int64_t K) {
  quantize_uint7_rows(x, ldx, q, scale, zp, M, K, quantize_row_uint7);
}

void linear_reduce_range_portable(const float* x, int64_t ldx, const int8_t* w, const float* wscale,
                                  const int32_t* wsum, const float* bias, float* out, int64_t ldo, int64_t M,
                                  int64_t N, int64_t K) {
  linear_reduce_range<ReduceRange>(x, ldx, w, wscale, wsum, bias, out, ldo, M, N, K);
}

void linear_weight_only_portable(const float* x, int64_t ldx, const int8_t* w, const float* wscale,
                                 const float* bias, float* out, int64_t ldo, int64_t M, int64_t N, int64_t K) {
  linear_weight_only<WeightOnly>(x, ldx, w, wscale, bias, out, ldo, M, N, K);
}

}  // namespace pycomp::cpu::int8
