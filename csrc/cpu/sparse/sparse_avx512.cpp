// AVX-512 (F) sparse kernels: the generic CSR / block-CSR code on 16-lane vectors.
//
// Not run on hardware by its author (the development machine exposes AVX2 only); compiled on every
// build and dispatched only when CPUID reports AVX-512 (Isa::avx512vnni).
#if defined(__x86_64__)

#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "cpu/parallel.h"
#include "cpu/scratch.h"
#include "cpu/sparse/sparse_kernels.h"

// GCC 12's AVX-512 headers spell "undefined" vectors as self-initialized variables, which
// -Wuninitialized reports once the intrinsics are inlined; the values are never read.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx2,fma")

namespace pycomp::cpu::sparse {
namespace {

struct V {
  static constexpr int W = 16;
  using F = __m512;
  using I = __m512i;
  static F zero() { return _mm512_setzero_ps(); }
  static F set1(float a) { return _mm512_set1_ps(a); }
  static F loadu(const float* p) { return _mm512_loadu_ps(p); }
  static void storeu(float* p, F a) { _mm512_storeu_ps(p, a); }
  static F fma(F a, F b, F c) { return _mm512_fmadd_ps(a, b, c); }
  static float hsum(F a) { return _mm512_reduce_add_ps(a); }
  static I idx(const int16_t* p) {
    return _mm512_cvtepi16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  }
  static I idx(const int32_t* p) { return _mm512_loadu_si512(p); }
  template <class Idx>
  static F gather(const float* base, const Idx* c) { return _mm512_i32gather_ps(idx(c), base, 4); }
};

#include "cpu/sparse/sparse_generic.h"

}  // namespace

void csr_avx512(const float* x, int64_t ldx, const int32_t* crow, const int16_t* col16, const int32_t* col32,
                const float* val, const float* bias, float* out, int64_t ldo, int64_t M, int64_t N, int64_t K) {
  csr_entry(x, ldx, crow, col16, col32, val, bias, out, ldo, M, N, K);
}

void bsr_avx512(const float* x, int64_t ldx, const int32_t* crow, const int32_t* col, const float* val, int64_t bn,
                int64_t bk, const float* bias, float* out, int64_t ldo, int64_t M, int64_t N) {
  bsr_driver(x, ldx, crow, col, val, bn, bk, bias, out, ldo, M, N);
}

}  // namespace pycomp::cpu::sparse

#pragma GCC pop_options

#endif  // __x86_64__
