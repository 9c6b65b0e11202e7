// 2:4 sparse linear on sparse tensor cores: mma.sp::ordered_metadata m16n8k32, bf16/fp16 in, fp32 out.
//
// out^T (N x M) = W (N x Kp, 2:4) * x^T: W is the sparse A operand, x^T the dense B operand, so a warp
// computes 16 weight rows (n0..n0+15) by 8*NT activation rows per k32 step.
//
// Fragments (lane = 4 * g + t):
// - A, the compressed 16 x 16 tile of step s: registers (row g, cols 2t..2t+1), (row g+8, same),
//   (row g, cols 2t+8..), (row g+8, same), read straight from values (N, Kp/2) at column 16 s + ...;
//   every value is loaded once per block, nothing is staged.
// - metadata: for m16n8k32 a thread pair of each group of four supplies it (sparsity selector 0: T0
//   and T1, 1: T2 and T3), each register holding rows g (low half) and g+8 (high half) of one 16-column
//   chunk: T0/T2 the chunk at k 0..15, T1/T3 the one at 16..31. The stored int32 word (s * Np + r)
//   is exactly that register (pycomp.formats.sparse.meta_offsets), with r = 32 (n0/32) + 4 g +
//   2 ((n0 % 32) / 16). So thread t loads the word of step s + t/2, half t%2, and one load serves two
//   steps: step s runs with selector 0, step s+1 with selector 1.
// - B (x^T, k32 x n8): registers (k = 2t + 8i, 2t + 8i + 1, column g) for i = 0..3, i.e. two adjacent
//   x values of activation row m0 + 8j + g, read from global memory (x is small next to W in the decode
//   case and stays in L1/L2; the GEMM configuration reuses it across its 4 row warps through L1).
// - C: (row g, cols 2t, 2t+1) and (row g+8, same) of each n8 tile: output rows n, columns m.
// The decode configuration (GEMV, M <= 16) splits K over the block's 4 warps and sums through shared
// memory, so 16 weight rows per block give N/16 blocks to cover the SMs.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/ptx.cuh"
#include "cuda/sparse/sparse_cuda.h"

namespace pycomp::cuda {
namespace {

__device__ __forceinline__ uint32_t ld32(const void* p) { return __ldg(reinterpret_cast<const uint32_t*>(p)); }

// kNT n8 tiles of activation rows per warp; kWN warps along N (16 weight rows each); kKS warps split K.
template <DType kT, int kNT, int kWN, int kKS>
__global__ void __launch_bounds__(32 * kWN * kKS)
    sparse24_mma_kernel(const typename Elem<kT>::T* __restrict__ x, int64_t ldx,
                        const typename Elem<kT>::T* __restrict__ values, const uint32_t* __restrict__ meta32,
                        int64_t Np, const typename Elem<kT>::T* __restrict__ bias, typename Elem<kT>::T* __restrict__ out,
                        int64_t ldo, int M, int N, int Kp) {
  using E = Elem<kT>;
  using T = typename E::T;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  const int wn = warp % kWN, wk = warp / kWN;
  const int n0 = (blockIdx.x * kWN + wn) * 16;
  const int m0 = blockIdx.y * (8 * kNT);
  const int steps = Kp / 32;
  const int pairs = (steps + 1) / 2;
  const int per = (pairs + kKS - 1) / kKS;
  const int s_begin = wk * per * 2;
  const int s_end = min(steps, s_begin + per * 2);

  float acc[kNT][4];
#pragma unroll
  for (int j = 0; j < kNT; ++j) acc[j][0] = acc[j][1] = acc[j][2] = acc[j][3] = 0.0f;

  // Rows past N (the last tile) read row N-1 and are not stored.
  const int64_t half = Kp / 2;
  const T* a_lo = values + static_cast<int64_t>(min(n0 + g, N - 1)) * half + 2 * t;
  const T* a_hi = values + static_cast<int64_t>(min(n0 + g + 8, N - 1)) * half + 2 * t;
  const uint32_t* e_ptr = meta32 + (n0 / 32) * 32 + 4 * g + 2 * ((n0 % 32) / 16) + (t & 1);
  const T* b_ptr[kNT];
#pragma unroll
  for (int j = 0; j < kNT; ++j) b_ptr[j] = x + static_cast<int64_t>(min(m0 + 8 * j + g, M - 1)) * ldx + 2 * t;

  for (int s = s_begin; s < s_end; s += 2) {
    const int se = s + (t >> 1);
    const uint32_t e = se < steps ? __ldg(e_ptr + static_cast<int64_t>(se) * Np) : 0u;
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int ss = s + h;
      if (ss >= s_end) break;
      uint32_t a[4];
      a[0] = ld32_stream(a_lo + ss * 16);
      a[1] = ld32_stream(a_hi + ss * 16);
      a[2] = ld32_stream(a_lo + ss * 16 + 8);
      a[3] = ld32_stream(a_hi + ss * 16 + 8);
#pragma unroll
      for (int j = 0; j < kNT; ++j) {
        uint32_t b[4];
#pragma unroll
        for (int i = 0; i < 4; ++i) b[i] = ld32(b_ptr[j] + ss * 32 + 8 * i);
        if (h == 0)
          mma_sp_16832<kT, 0>(acc[j], a, b, e);
        else
          mma_sp_16832<kT, 1>(acc[j], a, b, e);
      }
    }
  }

