// W1A16 GEMV for small M: the packed sign bits are streamed once, the activations stay in registers.
//
// A warp owns a 1024-input chunk of K (lane l: inputs 32 l .. 32 l + 31 of the chunk, i.e. word l)
// and walks the block's weight rows: per row it reads one word per lane (128 coalesced bytes per
// warp), flips the sign of each of its 32 activations whose bit is set (an xor of the float sign
// bit: select-free, no weight is ever a float), sums them, scales by the word's alpha, and
// reduces over the warp into a shared-memory row total. Blocks hold 32 rows; the 8 warps split
// the K chunks first and the rows second, so K = 4096 (4 chunks) keeps every warp busy.
// Activations: 16-byte loads when a lane's 32 inputs lie inside K, element loads at the tail.
#include <cuda_runtime.h>

#include "cuda/binary/binary_cuda.h"
#include "cuda/ptx.cuh"

namespace pycomp::cuda {
namespace {

constexpr int kRows = 32, kWarps = 8, kChunk = 1024;

template <DType kT, int MT>
__global__ void __launch_bounds__(kWarps * 32) w1a16_gemv_kernel(
    const typename Elem<kT>::T* __restrict__ x, int64_t ldx, const uint32_t* __restrict__ w, int64_t KW,
    const float* __restrict__ alpha, int64_t G, int64_t group_words, const typename Elem<kT>::T* __restrict__ bias,
    typename Elem<kT>::T* __restrict__ out, int64_t ldo, int M, int N, int64_t K) {
  using T = typename Elem<kT>::T;
  __shared__ float total[kRows][MT];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int n0 = blockIdx.x * kRows, m0 = blockIdx.y * MT;
  for (int i = threadIdx.x; i < kRows * MT; i += blockDim.x) total[i / MT][i % MT] = 0.f;
  __syncthreads();

  const int64_t chunks = (K + kChunk - 1) / kChunk;
  const int wc = chunks >= kWarps ? kWarps : (chunks >= 4 ? 4 : (chunks >= 2 ? 2 : 1));  // warps along K
  const int wr = kWarps / wc;                                                              // warps along rows
  const int warp_k = warp % wc, warp_r = warp / wc;

  for (int64_t c = warp_k; c < chunks; c += wc) {
    const int64_t word = c * 32 + lane, k0 = word * 32;
    const bool active = word < KW;
    float xv[MT][32];
#pragma unroll
    for (int mi = 0; mi < MT; ++mi) {
      const int m = m0 + mi < M ? m0 + mi : M - 1;
      const T* xr = x + static_cast<int64_t>(m) * ldx + k0;
      if (active && k0 + 32 <= K) {
        constexpr int kPer = 16 / sizeof(T);
#pragma unroll
        for (int v = 0; v < 32 / kPer; ++v) {
          const uint4 raw = ldg_128(xr + v * kPer);
          const T* e = reinterpret_cast<const T*>(&raw);
#pragma unroll
          for (int j = 0; j < kPer; ++j) xv[mi][v * kPer + j] = Elem<kT>::to_float(e[j]);
        }
      } else {
#pragma unroll
        for (int j = 0; j < 32; ++j) xv[mi][j] = active && k0 + j < K ? Elem<kT>::to_float(xr[j]) : 0.f;
      }
    }
    for (int r = warp_r; r < kRows; r += wr) {
      const int n = n0 + r;
      if (n >= N) break;
      const uint32_t bits = active ? __ldg(w + static_cast<int64_t>(n) * KW + word) : 0u;
      const float a = active ? __ldg(alpha + static_cast<int64_t>(n) * G + word / group_words) : 0.f;
#pragma unroll
      for (int mi = 0; mi < MT; ++mi) {
        float s = 0.f;
#pragma unroll
        for (int j = 0; j < 32; ++j)
          s += __int_as_float(__float_as_int(xv[mi][j]) ^ static_cast<int>((bits << (31 - j)) & 0x80000000u));
        s *= a;
        for (int off = 16; off > 0; off /= 2) s += __shfl_xor_sync(0xffffffffu, s, off);
        if (lane == 0) atomicAdd(&total[r][mi], s);
      }
    }
  }
  __syncthreads();
  for (int i = threadIdx.x; i < kRows * MT; i += blockDim.x) {
    const int r = i / MT, mi = i % MT, n = n0 + r, m = m0 + mi;
    if (n < N && m < M) {
      const float b = bias != nullptr ? Elem<kT>::to_float(bias[n]) : 0.f;
      out[static_cast<int64_t>(m) * ldo + n] = Elem<kT>::from_float(total[r][mi] + b);
    }
  }
}

template <DType kT, int MT>
cudaError_t launch(const void* x, int64_t ldx, const uint32_t* w, const float* alpha, int64_t G, int64_t group_words,
                   const void* bias, void* out, int64_t ldo, int64_t M, int64_t N, int64_t K, cudaStream_t stream) {
  using T = typename Elem<kT>::T;
  const dim3 grid(static_cast<unsigned>(ceil_div(N, kRows)), static_cast<unsigned>(ceil_div(M, MT)));
  w1a16_gemv_kernel<kT, MT><<<grid, kWarps * 32, 0, stream>>>(
      static_cast<const T*>(x), ldx, w, ceil_div(K, 32), alpha, G, group_words, static_cast<const T*>(bias),
      static_cast<T*>(out), ldo, static_cast<int>(M), static_cast<int>(N), K);
  return cudaGetLastError();
}

template <DType kT>
cudaError_t by_m(const void* x, int64_t ldx, const uint32_t* w, const float* alpha, int64_t G, int64_t group_words,
                 const void* bias, void* out, int64_t ldo, int64_t M, int64_t N, int64_t K, cudaStream_t stream) {
  if (M == 1) return launch<kT, 1>(x, ldx, w, alpha, G, group_words, bias, out, ldo, M, N, K, stream);
  if (M == 2) return launch<kT, 2>(x, ldx, w, alpha, G, group_words, bias, out, ldo, M, N, K, stream);
  return launch<kT, 4>(x, ldx, w, alpha, G, group_words, bias, out, ldo, M, N, K, stream);
}

}  // namespace

cudaError_t w1a16_gemv(DType t, const void* x, int64_t ldx, const uint32_t* w, const float* alpha, int64_t G,
                       int64_t group_words, const void* bias, void* out, int64_t ldo, int64_t M, int64_t N, int64_t K,
                       cudaStream_t stream) {
  const int64_t KW = ceil_div(K, 32);
  const int64_t elem = t == DType::kF32 ? 4 : 2;
  if (M < 1 || N < 1 || K < 1 || M > INT32_MAX || N > INT32_MAX - kRows || G < 1 || group_words < 1 ||
      ceil_div(KW, group_words) != G || !aligned16(x) || (M > 1 && (ldx * elem) % 16 != 0) || ldx < K || ldo < N)
    return cudaErrorInvalidValue;
  switch (t) {
    case DType::kF32: return by_m<DType::kF32>(x, ldx, w, alpha, G, group_words, bias, out, ldo, M, N, K, stream);
    case DType::kF16: return by_m<DType::kF16>(x, ldx, w, alpha, G, group_words, bias, out, ldo, M, N, K, stream);
    case DType::kBF16: return by_m<DType::kBF16>(x, ldx, w, alpha, G, group_words, bias, out, ldo, M, N, K, stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace pycomp::cuda
