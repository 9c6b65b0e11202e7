// Torch-facing wrappers of the 2:4 CUDA kernels; included by csrc/cuda/cuda_bindings.h (and so only by
// csrc/bindings.cpp) when built with PYCOMP_WITH_CUDA. They check devices, dtypes, shapes and
// alignment with messages naming the op and the rule, and run on the tensors' current stream.
#pragma once

#include <torch/extension.h>

#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <cstdint>

#include "cuda/binding_checks.h"
#include "cuda/sparse/sparse_cuda.h"

namespace pycomp {
namespace sparse_cuda_binding {

// x (M, Kp) and values (N, Kp/2) of one dtype (float16 or bfloat16), meta (Np, Kp/16) int16 in the
// reordered layout, bias (N) of that dtype or None -> (M, N). gemv: the M <= 16 configuration.
// variant: the kernel (csrc/cuda/sparse/sparse_cuda.h; 0, the default, is the established one).
inline at::Tensor sparse24_linear_cuda(const char* op, const at::Tensor& x_in, const at::Tensor& values,
                                       const at::Tensor& meta, const c10::optional<at::Tensor>& bias, bool gemv,
                                       int64_t variant) {
  if (gemv)
    cuda_binding::check_variant(op, variant, cuda::kSparse24GemvVariants);
  else
    cuda_binding::check_variant(op, variant, cuda::kSparse24GemmVariants);
  TORCH_CHECK(x_in.is_cuda() && values.is_cuda() && meta.is_cuda(), op, ": x, values and meta must be CUDA tensors");
  TORCH_CHECK(values.device() == x_in.device() && meta.device() == x_in.device(), op,
              ": values and meta must be on x's device ", x_in.device());
  const auto t = values.scalar_type();
  TORCH_CHECK(t == at::kHalf || t == at::kBFloat16, op, ": values must be float16 or bfloat16 (mma.sp), got ", t);
  TORCH_CHECK(x_in.dim() == 2 && x_in.scalar_type() == t, op, ": x must be a 2-D ", t, " tensor (M, Kp)");
  TORCH_CHECK(values.dim() == 2 && values.is_contiguous(), op, ": values must be a contiguous (N, Kp/2) tensor");
  const int64_t N = values.size(0), Kp = values.size(1) * 2, M = x_in.size(0);
  TORCH_CHECK(Kp >= 32 && Kp % 32 == 0, op, ": Kp=", Kp, " must be a positive multiple of 32 (the format pads K)");
  TORCH_CHECK(x_in.size(1) == Kp, op, ": x has ", x_in.size(1), " columns, the format's padded K is ", Kp);
  TORCH_CHECK(meta.scalar_type() == at::kShort && meta.dim() == 2 && meta.is_contiguous() && meta.size(1) == Kp / 16 &&
                  meta.size(0) % 32 == 0 && meta.size(0) >= N,
              op, ": meta must be a contiguous int16 (Np, ", Kp / 16, ") tensor, Np a multiple of 32 >= N=", N);
  TORCH_CHECK(!gemv || M <= 16, op, ": the GEMV serves M <= 16, got M=", M);
  if (bias) {
    TORCH_CHECK(bias->device() == x_in.device() && bias->scalar_type() == t && bias->dim() == 1 &&
                    bias->is_contiguous() && bias->size(0) == N,
                op, ": bias must be a contiguous ", t, " vector of N=", N, " values on x's device");
  }
  at::Tensor out = at::empty({M, N}, x_in.options());
  if (M == 0 || N == 0) return out;
  at::Tensor x = x_in.is_contiguous() ? x_in : x_in.contiguous();
  // The kernels read x in pairs (4 bytes): a view starting at an odd element is copied.
  if (reinterpret_cast<uintptr_t>(x.data_ptr()) % 4) x = x.clone();
  // Variants > 0 read values and meta (and the GEMM x) 16 bytes at a time: copy misaligned views.
  const bool wide = variant > 0;
  const at::Tensor v = wide && !cuda_binding::aligned16(values) ? values.clone() : values;
  const at::Tensor e = wide && !cuda_binding::aligned16(meta) ? meta.clone() : meta;
  if (wide && !gemv) x = cuda_binding::rows_aligned16(x);
  const c10::cuda::CUDAGuard guard(x.device());
  const cudaError_t err = cuda::sparse24_linear(
      t == at::kHalf ? cuda::DType::kF16 : cuda::DType::kBF16, x.data_ptr(), cuda_binding::row_stride(x),
      v.data_ptr(), e.data_ptr<int16_t>(), e.size(0), bias ? bias->data_ptr() : nullptr, out.data_ptr(), N, M, N, Kp,
      gemv, c10::cuda::getCurrentCUDAStream().stream(), static_cast<int>(variant));
  cuda_binding::check_launch(op, err);
  return out;
}

}  // namespace sparse_cuda_binding

inline void register_sparse_cuda(pybind11::module_& m) {
  namespace py = pybind11;
  using sparse_cuda_binding::sparse24_linear_cuda;
  m.def("sparse24_gemv_cuda",
        [](const at::Tensor& x, const at::Tensor& v, const at::Tensor& e, const c10::optional<at::Tensor>& b,
           int64_t variant) { return sparse24_linear_cuda("sparse24_gemv_cuda", x, v, e, b, true, variant); },
        py::arg("x"), py::arg("values"), py::arg("meta"), py::arg("bias") = py::none(), py::arg("variant") = 0,
        "2:4 linear for M <= 16 on sparse tensor cores: x (M, Kp), values (N, Kp/2) float16|bfloat16, "
        "meta (Np, Kp/16) int16, bias (N) or None -> (M, N); variant: one of sparse24_gemv_cuda_variants() (0, the "
        "default; see sparse_cuda.h)");
  m.def("sparse24_gemm_cuda",
        [](const at::Tensor& x, const at::Tensor& v, const at::Tensor& e, const c10::optional<at::Tensor>& b,
           int64_t variant) { return sparse24_linear_cuda("sparse24_gemm_cuda", x, v, e, b, false, variant); },
        py::arg("x"), py::arg("values"), py::arg("meta"), py::arg("bias") = py::none(), py::arg("variant") = 0,
        "2:4 GEMM on sparse tensor cores (mma.sp m16n8k32): x (M, Kp), values (N, Kp/2) float16|bfloat16, "
        "meta (Np, Kp/16) int16, bias (N) or None -> (M, N); variant 0 (default; operands from global memory), "
        "1 (cp.async tiles of 128x128 weight rows x tokens), 4 or 5 (128x128 or 256x128 with fragments loaded a "
        "step ahead)");
  const auto list = [](const auto& variants) {
    py::list l;
    for (int v : variants) l.append(v);
    return l;
  };
  m.def("sparse24_gemv_cuda_variants", [list] { return list(cuda::kSparse24GemvVariants); },
        "The variant numbers sparse24_gemv_cuda takes, ascending (0 is the default kernel)");
  m.def("sparse24_gemm_cuda_variants", [list] { return list(cuda::kSparse24GemmVariants); },
        "The variant numbers sparse24_gemm_cuda takes, ascending (0 is the default kernel)");
}

}  // namespace pycomp
