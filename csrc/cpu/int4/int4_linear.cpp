// Dispatch of the int4 linear op to the kernels of one instruction set.
#include "cpu/int4/int4_linear.h"

#include "cpu/int4/int4_kernels.h"

namespace pycomp::cpu {
namespace {

// The x86 kernels convert the float16 scales with F16C, which every AVX2 CPU
// made so far has; the check keeps a hypothetical one without it correct.
enum class Kernel { portable, avx2, avx512, x16 };

Kernel kernel_for(Isa isa, bool round_x) {
#if defined(__x86_64__)
  if (!cpu_features().f16c) return Kernel::portable;
  if (round_x && (isa == Isa::avx512vnni || isa == Isa::avx2)) return Kernel::x16;
  if (isa == Isa::avx512vnni) return Kernel::avx512;
  if (isa == Isa::avx2) return Kernel::avx2;
#endif
  (void)isa;
  (void)round_x;
  return Kernel::portable;
}

}  // namespace

const char* w4a16_kernel_name(Isa isa, bool round_x) {
  switch (kernel_for(isa, round_x)) {
    case Kernel::x16:
      return "avx2-x16";
    case Kernel::avx512:
      return "avx512";
    case Kernel::avx2:
      return "avx2";
    default:
      return "portable";
  }
}

void w4a16_linear(Isa isa, const XRows& x, const uint8_t* packed, const uint16_t* scales, const uint8_t* zeros,
                  const float* bias, float* out, int64_t ldo, int64_t M, int64_t N, int64_t K, int group_size,
                  bool round_x) {
  switch (kernel_for(isa, round_x)) {
#if defined(__x86_64__)
    case Kernel::x16:
      return int4::w4a16_linear_x16_avx2(x, packed, scales, zeros, bias, out, ldo, M, N, K, group_size);
    case Kernel::avx512:
      return int4::w4a16_linear_avx512(x, packed, scales, zeros, bias, out, ldo, M, N, K, group_size);
    case Kernel::avx2:
      return int4::w4a16_linear_avx2(x, packed, scales, zeros, bias, out, ldo, M, N, K, group_size);
#endif
    default:
      return int4::w4a16_linear_portable(x, packed, scales, zeros, bias, out, ldo, M, N, K, group_size);
  }
}

}  // namespace pycomp::cpu
