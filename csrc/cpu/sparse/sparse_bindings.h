// Torch-facing wrappers of the sparse CPU kernels; included only by csrc/bindings.cpp (the one
// translation unit with torch headers). They check devices, dtypes, shapes and contiguity with a
// message naming the op and the rule; index ranges are the format's invariant, checked when a layer
// packs or loads its buffers (pycomp.formats.sparse.check_*), not per call.
#pragma once

#include <torch/extension.h>

#include <stdexcept>
#include <string>

#include "cpu/cpu_features.h"
#include "cpu/binding_args.h"
#include "cpu/sparse/sparse_linear.h"

namespace pycomp {
namespace sparse_binding {

inline void check_f32(const char* op, const char* name, const at::Tensor& t, int64_t dim) {
  TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == at::kFloat && t.dim() == dim && t.is_contiguous(), op, ": ",
              name, " must be a contiguous ", dim, "-D float32 CPU tensor, got ", t.dim(), "-D ", t.scalar_type(),
              " on ", t.device());
}

inline void check_index(const char* op, const char* name, const at::Tensor& t) {
  TORCH_CHECK(t.device().is_cpu() && t.dim() == 1 && t.is_contiguous() &&
                  (t.scalar_type() == at::kInt || t.scalar_type() == at::kShort),
              op, ": ", name, " must be a contiguous 1-D int32 (or int16 column) CPU tensor");
}

inline const float* bias_ptr(const char* op, const c10::optional<at::Tensor>& bias, int64_t N) {
  if (!bias) return nullptr;
  check_f32(op, "bias", *bias, 1);
  TORCH_CHECK(bias->size(0) == N, op, ": bias must have N=", N, " values, got ", bias->size(0));
  return bias->data_ptr<float>();
}

inline at::Tensor x_rows(const char* op, const at::Tensor& x, int64_t K) {
  TORCH_CHECK(x.device().is_cpu() && x.dim() == 2 && x.scalar_type() == at::kFloat, op,
              ": x must be a 2-D float32 CPU tensor (M, K)");
  TORCH_CHECK(x.size(1) == K, op, ": x has ", x.size(1), " columns, the weight expects ", K);
  return cpu::unit_col_stride(x);
}

// x (M, K) f32; crow (N+1) int32; col (nnz) int16 (K <= 32768) or int32; values (nnz) f32 -> (M, N) f32.
inline at::Tensor csr_linear_cpu(const at::Tensor& x_in, const at::Tensor& crow, const at::Tensor& col,
                                 const at::Tensor& values, int64_t K, const c10::optional<at::Tensor>& bias,
                                 const std::string& isa) {
  constexpr const char* op = "csr_linear_cpu";
  check_index(op, "crow", crow);
  check_index(op, "col", col);
  check_f32(op, "values", values, 1);
  TORCH_CHECK(crow.scalar_type() == at::kInt && crow.numel() >= 1, op, ": crow must be int32 with N+1 >= 1 entries");
  TORCH_CHECK(col.numel() == values.numel(), op, ": col and values must both have nnz entries");
  TORCH_CHECK(col.scalar_type() == at::kInt || K <= 32768, op, ": int16 column indices need K <= 32768, got K=", K);
  const int64_t N = crow.numel() - 1;
  TORCH_CHECK(crow[N].item<int32_t>() == values.numel(), op, ": crow[N] must equal nnz=", values.numel());
  const at::Tensor x = x_rows(op, x_in, K);
  const float* b = bias_ptr(op, bias, N);
  const int64_t M = x.size(0);
  at::Tensor out = at::empty({M, N}, x.options());
  if (M == 0 || N == 0) return out;
  const bool i16 = col.scalar_type() == at::kShort;
  cpu::csr_linear_f32(cpu::isa_arg(op, isa), x.data_ptr<float>(), x.stride(0), crow.data_ptr<int32_t>(),
                      i16 ? col.data_ptr<int16_t>() : nullptr, i16 ? nullptr : col.data_ptr<int32_t>(),
                      values.data_ptr<float>(), b, out.data_ptr<float>(), N, M, N, K);
  return out;
}

// x (M, Kp) f32 (Kp = block columns * bk); crow (block rows + 1) int32; col (nblocks) int32;
// values (nblocks, bn, bk) f32 -> (M, N) f32, N <= block rows * bn.
inline at::Tensor bsr_linear_cpu(const at::Tensor& x_in, const at::Tensor& crow, const at::Tensor& col,
                                 const at::Tensor& values, int64_t N, const c10::optional<at::Tensor>& bias,
                                 const std::string& isa) {
  constexpr const char* op = "bsr_linear_cpu";
  check_index(op, "crow", crow);
  check_index(op, "col", col);
  check_f32(op, "values", values, 3);
  TORCH_CHECK(crow.scalar_type() == at::kInt && col.scalar_type() == at::kInt, op, ": crow and col must be int32");
  const int64_t bn = values.size(1), bk = values.size(2);
  TORCH_CHECK(bn > 0 && bk > 0, op, ": blocks must be non-empty");
  TORCH_CHECK(col.numel() == values.size(0), op, ": col must have one entry per block");
  TORCH_CHECK(N >= 0 && (N + bn - 1) / bn == crow.numel() - 1, op, ": N=", N, " needs ", (N + bn - 1) / bn,
              " block rows, crow has ", crow.numel() - 1);
  TORCH_CHECK(crow[crow.numel() - 1].item<int32_t>() == values.size(0), op, ": crow's last entry must be nblocks");
  TORCH_CHECK(x_in.dim() == 2 && x_in.size(1) % bk == 0, op, ": x's columns must be a multiple of bk=", bk);
  const at::Tensor x = x_rows(op, x_in, x_in.size(1));
  const float* b = bias_ptr(op, bias, N);
  const int64_t M = x.size(0);
  at::Tensor out = at::empty({M, N}, x.options());
  if (M == 0 || N == 0) return out;
  cpu::bsr_linear_f32(cpu::isa_arg(op, isa), x.data_ptr<float>(), x.stride(0), crow.data_ptr<int32_t>(),
                      col.data_ptr<int32_t>(), values.data_ptr<float>(), bn, bk, b, out.data_ptr<float>(), N, M, N);
  return out;
}

// x (M, Kp) f32; values (N, Kp/2) f32, or int8 with scale (N) f32 (per output row); meta (Np, Kp/16) int16
// (reordered) -> (M, N) f32.
inline at::Tensor sparse24_linear_cpu(const at::Tensor& x_in, const at::Tensor& values, const at::Tensor& meta,
                                      const c10::optional<at::Tensor>& bias, const c10::optional<at::Tensor>& scale,
                                      const std::string& isa) {
  constexpr const char* op = "sparse24_linear_cpu";
  const bool q8 = values.scalar_type() == at::kChar;
  TORCH_CHECK(values.device().is_cpu() && (q8 || values.scalar_type() == at::kFloat) && values.dim() == 2 &&
                  values.is_contiguous(),
              op, ": values must be a contiguous 2-D float32 or int8 CPU tensor, got ", values.dim(), "-D ",
              values.scalar_type(), " on ", values.device());
  TORCH_CHECK(meta.device().is_cpu() && meta.scalar_type() == at::kShort && meta.dim() == 2 && meta.is_contiguous(),
              op, ": meta must be a contiguous 2-D int16 CPU tensor");
  const int64_t N = values.size(0), Kp = values.size(1) * 2;
  TORCH_CHECK(Kp % 32 == 0, op, ": values must have Kp/2 columns with Kp a multiple of 32, got ", values.size(1));
  TORCH_CHECK(meta.size(0) % 32 == 0 && meta.size(0) >= N && meta.size(1) == Kp / 16, op,
              ": meta must be (Np, ", Kp / 16, ") with Np a multiple of 32 and >= N=", N);
  TORCH_CHECK(!q8 || scale, op, ": int8 values need a scale (one float32 per output row)");
  TORCH_CHECK(q8 || !scale, op, ": a scale goes only with int8 values; float32 values are used as they are");
  if (scale) {
    check_f32(op, "scale", *scale, 1);
    TORCH_CHECK(scale->size(0) == N, op, ": scale must have N=", N, " values, got ", scale->size(0));
  }
  const at::Tensor x = x_rows(op, x_in, Kp);
  const float* b = bias_ptr(op, bias, N);
  const int64_t M = x.size(0);
  at::Tensor out = at::empty({M, N}, x.options());
  if (M == 0 || N == 0) return out;
  const cpu::Isa which = cpu::isa_arg(op, isa);
  if (q8)
    cpu::sparse24_linear_f32(which, x.data_ptr<float>(), x.stride(0), values.data_ptr<int8_t>(),
                             scale->data_ptr<float>(), meta.data_ptr<int16_t>(), meta.size(0), b,
                             out.data_ptr<float>(), N, M, N, Kp);
  else
    cpu::sparse24_linear_f32(which, x.data_ptr<float>(), x.stride(0), values.data_ptr<float>(),
                             meta.data_ptr<int16_t>(), meta.size(0), b, out.data_ptr<float>(), N, M, N, Kp);
  return out;
}

}  // namespace sparse_binding

