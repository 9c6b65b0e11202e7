// CPU entries of the int8 ops (pycomp/ops/int8.py registers them as the ops' CPU kernels); see
// csrc/cpu/op_entry.h for what an entry does. Included once, by csrc/bindings.cpp.
#pragma once

#include <torch/extension.h>

#include <string>

#include "cpu/int8/int8_bindings.h"
#include "cpu/op_entry.h"

namespace pycomp {
namespace int8_ops {

using namespace op_entry;

// W8A8 accumulates in int32: 127 * 127 * K must stay below 2**31 (pycomp.ops.int8.MAX_K_DYNAMIC).
constexpr int64_t kMaxKDynamic = 2147483647LL / (127 * 127);

inline void check_linear(const std::string& op, const at::Tensor& x, const at::Tensor& qweight,
                         const at::Tensor& wscale, const c10::optional<at::Tensor>& bias) {
  check_x(op, x);
  TORCH_CHECK(qweight.dim() == 2 && qweight.scalar_type() == at::kChar, op,
              ": qweight must be a 2-D int8 tensor (N, K), got ", qweight.dim(), "-D ",
              dtype_str(qweight.scalar_type()));
  check_features(op, x, qweight.size(1));
  TORCH_CHECK(wscale.dim() == 1 && wscale.scalar_type() == at::kFloat && wscale.size(0) == qweight.size(0), op,
              ": wscale must be a float32 vector of N=", qweight.size(0), " per-channel scales");
  check_bias(op, bias, qweight.size(0));
  check_devices(op, x, {{"qweight", &qweight}, {"wscale", &wscale}, {"bias", opt(bias)}});
}

inline void check_max_k(const std::string& op, const at::Tensor& qweight) {
  TORCH_CHECK(qweight.size(1) <= kMaxKDynamic, op, ": K=", qweight.size(1),
              " could overflow the int32 accumulator (at most ", kMaxKDynamic, "); use mode='weight_only'");
}

inline at::Tensor linear_dynamic(const at::Tensor& x, const at::Tensor& qweight, const at::Tensor& wscale,
                                 const c10::optional<at::Tensor>& bias) {
  const std::string op = "pycomp.int8_linear_dynamic";
  check_linear(op, x, qweight, wscale, bias);
  check_max_k(op, qweight);
  const at::Tensor x2 = rows_f32(x);
  if (x2.size(0) == 0) return empty_out(x, qweight.size(0));
  return finish(int8_bindings::int8_linear_dynamic_cpu(x2, qweight.contiguous(), wscale.contiguous(),
                                                       bias_f32(bias), ""),
                x);
}

inline at::Tensor linear_weight_only(const at::Tensor& x, const at::Tensor& qweight, const at::Tensor& wscale,
                                     const c10::optional<at::Tensor>& bias) {
  check_linear("pycomp.int8_linear_weight_only", x, qweight, wscale, bias);
  // No dense route: since the small-N tiles (int8_driver.h), W8A32 beat MKL on the decoded weight at every
  // large-batch shape measured (benchmarks/dense_route_crossover.py, benchmarks/RESULTS.md).
  const at::Tensor x2 = rows_f32(x);
  if (x2.size(0) == 0) return empty_out(x, qweight.size(0));
  return finish(int8_bindings::int8_linear_weight_only_cpu(x2, qweight.contiguous(), wscale.contiguous(),
                                                           bias_f32(bias), ""),
                x);
}

inline at::Tensor linear_dynamic_reduce_range(const at::Tensor& x, const at::Tensor& qweight,
                                              const at::Tensor& wscale, const at::Tensor& wsum,
                                              const c10::optional<at::Tensor>& bias) {
  const std::string op = "pycomp.int8_linear_dynamic_reduce_range";
  check_linear(op, x, qweight, wscale, bias);
  TORCH_CHECK(wsum.dim() == 1 && wsum.scalar_type() == at::kInt && wsum.size(0) == qweight.size(0) &&
                  wsum.device() == x.device(),
              op, ": wsum must be an int32 vector of N=", qweight.size(0), " row sums of qweight on ",
              x.device().str(), ", got ", wsum.dim(), "-D ", dtype_str(wsum.scalar_type()), " on ",
              wsum.device().str());
  check_max_k(op, qweight);
  const at::Tensor x2 = rows_f32(x);
  if (x2.size(0) == 0) return empty_out(x, qweight.size(0));
  return finish(int8_bindings::int8_linear_dynamic_reduce_range_cpu(x2, qweight.contiguous(), wscale.contiguous(),
                                                                    wsum.contiguous(), bias_f32(bias), ""),
                x);
}

inline void check_has_features(const char* op, const at::Tensor& x) {
  TORCH_CHECK(x.dim() >= 1 && x.size(-1) > 0, "pycomp.", op, ": x must have at least one feature");
}

inline std::tuple<at::Tensor, at::Tensor> quantize_int8(const at::Tensor& x) {
  check_has_features("quantize_per_token_int8", x);
  auto [q, s] = int8_bindings::quantize_per_token_int8_cpu(rows_f32(x), "");
  return {q.view(x.sizes()), s.view(x.sizes().slice(0, x.dim() - 1))};
}

inline std::tuple<at::Tensor, at::Tensor, at::Tensor> quantize_uint7(const at::Tensor& x) {
  check_has_features("quantize_per_token_uint7", x);
  auto [q, s, zp] = int8_bindings::quantize_per_token_uint7_cpu(rows_f32(x), "");
  const auto lead = x.sizes().slice(0, x.dim() - 1);
  return {q.view(x.sizes()), s.view(lead), zp.view(lead)};
}

}  // namespace int8_ops

inline void register_int8_ops(pybind11::module_& m) {
  namespace py = pybind11;
  using namespace int8_ops;
  // The dispatcher leaves out trailing arguments that have their schema default (bias=None), so the
  // entries take the schema's defaults too.
  m.def("int8_linear_dynamic_op", &linear_dynamic, py::arg("x"), py::arg("qweight"), py::arg("wscale"),
        py::arg("bias") = py::none(), "CPU entry of pycomp::int8_linear_dynamic");
  m.def("int8_linear_weight_only_op", &linear_weight_only, py::arg("x"), py::arg("qweight"), py::arg("wscale"),
        py::arg("bias") = py::none(), "CPU entry of pycomp::int8_linear_weight_only");
  m.def("int8_linear_dynamic_reduce_range_op", &linear_dynamic_reduce_range, py::arg("x"), py::arg("qweight"),
        py::arg("wscale"), py::arg("wsum"), py::arg("bias") = py::none(),
        "CPU entry of pycomp::int8_linear_dynamic_reduce_range");
  m.def("quantize_per_token_int8_op", &quantize_int8, "CPU entry of pycomp::quantize_per_token_int8");
  m.def("quantize_per_token_uint7_op", &quantize_uint7, "CPU entry of pycomp::quantize_per_token_uint7");
}

}  // namespace pycomp
