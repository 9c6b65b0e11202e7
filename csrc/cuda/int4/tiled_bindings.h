// Torch-facing wrapper of the experimental tile16x64 int4 GEMV (tiled_cuda.h); included by
// csrc/cuda/cuda_bindings.h. Not dispatched by the ops: benchmarks/gpu_sweep_tiled.py checks and times it.
#pragma once

#include <torch/extension.h>

#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <cstdint>

#include "cuda/binding_checks.h"
#include "cuda/int4/tiled_cuda.h"

namespace pycomp {
namespace int4_tiled_binding {

// x (M <= 16, K) float16/bfloat16 CUDA, tiles (N/16 * K/64 * 512) uint8 (pycomp.formats.int4.pack_tile16x64),
// scales (N, G) float16, zeros (N, G) uint8 or None, bias (N) x.dtype or None -> (M, N) x.dtype.
inline at::Tensor w4a16_tiled_linear_cuda(const at::Tensor& x_in, const at::Tensor& tiles, const at::Tensor& scales,
                                          const c10::optional<at::Tensor>& zeros,
                                          const c10::optional<at::Tensor>& bias, int64_t group_size, int64_t config) {
  constexpr const char* op = "w4a16_tiled_linear_cuda";
  TORCH_CHECK(x_in.is_cuda() && x_in.dim() == 2, op, ": x must be a 2-D CUDA tensor");
  const at::ScalarType xt = x_in.scalar_type();
  TORCH_CHECK(xt == at::kHalf || xt == at::kBFloat16, op, ": x must be float16 or bfloat16, got ", xt);
  const int64_t M = x_in.size(0), K = x_in.size(1);
  TORCH_CHECK(M >= 1 && M <= 16, op, ": M=", M, "; this kernel takes 1 to 16 rows");
  TORCH_CHECK(group_size == 64 || group_size == 128, op, ": group_size must be 64 or 128, got ", group_size);
  TORCH_CHECK(K > 0 && K % (16 * group_size) == 0 && K / group_size <= 128, op, ": K=", K,
              " must be a multiple of 16 groups (", 16 * group_size, ") and at most 128 groups (the staged table)");
  TORCH_CHECK(config >= 0 && config < cuda::w4a16_tiled_configs(), op, ": config must be in [0, ",
              cuda::w4a16_tiled_configs(), "), got ", config);
  cuda_binding::check_on_device(op, "scales", scales, x_in);
  TORCH_CHECK(scales.dim() == 2 && scales.scalar_type() == at::kHalf && scales.is_contiguous() &&
                  scales.size(1) == K / group_size,
              op, ": scales must be a contiguous float16 (N, K / group_size) tensor, got ", scales.sizes());
  const int64_t N = scales.size(0);
  TORCH_CHECK(N % 16 == 0 && N > 0, op, ": N=", N, " must be a positive multiple of 16 (one tile's rows)");
  cuda_binding::check_on_device(op, "tiles", tiles, x_in);
  TORCH_CHECK(tiles.scalar_type() == at::kByte && tiles.is_contiguous() && tiles.numel() == N * K / 2 &&
                  cuda_binding::aligned16(tiles),
              op, ": tiles must be contiguous, 16-byte aligned uint8 holding N * K / 2 = ", N * K / 2, " bytes");
  if (zeros) {
    cuda_binding::check_on_device(op, "zeros", *zeros, x_in);
    TORCH_CHECK(zeros->scalar_type() == at::kByte && zeros->is_contiguous() && zeros->sizes() == scales.sizes(), op,
                ": zeros must be None or contiguous uint8 shaped like scales");
  }
  if (bias) {
    cuda_binding::check_on_device(op, "bias", *bias, x_in);
    TORCH_CHECK(bias->dim() == 1 && bias->scalar_type() == xt && bias->size(0) == N && bias->is_contiguous(), op,
                ": bias must be a contiguous ", xt, " vector of N=", N, " values");
  }
  const at::Tensor x = cuda_binding::rows_aligned16(cuda_binding::unit_col_stride(x_in));
  at::Tensor out = at::empty({M, N}, x.options());
  const c10::cuda::CUDAGuard guard(x.device());
  cuda_binding::check_launch(
      op, cuda::w4a16_tiled_gemv(xt == at::kHalf ? cuda::DType::kF16 : cuda::DType::kBF16, x.data_ptr(),
                                 cuda_binding::row_stride(x), tiles.data_ptr<uint8_t>(), scales.data_ptr(),
                                 zeros ? zeros->data_ptr<uint8_t>() : nullptr, bias ? bias->data_ptr() : nullptr,
                                 out.data_ptr(), N, M, N, K, static_cast<int>(group_size), static_cast<int>(config),
                                 c10::cuda::getCurrentCUDAStream().stream()));
  return out;
}

}  // namespace int4_tiled_binding

inline void register_int4_tiled_cuda(pybind11::module_& m) {
  namespace py = pybind11;
  m.def("w4a16_tiled_linear_cuda", &int4_tiled_binding::w4a16_tiled_linear_cuda, py::arg("x"), py::arg("tiles"),
        py::arg("scales"), py::arg("zeros"), py::arg("bias"), py::arg("group_size"), py::arg("config") = 0,
        "Experimental int4 decode GEMV on the tile16x64 layout (pycomp.formats.int4.pack_tile16x64): x (M <= 16, K) "
        "float16/bfloat16 CUDA -> (M, N). N % 16 == 0, group_size 64 or 128, K a multiple of 16 groups, at most 128 groups.");
  m.def("w4a16_tiled_cuda_configs", &cuda::w4a16_tiled_configs,
        "Number of launch configurations of w4a16_tiled_linear_cuda");
}

}  // namespace pycomp
