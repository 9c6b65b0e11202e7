// Checks and conversions every torch-facing CUDA wrapper shares (csrc/cuda/*_bindings.h and
// cuda/<family>/<family>_bindings.h); torch headers, so included only through csrc/bindings.cpp.
#pragma once

#include <torch/extension.h>

#include <cstdint>
#include <string>

#include "cuda/int8/int8_cuda.h"  // DType

namespace pycomp {
namespace cuda_binding {

inline cuda::DType float_dtype(const char* op, const char* name, at::ScalarType t) {
  switch (t) {
    case at::kFloat: return cuda::DType::kF32;
    case at::kHalf: return cuda::DType::kF16;
    case at::kBFloat16: return cuda::DType::kBF16;
    default: break;
  }
  TORCH_CHECK(false, op, ": ", name, " must be float32, float16 or bfloat16, got ", t);
  return cuda::DType::kF32;
}

inline void check_launch(const char* op, cudaError_t err) {
  TORCH_CHECK(err == cudaSuccess, op, ": kernel launch failed: ", cudaGetErrorString(err),
              err == cudaErrorInvalidValue ? " (arguments the wrapper accepted were refused by the launcher: a bug)"
                                           : "");
}

inline bool aligned16(const at::Tensor& t) { return reinterpret_cast<uintptr_t>(t.data_ptr()) % 16 == 0; }

// (M, K) with unit column stride (a copy only when x has another column stride).
inline at::Tensor unit_col_stride(const at::Tensor& x) { return x.stride(1) == 1 ? x : x.contiguous(); }

// Row stride handed to a kernel: any value serves a single row, so use the
// aligned one.
inline int64_t row_stride(const at::Tensor& x) { return x.size(0) > 1 ? x.stride(0) : x.size(1); }

// Rows whose starts are 16-byte aligned: a fresh contiguous copy when x's are not.
inline at::Tensor rows_aligned16(const at::Tensor& x) {
  const bool ok = aligned16(x) && (row_stride(x) * static_cast<int64_t>(x.element_size())) % 16 == 0;
  return ok ? x : x.clone(at::MemoryFormat::Contiguous);
}

inline void check_on_device(const char* op, const char* name, const at::Tensor& t, const at::Tensor& x) {
  TORCH_CHECK(t.device() == x.device(), op, ": ", name, " is on ", t.device(), " but x is on ", x.device());
}

// `variant` must be one of `valid` (a kernel family's variant numbers; those of removed variants stay
// unused, so a number always names the same kernel).
template <size_t kN>
inline void check_variant(const char* op, int64_t variant, const int (&valid)[kN]) {
  std::string list;
  for (int v : valid) {
    if (v == variant) return;
    list += (list.empty() ? "" : ", ") + std::to_string(v);
  }
  TORCH_CHECK(false, op, ": there is no kernel variant ", variant, "; the variants are ", list,
              " (0 is the default kernel)");
}

}  // namespace cuda_binding
}  // namespace pycomp
