// CPU entries of the sparse ops (pycomp/ops/sparse.py registers them for float32 values, and int8 values
// for 2:4; other value dtypes run the reference there); see csrc/cpu/op_entry.h. Included once, by
// csrc/bindings.cpp.
#pragma once

#include <torch/extension.h>

#include <string>

#include "cpu/op_entry.h"
#include "cpu/sparse/sparse_bindings.h"

namespace pycomp {
namespace sparse_ops {

using namespace op_entry;

constexpr int64_t kAlign24 = 32;        // pycomp.formats.sparse.K_ALIGN_24 and N_ALIGN_24
constexpr int64_t kMaxKInt16 = 32768;   // pycomp.formats.sparse.MAX_K_INT16

// pycomp.ops.sparse._check_common.
inline void check_common(const std::string& op, const at::Tensor& x, int64_t n, int64_t k,
                         const c10::optional<at::Tensor>& bias,
                         std::initializer_list<std::pair<const char*, const at::Tensor*>> tensors) {
  check_x(op, x);
  check_features(op, x, k);
  check_bias(op, bias, n);
  check_devices(op, x, tensors);
  check_devices(op, x, {{"bias", opt(bias)}});
}

inline at::Tensor sparse24_linear(const at::Tensor& x, const at::Tensor& values, const at::Tensor& meta,
                                  int64_t in_features, const c10::optional<at::Tensor>& bias,
                                  const c10::optional<at::Tensor>& scale) {
  const std::string op = "pycomp.sparse24_linear";
  const int64_t kp = (in_features + kAlign24 - 1) / kAlign24 * kAlign24;
  const bool int8 = values.scalar_type() == at::kChar;
  TORCH_CHECK(values.dim() == 2 && (at::isFloatingType(values.scalar_type()) || int8) && values.size(1) * 2 == kp,
              op, ": values must be a float or int8 (N, ", kp / 2, ") tensor for K=", in_features, ", got ",
              dtype_str(values.scalar_type()), " ", shape_str(values.sizes()));
  TORCH_CHECK(int8 == scale.has_value(), op, ": int8 values need a per-row scale and float values take none");
  TORCH_CHECK(!scale || (scale->scalar_type() == at::kFloat && scale->dim() == 1 && scale->size(0) == values.size(0)),
              op, ": scale must be float32 of shape (", values.size(0), ",)");
  TORCH_CHECK(meta.dim() == 2 && meta.scalar_type() == at::kShort && meta.size(1) * 16 == kp &&
                  meta.size(0) % kAlign24 == 0 && meta.size(0) >= values.size(0),
              op, ": meta must be int16 (Np, ", kp / 16, "), Np a multiple of 32 >= N, got ",
              dtype_str(meta.scalar_type()), " ", shape_str(meta.sizes()));
  check_common(op, x, values.size(0), in_features, bias,
               {{"values", &values}, {"meta", &meta}, {"scale", opt(scale)}});
  const at::Tensor x2 = rows_f32(x);
  if (x2.size(0) == 0) return empty_out(x, values.size(0));
  c10::optional<at::Tensor> s;
  if (scale) s = scale->contiguous();
  const at::Tensor v = values.contiguous(), m = meta.contiguous();
  return finish(weight_only_rows(pad_cols(x2, kp), bias_f32(bias),
                                 [&](const at::Tensor& rows, const c10::optional<at::Tensor>& b) {
                                   return sparse_binding::sparse24_linear_cpu(rows, v, m, b, s, "");
                                 }),
                x);
}

inline at::Tensor csr_linear(const at::Tensor& x, const at::Tensor& crow, const at::Tensor& col,
                             const at::Tensor& values, int64_t in_features, const c10::optional<at::Tensor>& bias) {
  const std::string op = "pycomp.csr_linear";
  TORCH_CHECK(crow.dim() == 1 && crow.scalar_type() == at::kInt && crow.size(0) >= 1, op,
              ": crow must be a 1-D int32 tensor of N+1 row offsets");
  const at::ScalarType index = in_features <= kMaxKInt16 ? at::kShort : at::kInt;
  TORCH_CHECK(col.dim() == 1 && col.scalar_type() == index && values.dim() == 1 && col.size(0) == values.size(0) &&
                  at::isFloatingType(values.scalar_type()),
              op, ": col must be ", dtype_str(index), " (K=", in_features,
              ") and values float, both 1-D of length nnz");
  const int64_t N = crow.size(0) - 1;
  check_common(op, x, N, in_features, bias, {{"crow", &crow}, {"col", &col}, {"values", &values}});
  const at::Tensor x2 = rows_f32(x);
  if (x2.size(0) == 0) return empty_out(x, N);
  const at::Tensor r = crow.contiguous(), c = col.contiguous(), v = values.contiguous();
  return finish(weight_only_rows(x2, bias_f32(bias),
                                 [&](const at::Tensor& rows, const c10::optional<at::Tensor>& b) {
                                   return sparse_binding::csr_linear_cpu(rows, r, c, v, in_features, b, "");
                                 }),
                x);
}

inline at::Tensor bsr_linear(const at::Tensor& x, const at::Tensor& crow, const at::Tensor& col,
                             const at::Tensor& values, int64_t out_features, int64_t in_features,
                             const c10::optional<at::Tensor>& bias) {
  const std::string op = "pycomp.bsr_linear";
  TORCH_CHECK(values.dim() == 3 && at::isFloatingType(values.scalar_type()), op,
              ": values must be a float (nblocks, bn, bk) tensor");
  const int64_t bn = values.size(1), bk = values.size(2);
  const int64_t block_rows = bn > 0 ? (out_features + bn - 1) / bn : -1;
  TORCH_CHECK(crow.dim() == 1 && crow.scalar_type() == at::kInt && crow.size(0) == block_rows + 1, op,
              ": crow must be int32 with ceil(N/bn)+1 = ", block_rows + 1, " entries");
  TORCH_CHECK(col.dim() == 1 && col.scalar_type() == at::kInt && col.size(0) == values.size(0), op,
              ": col must be int32 with one block column per block");
  check_common(op, x, out_features, in_features, bias, {{"crow", &crow}, {"col", &col}, {"values", &values}});
  const at::Tensor x2 = rows_f32(x);
  if (x2.size(0) == 0) return empty_out(x, out_features);
  const int64_t kp = bk > 0 ? (in_features + bk - 1) / bk * bk : in_features;
  const at::Tensor r = crow.contiguous(), c = col.contiguous(), v = values.contiguous();
  return finish(weight_only_rows(pad_cols(x2, kp), bias_f32(bias),
                                 [&](const at::Tensor& rows, const c10::optional<at::Tensor>& b) {
                                   return sparse_binding::bsr_linear_cpu(rows, r, c, v, out_features, b, "");
                                 }),
                x);
}

}  // namespace sparse_ops

inline void register_sparse_ops(pybind11::module_& m) {
  namespace py = pybind11;
  using namespace sparse_ops;  // bias and scale take their schema defaults: the dispatcher leaves them out then
  m.def("sparse24_linear_op", &sparse24_linear, py::arg("x"), py::arg("values"), py::arg("meta"),
        py::arg("in_features"), py::arg("bias") = py::none(), py::arg("scale") = py::none(),
        "CPU entry of pycomp::sparse24_linear (float32 or int8 values)");
  m.def("csr_linear_op", &csr_linear, py::arg("x"), py::arg("crow"), py::arg("col"), py::arg("values"),
        py::arg("in_features"), py::arg("bias") = py::none(), "CPU entry of pycomp::csr_linear (float32 values)");
  m.def("bsr_linear_op", &bsr_linear, py::arg("x"), py::arg("crow"), py::arg("col"), py::arg("values"),
        py::arg("out_features"), py::arg("in_features"), py::arg("bias") = py::none(),
        "CPU entry of pycomp::bsr_linear (float32 values)");
}

}  // namespace pycomp
