// Torch-facing wrappers of the binary CPU kernels; included by csrc/bindings.cpp (the one
// translation unit with torch headers), which calls register_binary_cpu(m).
#pragma once

#include <torch/extension.h>

#include <stdexcept>
#include <string>

#include "cpu/binary/binary_linear.h"
#include "cpu/binding_args.h"

namespace pycomp {
namespace binary_bindings {

using cpu::binary::BinaryIsa;

inline BinaryIsa isa_arg(const std::string& name) {
  try {
    return cpu::binary::parse_binary_isa(name);
  } catch (const std::invalid_argument& e) {
    TORCH_CHECK(false, e.what());
  }
}

// x (M, K) fp32, packed (N, ceil(K/32)) uint32, alpha (N, G) fp32, bias (N) fp32 or None.
inline cpu::binary::BinaryWeights weights_arg(const char* op, const at::Tensor& x, const at::Tensor& packed,
                                              const at::Tensor& alpha, int64_t group_size,
                                              const c10::optional<at::Tensor>& bias) {
  TORCH_CHECK(x.device().is_cpu() && packed.device().is_cpu() && alpha.device().is_cpu(), op,
              ": all tensors must be on the CPU");
  TORCH_CHECK(x.dim() == 2 && x.scalar_type() == at::kFloat, op, ": x must be a 2-D float32 tensor, got ", x.dim(),
              "-D ", x.scalar_type());
  const int64_t K = x.size(1), KW = (K + 31) / 32;
  TORCH_CHECK(K > 0, op, ": K must be positive");
  TORCH_CHECK(packed.dim() == 2 && packed.scalar_type() == at::kUInt32 && packed.is_contiguous() &&
                  packed.size(1) == KW && packed.size(0) > 0,
              op, ": packed must be a contiguous (N, ", KW, ") uint32 tensor for K=", K, ", got ", packed.sizes(), " ",
              packed.scalar_type());
  TORCH_CHECK(group_size >= 0 && group_size % 32 == 0, op, ": group_size must be 0 or a multiple of 32, got ",
              group_size);
  const int64_t N = packed.size(0), G = group_size ? (K + group_size - 1) / group_size : 1;
  TORCH_CHECK(alpha.dim() == 2 && alpha.scalar_type() == at::kFloat && alpha.is_contiguous() && alpha.size(0) == N &&
                  alpha.size(1) == G,
              op, ": alpha must be a contiguous float32 tensor (", N, ", ", G, "), got ", alpha.sizes());
  if (bias) {
    TORCH_CHECK(bias->device().is_cpu() && bias->dim() == 1 && bias->scalar_type() == at::kFloat &&
                    bias->is_contiguous() && bias->size(0) == N,
                op, ": bias must be a contiguous float32 CPU vector of N=", N, " values");
  }
  return {static_cast<const uint32_t*>(packed.data_ptr()), alpha.data_ptr<float>(),
          bias ? bias->data_ptr<float>() : nullptr, N, K, KW, G, group_size ? group_size / 32 : KW};
}

using Kernel = void (*)(BinaryIsa, const float*, int64_t, const cpu::binary::BinaryWeights&, float*, int64_t, int64_t);

inline at::Tensor run(const char* op, Kernel kernel, const at::Tensor& x_in, const at::Tensor& packed,
                      const at::Tensor& alpha, int64_t group_size, const c10::optional<at::Tensor>& bias,
                      const std::string& isa) {
  const cpu::binary::BinaryWeights wt = weights_arg(op, x_in, packed, alpha, group_size, bias);
  const at::Tensor x = cpu::unit_col_stride(x_in);
  const int64_t M = x.size(0);
  at::Tensor out = at::empty({M, wt.N}, x.options());
  if (M > 0) kernel(isa_arg(isa), x.data_ptr<float>(), x.stride(0), wt, out.data_ptr<float>(), wt.N, M);
  return out;
}

inline std::tuple<at::Tensor, at::Tensor> binarize_per_token_cpu(const at::Tensor& x_in, const std::string& isa) {
  TORCH_CHECK(x_in.device().is_cpu() && x_in.dim() == 2 && x_in.scalar_type() == at::kFloat && x_in.size(1) > 0,
              "binarize_per_token: x must be a 2-D float32 CPU tensor with K > 0");
  const at::Tensor x = cpu::unit_col_stride(x_in);
  const int64_t M = x.size(0), K = x.size(1);
  at::Tensor bits = at::empty({M, (K + 31) / 32}, x.options().dtype(at::kUInt32));
  at::Tensor beta = at::empty({M}, x.options());
  if (M > 0)
    cpu::binary::binarize_rows_f32(isa_arg(isa), x.data_ptr<float>(), x.stride(0), M, K,
                                   static_cast<uint32_t*>(bits.data_ptr()), beta.data_ptr<float>());
  return {bits, beta};
}

}  // namespace binary_bindings

inline void register_binary_cpu(pybind11::module& m) {
  namespace py = pybind11;
  using namespace binary_bindings;
  m.def("binary_cpu_isa", [] { return cpu::binary::binary_isa_name(cpu::binary::best_binary_isa()); },
        "The ISA the binary CPU kernels run by default (portable, avx2, avx512)");
  m.def("binary_cpu_isa_supported", [](const std::string& name) {
    try {
      cpu::binary::parse_binary_isa(name);
      return true;
    } catch (const std::invalid_argument&) {
      return false;
    }
  });
  m.def("w1a32_linear_cpu",
        [](const at::Tensor& x, const at::Tensor& packed, const at::Tensor& alpha, int64_t group_size,
           const c10::optional<at::Tensor>& bias, const std::string& isa) {
          return run("w1a32_linear", &cpu::binary::w1a32_linear_f32, x, packed, alpha, group_size, bias, isa);
        },
        py::arg("x"), py::arg("packed"), py::arg("alpha"), py::arg("group_size"), py::arg("bias") = py::none(),
        py::arg("isa") = "",
        "W1A32: x (M, K) float32, packed (N, ceil(K/32)) uint32, alpha (N, G) float32 -> (M, N) float32");
  m.def("xnor_linear_cpu",
        [](const at::Tensor& x, const at::Tensor& packed, const at::Tensor& alpha, int64_t group_size,
           const c10::optional<at::Tensor>& bias, const std::string& isa) {
          return run("xnor_linear", &cpu::binary::xnor_linear_f32, x, packed, alpha, group_size, bias, isa);
        },
        py::arg("x"), py::arg("packed"), py::arg("alpha"), py::arg("group_size"), py::arg("bias") = py::none(),
        py::arg("isa") = "",
        "XNOR (W1A1): x (M, K) float32 binarized per row, packed (N, ceil(K/32)) uint32 -> (M, N) float32");
  m.def("binarize_per_token_cpu", &binarize_per_token_cpu, py::arg("x"), py::arg("isa") = "",
        "x (M, K) float32 -> (bits (M, ceil(K/32)) uint32, beta (M) float32 = mean|x|)");
}

}  // namespace pycomp
