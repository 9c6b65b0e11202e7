// Torch-facing wrappers of the CUDA kernels; included only by csrc/bindings.cpp
// (the one translation unit with torch headers) when built with PYCOMP_WITH_CUDA.
//
// Each wrapper checks devices, dtypes, shapes, strides and alignment with a
// message naming the op and the rule, runs on the current stream of the
// tensors' device, and turns the launcher's error code into an exception.
#pragma once

#include <torch/extension.h>

#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <cstdint>
#include <string>

#include "cuda/binary/binary_bindings.h"
#include "cuda/binding_checks.h"
#include "cuda/int4/int4_bindings.h"
#include "cuda/int4/tiled_bindings.h"
#include "cuda/int8/int8_cuda.h"
#include "cuda/sparse/sparse_bindings.h"

namespace pycomp {
namespace cuda_binding {

// K alignment of the int8 CUDA kernels: they move 16 int8 per load.
constexpr int64_t kKMultiple = 16;

inline void check_k(const char* op, int64_t K) {
  TORCH_CHECK(K >= kKMultiple && K % kKMultiple == 0, op, ": K=", K, " must be a positive multiple of ", kKMultiple,
              " (the kernel reads 16 int8 per load); other K run on the Triton kernels");
}

// qweight (N, K) int8 contiguous 16-byte aligned; wscale (N) float32 contiguous;
// bias (N) of bias_dtype contiguous, or None.
inline void check_weights(const char* op, const at::Tensor& x, int64_t K, const at::Tensor& qweight,
                          const at::Tensor& wscale, const c10::optional<at::Tensor>& bias,
                          at::ScalarType bias_dtype) {
  check_on_device(op, "qweight", qweight, x);
  TORCH_CHECK(qweight.dim() == 2 && qweight.scalar_type() == at::kChar, op,
              ": qweight must be a 2-D int8 tensor (N, K), got ", qweight.dim(), "-D ", qweight.scalar_type());
  TORCH_CHECK(qweight.is_contiguous(), op, ": qweight must be contiguous (row-major N x K)");
  TORCH_CHECK(qweight.size(1) == K, op, ": x has K=", K, " features but qweight has K=", qweight.size(1));
  TORCH_CHECK(aligned16(qweight), op, ": qweight's data must be 16-byte aligned (it is read 16 bytes at a time)");
  const int64_t N = qweight.size(0);
  check_on_device(op, "wscale", wscale, x);
  TORCH_CHECK(wscale.dim() == 1 && wscale.scalar_type() == at::kFloat && wscale.is_contiguous() &&
                  wscale.size(0) == N,
              op, ": wscale must be a contiguous float32 vector of N=", N, " scales");
  if (bias) {
    check_on_device(op, "bias", *bias, x);
    TORCH_CHECK(bias->dim() == 1 && bias->scalar_type() == bias_dtype && bias->is_contiguous() &&
                    bias->size(0) == N,
                op, ": bias must be a contiguous ", bias_dtype, " vector of N=", N, " values");
  }
}

// x (M, K) float32/float16/bfloat16 CUDA -> (q (M, K) int8, scale (M) float32).
inline std::tuple<at::Tensor, at::Tensor> quantize_per_token_int8_cuda(const at::Tensor& x_in) {
  constexpr const char* op = "quantize_per_token_int8_cuda";
  TORCH_CHECK(x_in.is_cuda(), op, ": x must be a CUDA tensor, got one on ", x_in.device());
  TORCH_CHECK(x_in.dim() == 2, op, ": x must be 2-D (M, K), got ", x_in.dim(), "-D");
  const cuda::DType xt = float_dtype(op, "x", x_in.scalar_type());
  TORCH_CHECK(x_in.size(1) > 0, op, ": x must have at least one feature (K >= 1)");
  const at::Tensor x = unit_col_stride(x_in);
  const int64_t M = x.size(0), K = x.size(1);
  at::Tensor q = at::empty({M, K}, x.options().dtype(at::kChar));
  at::Tensor scale = at::empty({M}, x.options().dtype(at::kFloat));
  if (M == 0) return {q, scale};
  const c10::cuda::CUDAGuard guard(x.device());
  check_launch(op, cuda::quantize_per_token_int8(xt, x.data_ptr(), row_stride(x), q.data_ptr<int8_t>(),
                                                 scale.data_ptr<float>(), M, K,
                                                 c10::cuda::getCurrentCUDAStream().stream()));
  return {q, scale};
}

// x (M, K) bf16/fp16/fp32, qweight (N, K) int8, wscale (N) fp32, bias (N) x.dtype
// or None -> (M, N) x.dtype. Built for M <= 16; K % 16 == 0. variant: 0 (default) .. w8a16_gemv_variants() - 1.
inline at::Tensor w8a16_linear_cuda(const at::Tensor& x_in, const at::Tensor& qweight, const at::Tensor& wscale,
                                    const c10::optional<at::Tensor>& bias, int64_t variant) {
  constexpr const char* op = "w8a16_linear_cuda";
  TORCH_CHECK(variant >= 0 && variant < cuda::w8a16_gemv_variants(), op, ": variant must be in [0, ",
              cuda::w8a16_gemv_variants(), "), got ", variant, " (0 is the default kernel)");
  TORCH_CHECK(x_in.is_cuda(), op, ": x must be a CUDA tensor, got one on ", x_in.device());
  TORCH_CHECK(x_in.dim() == 2, op, ": x must be 2-D (M, K), got ", x_in.dim(), "-D");
  const cuda::DType t = float_dtype(op, "x", x_in.scalar_type());
  const int64_t K = x_in.size(1);
  check_k(op, K);
  check_weights(op, x_in, K, qweight, wscale, bias, x_in.scalar_type());
  const int64_t M = x_in.size(0), N = qweight.size(0);
  TORCH_CHECK(M <= 16 * int64_t{65535}, op, ": M=", M, " is too large for this decode kernel (M <= 16 is its range)");
  at::Tensor out = at::empty({M, N}, x_in.options());
  if (M == 0 || N == 0) return out;
  const at::Tensor x = rows_aligned16(unit_col_stride(x_in));
  const c10::cuda::CUDAGuard guard(x.device());
  check_launch(op, cuda::w8a16_linear(t, x.data_ptr(), row_stride(x), qweight.data_ptr<int8_t>(),
                                      wscale.data_ptr<float>(), bias ? bias->data_ptr() : nullptr, out.data_ptr(), N,
                                      M, N, K, c10::cuda::getCurrentCUDAStream().stream(),
                                      static_cast<int>(variant)));
  return out;
}

inline cuda::GemmTile gemm_tile(const char* op, const std::string& tile) {
  if (tile == "auto") return cuda::GemmTile::kAuto;
  if (tile == "128x256") return cuda::GemmTile::k128x256;
  if (tile == "64x128") return cuda::GemmTile::k64x128;
  TORCH_CHECK(false, op, ": tile must be 'auto', '128x256' or '64x128', got '", tile, "'");
  return cuda::GemmTile::kAuto;
}

inline const char* gemm_tile_name(cuda::GemmTile tile) {
  return tile == cuda::GemmTile::k64x128 ? "64x128" : "128x256";
}

// xq (M, K) int8, xscale (M) fp32, qweight (N, K) int8, wscale (N) fp32, bias (N)
// out_dtype or None -> (M, N) out_dtype in {float32, float16, bfloat16}:
// out = (xq @ qweight^T) * xscale[:, None] * wscale[None, :] + bias. K % 16 == 0.
inline at::Tensor w8a8_gemm_cuda(const at::Tensor& xq_in, const at::Tensor& xscale, const at::Tensor& qweight,
                                 const at::Tensor& wscale, const c10::optional<at::Tensor>& bias,
                                 at::ScalarType out_dtype, const std::string& tile) {
  constexpr const char* op = "w8a8_gemm_cuda";
  TORCH_CHECK(xq_in.is_cuda(), op, ": xq must be a CUDA tensor, got one on ", xq_in.device());
  TORCH_CHECK(xq_in.dim() == 2 && xq_in.scalar_type() == at::kChar, op, ": xq must be a 2-D int8 tensor (M, K), got ",
              xq_in.dim(), "-D ", xq_in.scalar_type());
  const cuda::DType out_t = float_dtype(op, "out_dtype", out_dtype);
  const cuda::GemmTile tile_id = gemm_tile(op, tile);
  const int64_t M = xq_in.size(0), K = xq_in.size(1);
  check_k(op, K);
  check_on_device(op, "xscale", xscale, xq_in);
  TORCH_CHECK(xscale.dim() == 1 && xscale.scalar_type() == at::kFloat && xscale.is_contiguous() &&
                  xscale.size(0) == M,
              op, ": xscale must be a contiguous float32 vector of M=", M, " scales");
  check_weights(op, xq_in, K, qweight, wscale, bias, out_dtype);
  const int64_t N = qweight.size(0);
  at::Tensor out = at::empty({M, N}, xq_in.options().dtype(out_dtype));
  if (M == 0 || N == 0) return out;
  const at::Tensor xq = rows_aligned16(unit_col_stride(xq_in));
  const c10::cuda::CUDAGuard guard(xq.device());
  check_launch(op, cuda::w8a8_gemm(xq.data_ptr<int8_t>(), row_stride(xq), xscale.data_ptr<float>(),
                                   qweight.data_ptr<int8_t>(), wscale.data_ptr<float>(),
                                   bias ? bias->data_ptr() : nullptr, out_t, out.data_ptr(), M, N, K, tile_id,
                                   c10::cuda::getCurrentCUDAStream().stream()));
  return out;
}

inline pybind11::dict cuda_kernels_info() {
  namespace py = pybind11;
  py::dict d;
  d["archs"] = py::make_tuple("sm_80", "sm_90a");  // the targets setup.py builds by default (PYCOMP_CUDA_ARCHS)
  d["k_multiple"] = kKMultiple;
  d["weight_layout"] = "int8 (N, K) row-major, values in [-127, 127], float32 scale per row";
  d["alignment_bytes"] = 16;
  d["quantize_per_token_int8"] = py::dict(py::arg("dtypes") = py::make_tuple("float32", "float16", "bfloat16"),
                                          py::arg("k_multiple") = 1);
  d["w8a16_linear"] = py::dict(py::arg("dtypes") = py::make_tuple("float32", "float16", "bfloat16"),
                               py::arg("k_multiple") = kKMultiple, py::arg("max_m_tuned") = 16,
                               py::arg("rows_per_block") = 16, py::arg("warps_per_block") = 8);
  d["w8a8_gemm"] = py::dict(py::arg("out_dtypes") = py::make_tuple("float32", "float16", "bfloat16"),
                            py::arg("k_multiple") = kKMultiple, py::arg("tiles") = py::make_tuple("128x256", "64x128"),
                            py::arg("instruction") = "mma.sync.m16n8k32.s8", py::arg("stages") = 4);
  return d;
}

}  // namespace cuda_binding

inline void register_cuda_bindings(pybind11::module_& m) {
  namespace py = pybind11;
  using namespace cuda_binding;
  m.def("quantize_per_token_int8_cuda", &quantize_per_token_int8_cuda, py::arg("x"),
        "Per-token int8 quantization: x (M, K) float32/float16/bfloat16 CUDA -> (q (M, K) int8, scale (M) float32)");
  m.def("w8a16_linear_cuda", &w8a16_linear_cuda, py::arg("x"), py::arg("qweight"), py::arg("wscale"),
        py::arg("bias") = py::none(), py::arg("variant") = 0,
        "Weight-only int8 linear for small M: x (M, K) bfloat16/float16/float32, qweight (N, K) int8, "
        "wscale (N) float32, bias (N) x.dtype or None -> (M, N) x.dtype. K % 16 == 0. variant: 0 (default kernel) "
        "or a candidate launch shape 1 .. w8a16_gemv_cuda_variants() - 1 (16-bit x; float32 x runs variant 0).");
  m.def("w8a16_gemv_cuda_variants", &cuda::w8a16_gemv_variants,
        "Number of w8a16_linear_cuda kernel variants (0 is the default)");
  m.def(
      "w8a16_gemv_cuda_shape",
      [](int64_t M, int64_t variant) {
        const cuda::W8A16GemvShape s = cuda::w8a16_gemv_shape(M, static_cast<int>(variant));
        return py::dict(py::arg("unroll") = s.unroll, py::arg("warps") = s.warps,
                        py::arg("min_blocks") = s.min_blocks);
      },
      py::arg("M"), py::arg("variant"), "Launch shape of w8a16_linear_cuda for M rows of 16-bit x and a variant");
  m.def("w8a8_gemm_cuda", &w8a8_gemm_cuda, py::arg("xq"), py::arg("xscale"), py::arg("qweight"), py::arg("wscale"),
        py::arg("bias"), py::arg("out_dtype"), py::arg("tile") = "auto",
        "W8A8 GEMM on int8 tensor cores: xq (M, K) int8, xscale (M) float32, qweight (N, K) int8, wscale (N) "
        "float32, bias (N) out_dtype or None -> (M, N) out_dtype. K % 16 == 0. tile: 'auto', '128x256', '64x128'.");
  m.def("w8a8_gemm_cuda_auto_tile", [](int64_t M, int64_t N) { return gemm_tile_name(cuda::w8a8_gemm_auto_tile(M, N)); },
        py::arg("M"), py::arg("N"), "The block tile w8a8_gemm_cuda picks for (M, N) on the current device");
  m.def("cuda_kernels_info", &cuda_kernels_info, "Static constraints of the CUDA kernels (alignment, dtypes, tiles)");
  register_int4_cuda(m);
  register_int4_tiled_cuda(m);
  register_sparse_cuda(m);
  register_binary_cuda(m);
}

}  // namespace pycomp