  if constexpr (kKS > 1) {
    __shared__ float partial[kKS - 1][kWN][32][kNT * 4];
    if (wk > 0) {
#pragma unroll
      for (int j = 0; j < kNT; ++j)
#pragma unroll
        for (int c = 0; c < 4; ++c) partial[wk - 1][wn][lane][j * 4 + c] = acc[j][c];
    }
    __syncthreads();
    if (wk > 0) return;
#pragma unroll
    for (int w = 0; w < kKS - 1; ++w)
#pragma unroll
      for (int j = 0; j < kNT; ++j)
#pragma unroll
        for (int c = 0; c < 4; ++c) acc[j][c] += partial[w][wn][lane][j * 4 + c];
  }

#pragma unroll
  for (int c = 0; c < 4; c += 2) {
    const int n = n0 + g + 8 * (c >> 1);
    if (n >= N) continue;
    const float bv = bias ? E::to_float(bias[n]) : 0.0f;
#pragma unroll
    for (int j = 0; j < kNT; ++j) {
      const int m = m0 + 8 * j + 2 * t;
      if (m < M) out[static_cast<int64_t>(m) * ldo + n] = E::from_float(acc[j][c] + bv);
      if (m + 1 < M) out[static_cast<int64_t>(m + 1) * ldo + n] = E::from_float(acc[j][c + 1] + bv);
    }
  }
}

template <DType kT, int kNT, int kWN, int kKS>
cudaError_t launch(const void* x, int64_t ldx, const void* values, const int16_t* meta, int64_t Np, const void* bias,
                   void* out, int64_t ldo, int64_t M, int64_t N, int64_t Kp, cudaStream_t stream) {
  using T = typename Elem<kT>::T;
  const dim3 grid(static_cast<unsigned>(ceil_div(N, 16 * kWN)), static_cast<unsigned>(ceil_div(M, 8 * kNT)));
  if (grid.y > 65535) return cudaErrorInvalidValue;
  sparse24_mma_kernel<kT, kNT, kWN, kKS><<<grid, 32 * kWN * kKS, 0, stream>>>(
      static_cast<const T*>(x), ldx, static_cast<const T*>(values), reinterpret_cast<const uint32_t*>(meta), Np,
      static_cast<const T*>(bias), static_cast<T*>(out), ldo, static_cast<int>(M), static_cast<int>(N),
      static_cast<int>(Kp));
  return cudaGetLastError();
}

template <DType kT>
cudaError_t dispatch(const void* x, int64_t ldx, const void* values, const int16_t* meta, int64_t Np,
                     const void* bias, void* out, int64_t ldo, int64_t M, int64_t N, int64_t Kp, bool gemv,
                     cudaStream_t stream) {
  if (gemv) return launch<kT, 2, 1, 4>(x, ldx, values, meta, Np, bias, out, ldo, M, N, Kp, stream);
  return launch<kT, 8, 4, 1>(x, ldx, values, meta, Np, bias, out, ldo, M, N, Kp, stream);
}

}  // namespace

cudaError_t sparse24_linear(DType t, const void* x, int64_t ldx, const void* values, const int16_t* meta, int64_t Np,
                            const void* bias, void* out, int64_t ldo, int64_t M, int64_t N, int64_t Kp, bool gemv,
                            cudaStream_t stream) {
  if (M < 1 || N < 1 || Kp < 32 || Kp % 32 || Np % 32 || Np < N || ldx % 2 || ldx < Kp || ldo < N ||
      N > INT32_MAX - 64 || M > INT32_MAX - 64 || Kp > INT32_MAX / 2 || (gemv && M > 16) ||
      reinterpret_cast<uintptr_t>(x) % 4 || reinterpret_cast<uintptr_t>(values) % 4 ||
      reinterpret_cast<uintptr_t>(meta) % 4)
    return cudaErrorInvalidValue;
  if (t == DType::kBF16) return dispatch<DType::kBF16>(x, ldx, values, meta, Np, bias, out, ldo, M, N, Kp, gemv, stream);
  if (t == DType::kF16) return dispatch<DType::kF16>(x, ldx, values, meta, Np, bias, out, ldo, M, N, Kp, gemv, stream);
  return cudaErrorInvalidValue;
}

}  // namespace pycomp::cuda
