// Per-ISA entry points of the sparse kernels (sparse_linear.cpp dispatches to them), and the meta
// offsets of the 2:4 format shared by every ISA.
#pragma once

#include <cstdint>

namespace pycomp::cpu::sparse {

#define PYCOMP_SPARSE_ISA_ENTRY_POINTS(isa)                                                                      \
  void csr_##isa(const float* x, int64_t ldx, const int32_t* crow, const int16_t* col16, const int32_t* col32,   \
                 const float* val, const float* bias, float* out, int64_t ldo, int64_t M, int64_t N, int64_t K); \
  void bsr_##isa(const float* x, int64_t ldx, const int32_t* crow, const int32_t* col, const float* val,         \
                 int64_t bn, int64_t bk, const float* bias, float* out, int64_t ldo, int64_t M, int64_t N);
// 2:4 with float or int8 values (int8: scale holds one dequantization factor per output row, else nullptr).
#define PYCOMP_SPARSE24_ENTRY_POINT(isa)                                                                          \
  void s24_##isa(const float* x, int64_t ldx, const float* val, const float* scale, const int16_t* meta,        \
                 int64_t Np, const float* bias, float* out, int64_t ldo, int64_t M, int64_t N, int64_t Kp);     \
  void s24_##isa(const float* x, int64_t ldx, const int8_t* val, const float* scale, const int16_t* meta,       \
                 int64_t Np, const float* bias, float* out, int64_t ldo, int64_t M, int64_t N, int64_t Kp);

PYCOMP_SPARSE_ISA_ENTRY_POINTS(portable)
PYCOMP_SPARSE24_ENTRY_POINT(portable)
#if defined(__x86_64__)
PYCOMP_SPARSE_ISA_ENTRY_POINTS(avx2)
PYCOMP_SPARSE24_ENTRY_POINT(avx2)
// The 2:4 kernel has no 512-bit version: AVX-512 CPUs run the AVX2 one (every one of them has AVX2).
PYCOMP_SPARSE_ISA_ENTRY_POINTS(avx512)
#endif
#undef PYCOMP_SPARSE_ISA_ENTRY_POINTS
#undef PYCOMP_SPARSE24_ENTRY_POINT

// Where row n's metadata words live (pycomp.formats.sparse.meta_offsets): word (n, c) is at
// (c / 2) * 2 * Np + slot[c % 2].
struct MetaRow {
  int64_t slot[2];
  explicit MetaRow(int64_t n) {
    const int64_t r = n / 32 * 32 + (n % 8) * 4 + (n % 32) / 8;
    slot[0] = r % 2 == 0 ? 2 * r : 2 * r - 1;
    slot[1] = r % 2 == 0 ? 2 * r + 2 : 2 * r + 1;
  }
  int64_t offset(int64_t c, int64_t Np) const { return (c >> 1) * 2 * Np + slot[c & 1]; }
};

// From this M on, the 2:4 kernels pack x^T into panels and run the blocked outer-product loop (broadcast one
// weight, FMA a vector of activation rows); below it they read x along K per row. (CSR: kCsrOuterMinM.)
constexpr int64_t kS24BlockedMinM = 8;

}  // namespace pycomp::cpu::sparse
