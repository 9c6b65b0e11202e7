// Torch-facing wrapper of the int4 CUDA kernels; included by csrc/cuda/cuda_bindings.h
// (and so only by csrc/bindings.cpp, the one translation unit with torch headers).
//
// It checks devices, dtypes, shapes, strides and alignment with a message naming the
// op and the rule, runs on the current stream of x's device, and turns the launcher's
// error code into an exception.
#pragma once

#include <torch/extension.h>

#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <cstdint>

#include "cuda/binding_checks.h"
#include "cuda/int4/int4_cuda.h"

namespace pycomp {
namespace int4_cuda_binding {

// The GEMV reads 32 codes (16 bytes) of a row per load.
constexpr int64_t kKMultiple = 32;
constexpr int64_t kMaxM = 16;

using cuda_binding::aligned16;
using cuda_binding::check_on_device;

// x (M, K) float16/bfloat16 CUDA with M <= 16, packed (N, K/2) uint8, scales (N, G) float16,
// zeros (N, G) uint8 or None (zero point 8), bias (N) x.dtype or None, G = ceil(K / group_size)
// -> (M, N) x.dtype. K % 32 == 0; packed contiguous and 16-byte aligned.
inline at::Tensor w4a16_linear_cuda(const at::Tensor& x_in, const at::Tensor& packed, const at::Tensor& scales,
                                    const c10::optional<at::Tensor>& zeros, const c10::optional<at::Tensor>& bias,
                                    int64_t group_size, int64_t variant) {
  constexpr const char* op = "w4a16_linear_cuda";
  cuda_binding::check_variant(op, variant, cuda::kW4A16GemvVariants);
  TORCH_CHECK(x_in.is_cuda(), op, ": x must be a CUDA tensor, got one on ", x_in.device());
  TORCH_CHECK(x_in.dim() == 2, op, ": x must be 2-D (M, K), got ", x_in.dim(), "-D");
  const at::ScalarType xt = x_in.scalar_type();
  TORCH_CHECK(xt == at::kHalf || xt == at::kBFloat16, op, ": x must be float16 or bfloat16, got ", xt,
              " (other dtypes run on the Triton kernel)");
  const int64_t M = x_in.size(0), K = x_in.size(1);
  TORCH_CHECK(M <= kMaxM, op, ": M=", M, " rows; this decode kernel takes at most ", kMaxM,
              " (larger M runs on the Triton kernel)");
  TORCH_CHECK(K >= kKMultiple && K % kKMultiple == 0, op, ": K=", K, " must be a positive multiple of ", kKMultiple,
              " (the kernel reads 32 codes per load); other K run on the Triton kernel");
  TORCH_CHECK(group_size == 32 || group_size == 64 || group_size == 128, op,
              ": group_size must be 32, 64 or 128, got ", group_size);
  check_on_device(op, "packed", packed, x_in);
  TORCH_CHECK(packed.dim() == 2 && packed.scalar_type() == at::kByte && packed.size(1) == K / 2, op,
              ": packed must be a 2-D uint8 tensor (N, K/2) = (N, ", K / 2, "), got ", packed.scalar_type(), " ",
              packed.sizes());
  TORCH_CHECK(packed.is_contiguous(), op, ": packed must be contiguous (row-major N x K/2)");
  TORCH_CHECK(aligned16(packed), op,
              ": packed's data must be 16-byte aligned (it is read 16 bytes at a time)");
  const int64_t N = packed.size(0);
  const int64_t G = (K + group_size - 1) / group_size;
  check_on_device(op, "scales", scales, x_in);
  TORCH_CHECK(scales.dim() == 2 && scales.scalar_type() == at::kHalf && scales.size(0) == N && scales.size(1) == G &&
                  scales.is_contiguous(),
              op, ": scales must be a contiguous float16 tensor (N, G) = (", N, ", ", G, "), got ",
              scales.scalar_type(), " ", scales.sizes());
  if (zeros) {
    check_on_device(op, "zeros", *zeros, x_in);
    TORCH_CHECK(zeros->dim() == 2 && zeros->scalar_type() == at::kByte && zeros->size(0) == N &&
                    zeros->size(1) == G && zeros->is_contiguous(),
                op, ": zeros must be None or a contiguous uint8 tensor (N, G) = (", N, ", ", G, "), got ",
                zeros->scalar_type(), " ", zeros->sizes());
  }
  if (bias) {
    check_on_device(op, "bias", *bias, x_in);
    TORCH_CHECK(bias->dim() == 1 && bias->scalar_type() == xt && bias->size(0) == N && bias->is_contiguous(), op,
                ": bias must be a contiguous ", xt, " vector of N=", N, " values");
  }
  at::Tensor out = at::empty({M, N}, x_in.options());
  if (M == 0 || N == 0) return out;
  // Unit column stride and 16-byte aligned rows: a copy only when x has neither.
  at::Tensor x = x_in.stride(1) == 1 ? x_in : x_in.contiguous();
  int64_t ldx = M > 1 ? x.stride(0) : K;
  if (!aligned16(x) || (ldx * 2) % 16 != 0) {
    x = x.clone(at::MemoryFormat::Contiguous);
    ldx = K;
  }
  const c10::cuda::CUDAGuard guard(x.device());
  const int64_t ws_floats = cuda::w4a16_gemv_workspace(M, N, K, static_cast<int>(variant));
  at::Tensor ws;
  if (ws_floats > 0) ws = at::empty({ws_floats}, x.options().dtype(at::kFloat));
  const cudaError_t err = cuda::w4a16_gemv(
      xt == at::kHalf ? cuda::DType::kF16 : cuda::DType::kBF16, x.data_ptr(), ldx, packed.data_ptr<uint8_t>(),
      scales.data_ptr(), zeros ? zeros->data_ptr<uint8_t>() : nullptr, bias ? bias->data_ptr() : nullptr,
      out.data_ptr(), N, ws_floats > 0 ? ws.data_ptr<float>() : nullptr, M, N, K, static_cast<int>(group_size),
      c10::cuda::getCurrentCUDAStream().stream(), static_cast<int>(variant));
  cuda_binding::check_launch(op, err);
  return out;
}

}  // namespace int4_cuda_binding

inline void register_int4_cuda(pybind11::module_& m) {
  namespace py = pybind11;
  m.def("w4a16_linear_cuda", &int4_cuda_binding::w4a16_linear_cuda, py::arg("x"), py::arg("packed"),
        py::arg("scales"), py::arg("zeros"), py::arg("bias"), py::arg("group_size"), py::arg("variant") = 0,
        "Weight-only int4 linear for decode (k-nibble layout): x (M <= 16, K) float16/bfloat16 CUDA, packed (N, K/2) "
        "uint8, scales (N, G) float16, zeros (N, G) uint8 or None (zero point 8), bias (N) x.dtype or None -> "
        "(M, N) x.dtype. K % 32 == 0, group_size in (32, 64, 128). variant: 0 (default kernel) or a candidate "
        "from w4a16_gemv_cuda_variants() (group 128, K % 512 == 0; other shapes run variant 0).");
  m.def("w4a16_gemv_cuda_workspace", &cuda::w4a16_gemv_workspace, py::arg("M"), py::arg("N"), py::arg("K"),
        py::arg("variant") = 0,
        "Float32 split-K workspace elements w4a16_linear_cuda allocates for this shape on the current device "
        "(0: the shape runs unsplit)");
  m.def(
      "w4a16_gemv_cuda_variants",
      [] {
        py::list l;
        for (int v : cuda::kW4A16GemvVariants) l.append(v);
        return l;
      },
      "The variant numbers w4a16_linear_cuda takes, ascending (0 is the default kernel; numbers of removed variants "
      "are skipped)");
  m.def(
      "w4a16_gemv_cuda_launch",
      [](int64_t M, int64_t N, int64_t K, int64_t group_size, int64_t variant) {
        const cuda::W4A16GemvLaunch l =
            cuda::w4a16_gemv_launch(M, N, K, static_cast<int>(group_size), static_cast<int>(variant));
        py::dict d;
        d["variant_runs"] = l.ok;
        d["rows"] = l.rows;
        d["warps"] = l.warps;
        d["stages"] = l.stages;
        d["fold"] = l.fold;
        d["x_ring"] = l.x_ring;
        d["blocks"] = l.blocks;
        d["splits"] = l.splits;
        d["smem"] = l.smem;
        d["persistent"] = l.persistent;
        return d;
      },
      py::arg("M"), py::arg("N"), py::arg("K"), py::arg("group_size"), py::arg("variant"),
      "The launch w4a16_linear_cuda makes for this shape and variant on the current device (variant_runs False: "
      "the default kernel runs instead)");
}

}  // namespace pycomp
