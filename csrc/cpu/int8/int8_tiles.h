// Per-ISA entry points of the int8 kernels (int8_linear.cpp dispatches to them)
// and a helper that turns a tile kernel template into a table indexed by the
// runtime tile shape.
#pragma once

#include <array>
#include <cstdint>
#include <utility>

namespace pycomp::cpu::int8 {

// Kern::template run<MR, NR> for MR in 1..MaxMR and NR in 1..MaxNR; the driver's
// edge tiles are smaller than its full tiles, so every shape is instantiated.
template <class Kern, int MaxMR, int MaxNR>
struct TileTable {
  using Fn = decltype(&Kern::template run<1, 1>);

  static Fn get(int mr, int nr) { return fns[(mr - 1) * MaxNR + (nr - 1)]; }

  template <class TileT>
  static void call(const TileT& t) {
    get(t.mr, t.nr)(t);
  }

 private:
  template <int... I>
  static constexpr std::array<Fn, sizeof...(I)> make(std::integer_sequence<int, I...>) {
    return {{&Kern::template run<I / MaxNR + 1, I % MaxNR + 1>...}};
  }
  static constexpr std::array<Fn, MaxMR * MaxNR> fns = make(std::make_integer_sequence<int, MaxMR * MaxNR>{});
};

#define PYCOMP_INT8_ISA_ENTRY_POINTS(isa)                                                                        \
  void quantize_##isa(const float* x, int64_t ldx, int8_t* q, float* scale, int64_t M, int64_t K);              \
  void linear_dynamic_##isa(const float* x, int64_t ldx, const int8_t* w, const float* wscale, const float* bias, \
                            float* out, int64_t ldo, int64_t M, int64_t N, int64_t K);                          \
  void linear_weight_only_##isa(const float* x, int64_t ldx, const int8_t* w, const float* wscale,              \
                                const float* bias, float* out, int64_t ldo, int64_t M, int64_t N, int64_t K);  \
  void quantize_uint7_##isa(const float* x, int64_t ldx, uint8_t* q, float* scale, int32_t* zp, int64_t M,       \
                            int64_t K);                                                                         \
  void linear_reduce_range_##isa(const float* x, int64_t ldx, const int8_t* w, const float* wscale,             \
                                 const int32_t* wsum, const float* bias, float* out, int64_t ldo, int64_t M,    \
                                 int64_t N, int64_t K);

PYCOMP_INT8_ISA_ENTRY_POINTS(portable)
#if defined(__x86_64__)
PYCOMP_INT8_ISA_ENTRY_POINTS(avx2)
// The AVX-512 VNNI kernels quantize with the AVX2 code, so quantize_avx512 does not exist.
void linear_dynamic_avx512(const float* x, int64_t ldx, const int8_t* w, const float* wscale, const float* bias,
                           float* out, int64_t ldo, int64_t M, int64_t N, int64_t K);
void linear_reduce_range_avx512(const float* x, int64_t ldx, const int8_t* w, const float* wscale,
                                const int32_t* wsum, const float* bias, float* out, int64_t ldo, int64_t M, int64_t N,
                                int64_t K);
void linear_weight_only_avx512(const float* x, int64_t ldx, const int8_t* w, const float* wscale, const float* bias,
                               float* out, int64_t ldo, int64_t M, int64_t N, int64_t K);

// One activation row quantized by the AVX2 code: q[0, K) and the returned scale.
float quantize_row_avx2(const float* x, int64_t K, int8_t* q);
// The same for the reduce-range form: q[0, K) in [0, 127], *zp and the returned scale.
float quantize_row_uint7_avx2(const float* x, int64_t K, uint8_t* q, int32_t* zp);
#endif

#undef PYCOMP_INT8_ISA_ENTRY_POINTS

}  // namespace pycomp::cpu::int8
