// Torch-facing wrappers of the CPU int4 kernels; included once, by csrc/bindings.cpp.
//
// They check tensors (device, dtype, shape, strides) and pass raw pointers to
// csrc/cpu/int4/int4_linear.h. The torch.library op users see is
// pycomp::w4a16_linear (pycomp/ops/int4.py), which calls w4a16_linear_cpu.
#pragma once

#include <torch/extension.h>

#include <stdexcept>
#include <string>

#include "cpu/cpu_features.h"
#include "cpu/binding_args.h"
#include "cpu/int4/int4_linear.h"

namespace pycomp {
namespace int4_bindings {

// x (M, K) float32, bfloat16 or float16 with unit column stride (the kernels convert it as they pack it);
// packed (N, ceil(K/2)) uint8, scales (N, G) float16, zeros (N, G) uint8 or None, all contiguous; bias (N)
// float32 or None.
inline at::Tensor w4a16_linear_cpu(const at::Tensor& x_in, const at::Tensor& packed, const at::Tensor& scales,
                                   const c10::optional<at::Tensor>& zeros, const c10::optional<at::Tensor>& bias,
                                   int64_t group_size, int64_t in_features, const std::string& isa,
                                   bool round_x) {
  const char* op = "w4a16_linear_cpu";
  TORCH_CHECK(group_size == 32 || group_size == 64 || group_size == 128, op,
              ": group_size must be 32, 64 or 128, got ", group_size);
  TORCH_CHECK(x_in.device().is_cpu() && x_in.dim() == 2 && cpu::xtype_of(x_in.scalar_type()), op,
              ": x must be a 2-D float32, bfloat16 or float16 CPU tensor");
  const int64_t K = in_features;
  TORCH_CHECK(K > 0 && x_in.size(1) == K, op, ": x has ", x_in.size(1), " features but in_features is ", K);
  TORCH_CHECK(packed.device().is_cpu() && packed.dim() == 2 && packed.scalar_type() == at::kByte &&
                  packed.is_contiguous() && packed.size(1) == (K + 1) / 2 && packed.size(0) > 0,
              op, ": packed must be a contiguous (N, ", (K + 1) / 2, ") uint8 CPU tensor with N > 0");
  const int64_t N = packed.size(0), G = (K + group_size - 1) / group_size;
  TORCH_CHECK(scales.device().is_cpu() && scales.scalar_type() == at::kHalf && scales.is_contiguous() &&
                  scales.dim() == 2 && scales.size(0) == N && scales.size(1) == G,
              op, ": scales must be a contiguous float16 CPU tensor of shape (", N, ", ", G, ")");
  if (zeros) {
    TORCH_CHECK(zeros->device().is_cpu() && zeros->scalar_type() == at::kByte && zeros->is_contiguous() &&
                    zeros->dim() == 2 && zeros->size(0) == N && zeros->size(1) == G,
                op, ": zeros must be None or a contiguous uint8 CPU tensor of shape (", N, ", ", G, ")");
  }
  if (bias) {
    TORCH_CHECK(bias->device().is_cpu() && bias->dim() == 1 && bias->scalar_type() == at::kFloat &&
                    bias->is_contiguous() && bias->size(0) == N,
                op, ": bias must be a contiguous float32 CPU vector of N=", N, " values");
  }
  const at::Tensor x = cpu::unit_col_stride(x_in);
  const int64_t M = x.size(0);
  at::Tensor out = at::empty({M, N}, x.options().dtype(at::kFloat));
  if (M == 0) return out;
  cpu::w4a16_linear(cpu::isa_arg("w4a16_linear_cpu", isa), cpu::x_rows(x), packed.data_ptr<uint8_t>(),
                    reinterpret_cast<const uint16_t*>(scales.data_ptr<at::Half>()),
                    zeros ? zeros->data_ptr<uint8_t>() : nullptr, bias ? bias->data_ptr<float>() : nullptr,
                    out.data_ptr<float>(), N, M, N, K, int(group_size), round_x);
  return out;
}

}  // namespace int4_bindings

inline void register_int4_cpu(pybind11::module_& m) {
  namespace py = pybind11;
  m.def("w4a16_linear_cpu", &int4_bindings::w4a16_linear_cpu, py::arg("x"), py::arg("packed"), py::arg("scales"),
        py::arg("zeros"), py::arg("bias"), py::arg("group_size"), py::arg("in_features"), py::arg("isa") = "",
        py::arg("round_x") = false,
        "W4A16 linear: x (M, K) float32, bfloat16 or float16, k-nibble int4 weight (N, ceil(K/2)) uint8, "
        "float16 scales and uint8 "
        "zeros (N, ceil(K/group_size)) -> (M, N) float32; round_x: x rounded to int16 per group where AVX2 runs");
  m.def("w4a16_cpu_kernel",
        [](const std::string& isa, bool round_x) {
          return std::string(cpu::w4a16_kernel_name(cpu::isa_arg("w4a16_cpu_kernel", isa), round_x));
        },
        py::arg("isa") = "", py::arg("round_x") = false,
        "The int4 kernel family that `isa` runs: 'avx512', 'avx2', 'portable', or with round_x 'avx2-x16'");
}

}  // namespace pycomp
