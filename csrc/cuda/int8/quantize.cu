// Per-token (per-row) symmetric int8 quantization of activations.
//
// A group of kGroup threads owns one row: a warp when rows are short, the whole
// 256-thread block when they are long. Pass 1 reduces max|x| over the row, pass 2
// re-reads the row (now in L1) and writes q. With vector loads each thread moves
// 16 bytes of x per step and stores 16 / sizeof(T) int8 at once.
#include "cuda/ptx.cuh"

namespace pycomp::cuda {
namespace {

constexpr int kThreads = 256;
// Rows of at most this many elements get a warp each; longer ones a block.
constexpr int64_t kWarpRowMaxK = 1024;

template <DType kT, bool kVec>
struct RowIO {
  using E = Elem<kT>;
  using T = typename E::T;
  static constexpr int kWidth = kVec ? 16 / static_cast<int>(sizeof(T)) : 1;  // elements per access

  __device__ __forceinline__ static void load(const T* p, float (&v)[kWidth]) {
    if constexpr (kVec) {
      const uint4 raw = ldg_128(p);
      const T* e = reinterpret_cast<const T*>(&raw);
#pragma unroll
      for (int i = 0; i < kWidth; ++i) v[i] = E::to_float(e[i]);
    } else {
      v[0] = E::to_float(p[0]);
    }
  }

  __device__ __forceinline__ static void store(int8_t* p, const int (&q)[kWidth]) {
    if constexpr (kWidth == 8) {
      uint2 w;
      w.x = (q[0] & 0xff) | (q[1] & 0xff) << 8 | (q[2] & 0xff) << 16 | static_cast<uint32_t>(q[3]) << 24;
      w.y = (q[4] & 0xff) | (q[5] & 0xff) << 8 | (q[6] & 0xff) << 16 | static_cast<uint32_t>(q[7]) << 24;
      *reinterpret_cast<uint2*>(p) = w;
    } else if constexpr (kWidth == 4) {
      *reinterpret_cast<uint32_t*>(p) =
          (q[0] & 0xff) | (q[1] & 0xff) << 8 | (q[2] & 0xff) << 16 | static_cast<uint32_t>(q[3]) << 24;
    } else {
      p[0] = static_cast<int8_t>(q[0]);
    }
  }
};

template <int kGroup>
__device__ __forceinline__ float group_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  if constexpr (kGroup > 32) {
    __shared__ float warp_max[kGroup / 32];
    const int warp = threadIdx.x / 32;
    if (threadIdx.x % 32 == 0) warp_max[warp] = v;
    __syncthreads();
    v = warp_max[0];
#pragma unroll
    for (int i = 1; i < kGroup / 32; ++i) v = fmaxf(v, warp_max[i]);
  }
  return v;
}

template <DType kT, int kGroup, bool kVec>
__global__ void __launch_bounds__(kThreads) quantize_rows_kernel(const typename Elem<kT>::T* __restrict__ x,
                                                                  int64_t ldx, int8_t* __restrict__ q,
                                                                  float* __restrict__ scale, int64_t M, int64_t K) {
  using IO = RowIO<kT, kVec>;
  constexpr int W = IO::kWidth;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * (kThreads / kGroup) + threadIdx.x / kGroup;
  if (row >= M) return;  // kGroup == kThreads: row < M for every thread of the block, no barrier is skipped
  const int g = threadIdx.x % kGroup;
  const auto* xr = x + row * ldx;
  int8_t* qr = q + row * K;
  const int64_t steps = K / W;

  float amax = 0.f;
  for (int64_t i = g; i < steps; i += kGroup) {
    float v[W];
    IO::load(xr + i * W, v);
#pragma unroll
    for (int j = 0; j < W; ++j) amax = fmaxf(amax, fabsf(v[j]));
  }
  amax = group_max<kGroup>(amax);

  const float inv = amax > 0.f ? __fdiv_rn(127.f, amax) : 0.f;
  if (g == 0) scale[row] = __fdiv_rn(amax, 127.f);

  for (int64_t i = g; i < steps; i += kGroup) {
    float v[W];
    int qi[W];
    IO::load(xr + i * W, v);
#pragma unroll
    for (int j = 0; j < W; ++j) {
      // A NaN product (NaN input, or inf * 0) is -127 as on the CPU; cvt.rni.s32 alone would make it 0.
      const float p = __fmul_rn(v[j], inv);
      qi[j] = p != p ? -127 : min(127, max(-127, __float2int_rn(p)));
    }
    IO::store(qr + i * W, qi);
  }
}

template <DType kT, int kGroup, bool kVec>
void launch(const void* x, int64_t ldx, int8_t* q, float* scale, int64_t M, int64_t K, cudaStream_t stream) {
  const int64_t blocks = ceil_div(M, kThreads / kGroup);
  quantize_rows_kernel<kT, kGroup, kVec><<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(
      static_cast<const typename Elem<kT>::T*>(x), ldx, q, scale, M, K);
}

template <DType kT>
void dispatch(const void* x, int64_t ldx, int8_t* q, float* scale, int64_t M, int64_t K, cudaStream_t stream) {
  constexpr int64_t width = 16 / sizeof(typename Elem<kT>::T);
  const bool vec = aligned16(x) && (ldx * static_cast<int64_t>(sizeof(typename Elem<kT>::T))) % 16 == 0 &&
                   K % width == 0;
  const bool warp_rows = K <= kWarpRowMaxK;
  if (vec) {
    warp_rows ? launch<kT, 32, true>(x, ldx, q, scale, M, K, stream)
              : launch<kT, kThreads, true>(x, ldx, q, scale, M, K, stream);
  } else {
    warp_rows ? launch<kT, 32, false>(x, ldx, q, scale, M, K, stream)
              : launch<kT, kThreads, false>(x, ldx, q, scale, M, K, stream);
  }
}

}  // namespace

cudaError_t quantize_per_token_int8(DType xt, const void* x, int64_t ldx, int8_t* q, float* scale, int64_t M,
                                    int64_t K, cudaStream_t stream) {
  if (M < 1 || K < 1 || ldx < 0 || M > INT32_MAX) return cudaErrorInvalidValue;
  switch (xt) {
    case DType::kF32: dispatch<DType::kF32>(x, ldx, q, scale, M, K, stream); break;
    case DType::kF16: dispatch<DType::kF16>(x, ldx, q, scale, M, K, stream); break;
    case DType::kBF16: dispatch<DType::kBF16>(x, ldx, q, scale, M, K, stream); break;
    default: return cudaErrorInvalidValue;
  }
  return cudaGetLastError();
}

}  // namespace pycomp::cuda
