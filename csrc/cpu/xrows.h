// Activation rows as a kernel takes them: float32, bfloat16 or float16, read in place (raw pointers, no torch
// headers). A kernel that permutes or rounds x into its own scratch anyway (the int4 kernels) reads the 16-bit
// types there, converting as it copies, instead of having the op entry make a float32 copy of x first. Both
// conversions are exact, so a kernel gives the same bits for a 16-bit x as for that x converted to float32.
#pragma once

#include <cstdint>
#include <cstring>

namespace pycomp::cpu {

enum class XType { f32, bf16, f16 };

// The bits of one 16-bit float; distinct types so that overloads see which format they hold.
struct Bf16 {
  uint16_t bits;
};
struct F16 {
  uint16_t bits;
};

// IEEE half bits -> float, subnormals included (the portable paths; the x86 paths convert with F16C).
inline float half_to_float(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000) << 16, exp = (h >> 10) & 0x1F, man = h & 0x3FF;
  uint32_t bits;
  if (exp == 0x1F) {
    bits = sign | 0x7F800000u | (man << 13);
  } else if (exp != 0) {
    bits = sign | ((exp + 112) << 23) | (man << 13);
  } else if (man == 0) {
    bits = sign;
  } else {
    float f = float(man) * (1.f / 16777216.f);  // man * 2^-24, exact
    std::memcpy(&bits, &f, 4);
    bits |= sign;
  }
  float out;
  std::memcpy(&out, &bits, 4);
  return out;
}

inline float to_f32(float v) { return v; }
inline float to_f32(Bf16 v) {
  const uint32_t bits = uint32_t(v.bits) << 16;
  float out;
  std::memcpy(&out, &bits, 4);
  return out;
}
inline float to_f32(F16 v) { return half_to_float(v.bits); }

// (M, K) rows: element (m, k) at p + m * ld + k, of type `type`.
struct XRows {
  XType type;
  const void* p;
  int64_t ld;
};

// fn(static_cast<const E*>(x.p)) for E the element type x holds: float, Bf16 or F16.
template <class Fn>
void visit(const XRows& x, Fn&& fn) {
  switch (x.type) {
    case XType::bf16:
      return fn(static_cast<const Bf16*>(x.p));
    case XType::f16:
      return fn(static_cast<const F16*>(x.p));
    default:
      return fn(static_cast<const float*>(x.p));
  }
}

}  // namespace pycomp::cpu
