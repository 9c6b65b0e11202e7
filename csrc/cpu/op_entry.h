// Shared pieces of the ops' CPU entries (csrc/cpu/<family>/<family>_ops.h).
//
// An entry is what a pycomp torch.library op runs on the CPU: it takes the op's own arguments (x of any
// float dtype and shape (..., K)), checks them with the op's messages (the same rules, in the same order,
// as the Python checks in pycomp/ops/*.py, which still serve the fake, CUDA and reference paths), turns x
// into float32 rows, runs the kernel wrapper of *_bindings.h and gives the result x's dtype and shape.
// Doing this in C++ instead of Python took the per-call overhead of a small layer from about 30 us of
// Python (ten checks, reshapes and conversions at about a microsecond each) to a few microseconds.
#pragma once

#include <torch/extension.h>

#include <string>
#include <vector>

namespace pycomp {
namespace op_entry {

// torch.float32, as Python prints a dtype.
inline std::string dtype_str(at::ScalarType t) { return "torch." + std::string(c10::getDtypeNames(t).first); }

// (4, 8) or (4,), as Python prints a shape tuple.
inline std::string shape_str(at::IntArrayRef s) {
  std::string out = "(";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + (s.size() == 1 ? ",)" : ")");
}

// The checks every linear op starts with: x is a float tensor with a feature dimension of K.
inline void check_x(const std::string& op, const at::Tensor& x) {
  TORCH_CHECK(at::isFloatingType(x.scalar_type()), op, ": x must be a float tensor, got ", dtype_str(x.scalar_type()));
  TORCH_CHECK(x.dim() >= 1, op, ": x must have a feature dimension");
}

inline void check_features(const std::string& op, const at::Tensor& x, int64_t K) {
  TORCH_CHECK(x.size(-1) == K, op, ": x has ", x.size(-1), " features (last dim) but the weight expects K=", K);
}

inline void check_bias(const std::string& op, const c10::optional<at::Tensor>& bias, int64_t N) {
  TORCH_CHECK(!bias || (bias->dim() == 1 && bias->size(0) == N), op, ": bias must be a vector of N=", N, " values");
}

// Every tensor argument on x's device, in the order the op lists them.
inline void check_devices(const std::string& op, const at::Tensor& x,
                          std::initializer_list<std::pair<const char*, const at::Tensor*>> tensors) {
  for (const auto& [name, t] : tensors)
    TORCH_CHECK(t == nullptr || t->device() == x.device(), op, ": ", name, " is on ", t->device().str(),
                " but x is on ", x.device().str());
}

inline const at::Tensor* opt(const c10::optional<at::Tensor>& t) { return t ? &*t : nullptr; }

// (..., K) -> (M, K) in x's dtype with unit column stride (a view when x already is).
inline at::Tensor rows(const at::Tensor& x) {
  at::Tensor x2 = x.reshape({-1, x.size(-1)});
  return x2.stride(1) == 1 ? x2 : x2.contiguous();
}

// (..., K) -> (M, K) float32 with unit column stride (a view when x already is).
inline at::Tensor rows_f32(const at::Tensor& x) {
  const at::Tensor x2 = rows(x);
  return x2.scalar_type() == at::kFloat ? x2 : x2.to(at::kFloat);
}

// Pads the columns of float32 rows with zeros up to kp (the formats' aligned K).
inline at::Tensor pad_cols(const at::Tensor& x2, int64_t kp) {
  return x2.size(1) == kp ? x2 : at::constant_pad_nd(x2, {0, kp - x2.size(1)});
}

inline c10::optional<at::Tensor> bias_f32(const c10::optional<at::Tensor>& bias) {
  if (!bias) return c10::nullopt;
  return bias->to(at::kFloat).contiguous();
}

// (M, N) float32 -> (..., N) in x's dtype.
inline at::Tensor finish(const at::Tensor& out2, const at::Tensor& x) {
  std::vector<int64_t> shape(x.sizes().begin(), x.sizes().end());
  shape.back() = out2.size(1);
  return out2.to(x.scalar_type()).view(shape);
}

// The dense route. On a large batch of a small layer (the convolutions of a CNN through im2col: M in the
// thousands, K in the hundreds) the weight-only kernels lose to MKL's fp32 GEMM, since they decode the
// weight again for every block of rows. There an entry decodes the weight once, by running its own
// kernel on the identity (I_K @ W^T = W^T, exact: one non-zero product per output), and hands the GEMM
// to MKL. The identity pass costs K rows of kernel time, so the route needs M >= rows_per_k * K, and
// M >= kDenseMinM. rows_per_k is a process-wide setting (pycomp._C.set_cpu_dense_route; 0 turns the route
// off) so that tests and benchmarks can compare both routes.
constexpr int64_t kDenseMinM = 1024;
inline int64_t& dense_rows_per_k() {
  static int64_t rows_per_k = 8;
  return rows_per_k;
}

inline bool dense_route(int64_t M, int64_t K) {
  return dense_rows_per_k() > 0 && M >= kDenseMinM && M >= dense_rows_per_k() * K;
}

// A weight-only entry's product of rows x2 (M, K) and its weight, by its kernel or the dense route.
// run(rows, bias) -> (rows, N) float32 is the entry's kernel call on x2 as it is (float32, or a 16-bit float
// where the kernel takes those); decode(eye) -> (K, N) = W^T is the kernel on a float32 identity, exact (an
// entry whose kernel rounds x, int4's round_x, decodes without it). The dense route multiplies in float32.
template <class Run, class Decode>
at::Tensor weight_only_rows(const at::Tensor& x2, const c10::optional<at::Tensor>& bias, Run&& run, Decode&& decode) {
  if (!dense_route(x2.size(0), x2.size(1))) return run(x2, bias);
  const at::Tensor wt = decode(at::eye(x2.size(1), x2.options().dtype(at::kFloat)));
  const at::Tensor xf = x2.to(at::kFloat);
  return bias ? at::addmm(*bias, xf, wt) : at::mm(xf, wt);
}

// The same where the kernel is exact on the identity: decode is run without a bias.
template <class Run>
at::Tensor weight_only_rows(const at::Tensor& x2, const c10::optional<at::Tensor>& bias, Run&& run) {
  return weight_only_rows(x2, bias, run, [&](const at::Tensor& eye) { return run(eye, c10::nullopt); });
}

// The op's result for an empty batch: (..., N) in x's dtype.
inline at::Tensor empty_out(const at::Tensor& x, int64_t N) {
  std::vector<int64_t> shape(x.sizes().begin(), x.sizes().end());
  shape.back() = N;
  return at::empty(shape, x.options());
}

}  // namespace op_entry
}  // namespace pycomp
