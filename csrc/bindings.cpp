// pycomp._C: the one translation unit that includes torch headers.
//
// It checks tensors (device, dtype, shape, strides) and turns them into raw
// pointers for the kernels in csrc/cpu and csrc/cuda; the torch.library ops
// that users and torch.compile see are defined in pycomp/ops and call these.
#include <torch/extension.h>

#include <ATen/Parallel.h>

#include <stdexcept>
#include <string>
#include <utility>

#include "cpu/binary/binary_bindings.h"
#include "cpu/binary/binary_ops.h"
#include "cpu/conv/im2col.h"
#include "cpu/cpu_features.h"
#include "cpu/int4/int4_bindings.h"
#include "cpu/int4/int4_ops.h"
#include "cpu/int8/int8_bindings.h"
#include "cpu/int8/int8_ops.h"
#include "cpu/op_entry.h"
#include "cpu/parallel.h"
#include "cpu/sparse/sparse_bindings.h"
#include "cpu/sparse/sparse_ops.h"

#ifdef PYCOMP_WITH_CUDA
#include "cuda/cuda_bindings.h"
#endif

namespace pycomp {

void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn) {
  at::parallel_for(0, n, grain, fn);
}

int num_threads() { return at::get_num_threads(); }

namespace {

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

// CPU entry of pycomp::im2col for float32 x (pycomp/ops/conv.py; other dtypes run F.unfold there), with
// pycomp.ops.conv._check's rules.
at::Tensor im2col_op(const at::Tensor& x, at::IntArrayRef kernel, at::IntArrayRef stride, at::IntArrayRef dilation) {
  TORCH_CHECK(x.dim() == 4, "pycomp.im2col: x must be 4-D (B, C, H, W), got ", x.dim(), "-D");
  TORCH_CHECK(kernel.size() == 2 && stride.size() == 2 && dilation.size() == 2,
              "pycomp.im2col: kernel, stride and dilation take two values each");
  // Ho, Wo > 0 exactly when the dilated kernel fits in the input.
  const bool fits = x.size(2) >= dilation[0] * (kernel[0] - 1) + 1 && x.size(3) >= dilation[1] * (kernel[1] - 1) + 1;
  TORCH_CHECK(fits, "pycomp.im2col: input ", op_entry::shape_str(x.sizes()),
              " is smaller than the kernel");
  return im2col_cpu(x, kernel[0], kernel[1], stride[0], stride[1], dilation[0], dilation[1]);
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
  m.def("im2col_cpu", &im2col_cpu, py::arg("x"), py::arg("kh"), py::arg("kw"), py::arg("sh"), py::arg("sw"),
        py::arg("dh"), py::arg("dw"),
        "x (B, C, H, W) float32, padded -> (B*Ho*Wo, C*kh*kw) float32 rows in F.unfold's patch order");
  m.def("im2col_op", &im2col_op, "CPU entry of pycomp::im2col (float32 x)");
  m.def("set_cpu_dense_route",
        [](int64_t rows_per_k) {
          TORCH_CHECK(rows_per_k >= 0, "set_cpu_dense_route: rows_per_k must be >= 0 (0 turns the route off)");
          return std::exchange(op_entry::dense_rows_per_k(), rows_per_k);
        },
        py::arg("rows_per_k"),
        "Weight-only CPU entries take the dense route (MKL on the weight decoded once) when M >= 1024 and "
        "M >= rows_per_k * K; 0 turns it off. Returns the previous setting.");
  m.def("cpu_dense_route", [] { return op_entry::dense_rows_per_k(); }, "The current rows_per_k (see set_cpu_dense_route)");
  m.def("cpu_dense_route_takes", &op_entry::dense_route, py::arg("M"), py::arg("K"),
        "Whether the weight-only CPU entries take the dense route for M rows of K features (the one rule)");
  register_int8_cpu(m);
  register_int4_cpu(m);
  register_sparse_cpu(m);
  register_binary_cpu(m);
  register_int8_ops(m);
  register_int4_ops(m);
  register_sparse_ops(m);
  register_binary_ops(m);
#ifdef PYCOMP_WITH_CUDA
  register_cuda_bindings(m);
#endif
}
