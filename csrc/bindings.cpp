// pycomp._C: the one translation unit that includes torch headers.
//
// It checks tensors (device, dtype, shape, strides) and turns them into raw
// pointers for the kernels in csrc/cpu and csrc/cuda; the torch.library ops
// that users and torch.compile see are defined in pycomp/ops and call these.
#include <torch/extension.h>

#include <ATen/Parallel.h>

#include <stdexcept>
#include <string>

#include "cpu/binary/binary_bindings.h"
#include "cpu/conv/im2col.h"
#include "cpu/cpu_features.h"
#include "cpu/int4/int4_bindings.h"
#include "cpu/int8/int8_linear.h"
#include "cpu/parallel.h"
#include "cpu/sparse/sparse_bindings.h"

#ifdef PYCOMP_WITH_CUDA
#include "cuda/cuda_bindings.h"
#endif

namespace pycomp {

void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn) {
  at::parallel_for(0, n, grain, fn);
}

int num_threads() { return at::get_num_threads(); }

namespace {

using cpu::Isa;

Isa isa_arg(const std::string& name) {
  try {
    return cpu::parse_isa(name);
  } catch (const std::invalid_argument& e) {
    TORCH_CHECK(false, e.what());
  }
}

// Shared checks of the int8 linear ops: x (M, K) fp32 with unit column stride,
// qweight (N, K) int8 contiguous, wscale (N) fp32, bias (N) fp32 or None.
void check_int8_linear_args(const char* op, const at::Tensor& x, const at::Tensor& qweight,
                            const at::Tensor& wscale, const c10::optional<at::Tensor>& bias) {
  TORCH_CHECK(x.device().is_cpu() && qweight.device().is_cpu() && wscale.device().is_cpu(), op,
              ": all tensors must be on the CPU");
  TORCH_CHECK(x.dim() == 2 && x.scalar_type() == at::kFloat, op, ": x must be a 2-D float32 tensor, got ",
              x.dim(), "-D ", x.scalar_type());
  TORCH_CHECK(qweight.dim() == 2 && qweight.scalar_type() == at::kChar && qweight.is_contiguous(), op,
              ": qweight must be a contiguous 2-D int8 tensor (N, K)");
  TORCH_CHECK(x.size(1) == qweight.size(1), op, ": x has K=", x.size(1), " features but qweight has K=",
              qweight.size(1));
  TORCH_CHECK(x.size(1) > 0 && qweight.size(0) > 0, op, ": K and N must be positive");
  TORCH_CHECK(wscale.dim() == 1 && wscale.scalar_type() == at::kFloat && wscale.is_contiguous() &&
                  wscale.size(0) == qweight.size(0),
              op, ": wscale must be a contiguous float32 vector of N=", qweight.size(0), " scales");
  if (bias) {
    TORCH_CHECK(bias->device().is_cpu() && bias->dim() == 1 && bias->scalar_type() == at::kFloat &&
                    bias->is_contiguous() && bias->size(0) == qweight.size(0),
                op, ": bias must be a contiguous float32 CPU vector of N=", qweight.size(0), " values");
  }
}

at::Tensor unit_col_stride(const at::Tensor& x) { return x.stride(1) == 1 && x.stride(0) >= x.size(1) ? x : x.contiguous(); }

std::tuple<at::Tensor, at::Tensor> quantize_per_token_int8_cpu(const at::Tensor& x_in, const std::string& isa) {
  TORCH_CHECK(x_in.device().is_cpu() && x_in.dim() == 2 && x_in.scalar_type() == at::kFloat,
              "quantize_per_token_int8: x must be a 2-D float32 CPU tensor");
  const at::Tensor x = unit_col_stride(x_in);
  const int64_t M = x.size(0), K = x.size(1);
  at::Tensor q = at::empty({M, K}, x.options().dtype(at::kChar));
  at::Tensor scale = at::empty({M}, x.options());
  if (M > 0 && K > 0)
    cpu::quantize_per_token_int8_f32(isa_arg(isa), x.data_ptr<float>(), x.stride(0), q.data_ptr<int8_t>(),
                                     scale.data_ptr<float>(), M, K);
  else
    scale.zero_();
  return {q, scale};
}

using LinearKernel = void (*)(Isa, const float*, int64_t, const int8_t*, const float*, const float*, float*,
                              int64_t, int64_t, int64_t, int64_t);

at::Tensor run_int8_linear(const char* op, LinearKernel kernel, const at::Tensor& x_in, const at::Tensor& qweight,
                           const at::Tensor& wscale, const c10::optional<at::Tensor>& bias, const std::string& isa) {
  check_int8_linear_args(op, x_in, qweight, wscale, bias);
  const at::Tensor x = unit_col_stride(x_in);
  const int64_t M = x.size(0), K = x.size(1), N = qweight.size(0);
  at::Tensor out = at::empty({M, N}, x.options());
  if (M == 0) return out;
  kernel(isa_arg(isa), x.data_ptr<float>(), x.stride(0), qweight.data_ptr<int8_t>(), wscale.data_ptr<float>(),
         bias ? bias->data_ptr<float>() : nullptr, out.data_ptr<float>(), N, M, N, K);
  return out;
}

at::Tensor int8_linear_dynamic_cpu(const at::Tensor& x, const at::Tensor& qweight, const at::Tensor& wscale,
                                   const c10::optional<at::Tensor>& bias, const std::string& isa) {
  return run_int8_linear("int8_linear_dynamic", &cpu::int8_linear_dynamic_f32, x, qweight, wscale, bias, isa);
}

at::Tensor int8_linear_weight_only_cpu(const at::Tensor& x, const at::Tensor& qweight, const at::Tensor& wscale,
                                       const c10::optional<at::Tensor>& bias, const std::string& isa) {
  return run_int8_linear("int8_linear_weight_only", &cpu::int8_linear_weight_only_f32, x, qweight, wscale, bias,
                         isa);
}

// x (B, C, H, W) float32, padded -> (B * Ho * Wo, C * kh * kw) float32 rows in F.unfold's patch order.
at::Tensor im2col_cpu(const at::Tensor& x_in, int64_t kh, int64_t kw, int64_t sh, int64_t sw, int64_t dh,
                      int64_t dw) {
  TORCH_CHECK(x_in.device().is_cpu() && x_in.dim() == 4 && x_in.scalar_type() == at::kFloat,
              "im2col_cpu: x must be a 4-D float32 CPU tensor (B, C, H, W)");
  TORCH_CHECK(kh > 0 && kw > 0 && sh > 0 && sw > 0 && dh > 0 && dw > 0,
              "im2col_cpu: kernel size, stride and dilation must be positive");
  const at::Tensor x = x_in.contiguous();
  const int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const int64_t Ho = (H - dh * (kh - 1) - 1) / sh + 1, Wo = (W - dw * (kw - 1) - 1) / sw + 1;
  TORCH_CHECK(H >= dh * (kh - 1) + 1 && W >= dw * (kw - 1) + 1, "im2col_cpu: input ", H, "x", W,
              " is smaller than the dilated kernel");
  at::Tensor out = at::empty({B * Ho * Wo, C * kh * kw}, x.options());
  if (out.numel() > 0)
    cpu::im2col_f32(x.data_ptr<float>(), B, C, H, W, kh, kw, sh, sw, dh, dw, Ho, Wo, out.data_ptr<float>());
  return out;
}

pybind11::dict build_info() {
  pybind11::dict d;
#ifdef PYCOMP_WITH_CUDA
  d["cuda"] = true;
#else
  d["cuda"] = false;
#endif
#if defined(__clang__)
  d["compiler"] = std::string("clang ") + __clang_version__;
#elif defined(__GNUC__)
  d["compiler"] = std::string("gcc ") + __VERSION__;
#else
  d["compiler"] = std::string("unknown");
#endif
  d["torch"] = std::string(TORCH_VERSION);
  return d;
}

pybind11::dict cpu_features_dict() {
  const cpu::CpuFeatures& f = cpu::cpu_features();
  pybind11::dict d;
  d["avx2"] = f.avx2;
  d["fma"] = f.fma;
  d["f16c"] = f.f16c;
  d["avx512f"] = f.avx512f;
  d["avx512bw"] = f.avx512bw;
  d["avx512vl"] = f.avx512vl;
  d["avx512vnni"] = f.avx512vnni;
  d["avx512vpopcntdq"] = f.avx512vpopcntdq;
  d["avx512bf16"] = f.avx512bf16;
  d["avxvnni"] = f.avxvnni;
  return d;
}

}  // namespace
}  // namespace pycomp

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  namespace py = pybind11;
  using namespace pycomp;
  m.doc() = "pycomp kernels: C++ CPU kernels, and CUDA kernels when built with a CUDA toolkit";
  m.def("build_info", &build_info, "How this extension was built: {'cuda': bool, 'compiler': str, 'torch': str}");
  m.def("cpu_features", &cpu_features_dict, "CPUID features relevant to the kernels");
  m.def("cpu_isa", [] { return cpu::isa_name(cpu::best_isa()); }, "The ISA the CPU kernels run by default");
  m.def("cpu_isa_supported", [](const std::string& name) {
    try { return cpu::isa_supported(cpu::parse_isa(name)); } catch (const std::invalid_argument&) { return false; }
  });
  m.def("quantize_per_token_int8_cpu", &quantize_per_token_int8_cpu, py::arg("x"), py::arg("isa") = "",
        "x: (M, K) float32 -> (q: (M, K) int8, scale: (M) float32)");
  m.def("int8_linear_dynamic_cpu", &int8_linear_dynamic_cpu, py::arg("x"), py::arg("qweight"), py::arg("wscale"),
        py::arg("bias") = py::none(), py::arg("isa") = "",
        "W8A8 linear: x (M, K) float32, qweight (N, K) int8, wscale (N) float32 -> (M, N) float32");
  m.def("int8_linear_weight_only_cpu", &int8_linear_weight_only_cpu, py::arg("x"), py::arg("qweight"),
        py::arg("wscale"), py::arg("bias") = py::none(), py::arg("isa") = "",
        "W8A32 linear: x (M, K) float32, qweight (N, K) int8, wscale (N) float32 -> (M, N) float32");
  m.def("im2col_cpu", &im2col_cpu, py::arg("x"), py::arg("kh"), py::arg("kw"), py::arg("sh"), py::arg("sw"),
        py::arg("dh"), py::arg("dw"),
        "x (B, C, H, W) float32, padded -> (B*Ho*Wo, C*kh*kw) float32 rows in F.unfold's patch order");
  register_int4_cpu(m);
  register_sparse_cpu(m);
  register_binary_cpu(m);
#ifdef PYCOMP_WITH_CUDA
  register_cuda_bindings(m);
#endif
}
