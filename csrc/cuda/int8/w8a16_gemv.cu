// Weight-only int8 linear for small M (decode): out = x @ (w * wscale)^T + bias.
//
// Memory-bound, so the design is about streaming W at full bandwidth:
// - a block owns 16 rows of W (the M side of one m16n8k16 tensor-core mma, run
//   as out^T = W x^T) and its 8 warps split K, so N = 4096 still yields 256
//   blocks x 8 warps of loads in flight;
// - each thread reads 16 consecutive int8 of a row per 64-wide k chunk with one
//   16-byte load (L1 bypassed), kUnroll chunks per row issued before any math;
// - the int8 -> f16/bf16 conversion is exact bit arithmetic (byte_perm + one
//   add), then fp32 accumulation on the tensor cores; x (tiny) is read through
//   L1 with 16-byte loads, up to 16 rows of it (two n8 tiles of the mma);
// - the warps' partial sums meet in shared memory, and the epilogue applies
//   wscale and bias once per output.
//
// The k order inside a chunk is permuted to match the mma fragments: thread t
// of a quad holds bytes 16t..16t+15; its 32-bit word s feeds mma step s, where
// k slots {2t, 2t+1} take bytes {0, 1} of the word and slots {2t+8, 2t+9} bytes
// {2, 3}. x is loaded with the same permutation, so the dot product is unchanged.
#include "cuda/ptx.cuh"

namespace pycomp::cuda {
namespace {

constexpr int kWarps = 8;  // warps per block of the default kernel, each owning a slice of K
constexpr int kRows = 16;   // rows of W per block
constexpr int kChunk = 64;  // k per chunk: 4 threads x 16 bytes

__device__ __forceinline__ uint32_t word(const uint4& v, int s) {
  return s == 0 ? v.x : s == 1 ? v.y : s == 2 ? v.z : v.w;
}

// Four int8 (k, k+1, k+2, k+3) -> lo = (k, k+1), hi = (k+2, k+3) as f16x2 or
// bf16x2, exactly (every value in [-128, 127] is representable in both).
template <bool kHalf>
__device__ __forceinline__ void int8x4_to_x2(uint32_t w, uint32_t& lo, uint32_t& hi) {
  const uint32_t u = w ^ 0x80808080u;  // each byte becomes w + 128 in [0, 255]
  if constexpr (kHalf) {
    // f16 with bits 0x64uu is 1024 + uu; subtract 1152 = 1024 + 128 (0x6480).
    lo = __byte_perm(u, 0x64646464u, 0x4140);
    hi = __byte_perm(u, 0x64646464u, 0x4342);
    asm("sub.f16x2 %0, %0, %1;\n" : "+r"(lo) : "r"(0x64806480u));
    asm("sub.f16x2 %0, %0, %1;\n" : "+r"(hi) : "r"(0x64806480u));
  } else {
    // f32 with bits 0x4B0000uu is 2^23 + uu; subtract 2^23 + 128, then keep the
    // upper halves (the bf16 values; the lower halves are zero).
    const float f0 = __uint_as_float(__byte_perm(u, 0x4B000000u, 0x7440)) - 8388736.f;
    const float f1 = __uint_as_float(__byte_perm(u, 0x4B000000u, 0x7441)) - 8388736.f;
    const float f2 = __uint_as_float(__byte_perm(u, 0x4B000000u, 0x7442)) - 8388736.f;
    const float f3 = __uint_as_float(__byte_perm(u, 0x4B000000u, 0x7443)) - 8388736.f;
    lo = __byte_perm(__float_as_uint(f0), __float_as_uint(f1), 0x7632);
    hi = __byte_perm(__float_as_uint(f2), __float_as_uint(f3), 0x7632);
  }
}

__device__ __forceinline__ uint32_t bf16x2_bits(__nv_bfloat162 v) {
  return static_cast<uint32_t>(__bfloat16_as_ushort(v.x)) | static_cast<uint32_t>(__bfloat16_as_ushort(v.y)) << 16;
}

// x as the mma's B operand. 16-bit x: the 16 elements of a chunk segment are 2
// vectors, and step s takes words 2s, 2s+1. fp32 x: step s takes vector s
// (4 floats), split into bf16 hi + lo parts that run as two mmas, which keeps
// about 16 bits of x's mantissa.
template <DType kT>
struct XOperand {
  static constexpr bool kSplit = kT == DType::kF32;
  static constexpr int kVecs = sizeof(typename Elem<kT>::T);  // 16-byte vectors per 16 elements
  static constexpr int kElemsPerVec = 16 / kVecs;

