// CPU entries of the binary ops (pycomp/ops/binary.py registers them as the ops' CPU kernels); see
// csrc/cpu/op_entry.h. Included once, by csrc/bindings.cpp.
#pragma once

#include <torch/extension.h>

#include <string>

#include "cpu/binary/binary_bindings.h"
#include "cpu/op_entry.h"

namespace pycomp {
namespace binary_ops {

using namespace op_entry;

// pycomp.ops.binary._check, rule for rule.
inline void check_binary(const std::string& op, const at::Tensor& x, const at::Tensor& packed,
                         const at::Tensor& alpha, int64_t group_size, const c10::optional<at::Tensor>& bias) {
  check_x(op, x);
  const int64_t k = x.size(-1), kw = (k + 31) / 32;
  TORCH_CHECK(packed.dim() == 2 && packed.scalar_type() == at::kUInt32, op,
              ": packed must be a 2-D uint32 tensor (N, ceil(K/32)), got ", packed.dim(), "-D ",
              dtype_str(packed.scalar_type()));
  TORCH_CHECK(packed.size(1) == kw, op, ": x has K=", k, " features, which pack into ", kw,
              " words, but packed has ", packed.size(1), " words per row");
  TORCH_CHECK(group_size >= 0 && group_size % 32 == 0, op,
              ": group_size must be 0 or a positive multiple of 32, got ", group_size);
  const int64_t g = group_size == 0 ? 1 : (k + group_size - 1) / group_size;
  TORCH_CHECK(alpha.dim() == 2 && alpha.scalar_type() == at::kFloat && alpha.size(0) == packed.size(0) &&
                  alpha.size(1) == g,
              op, ": alpha must be float32 of shape (N, G) = (", packed.size(0), ", ", g, ") for K=", k,
              ", group_size=", group_size, "; got ", dtype_str(alpha.scalar_type()), " ", shape_str(alpha.sizes()));
  check_bias(op, bias, packed.size(0));
  check_devices(op, x, {{"packed", &packed}, {"alpha", &alpha}, {"bias", opt(bias)}});
}

using binary_bindings::Kernel;

// weight_only: W1A32, which may take the dense route; XNOR binarizes x, so its kernel always runs.
inline at::Tensor run(const char* name, Kernel kernel, bool weight_only, const at::Tensor& x,
                      const at::Tensor& packed, const at::Tensor& alpha, int64_t group_size,
                      const c10::optional<at::Tensor>& bias) {
  check_binary(std::string("pycomp.") + name, x, packed, alpha, group_size, bias);
  const at::Tensor x2 = rows_f32(x);
  if (x2.size(0) == 0) return empty_out(x, packed.size(0));
  const at::Tensor p = packed.contiguous(), a = alpha.contiguous();
  const auto call = [&](const at::Tensor& rows, const c10::optional<at::Tensor>& b) {
    return binary_bindings::run(name, kernel, rows, p, a, group_size, b, "");
  };
  return finish(weight_only ? weight_only_rows(x2, bias_f32(bias), call) : call(x2, bias_f32(bias)), x);
}

}  // namespace binary_ops

inline void register_binary_ops(pybind11::module_& m) {
  namespace py = pybind11;
  using namespace binary_ops;  // bias takes its schema default: the dispatcher leaves it out when it has it
  m.def("w1a16_linear_op",
        [](const at::Tensor& x, const at::Tensor& packed, const at::Tensor& alpha, int64_t group_size,
           const c10::optional<at::Tensor>& bias) {
          return run("w1a16_linear", &cpu::binary::w1a32_linear_f32, true, x, packed, alpha, group_size, bias);
        },
        py::arg("x"), py::arg("packed"), py::arg("alpha"), py::arg("group_size"), py::arg("bias") = py::none(),
        "CPU entry of pycomp::w1a16_linear (the W1A32 kernel)");
  m.def("xnor_linear_op",
        [](const at::Tensor& x, const at::Tensor& packed, const at::Tensor& alpha, int64_t group_size,
           const c10::optional<at::Tensor>& bias) {
          return run("xnor_linear", &cpu::binary::xnor_linear_f32, false, x, packed, alpha, group_size, bias);
        },
        py::arg("x"), py::arg("packed"), py::arg("alpha"), py::arg("group_size"), py::arg("bias") = py::none(),
        "CPU entry of pycomp::xnor_linear");
}

}  // namespace pycomp
