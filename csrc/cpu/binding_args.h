// Arguments every CPU kernel binding (csrc/cpu/<family>/<family>_bindings.h) takes the same way: the `isa`
// name, parsed once for all of them ("" is the best instruction set this CPU runs; an unknown name is a torch
// error naming the op), and x's rows, which the kernels read with unit column stride.
#pragma once

#include <torch/extension.h>

#include <stdexcept>
#include <string>

#include "cpu/cpu_features.h"

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

}  // namespace cpu
}  // namespace pycomp