  __device__ __forceinline__ static void fragment(const uint4 (&v)[kVecs], int s, uint32_t (&hi)[2],
                                                  uint32_t (&lo)[2]) {
    if constexpr (kSplit) {
      const float f0 = __uint_as_float(word(v[s], 0)), f1 = __uint_as_float(word(v[s], 1));
      const float f2 = __uint_as_float(word(v[s], 2)), f3 = __uint_as_float(word(v[s], 3));
      const __nv_bfloat162 h01 = __floats2bfloat162_rn(f0, f1), h23 = __floats2bfloat162_rn(f2, f3);
      hi[0] = bf16x2_bits(h01);
      hi[1] = bf16x2_bits(h23);
      lo[0] = bf16x2_bits(__floats2bfloat162_rn(f0 - __low2float(h01), f1 - __high2float(h01)));
      lo[1] = bf16x2_bits(__floats2bfloat162_rn(f2 - __low2float(h23), f3 - __high2float(h23)));
    } else {
      hi[0] = word(v[s / 2], (s % 2) * 2);
      hi[1] = word(v[s / 2], (s % 2) * 2 + 1);
    }
  }
};

// kMT: n8 tiles of x rows (1: M <= 8, 2: M <= 16); kUnroll: chunks in flight; kW warps split K;
// kMinBlocks: blocks per SM the registers must allow.
template <DType kT, int kMT, int kUnroll, int kW, int kMinBlocks>
__global__ void __launch_bounds__(kW * 32, kMinBlocks)
    w8a16_gemv_kernel(const typename Elem<kT>::T* __restrict__ x, int64_t ldx, const int8_t* __restrict__ w,
                      const float* __restrict__ wscale, const typename Elem<kT>::T* __restrict__ bias,
                      typename Elem<kT>::T* __restrict__ out, int64_t ldo, int M, int N, int K) {
  using E = Elem<kT>;
  using T = typename E::T;
  using XO = XOperand<kT>;
  constexpr bool kHalf = kT == DType::kF16;

  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int gid = lane / 4, tig = lane % 4;
  const int n0 = blockIdx.x * kRows;
  const int m0 = blockIdx.y * 16;
  const int rows_m = min(16, M - m0);

  // Out-of-range rows read row 0 (never used: their loads are predicated off).
  const bool w_ok0 = n0 + gid < N, w_ok1 = n0 + gid + 8 < N;
  const int8_t* w0 = w + static_cast<int64_t>(w_ok0 ? n0 + gid : 0) * K + tig * 16;
  const int8_t* w1 = w + static_cast<int64_t>(w_ok1 ? n0 + gid + 8 : 0) * K + tig * 16;
  const T* xr[kMT];
  bool x_ok[kMT];
#pragma unroll
  for (int mt = 0; mt < kMT; ++mt) {
    const int m = gid + 8 * mt;
    x_ok[mt] = m < rows_m;
    xr[mt] = x + static_cast<int64_t>(m0 + (x_ok[mt] ? m : 0)) * ldx + tig * 16;
  }

  float acc[kMT][4] = {};
  const int chunks = (K + kChunk - 1) / kChunk;
  for (int c = warp * kUnroll; c < chunks; c += kW * kUnroll) {
    uint4 wa[kUnroll], wb[kUnroll], xv[kUnroll][kMT][XO::kVecs];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int k = (c + u) * kChunk;
      const bool k_ok = k + tig * 16 < K;  // K % 16 == 0: a segment is all in or all out
      wa[u] = wb[u] = make_uint4(0, 0, 0, 0);
      if (k_ok && w_ok0) wa[u] = ldg_stream_128(w0 + k);
      if (k_ok && w_ok1) wb[u] = ldg_stream_128(w1 + k);
#pragma unroll
      for (int mt = 0; mt < kMT; ++mt) {
#pragma unroll
        for (int v = 0; v < XO::kVecs; ++v) {
          xv[u][mt][v] = make_uint4(0, 0, 0, 0);
          if (k_ok && x_ok[mt]) xv[u][mt][v] = ldg_128(xr[mt] + k + v * XO::kElemsPerVec);
        }
      }
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
#pragma unroll
      for (int s = 0; s < 4; ++s) {
        uint32_t a[4];
        int8x4_to_x2<kHalf>(word(wa[u], s), a[0], a[2]);  // row gid:   slots 2t.. and 2t+8..
        int8x4_to_x2<kHalf>(word(wb[u], s), a[1], a[3]);  // row gid+8
#pragma unroll
        for (int mt = 0; mt < kMT; ++mt) {
          uint32_t b_hi[2], b_lo[2];
          XO::fragment(xv[u][mt], s, b_hi, b_lo);
          mma_16816<kHalf>(acc[mt], a, b_hi);
          if constexpr (XO::kSplit) mma_16816<kHalf>(acc[mt], a, b_lo);
        }
      }
    }
  }

