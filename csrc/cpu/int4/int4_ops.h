// CPU entry of pycomp::w4a16_linear (pycomp/ops/int4.py registers it for float32, bfloat16 and float16 x;
// float64 x runs the reference there); see csrc/cpu/op_entry.h. The kernels read 16-bit x as it is: no float32
// copy of x is made (but the dense route's, which multiplies in float32). Included once, by csrc/bindings.cpp.
#pragma once

#include <torch/extension.h>

#include <string>

#include "cpu/int4/int4_bindings.h"
#include "cpu/op_entry.h"

namespace pycomp {
namespace int4_ops {

using namespace op_entry;

// pycomp.ops.int4._check, rule for rule.
inline void check_w4a16(const at::Tensor& x, const at::Tensor& packed, const at::Tensor& scales,
                        const c10::optional<at::Tensor>& zeros, const c10::optional<at::Tensor>& bias,
                        int64_t group_size, int64_t in_features) {
  const std::string op = "pycomp.w4a16_linear";
  check_x(op, x);
  TORCH_CHECK(group_size == 32 || group_size == 64 || group_size == 128, op,
              ": group_size must be one of (32, 64, 128), got ", group_size);
  check_features(op, x, in_features);
  const int64_t kb = (in_features + 1) / 2;
  TORCH_CHECK(packed.dim() == 2 && packed.scalar_type() == at::kByte && packed.size(1) == kb, op,
              ": packed must be a 2-D uint8 tensor (N, ", kb, ") for K=", in_features, ", got ",
              dtype_str(packed.scalar_type()), " ", shape_str(packed.sizes()));
  const int64_t n = packed.size(0), g = (in_features + group_size - 1) / group_size;
  TORCH_CHECK(scales.scalar_type() == at::kHalf && scales.dim() == 2 && scales.size(0) == n && scales.size(1) == g,
              op, ": scales must be float16 of shape (", n, ", ", g, "), got ", dtype_str(scales.scalar_type()), " ",
              shape_str(scales.sizes()));
  TORCH_CHECK(!zeros || (zeros->scalar_type() == at::kByte && zeros->dim() == 2 && zeros->size(0) == n &&
                         zeros->size(1) == g),
              op, ": zeros must be None or uint8 of shape (", n, ", ", g, ")");
  check_bias(op, bias, n);
  check_devices(op, x, {{"packed", &packed}, {"scales", &scales}, {"zeros", opt(zeros)}, {"bias", opt(bias)}});
}

inline at::Tensor w4a16_linear(const at::Tensor& x, const at::Tensor& packed, const at::Tensor& scales,
                               const c10::optional<at::Tensor>& zeros, const c10::optional<at::Tensor>& bias,
                               int64_t group_size, int64_t in_features, bool round_x) {
  check_w4a16(x, packed, scales, zeros, bias, group_size, in_features);
  const at::Tensor x2 = rows(x);  // float32, bfloat16 or float16 (pycomp/ops/int4.py sends no other)
  if (x2.size(0) == 0 || packed.size(0) == 0) return empty_out(x, packed.size(0));
  c10::optional<at::Tensor> z;
  if (zeros) z = zeros->contiguous();
  const at::Tensor p = packed.contiguous(), s = scales.contiguous();
  auto kernel = [&](const at::Tensor& rows, const c10::optional<at::Tensor>& b, bool rx) {
    return int4_bindings::w4a16_linear_cpu(rows, p, s, z, b, group_size, in_features, "", rx);
  };
  return finish(weight_only_rows(
                    x2, bias_f32(bias),
                    [&](const at::Tensor& rows, const c10::optional<at::Tensor>& b) { return kernel(rows, b, round_x); },
                    [&](const at::Tensor& eye) { return kernel(eye, c10::nullopt, false); }),
                x);
}

}  // namespace int4_ops

inline void register_int4_ops(pybind11::module_& m) {
  m.def("w4a16_linear_op", &int4_ops::w4a16_linear, "CPU entry of pycomp::w4a16_linear (float32/16, bfloat16 x)");
}

}  // namespace pycomp
