// The `isa` argument of the CPU kernel bindings (csrc/cpu/<family>/<family>_bindings.h), parsed once for all
// of them: "" is the best instruction set this CPU runs; an unknown name is a torch error naming the op.
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

}  // namespace cpu
}  // namespace pycomp
