// Arguments every CPU kernel binding (csrc/cpu/<family>/<family>_bindings.h) takes the same way: the `isa`
// name, parsed once for all of them ("" is the best instruction set this CPU runs; an unknown name is a torch
// error naming the op), and x's rows, which the kernels read with unit column stride (as XRows where a kernel
// takes 16-bit floats too).
#pragma once

#include <torch/extension.h>

#include <optional>
#include <stdexcept>
#include <string>

#include "cpu/cpu_features.h"
#include "cpu/xrows.h"

namespace pycomp {
namespace cpu {

inline Isa isa_arg(const char* op, const std::string& name) {
  try {
    return parse_isa(name);
  } catch (const std::invalid_argument& e) {
    TORCH_CHECK(false, op, ": ", e.what());
  }
}

// x (M, K) as the kernels read it: unit column stride and row stride >= K (a copy only when x is not).
inline at::Tensor unit_col_stride(const at::Tensor& x) {
  return x.stride(1) == 1 && x.stride(0) >= x.size(1) ? x : x.contiguous();
}

// The kernels' name for a torch dtype x may hold (float32, bfloat16, float16); nullopt for any other.
inline std::optional<XType> xtype_of(at::ScalarType t) {
  switch (t) {
    case at::kFloat:
      return XType::f32;
    case at::kBFloat16:
      return XType::bf16;
    case at::kHalf:
      return XType::f16;
    default:
      return std::nullopt;
  }
}

// x (M, K), unit column stride (unit_col_stride), as kernel rows.
inline XRows x_rows(const at::Tensor& x) {
  const auto t = xtype_of(x.scalar_type());
  TORCH_CHECK(t && x.dim() == 2 && x.stride(1) == 1, "x_rows: x must be 2-D float32/bfloat16/float16 rows");
  return XRows{*t, x.data_ptr(), x.stride(0)};
}

}  // namespace cpu
}  // namespace pycomp
