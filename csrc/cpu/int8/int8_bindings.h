// Torch-facing wrappers of the CPU int8 kernels; included once, by csrc/bindings.cpp.
//
// They check tensors (device, dtype, shape, strides) and pass raw pointers to
// csrc/cpu/int8/int8_linear.h. The torch.library ops users see are in
// pycomp/ops/int8.py and call these.
#pragma once

#include <torch/extension.h>

#include <stdexcept>
#include <string>

#include "cpu/cpu_features.h"
#include "cpu/binding_args.h"
#include "cpu/int8/int8_linear.h"

namespace pycomp {
namespace int8_bindings {

using cpu::Isa;

// Shared checks of the int8 linear ops: x (M, K) fp32 with unit column stride,
// qweight (N, K) int8 contiguous, wscale (N) fp32, bias (N) fp32 or None.
inline void check_int8_linear_args(const char* op, const at::Tensor& x, const at::Tensor& qweight,
                                   const at::Tensor& wscale, const c10::optional<at::Tensor>& bias) {
  TORCH_CHECK(x.device().is_cpu() && qweight.device().is_cpu() && wscale.device().is_cpu(), op,
              ": all tensors must be on the CPU");
  TORCH_CHECK(x.dim() == 2 && x.scalar_type() == at::kFloat, op, ": x must be a 2-D float32 tensor, got ",
              x.dim(), "-D ", x.scalar_type());
  TORCH_CHECK(qweight.dim() == 2 && qweight.scalar_type() == at::kChar && qweight.is_contiguous(), op,
              ": qweight must be a contiguous 2-D int8 tensor (N, K)");
  TORCH_CHECK(x.size(1) == qweight.size(1), op, ": x has K=", x.size(1), " features but qweight has K=",
              qweight.size(1));
  TORCH_CHECK(x.size(1) > 0 && qweight.size(0) > 0, op, ": K and N must be positive");
  TORCH_CHECK(wscale.dim() == 1 && wscale.scalar_type() == at::kFloat && wscale.is_contiguous() &&
                  wscale.size(0) == qweight.size(0),
              op, ": wscale must be a contiguous float32 vector of N=", qweight.size(0), " scales");
  if (bias) {
    TORCH_CHECK(bias->device().is_cpu() && bias->dim() == 1 && bias->scalar_type() == at::kFloat &&
                    bias->is_contiguous() && bias->size(0) == qweight.size(0),
                op, ": bias must be a contiguous float32 CPU vector of N=", qweight.size(0), " values");
  }
}

inline std::tuple<at::Tensor, at::Tensor> quantize_per_token_int8_cpu(const at::Tensor& x_in,
                                                                      const std::string& isa) {
  TORCH_CHECK(x_in.device().is_cpu() && x_in.dim() == 2 && x_in.scalar_type() == at::kFloat,
              "quantize_per_token_int8: x must be a 2-D float32 CPU tensor");
  const at::Tensor x = cpu::unit_col_stride(x_in);
  const int64_t M = x.size(0), K = x.size(1);
  at::Tensor q = at::empty({M, K}, x.options().dtype(at::kChar));
  at::Tensor scale = at::empty({M}, x.options());
  if (M > 0 && K > 0)
    cpu::quantize_per_token_int8_f32(cpu::isa_arg("quantize_per_token_int8", isa), x.data_ptr<float>(), x.stride(0),
                                     q.data_ptr<int8_t>(),
                                     scale.data_ptr<float>(), M, K);
  else
    scale.zero_();
  return {q, scale};
}

inline std::tuple<at::Tensor, at::Tensor, at::Tensor> quantize_per_token_uint7_cpu(const at::Tensor& x_in,
                                                                                   const std::string& isa) {
  TORCH_CHECK(x_in.device().is_cpu() && x_in.dim() == 2 && x_in.scalar_type() == at::kFloat,
              "quantize_per_token_uint7: x must be a 2-D float32 CPU tensor");
  const at::Tensor x = cpu::unit_col_stride(x_in);
  const int64_t M = x.size(0), K = x.size(1);
  at::Tensor q = at::empty({M, K}, x.options().dtype(at::kByte));
  at::Tensor scale = at::zeros({M}, x.options());
  at::Tensor zp = at::zeros({M}, x.options().dtype(at::kInt));
  if (M > 0 && K > 0)
    cpu::quantize_per_token_uint7_f32(cpu::isa_arg("quantize_per_token_uint7", isa), x.data_ptr<float>(), x.stride(0),
                                      q.data_ptr<uint8_t>(),
                                      scale.data_ptr<float>(), zp.data_ptr<int32_t>(), M, K);
  return {q, scale, zp};
}

using LinearKernel = void (*)(Isa, const float*, int64_t, const int8_t*, const float*, const float*, float*,
                              int64_t, int64_t, int64_t, int64_t);

inline at::Tensor run_int8_linear(const char* op, LinearKernel kernel, const at::Tensor& x_in,
                                  const at::Tensor& qweight, const at::Tensor& wscale,
                                  const c10::optional<at::Tensor>& bias, const std::string& isa) {
  check_int8_linear_args(op, x_in, qweight, wscale, bias);
  const at::Tensor x = cpu::unit_col_stride(x_in);
  const int64_t M = x.size(0), K = x.size(1), N = qweight.size(0);
  at::Tensor out = at::empty({M, N}, x.options());
  if (M == 0) return out;
  kernel(cpu::isa_arg(op, isa), x.data_ptr<float>(), x.stride(0), qweight.data_ptr<int8_t>(), wscale.data_ptr<float>(),
         bias ? bias->data_ptr<float>() : nullptr, out.data_ptr<float>(), N, M, N, K);
  return out;
}

inline at::Tensor int8_linear_dynamic_cpu(const at::Tensor& x, const at::Tensor& qweight, const at::Tensor& wscale,
                                          const c10::optional<at::Tensor>& bias, const std::string& isa) {
  return run_int8_linear("int8_linear_dynamic", &cpu::int8_linear_dynamic_f32, x, qweight, wscale, bias, isa);
}

inline at::Tensor int8_linear_weight_only_cpu(const at::Tensor& x, const at::Tensor& qweight,
                                              const at::Tensor& wscale, const c10::optional<at::Tensor>& bias,
                                              const std::string& isa) {
  return run_int8_linear("int8_linear_weight_only", &cpu::int8_linear_weight_only_f32, x, qweight, wscale, bias,
                         isa);
}

// wsum: (N) int32, qweight.sum(1); not re-checked here (that would read the weights twice).
inline at::Tensor int8_linear_dynamic_reduce_range_cpu(const at::Tensor& x_in, const at::Tensor& qweight,
                                                       const at::Tensor& wscale, const at::Tensor& wsum,
                                                       const c10::optional<at::Tensor>& bias,
                                                       const std::string& isa) {
  const char* op = "int8_linear_dynamic_reduce_range";
  check_int8_linear_args(op, x_in, qweight, wscale, bias);
  TORCH_CHECK(wsum.device().is_cpu() && wsum.dim() == 1 && wsum.scalar_type() == at::kInt && wsum.is_contiguous() &&
                  wsum.size(0) == qweight.size(0),
              op, ": wsum must be a contiguous int32 CPU vector of N=", qweight.size(0), " row sums of qweight");
  const at::Tensor x = cpu::unit_col_stride(x_in);
  const int64_t M = x.size(0), K = x.size(1), N = qweight.size(0);
  at::Tensor out = at::empty({M, N}, x.options());
  if (M == 0) return out;
  cpu::int8_linear_dynamic_reduce_range_f32(cpu::isa_arg(op, isa), x.data_ptr<float>(), x.stride(0),
                                            qweight.data_ptr<int8_t>(), wscale.data_ptr<float>(),
                                            wsum.data_ptr<int32_t>(), bias ? bias->data_ptr<float>() : nullptr,
                                            out.data_ptr<float>(), N, M, N, K);
  return out;
}

}  // namespace int8_bindings

inline void register_int8_cpu(pybind11::module_& m) {
  namespace py = pybind11;
  using namespace int8_bindings;
  m.def("quantize_per_token_int8_cpu", &quantize_per_token_int8_cpu, py::arg("x"), py::arg("isa") = "",
        "x: (M, K) float32 -> (q: (M, K) int8, scale: (M) float32)");
  m.def("quantize_per_token_uint7_cpu", &quantize_per_token_uint7_cpu, py::arg("x"), py::arg("isa") = "",
        "x: (M, K) float32 -> (q: (M, K) uint8 in [0, 127], scale: (M) float32, zero_point: (M) int32)");
  m.def("int8_linear_dynamic_cpu", &int8_linear_dynamic_cpu, py::arg("x"), py::arg("qweight"), py::arg("wscale"),
        py::arg("bias") = py::none(), py::arg("isa") = "",
        "W8A8 linear: x (M, K) float32, qweight (N, K) int8, wscale (N) float32 -> (M, N) float32");
  m.def("int8_linear_dynamic_reduce_range_cpu", &int8_linear_dynamic_reduce_range_cpu, py::arg("x"),
        py::arg("qweight"), py::arg("wscale"), py::arg("wsum"), py::arg("bias") = py::none(), py::arg("isa") = "",
        "W8A8 with 7-bit activations: x (M, K) float32, qweight (N, K) int8, wscale (N) float32, "
        "wsum (N) int32 -> (M, N) float32");
  m.def("int8_linear_weight_only_cpu", &int8_linear_weight_only_cpu, py::arg("x"), py::arg("qweight"),
        py::arg("wscale"), py::arg("bias") = py::none(), py::arg("isa") = "",
        "W8A32 linear: x (M, K) float32, qweight (N, K) int8, wscale (N) float32 -> (M, N) float32");
}

}  // namespace pycomp
