// Torch-facing wrappers of the binary CUDA kernels; included by csrc/cuda/cuda_bindings.h (and so
// only by csrc/bindings.cpp, under PYCOMP_WITH_CUDA), which calls register_binary_cuda(m).
#pragma once

#include <torch/extension.h>

#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <algorithm>
#include <cstdint>
#include <initializer_list>
#include <tuple>

#include "cuda/binary/binary_cuda.h"
#include "cuda/binding_checks.h"

namespace pycomp {
namespace binary_cuda_bindings {

using cuda_binding::aligned16;
using cuda_binding::check_launch;

inline cuda::DType float_dtype(const char* op, at::ScalarType t) { return cuda_binding::float_dtype(op, "x", t); }

// x (M, K) float CUDA with unit column stride and 16-byte aligned rows (copied when not);
// packed (N, ceil(K/32)) uint32 contiguous; alpha (N, G) float32 contiguous; bias (N) x.dtype or None.
inline int64_t check_args(const char* op, const at::Tensor& x, const at::Tensor& packed, const at::Tensor& alpha,
                          int64_t group_size, const c10::optional<at::Tensor>& bias) {
  TORCH_CHECK(x.is_cuda() && x.dim() == 2, op, ": x must be a 2-D CUDA tensor");
  const int64_t K = x.size(1), KW = (K + 31) / 32;
  TORCH_CHECK(K > 0, op, ": K must be positive");
  TORCH_CHECK(packed.device() == x.device() && packed.dim() == 2 && packed.scalar_type() == at::kUInt32 &&
                  packed.is_contiguous() && packed.size(1) == KW && packed.size(0) > 0,
              op, ": packed must be a contiguous (N, ", KW, ") uint32 tensor on x's device for K=", K);
  TORCH_CHECK(group_size >= 0 && group_size % 32 == 0, op, ": group_size must be 0 or a multiple of 32");
  const int64_t N = packed.size(0), G = group_size ? (K + group_size - 1) / group_size : 1;
  TORCH_CHECK(alpha.device() == x.device() && alpha.dim() == 2 && alpha.scalar_type() == at::kFloat &&
                  alpha.is_contiguous() && alpha.size(0) == N && alpha.size(1) == G,
              op, ": alpha must be a contiguous float32 (", N, ", ", G, ") tensor on x's device");
  if (bias) {
    TORCH_CHECK(bias->device() == x.device() && bias->dim() == 1 && bias->size(0) == N &&
                    bias->scalar_type() == x.scalar_type() && bias->is_contiguous(),
                op, ": bias must be a contiguous vector of N=", N, " values of x's dtype on x's device");
  }
  return N;
}

inline at::Tensor aligned_rows(const at::Tensor& x) {
  const int64_t ld = x.size(0) > 1 ? x.stride(0) : x.size(1);
  const bool ok = x.stride(1) == 1 && aligned16(x) && (ld * static_cast<int64_t>(x.element_size())) % 16 == 0;
  return ok ? x : x.clone(at::MemoryFormat::Contiguous);
}

// variant picks the kernel (binary_cuda.h): 0 the default, the others candidates the GPU run times beside it.
// `valid` lists the numbers in use (a removed variant keeps its number unused); `names` spells them out.
inline void check_variant(const char* op, int64_t variant, std::initializer_list<int64_t> valid, const char* names) {
  TORCH_CHECK(std::find(valid.begin(), valid.end(), variant) != valid.end(), op, ": variant must be ", names, ", got ",
              variant);
}

inline at::Tensor w1a16_gemv_cuda(const at::Tensor& x_in, const at::Tensor& packed, const at::Tensor& alpha,
                                  int64_t group_size, const c10::optional<at::Tensor>& bias, int64_t variant) {
  const char* op = "w1a16_gemv_cuda";
  check_variant(op, variant, {0, 1, 3, 4}, "0 (the default kernel), 1, 3 or 4 (variant 2 was removed)");
  const int64_t N = check_args(op, x_in, packed, alpha, group_size, bias);
  const cuda::DType t = float_dtype(op, x_in.scalar_type());
  TORCH_CHECK(variant == 0 || (group_size == 0 && t != cuda::DType::kF32), op,
              ": variants 1, 3 and 4 (tensor cores) take bf16 or fp16 x and one alpha per row (group_size=0)");
  const c10::cuda::CUDAGuard guard(x_in.device());
  const at::Tensor x = aligned_rows(x_in);
  const int64_t M = x.size(0), K = x.size(1), KW = (K + 31) / 32;
  at::Tensor out = at::empty({M, N}, x.options());
  if (M == 0) return out;
  const int64_t ldx = M > 1 ? x.stride(0) : K;
  check_launch(op, cuda::w1a16_gemv(t, x.data_ptr(), ldx, static_cast<const uint32_t*>(packed.data_ptr()),
                                    alpha.data_ptr<float>(), alpha.size(1), group_size ? group_size / 32 : KW,
                                    bias ? bias->data_ptr() : nullptr, out.data_ptr(), N, M, N, K,
                                    c10::cuda::getCurrentCUDAStream(), static_cast<int>(variant)));
  return out;
}

// The XNOR GEMM's three launches, callable one by one so that the GPU sweep can time each part.
// binarize_per_token_cuda: x (M, K) float CUDA -> (bits (M, xnor_padded_words(K)) int32, beta (M) fp32,
// popc (M) int32).
inline std::tuple<at::Tensor, at::Tensor, at::Tensor> binarize_per_token_cuda(const at::Tensor& x_in,
                                                                               int64_t variant) {
  const char* op = "binarize_per_token_cuda";
  check_variant(op, variant, {0, 1, 2}, "0 (the default kernel), 1 or 2");
  TORCH_CHECK(x_in.is_cuda() && x_in.dim() == 2 && x_in.size(1) > 0, op, ": x must be a 2-D CUDA tensor with K > 0");
  const cuda::DType t = float_dtype(op, x_in.scalar_type());
  const c10::cuda::CUDAGuard guard(x_in.device());
  const at::Tensor x = x_in.stride(1) == 1 ? x_in : x_in.contiguous();
  const int64_t M = x.size(0), K = x.size(1), ld_a = cuda::xnor_padded_words(K);
  const auto i32 = x.options().dtype(at::kInt);
  at::Tensor bits = at::empty({M, ld_a}, i32), beta = at::empty({M}, x.options().dtype(at::kFloat));
  at::Tensor popc = at::empty({M}, i32);
  if (M > 0)
    check_launch(op, cuda::binarize_per_token(t, x.data_ptr(), M > 1 ? x.stride(0) : K,
                                              static_cast<uint32_t*>(bits.data_ptr()), ld_a, beta.data_ptr<float>(),
                                              popc.data_ptr<int32_t>(), M, K, c10::cuda::getCurrentCUDAStream(),
                                              static_cast<int>(variant)));
  return {bits, beta, popc};
}

// popc_rows_cuda: packed (N, KW) uint32 CUDA -> (N) int32 set bits per row.
inline at::Tensor popc_rows_cuda(const at::Tensor& packed) {
  const char* op = "popc_rows_cuda";
  TORCH_CHECK(packed.is_cuda() && packed.dim() == 2 && packed.scalar_type() == at::kUInt32 && packed.is_contiguous() &&
                  packed.size(0) > 0 && packed.size(1) > 0,
              op, ": packed must be a contiguous non-empty 2-D uint32 CUDA tensor");
  const c10::cuda::CUDAGuard guard(packed.device());
  at::Tensor popc = at::empty({packed.size(0)}, packed.options().dtype(at::kInt));
  check_launch(op, cuda::popc_rows(static_cast<const uint32_t*>(packed.data_ptr()), packed.size(0), packed.size(1),
                                   popc.data_ptr<int32_t>(), c10::cuda::getCurrentCUDAStream()));
  return popc;
}

// The binarization each XNOR GEMM variant's whole call runs (benchmarks/gpu_sweep_binary.py mirrors it).
inline int64_t xnor_binarize_variant(int64_t variant) { return variant == 0 ? 0 : (variant >= 6 ? 2 : 1); }

constexpr const char* kXnorVariants = "0 (the default kernel), 1 or 3 to 7 (variant 2 was removed)";

// xnor_gemm_bits_cuda: the GEMM alone on binarize_per_token_cuda's and popc_rows_cuda's outputs, for
// K inputs, out of dtype like (x's dtype). popc_w may be None where the variant counts the weight
// popcounts itself (cuda::xnor_gemm_counts_popc_w: variants 5 and 7 where their tiles fit); unused then.
inline at::Tensor xnor_gemm_bits_cuda(const at::Tensor& bits, const at::Tensor& beta, const at::Tensor& popc_a,
                                      const at::Tensor& packed, const at::Tensor& alpha,
                                      const c10::optional<at::Tensor>& popc_w, int64_t K, const at::Tensor& like,
                                      const c10::optional<at::Tensor>& bias, int64_t variant) {
  const char* op = "xnor_gemm_bits_cuda";
  check_variant(op, variant, {0, 1, 3, 4, 5, 6, 7}, kXnorVariants);
  TORCH_CHECK(K > 0 && bits.is_cuda() && bits.dim() == 2 && bits.scalar_type() == at::kInt && bits.is_contiguous() &&
                  bits.size(1) == cuda::xnor_padded_words(K),
              op, ": bits must be binarize_per_token_cuda's contiguous (M, ", cuda::xnor_padded_words(K),
              ") int32 output for K=", K);
  const int64_t M = bits.size(0), KW = (K + 31) / 32;
  TORCH_CHECK(packed.device() == bits.device() && packed.dim() == 2 && packed.scalar_type() == at::kUInt32 &&
                  packed.is_contiguous() && packed.size(1) == KW && KW % 4 == 0 && aligned16(packed),
              op, ": packed must be a contiguous 16-byte aligned (N, ", KW, ") uint32 tensor with ceil(K/32) % 4 == 0");
  const int64_t N = packed.size(0);
  auto vec = [&](const at::Tensor& v, int64_t n, at::ScalarType st) {
    return v.device() == bits.device() && v.numel() == n && v.scalar_type() == st && v.is_contiguous();
  };
  TORCH_CHECK(vec(beta, M, at::kFloat) && vec(popc_a, M, at::kInt) && vec(alpha, N, at::kFloat),
              op, ": beta (M) fp32, popc_a (M) int32 and alpha (N) fp32 must be contiguous on bits' device");
  const cuda::DType t = float_dtype(op, like.scalar_type());
  const c10::cuda::CUDAGuard guard(bits.device());
  const bool counts = cuda::xnor_gemm_counts_popc_w(K, t, static_cast<int>(variant));
  TORCH_CHECK(counts || popc_w, op, ": popc_w (popc_rows_cuda(packed)) is needed by variant ", variant, " at K=", K);
  if (popc_w) {
    TORCH_CHECK(vec(*popc_w, N, at::kInt), op, ": popc_w must be a contiguous (N) int32 tensor on bits' device");
  }
  if (bias) {
    TORCH_CHECK(vec(*bias, N, like.scalar_type()) && bias->dim() == 1, op,
                ": bias must be a contiguous vector of N=", N, " values of like's dtype");
  }
  at::Tensor out = at::empty({M, N}, bits.options().dtype(like.scalar_type()));
  if (M == 0) return out;
  check_launch(op, cuda::xnor_gemm(static_cast<const uint32_t*>(bits.data_ptr()), bits.size(1), beta.data_ptr<float>(),
                                   popc_a.data_ptr<int32_t>(), static_cast<const uint32_t*>(packed.data_ptr()),
                                   alpha.data_ptr<float>(), popc_w ? popc_w->data_ptr<int32_t>() : nullptr,
                                   bias ? bias->data_ptr() : nullptr, t, out.data_ptr(), M, N, K,
                                   c10::cuda::getCurrentCUDAStream(), static_cast<int>(variant)));
  return out;
}

inline at::Tensor xnor_gemm_cuda(const at::Tensor& x_in, const at::Tensor& packed, const at::Tensor& alpha,
                                 int64_t group_size, const c10::optional<at::Tensor>& bias, int64_t variant) {
  const char* op = "xnor_gemm_cuda";
  check_variant(op, variant, {0, 1, 3, 4, 5, 6, 7}, kXnorVariants);
  check_args(op, x_in, packed, alpha, group_size, bias);
  TORCH_CHECK(group_size == 0, op, ": only one alpha per output channel (group_size=0) runs on the GPU kernel");
  const int64_t K = x_in.size(1), KW = (K + 31) / 32;
  TORCH_CHECK(KW % 4 == 0 && aligned16(packed), op, ": ceil(K/32)=", KW,
              " must be a multiple of 4 (weight rows are copied 16 bytes at a time)");
  const cuda::DType t = float_dtype(op, x_in.scalar_type());
  // Variants 3-7 change the GEMM; 3-5 binarize as variant 1, 6 and 7 by binarization variant 2 (more loads
  // in flight); 5 and 7 count the weight popcounts themselves.
  const auto [bits, beta, popc_a] = binarize_per_token_cuda(x_in, xnor_binarize_variant(variant));
  const c10::cuda::CUDAGuard guard(x_in.device());
  c10::optional<at::Tensor> popc_w;
  if (!cuda::xnor_gemm_counts_popc_w(K, t, static_cast<int>(variant))) popc_w = popc_rows_cuda(packed);
  return xnor_gemm_bits_cuda(bits, beta, popc_a, packed, alpha, popc_w, K, x_in, bias, variant);
}

}  // namespace binary_cuda_bindings

inline void register_binary_cuda(pybind11::module_& m) {
  namespace py = pybind11;
  using namespace binary_cuda_bindings;
  m.def("w1a16_gemv_cuda", &w1a16_gemv_cuda, py::arg("x"), py::arg("packed"), py::arg("alpha"),
        py::arg("group_size"), py::arg("bias") = py::none(), py::arg("variant") = 0,
        "W1A16 for small M: x (M, K) bf16/fp16/fp32, packed (N, ceil(K/32)) uint32, alpha (N, G) float32 -> "
        "(M, N) x.dtype; variants 1, 3 and 4: tensor-core kernels (bf16/fp16, group_size=0)");
  m.def("xnor_gemm_cuda", &xnor_gemm_cuda, py::arg("x"), py::arg("packed"), py::arg("alpha"), py::arg("group_size"),
        py::arg("bias") = py::none(), py::arg("variant") = 0,
        "XNOR GEMM on b1 tensor cores: x (M, K) float binarized per token (beta = mean|x|), packed (N, ceil(K/32)) "
        "uint32 with ceil(K/32) % 4 == 0, alpha (N, 1) float32 -> (M, N) x.dtype; variant 1: 64x64 warp tiles, "
        "4-stage ldmatrix pipeline; variants 3-7: persistent blocks, whole-K tiles, two warp groups in turn "
        "(4: staged 16-byte stores, 5: 4 with the weight popcounts in the kernel; 6, 7: 4, 5 on 256x64 group tiles "
        "with binarization variant 2)");
  m.def("binarize_per_token_cuda", &binarize_per_token_cuda, py::arg("x"), py::arg("variant") = 0,
        "xnor_gemm_cuda's first launch: x (M, K) float -> (bits (M, padded words) int32, beta (M) fp32, popc (M) int32)");
  m.def("popc_rows_cuda", &popc_rows_cuda, py::arg("packed"),
        "xnor_gemm_cuda's second launch: set bits per row of packed (N, KW) uint32 -> (N) int32");
  m.def("xnor_gemm_bits_cuda", &xnor_gemm_bits_cuda, py::arg("bits"), py::arg("beta"), py::arg("popc_a"),
        py::arg("packed"), py::arg("alpha"), py::arg("popc_w"), py::arg("K"), py::arg("like"),
        py::arg("bias") = py::none(), py::arg("variant") = 0,
        "xnor_gemm_cuda's GEMM alone on binarize_per_token_cuda's and popc_rows_cuda's outputs (popc_w may be None "
        "for variants 5 and 7, which count them themselves); out dtype = like's");
}

}  // namespace pycomp
