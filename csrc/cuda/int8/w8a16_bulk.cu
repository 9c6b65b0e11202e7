// Weight-only int8 linear for small M on the copy engine (sm_90): w8a16_linear's variants 8 and 9.
//
// The register-streaming kernel (w8a16_gemv.cu) keeps at most kUnroll chunks per warp in flight, and
// only while that warp is not converting and multiplying the previous ones; on the H200 it streamed
// a 14336x4096 layer at 2.9-3.0 TB/s where cuBLAS bf16 reads at about 3.8. Here loading and math
// are decoupled:
// - a block owns 16 rows of W (the M side of the m16n8k16 mma, run as out^T = W x^T) and all of K;
//   one producer thread copies each row's next kChunk bytes with cp.async.bulk into a kStages ring
//   of shared-memory stages, so kStages x 16 x kChunk bytes per block stay in flight whatever the
//   math does; the stage's mbarrier counts the bytes;
// - kConsumers warps take the stage's 32-byte k groups in turn: one ldmatrix.x4 gives a warp a
//   16-row x 32-byte tile (rows padded by 16 bytes so the eight row addresses hit distinct banks),
//   the int8 -> f16/bf16 conversion is the exact bit arithmetic of w8a16_gemv.cu, and x's
//   fragments come straight from global memory (L1-cached: every block reads the same x);
//   a consumer warp releases the stage with one mbarrier arrival;
// - the warps' partial sums meet in shared memory and the epilogue applies wscale and bias.
//
// k order: ldmatrix hands lane (g, t) bytes 4t..4t+3 of rows g and g + 8 of each 16-byte half of the
// group, so mma k slots {2t, 2t+1} take bytes {4t, 4t+1} and slots {2t+8, 2t+9} bytes {4t+2, 4t+3};
// x's fragment for a half is then its four elements 4t..4t+3, one 8-byte load.
#include "cuda/ptx.cuh"

#include <atomic>

namespace pycomp::cuda {

// Internal entry of w8a16_gemv.cu's dispatch: config 0 or 1 (variants 8 and 9); 16-bit x only.
cudaError_t w8a16_linear_bulk(DType t, const void* x, int64_t ldx, const int8_t* w, const float* wscale,
                              const void* bias, void* out, int64_t ldo, int64_t M, int64_t N, int64_t K, int config,
                              cudaStream_t stream);
// Whether the current device runs the bulk-copy kernels (compute capability 9.0 or newer).
bool w8a16_bulk_supported();

namespace {

constexpr int kRows = 16;
constexpr int kConsumers = 4;
constexpr int kThreads = (kConsumers + 1) * 32;  // the last warp's lane 0 is the producer

template <int kChunk, int kStages>
struct Bulk {
  static constexpr int kPitch = kChunk + 16;            // shared row: ldmatrix rows land on distinct banks
  static constexpr int kStageBytes = kRows * kPitch;
  static constexpr int kRingBytes = kStages * kStageBytes;
  static constexpr int kSmem = kRingBytes + 2 * kStages * 8 + kConsumers * 2 * 32 * 16;
  static_assert(kChunk % 32 == 0 && kStageBytes % 16 == 0, "bulk copies move multiples of 16 bytes");
};

// Four int8 (k, k+1, k+2, k+3) -> lo = (k, k+1), hi = (k+2, k+3) as f16x2 or bf16x2, exactly
// (the conversion of w8a16_gemv.cu).
template <bool kHalf>
__device__ __forceinline__ void int8x4_to_x2(uint32_t w, uint32_t& lo, uint32_t& hi) {
  const uint32_t u = w ^ 0x80808080u;
  if constexpr (kHalf) {
    lo = __byte_perm(u, 0x64646464u, 0x4140);
    hi = __byte_perm(u, 0x64646464u, 0x4342);
    asm("sub.f16x2 %0, %0, %1;\n" : "+r"(lo) : "r"(0x64806480u));
    asm("sub.f16x2 %0, %0, %1;\n" : "+r"(hi) : "r"(0x64806480u));
  } else {
    const float f0 = __uint_as_float(__byte_perm(u, 0x4B000000u, 0x7440)) - 8388736.f;
    const float f1 = __uint_as_float(__byte_perm(u, 0x4B000000u, 0x7441)) - 8388736.f;
    const float f2 = __uint_as_float(__byte_perm(u, 0x4B000000u, 0x7442)) - 8388736.f;
    const float f3 = __uint_as_float(__byte_perm(u, 0x4B000000u, 0x7443)) - 8388736.f;
    lo = __byte_perm(__float_as_uint(f0), __float_as_uint(f1), 0x7632);
    hi = __byte_perm(__float_as_uint(f2), __float_as_uint(f3), 0x7632);
  }
}

__device__ __forceinline__ uint2 ldg_64(const void* p) { return __ldg(reinterpret_cast<const uint2*>(p)); }

// kMT n8 tiles of x rows (1: M <= 8, 2: M <= 16), blockIdx.y the 16-row slice of x.
template <DType kT, int kMT, int kChunk, int kStages>
__global__ void __launch_bounds__(kThreads)
    w8a16_bulk_kernel(const typename Elem<kT>::T* __restrict__ x, int64_t ldx, const int8_t* __restrict__ w,
                      const float* __restrict__ wscale, const typename Elem<kT>::T* __restrict__ bias,
                      typename Elem<kT>::T* __restrict__ out, int64_t ldo, int M, int N, int K) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  using E = Elem<kT>;
  using T = typename E::T;
  using B = Bulk<kChunk, kStages>;
  constexpr bool kHalf = kT == DType::kF16;
  extern __shared__ __align__(128) uint8_t smem[];
  uint64_t* full = reinterpret_cast<uint64_t*>(smem + B::kRingBytes);
  uint64_t* empty = full + kStages;
  float4* partial = reinterpret_cast<float4*>(empty + kStages);  // [kConsumers][kMT * 32]

  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int n0 = blockIdx.x * kRows, m0 = blockIdx.y * 16;
  const int rows_n = min(kRows, N - n0), rows_m = min(16, M - m0);
  const int chunks = (K + kChunk - 1) / kChunk;