inline void register_sparse_cpu(pybind11::module_& m) {
  namespace py = pybind11;
  using namespace sparse_binding;
  m.def("csr_linear_cpu", &csr_linear_cpu, py::arg("x"), py::arg("crow"), py::arg("col"), py::arg("values"),
        py::arg("K"), py::arg("bias") = py::none(), py::arg("isa") = "",
        "CSR linear: x (M, K) float32, crow (N+1) int32, col (nnz) int16|int32, values (nnz) float32 -> (M, N)");
  m.def("bsr_linear_cpu", &bsr_linear_cpu, py::arg("x"), py::arg("crow"), py::arg("col"), py::arg("values"),
        py::arg("N"), py::arg("bias") = py::none(), py::arg("isa") = "",
        "Block-CSR linear: x (M, Kp) float32, crow int32, col int32, values (nblocks, bn, bk) float32 -> (M, N)");
  m.def("sparse24_linear_cpu", &sparse24_linear_cpu, py::arg("x"), py::arg("values"), py::arg("meta"),
        py::arg("bias") = py::none(), py::arg("scale") = py::none(), py::arg("isa") = "",
        "2:4 linear: x (M, Kp) float32, values (N, Kp/2) float32 or int8 (then scale (N) float32, per output "
        "row), meta (Np, Kp/16) int16 -> (M, N) float32");
}

}  // namespace pycomp
