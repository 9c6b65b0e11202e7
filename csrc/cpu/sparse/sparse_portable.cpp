// Portable sparse kernels: the generic CSR / block-CSR code on scalars, and a scalar 2:4 kernel.
#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "cpu/parallel.h"
#include "cpu/scratch.h"
#include "cpu/sparse/sparse_kernels.h"

namespace pycomp::cpu::sparse {
namespace {

struct V {
  static constexpr int W = 1;
  using F = float;
  static F zero() { return 0.0f; }
  static F set1(float a) { return a; }
  static F loadu(const float* p) { return *p; }
  static void storeu(float* p, F a) { *p = a; }
  static F fma(F a, F b, F c) { return a * b + c; }
  static float hsum(F a) { return a; }
  template <class Idx>
  static F gather(const float* base, const Idx* c) { return base[*c]; }
};

#include "cpu/sparse/sparse_generic.h"

}  // namespace

void csr_portable(const float* x, int64_t ldx, const int32_t* crow, const int16_t* col16, const int32_t* col32,
                  const float* val, const float* bias, float* out, int64_t ldo, int64_t M, int64_t N, int64_t K) {
  csr_entry(x, ldx, crow, col16, col32, val, bias, out, ldo, M, N, K);
}

void bsr_portable(const float* x, int64_t ldx, const int32_t* crow, const int32_t* col, const float* val, int64_t bn,
                  int64_t bk, const float* bias, float* out, int64_t ldo, int64_t M, int64_t N) {
  bsr_driver(x, ldx, crow, col, val, bn, bk, bias, out, ldo, M, N);
}

namespace {

template <class T>
void s24_scalar(const float* x, int64_t ldx, const T* val, const float* scale, const int16_t* meta, int64_t Np,
                const float* bias, float* out, int64_t ldo, int64_t M, int64_t N, int64_t Kp) {
  if (M >= kS24BlockedMinM) return s24_blocked_driver(x, ldx, val, scale, meta, Np, bias, out, ldo, M, N, Kp);
  parallel_for(N, kRowGrain, [&](int64_t n0, int64_t n1) {
    for (int64_t n = n0; n < n1; ++n) {
      const MetaRow row(n);
      const T* v = val + n * (Kp / 2);
      const float sc = scale ? scale[n] : 1.0f;
      for (int64_t m = 0; m < M; ++m) {
        const float* xm = x + m * ldx;
        float s = 0.0f;
        for (int64_t c = 0; c < Kp / 16; ++c) {
          const uint32_t word = static_cast<uint16_t>(meta[row.offset(c, Np)]);
          for (int g = 0; g < 4; ++g) {
            const uint32_t nib = (word >> (4 * g)) & 15u;
            const float* xg = xm + 16 * c + 4 * g;
            s += static_cast<float>(v[8 * c + 2 * g]) * xg[nib & 3u] +
                 static_cast<float>(v[8 * c + 2 * g + 1]) * xg[nib >> 2];
          }
        }
        out[m * ldo + n] = s * sc + (bias ? bias[n] : 0.0f);
      }
    }
  });
}

}  // namespace

void s24_portable(const float* x, int64_t ldx, const float* val, const float* scale, const int16_t* meta, int64_t Np,
                  const float* bias, float* out, int64_t ldo, int64_t M, int64_t N, int64_t Kp) {
  s24_scalar(x, ldx, val, scale, meta, Np, bias, out, ldo, M, N, Kp);
}

void s24_portable(const float* x, int64_t ldx, const int8_t* val, const float* scale, const int16_t* meta,
                  int64_t Np, const float* bias, float* out, int64_t ldo, int64_t M, int64_t N, int64_t Kp) {
  s24_scalar(x, ldx, val, scale, meta, Np, bias, out, ldo, M, N, Kp);
}

}  // namespace pycomp::cpu::sparse