  if (threadIdx.x == 0) {
    for (int s = 0; s < kStages; ++s) {
      mbar_init(&full[s], 1);
      mbar_init(&empty[s], kConsumers);
    }
    mbar_init_fence();
  }
  __syncthreads();

  if (warp == kConsumers) {  // the producer
    if (lane == 0) {
      const uint64_t policy = l2_evict_first_policy();
      const int8_t* src = w + static_cast<int64_t>(n0) * K;
      for (int c = 0; c < chunks; ++c) {
        const int s = c % kStages;
        if (c >= kStages) mbar_wait(&empty[s], ((c / kStages) + 1) & 1);  // its consumers are done with it
        const int bytes = min(kChunk, K - c * kChunk);
        mbar_arrive_expect_tx(&full[s], static_cast<unsigned>(bytes * rows_n));
        uint8_t* dst = smem + s * B::kStageBytes;
        for (int r = 0; r < rows_n; ++r)
          bulk_copy_g2s(dst + r * B::kPitch, src + static_cast<int64_t>(r) * K + c * kChunk,
                        static_cast<unsigned>(bytes), &full[s], policy);
      }
    }
    return;
  }

  const int gid = lane / 4, tig = lane % 4;
  const T* xr[kMT];
#pragma unroll
  for (int mt = 0; mt < kMT; ++mt) {
    const int m = gid + 8 * mt;
    xr[mt] = x + static_cast<int64_t>(m0 + (m < rows_m ? m : 0)) * ldx + 4 * tig;  // rows past M: never stored
  }
  // ldmatrix row addresses: lanes 0-15 the rows of the group's first 16 bytes, lanes 16-31 the second's.
  const uint32_t ring = smem_addr(smem) + (lane % 16) * B::kPitch + (lane / 16) * 16;

  float acc[kMT][4] = {};
  for (int c = 0; c < chunks; ++c) {
    const int s = c % kStages;
    const int k0 = c * kChunk;
    const int bytes = min(kChunk, K - k0);
    mbar_wait(&full[s], (c / kStages) & 1);
    for (int g = warp; g * 32 < bytes; g += kConsumers) {
      uint32_t r[4];
      ldmatrix_x4(r, ring + s * B::kStageBytes + g * 32);
      const int k = k0 + g * 32;
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        if (half == 1 && g * 32 + 16 >= bytes) break;  // K % 32 == 16: the last group has one half
        uint32_t a[4];
        int8x4_to_x2<kHalf>(r[2 * half], a[0], a[2]);      // row gid
        int8x4_to_x2<kHalf>(r[2 * half + 1], a[1], a[3]);  // row gid + 8
#pragma unroll
        for (int mt = 0; mt < kMT; ++mt) {
          const uint2 xv = ldg_64(xr[mt] + k + 16 * half);
          const uint32_t b[2] = {xv.x, xv.y};
          mma_16816<kHalf>(acc[mt], a, b);
        }
      }
    }
    __syncwarp();
    if (lane == 0) mbar_arrive(&empty[s]);
  }

