// Thin wrappers over the PTX instructions the CUDA kernels use (sm_80 and newer).
// CUDA headers only; shared by the kernel families under csrc/cuda.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <atomic>
#include <cstdint>

#include "cuda/int8/int8_cuda.h"

namespace pycomp::cuda {

// ----------------------------------------------------------------------------- global loads

// 16 bytes read once (streamed weights): skip L1 so it keeps the reused operands,
// and let L2 fetch the whole 256-byte line (the warp reads the rest next).
__device__ __forceinline__ uint4 ldg_stream_128(const void* p) {
  uint4 v;
  asm volatile("ld.global.nc.L1::no_allocate.L2::256B.v4.u32 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
               : "l"(p));
  return v;
}

// 16 bytes of read-only data that other warps of the SM read too (cached in L1).
__device__ __forceinline__ uint4 ldg_128(const void* p) { return __ldg(reinterpret_cast<const uint4*>(p)); }

// 4 bytes read once (2:4 metadata and values): not kept in L1.
__device__ __forceinline__ uint32_t ld32_stream(const void* p) {
  uint32_t v;
  asm volatile("ld.global.nc.L1::no_allocate.b32 %0, [%1];\n" : "=r"(v) : "l"(p));
  return v;
}

// ----------------------------------------------------------------------------- cp.async

__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// Copies 16 bytes global -> shared, or writes 16 zero bytes when !valid (src is
// then not read, but must still be a valid address).
__device__ __forceinline__ void cp_async_16_zfill(uint32_t dst, const void* src, bool valid) {
  const int src_bytes = valid ? 16 : 0;
  asm volatile("cp.async.cg.shared.global.L2::128B [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(src_bytes));
}

__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }

template <int kPending>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending));
}

// ----------------------------------------------------------------------------- ldmatrix and mma

// Four 8x8 b16 matrices (8 rows of 16 bytes each); lanes 8q..8q+7 give the row
// addresses of matrix q, and lane l receives row l/4, bytes 4*(l%4)..+3 of each.
__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}

// D(16x8, s32) += A(16x32, s8, row) * B(32x8, s8, col).
__device__ __forceinline__ void mma_s8_16832(int (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
  asm volatile(
      "mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+r"(d[0]), "+r"(d[1]), "+r"(d[2]), "+r"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

// D(16x8, s32) += popc(A(16x256, b1, row) AND B(256x8, b1, col)): XNOR counts come from popc(a) + popc(b) - 2 * this.
__device__ __forceinline__ void mma_b1_and_popc(int (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
  asm volatile(
      "mma.sync.aligned.m16n8k256.row.col.s32.b1.b1.s32.and.popc {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+r"(d[0]), "+r"(d[1]), "+r"(d[2]), "+r"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

// D(16x8, f32) += A(16x32 2:4-sparse: 16x16 kept values + metadata e, row) * B(32x8, col), bf16 or f16;
// kSelector picks which threads' metadata (sparsity selector).
template <DType kT, int kSelector>
__device__ __forceinline__ void mma_sp_16832(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[4],
                                             uint32_t e) {
  if constexpr (kT == DType::kBF16) {
    asm volatile(
        "mma.sp::ordered_metadata.sync.aligned.m16n8k32.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, "
        "{%4, %5, %6, %7}, {%8, %9, %10, %11}, {%0, %1, %2, %3}, %12, %13;\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "r"(b[2]), "r"(b[3]), "r"(e),
          "n"(kSelector));
  } else {
    asm volatile(
        "mma.sp::ordered_metadata.sync.aligned.m16n8k32.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, "
        "{%4, %5, %6, %7}, {%8, %9, %10, %11}, {%0, %1, %2, %3}, %12, %13;\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "r"(b[2]), "r"(b[3]), "r"(e),
          "n"(kSelector));
  }
}

// D(16x8, f32) += A(16x16, bf16 or f16, row) * B(16x8, same type, col).
template <bool kHalf>
__device__ __forceinline__ void mma_16816(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
  if constexpr (kHalf) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  } else {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  }
}

// ----------------------------------------------------------------------------- element types

template <DType>
struct Elem;

template <>
struct Elem<DType::kF32> {
  using T = float;
  __device__ __forceinline__ static float to_float(T v) { return v; }
  __device__ __forceinline__ static T from_float(float v) { return v; }
};

template <>
struct Elem<DType::kF16> {
  using T = __half;
  __device__ __forceinline__ static float to_float(T v) { return __half2float(v); }
  __device__ __forceinline__ static T from_float(float v) { return __float2half_rn(v); }
};

template <>
struct Elem<DType::kBF16> {
  using T = __nv_bfloat16;
  __device__ __forceinline__ static float to_float(T v) { return __bfloat162float(v); }
  __device__ __forceinline__ static T from_float(float v) { return __float2bfloat16_rn(v); }
};

// Stores out[0] = a and, when `pair`, out[1] = b; as one vector store when
// `vector` (both in range and out 2-element aligned).
template <DType kT>
__device__ __forceinline__ void store_pair(typename Elem<kT>::T* out, float a, float b, bool pair, bool vector) {
  using E = Elem<kT>;
  if (vector) {
    if constexpr (kT == DType::kF32) {
      *reinterpret_cast<float2*>(out) = make_float2(a, b);
    } else if constexpr (kT == DType::kF16) {
      *reinterpret_cast<__half2*>(out) = __floats2half2_rn(a, b);
    } else {
      *reinterpret_cast<__nv_bfloat162*>(out) = __floats2bfloat162_rn(a, b);
    }
  } else {
    out[0] = E::from_float(a);
    if (pair) out[1] = E::from_float(b);
  }
}

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

inline bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15) == 0; }

// The current device's SM count, or 0 when it cannot be read.
inline int sm_count() {
  int device = 0, count = 0;
  if (cudaGetDevice(&device) != cudaSuccess ||
      cudaDeviceGetAttribute(&count, cudaDevAttrMultiProcessorCount, device) != cudaSuccess)
    return 0;
  return count;
}

// Opts Kernel into `bytes` of dynamic shared memory (more than 48 KiB must be asked for), once per device: pass the
// largest launch's bytes. Atomics, as launches may come from several host threads; setting it twice is harmless.
template <auto Kernel>
cudaError_t opt_in_dynamic_smem(int bytes) {
  static std::atomic<bool> opted_in[64] = {};
  int device = 0;
  cudaError_t err = cudaGetDevice(&device);
  if (err != cudaSuccess) return err;
  const bool cached = device >= 0 && device < 64;
  if (cached && opted_in[device].load(std::memory_order_acquire)) return cudaSuccess;
  err = cudaFuncSetAttribute(Kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes);
  if (err == cudaSuccess && cached) opted_in[device].store(true, std::memory_order_release);
  return err;
}

}  // namespace pycomp::cuda
