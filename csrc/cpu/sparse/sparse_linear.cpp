// Dispatch of the sparse linear ops to the kernels of one instruction set.
#include "cpu/sparse/sparse_linear.h"

#include "cpu/sparse/sparse_kernels.h"

namespace pycomp::cpu {

void csr_linear_f32(Isa isa, const float* x, int64_t ldx, const int32_t* crow, const int16_t* col16,
                    const int32_t* col32, const float* val, const float* bias, float* out, int64_t ldo, int64_t M,
                    int64_t N, int64_t K) {
#if defined(__x86_64__)
  if (isa == Isa::avx512vnni) return sparse::csr_avx512(x, ldx, crow, col16, col32, val, bias, out, ldo, M, N, K);
  if (isa == Isa::avx2) return sparse::csr_avx2(x, ldx, crow, col16, col32, val, bias, out, ldo, M, N, K);
#endif
  sparse::csr_portable(x, ldx, crow, col16, col32, val, bias, out, ldo, M, N, K);
}

void bsr_linear_f32(Isa isa, const float* x, int64_t ldx, const int32_t* crow, const int32_t* col,
                    const float* val, int64_t bn, int64_t bk, const float* bias, float* out, int64_t ldo, int64_t M,
                    int64_t N) {
#if defined(__x86_64__)
  if (isa == Isa::avx512vnni) return sparse::bsr_avx512(x, ldx, crow, col, val, bn, bk, bias, out, ldo, M, N);
  if (isa == Isa::avx2) return sparse::bsr_avx2(x, ldx, crow, col, val, bn, bk, bias, out, ldo, M, N);
#endif
  sparse::bsr_portable(x, ldx, crow, col, val, bn, bk, bias, out, ldo, M, N);
}

namespace {
template <class T>
void sparse24_dispatch(Isa isa, const float* x, int64_t ldx, const T* val, const float* scale, const int16_t* meta,
                       int64_t Np, const float* bias, float* out, int64_t ldo, int64_t M, int64_t N, int64_t Kp) {
#if defined(__x86_64__)
  if (isa != Isa::portable) return sparse::s24_avx2(x, ldx, val, scale, meta, Np, bias, out, ldo, M, N, Kp);
#endif
  sparse::s24_portable(x, ldx, val, scale, meta, Np, bias, out, ldo, M, N, Kp);
}
}  // namespace

void sparse24_linear_f32(Isa isa, const float* x, int64_t ldx, const float* val, const int16_t* meta, int64_t Np,
                         const float* bias, float* out, int64_t ldo, int64_t M, int64_t N, int64_t Kp) {
  sparse24_dispatch(isa, x, ldx, val, nullptr, meta, Np, bias, out, ldo, M, N, Kp);
}

void sparse24_linear_f32(Isa isa, const float* x, int64_t ldx, const int8_t* val, const float* scale,
                         const int16_t* meta, int64_t Np, const float* bias, float* out, int64_t ldo, int64_t M,
                         int64_t N, int64_t Kp) {
  sparse24_dispatch(isa, x, ldx, val, scale, meta, Np, bias, out, ldo, M, N, Kp);
}

}  // namespace pycomp::cpu