  // Sum the warps' partials. Accumulator r of lane l in n8 tile mt holds
  // row n0 + l/4 + 8 * (r / 2) of W and row mt * 8 + 2 * (l % 4) + r % 2 of x.
  __shared__ float4 partial[kW][kMT * 32];
#pragma unroll
  for (int mt = 0; mt < kMT; ++mt)
    partial[warp][mt * 32 + lane] = make_float4(acc[mt][0], acc[mt][1], acc[mt][2], acc[mt][3]);
  __syncthreads();
  const auto output = [&](int e) {
    const float* p = reinterpret_cast<const float*>(partial);
    float sum = 0.f;
#pragma unroll
    for (int i = 0; i < kW; ++i) sum += p[i * kMT * 128 + e];
    const int mt = e / 128, l = (e % 128) / 4, r = e % 4;
    const int n = n0 + l / 4 + 8 * (r / 2);
    const int m = mt * 8 + 2 * (l % 4) + r % 2;
    if (n < N && m < rows_m) {
      float v = sum * wscale[n];
      if (bias != nullptr) v += E::to_float(bias[n]);
      out[static_cast<int64_t>(m0 + m) * ldo + n] = E::from_float(v);
    }
  };
  if constexpr (kMT * 128 <= kW * 32) {  // one output per thread (the default kernel)
    if (static_cast<int>(threadIdx.x) < kMT * 128) output(threadIdx.x);
  } else {
    for (int e = threadIdx.x; e < kMT * 128; e += kW * 32) output(e);
  }
}

// Variants (v >= 1, 16-bit x only): the default kernel holds 100 registers (M <= 8), so 2 blocks
// of 8 warps fit an SM and a 14336-row layer runs in 3.4 waves of short blocks. Each variant
// trades chunks in flight per warp (kUnroll) against resident warps (kMinBlocks bounds the
// registers), or changes the block's warps: (kUnroll, kW, kMinBlocks) for M <= 8 and M <= 16.
struct W8Shape {
  int unroll, warps, min_blocks;
};
constexpr int kW8Count = 4;
constexpr W8Shape kW8M8[kW8Count] = {{4, 8, 3}, {2, 8, 4}, {4, 4, 4}, {2, 16, 2}};
constexpr W8Shape kW8M16[kW8Count] = {{2, 8, 3}, {1, 8, 4}, {2, 4, 4}, {1, 16, 2}};

template <DType kT, int kMT, int kUnroll, int kW, int kMinBlocks>
void launch_shape(const void* x, int64_t ldx, const int8_t* w, const float* wscale, const void* bias, void* out,
                  int64_t ldo, int64_t M, int64_t N, int64_t K, cudaStream_t stream) {
  using T = typename Elem<kT>::T;
  const dim3 grid(static_cast<unsigned>(ceil_div(N, kRows)), static_cast<unsigned>(ceil_div(M, 16)));
  w8a16_gemv_kernel<kT, kMT, kUnroll, kW, kMinBlocks><<<grid, kW * 32, 0, stream>>>(
      static_cast<const T*>(x), ldx, w, wscale, static_cast<const T*>(bias), static_cast<T*>(out), ldo,
      static_cast<int>(M), static_cast<int>(N), static_cast<int>(K));
}

template <DType kT, int kMT, int kV>
void launch_variant(const void* x, int64_t ldx, const int8_t* w, const float* wscale, const void* bias, void* out,
                    int64_t ldo, int64_t M, int64_t N, int64_t K, cudaStream_t stream) {
  constexpr W8Shape s = (kMT == 1 ? kW8M8 : kW8M16)[kV - 1];
  launch_shape<kT, kMT, s.unroll, s.warps, s.min_blocks>(x, ldx, w, wscale, bias, out, ldo, M, N, K, stream);
}

template <DType kT, int kMT>
void launch(int variant, const void* x, int64_t ldx, const int8_t* w, const float* wscale, const void* bias,
            void* out, int64_t ldo, int64_t M, int64_t N, int64_t K, cudaStream_t stream) {
  static_assert(kW8Count == 4, "the switch names every variant");
  if constexpr (kT != DType::kF32) {
    switch (variant) {
      case 1: return launch_variant<kT, kMT, 1>(x, ldx, w, wscale, bias, out, ldo, M, N, K, stream);
      case 2: return launch_variant<kT, kMT, 2>(x, ldx, w, wscale, bias, out, ldo, M, N, K, stream);
      case 3: return launch_variant<kT, kMT, 3>(x, ldx, w, wscale, bias, out, ldo, M, N, K, stream);
      case 4: return launch_variant<kT, kMT, 4>(x, ldx, w, wscale, bias, out, ldo, M, N, K, stream);
      default: break;
    }
  }
  // Registers bound the chunks in flight: 4 when x takes one 8-row tile of 16-bit values.
  constexpr int kUnroll = (kMT == 1 && kT != DType::kF32) ? 4 : 2;
  launch_shape<kT, kMT, kUnroll, kWarps, 2>(x, ldx, w, wscale, bias, out, ldo, M, N, K, stream);
}

template <DType kT>
void dispatch(int variant, const void* x, int64_t ldx, const int8_t* w, const float* wscale, const void* bias,
              void* out, int64_t ldo, int64_t M, int64_t N, int64_t K, cudaStream_t stream) {
  if (M <= 8)
    launch<kT, 1>(variant, x, ldx, w, wscale, bias, out, ldo, M, N, K, stream);
  else
    launch<kT, 2>(variant, x, ldx, w, wscale, bias, out, ldo, M, N, K, stream);
}

size_t elem_size(DType t) { return t == DType::kF32 ? 4 : 2; }

}  // namespace

