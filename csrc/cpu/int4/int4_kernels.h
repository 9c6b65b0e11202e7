// Per-ISA entry points of the int4 kernels; int4_linear.cpp dispatches to them.
#pragma once

#include <cstdint>

#include "cpu/xrows.h"

namespace pycomp::cpu::int4 {

#define PYCOMP_INT4_ISA_ENTRY_POINT(isa)                                                                      \
  void w4a16_linear_##isa(const XRows& x, const uint8_t* packed, const uint16_t* scales, const uint8_t* zeros, \
                          const float* bias, float* out, int64_t ldo, int64_t M, int64_t N, int64_t K,            \
                          int group_size);

PYCOMP_INT4_ISA_ENTRY_POINT(portable)
#if defined(__x86_64__)
PYCOMP_INT4_ISA_ENTRY_POINT(avx2)
PYCOMP_INT4_ISA_ENTRY_POINT(avx512)
// x rounded to int16 per weight group (int4_avx2_x16.cpp): any AVX2 + F16C CPU.
PYCOMP_INT4_ISA_ENTRY_POINT(x16_avx2)
#endif

#undef PYCOMP_INT4_ISA_ENTRY_POINT

}  // namespace pycomp::cpu::int4