  // The consumers' partials meet (accumulator r of lane l in n8 tile mt: row n0 + l/4 + 8 (r/2) of W,
  // row mt * 8 + 2 (l % 4) + r % 2 of x); a named barrier, as the producer warp has left.
#pragma unroll
  for (int mt = 0; mt < kMT; ++mt)
    partial[warp * kMT * 32 + mt * 32 + lane] = make_float4(acc[mt][0], acc[mt][1], acc[mt][2], acc[mt][3]);
  asm volatile("bar.sync 1, %0;\n" ::"n"(kConsumers * 32));
  const float* p = reinterpret_cast<const float*>(partial);
  for (int e = threadIdx.x; e < kMT * 128; e += kConsumers * 32) {
    float sum = 0.f;
#pragma unroll
    for (int i = 0; i < kConsumers; ++i) sum += p[i * kMT * 128 + e];
    const int mt = e / 128, l = (e % 128) / 4, r = e % 4;
    const int n = l / 4 + 8 * (r / 2);
    const int m = mt * 8 + 2 * (l % 4) + r % 2;
    if (n < rows_n && m < rows_m) {
      float v = sum * wscale[n0 + n];
      if (bias != nullptr) v += E::to_float(bias[n0 + n]);
      out[static_cast<int64_t>(m0 + m) * ldo + n0 + n] = E::from_float(v);
    }
  }
#endif
}

template <DType kT, int kMT, int kChunk, int kStages>
cudaError_t launch(const void* x, int64_t ldx, const int8_t* w, const float* wscale, const void* bias, void* out,
                   int64_t ldo, int64_t M, int64_t N, int64_t K, cudaStream_t stream) {
  using T = typename Elem<kT>::T;
  constexpr auto kernel = &w8a16_bulk_kernel<kT, kMT, kChunk, kStages>;
  constexpr int smem = Bulk<kChunk, kStages>::kSmem;
  cudaError_t err = opt_in_dynamic_smem<kernel>(smem);
  if (err != cudaSuccess) return err;
  const dim3 grid(static_cast<unsigned>(ceil_div(N, kRows)), static_cast<unsigned>(ceil_div(M, 16)));
  kernel<<<grid, kThreads, smem, stream>>>(static_cast<const T*>(x), ldx, w, wscale, static_cast<const T*>(bias),
                                           static_cast<T*>(out), ldo, static_cast<int>(M), static_cast<int>(N),
                                           static_cast<int>(K));
  return cudaGetLastError();
}

template <DType kT>
cudaError_t dispatch(int config, const void* x, int64_t ldx, const int8_t* w, const float* wscale, const void* bias,
                     void* out, int64_t ldo, int64_t M, int64_t N, int64_t K, cudaStream_t stream) {
  // config 0: 512-byte chunks, 4 stages (34 KB of ring, about 6 blocks and 200 KB in flight per SM);
  // config 1: 1 KB chunks, 3 stages (50 KB, about 4 blocks and 200 KB in flight).
  if (config == 0)
    return M <= 8 ? launch<kT, 1, 512, 4>(x, ldx, w, wscale, bias, out, ldo, M, N, K, stream)
                  : launch<kT, 2, 512, 4>(x, ldx, w, wscale, bias, out, ldo, M, N, K, stream);
  return M <= 8 ? launch<kT, 1, 1024, 3>(x, ldx, w, wscale, bias, out, ldo, M, N, K, stream)
                : launch<kT, 2, 1024, 3>(x, ldx, w, wscale, bias, out, ldo, M, N, K, stream);
}

}  // namespace

bool w8a16_bulk_supported() {
  static std::atomic<int> major_of[64] = {};
  int device = 0, major = 0;
  if (cudaGetDevice(&device) != cudaSuccess) return false;
  const bool cached = device >= 0 && device < 64;
  if (cached) major = major_of[device].load(std::memory_order_relaxed);
  if (major == 0) {
    if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) != cudaSuccess) return false;
    if (cached) major_of[device].store(major, std::memory_order_relaxed);
  }
  return major >= 9;
}

cudaError_t w8a16_linear_bulk(DType t, const void* x, int64_t ldx, const int8_t* w, const float* wscale,
                              const void* bias, void* out, int64_t ldo, int64_t M, int64_t N, int64_t K, int config,
                              cudaStream_t stream) {
  // Bulk copies start at 16-byte aligned addresses: every row of w must (K % 16 == 0, w aligned).
  if (K % 16 || !aligned16(w) || (config != 0 && config != 1)) return cudaErrorInvalidValue;
  if (t == DType::kF16) return dispatch<DType::kF16>(config, x, ldx, w, wscale, bias, out, ldo, M, N, K, stream);
  if (t == DType::kBF16) return dispatch<DType::kBF16>(config, x, ldx, w, wscale, bias, out, ldo, M, N, K, stream);
  return cudaErrorInvalidValue;
}

}  // namespace pycomp::cuda
