// Dispatch of the int8 ops to the kernels of one instruction set; the kernels
// are in int8_portable.cpp, int8_avx2.cpp and int8_avx512.cpp, their shared
// blocking and epilogues in int8_driver.h.
#include "cpu/int8/int8_linear.h"

#include "cpu/int8/int8_tiles.h"

namespace pycomp::cpu {

void quantize_per_token_int8_f32(Isa isa, const float* x, int64_t ldx, int8_t* q, float* scale, int64_t M,
                                 int64_t K) {
#if defined(__x86_64__)
  if (isa != Isa::portable) return int8::quantize_avx2(x, ldx, q, scale, M, K);
#endif
  int8::quantize_portable(x, ldx, q, scale, M, K);
}

void int8_linear_dynamic_f32(Isa isa, const float* x, int64_t ldx, const int8_t* w, const float* wscale,
                             const float* bias, float* out, int64_t ldo, int64_t M, int64_t N, int64_t K) {
#if defined(__x86_64__)
  if (isa == Isa::avx512vnni) return int8::linear_dynamic_avx512(x, ldx, w, wscale, bias, out, ldo, M, N, K);
  if (isa == Isa::avx2) return int8::linear_dynamic_avx2(x, ldx, w, wscale, bias, out, ldo, M, N, K);
#endif
  int8::linear_dynamic_portable(x, ldx, w, wscale, bias, out, ldo, M, N, K);
}

void quantize_per_token_uint7_f32(Isa isa, const float* x, int64_t ldx, uint8_t* q, float* scale, int32_t* zp,
                                  int64_t M, int64_t K) {
#if defined(__x86_64__)
  if (isa != Isa::portable) return int8::quantize_uint7_avx2(x, ldx, q, scale, zp, M, K);
#endif
  int8::quantize_uint7_portable(x, ldx, q, scale, zp, M, K);
}

void int8_linear_dynamic_reduce_range_f32(Isa isa, const float* x, int64_t ldx, const int8_t* w,
                                          const float* wscale, const int32_t* wsum, const float* bias, float* out,
                                          int64_t ldo, int64_t M, int64_t N, int64_t K) {
#if defined(__x86_64__)
  if (isa == Isa::avx512vnni)
    return int8::linear_reduce_range_avx512(x, ldx, w, wscale, wsum, bias, out, ldo, M, N, K);
  if (isa == Isa::avx2)
    return int8::linear_reduce_range_avx2(x, ldx, w, wscale, wsum, bias, out, ldo, M, N, K);
#endif
  int8::linear_reduce_range_portable(x, ldx, w, wscale, wsum, bias, out, ldo, M, N, K);
}

void int8_linear_weight_only_f32(Isa isa, const float* x, int64_t ldx, const int8_t* w, const float* wscale,
                                 const float* bias, float* out, int64_t ldo, int64_t M, int64_t N, int64_t K) {
#if defined(__x86_64__)
  if (isa == Isa::avx512vnni) return int8::linear_weight_only_avx512(x, ldx, w, wscale, bias, out, ldo, M, N, K);
  if (isa == Isa::avx2) return int8::linear_weight_only_avx2(x, ldx, w, wscale, bias, out, ldo, M, N, K);
#endif
  int8::linear_weight_only_portable(x, ldx, w, wscale, bias, out, ldo, M, N, K);
}

}  // namespace pycomp::cpu