int w8a16_gemv_variants() { return 1 + kW8Count; }

W8A16GemvShape w8a16_gemv_shape(int64_t M, int variant) {
  if (variant < 1 || variant > kW8Count) return {M <= 8 ? 4 : 2, kWarps, 2};
  const W8Shape s = (M <= 8 ? kW8M8 : kW8M16)[variant - 1];
  return {s.unroll, s.warps, s.min_blocks};
}

cudaError_t w8a16_linear(DType t, const void* x, int64_t ldx, const int8_t* w, const float* wscale, const void* bias,
                         void* out, int64_t ldo, int64_t M, int64_t N, int64_t K, cudaStream_t stream, int variant) {
  // N and K stay clear of INT32_MAX: the kernel's int row and k indices run a tile / a few chunks past them.
  const bool shapes_ok = M >= 1 && N >= 1 && K >= 16 && K % 16 == 0 && N <= INT32_MAX - 16 &&
                         K <= INT32_MAX - 1024 && ceil_div(M, 16) <= 65535 && ldo >= N && ldx >= 0;
  const bool aligned = aligned16(x) && aligned16(w) && (ldx * static_cast<int64_t>(elem_size(t))) % 16 == 0;
  if (!shapes_ok || !aligned || variant < 0 || variant >= w8a16_gemv_variants()) return cudaErrorInvalidValue;
  switch (t) {
    case DType::kF32: dispatch<DType::kF32>(variant, x, ldx, w, wscale, bias, out, ldo, M, N, K, stream); break;
    case DType::kF16: dispatch<DType::kF16>(variant, x, ldx, w, wscale, bias, out, ldo, M, N, K, stream); break;
    case DType::kBF16: dispatch<DType::kBF16>(variant, x, ldx, w, wscale, bias, out, ldo, M, N, K, stream); break;
    default: return cudaErrorInvalidValue;
  }
  return cudaGetLastError();
}

}  // namespace pycomp::cuda
