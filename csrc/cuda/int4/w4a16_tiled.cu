// int4 W4A16 decode GEMV on the tile16x64 layout (see tiled_cuda.h); an experiment, not dispatched.
//
// - A block owns one 16-row tile row (the M side of m16n8k16, run as out^T = W x^T) and its kW warps
//   take the 64-wide k steps in turn, so at each step the block's warps read kW consecutive 512-byte
//   tiles. Each lane copies its own 16 bytes of a tile into its slot of a per-warp cp.async ring of
//   kS stages and reads back only that slot (no barrier in the loop); or, in the register configs, a warp
//   loads a batch of steps straight into registers before computing them.
// - The tile's bytes are in mma fragment order: lane l = 4g + t owns bytes 16l .. 16l + 15, and
//   nibble i (bits 4i) of its word j is the code of row g + 8 (i & 1), column 16t + 4j + 2 ((i >> 1) & 1)
//   + (i >> 2) of the tile. So pair p = (word >> 4p) & 0x000F000F is the mma's a_p (rows g, g + 8 at the
//   k slots {2t, 2t+1} for p = 0, 1 and {2t+8, 2t+9} for p = 2, 3), slot 2t + s standing for column
//   16t + 4j + s (s = 0, 1) and slot 2t + 8 + s for column 16t + 4j + 2 + s. The lane's x for a step is
//   then 16 consecutive elements (two 16-byte loads). pycomp.formats.int4.pack_tile16x64 is the reference.
// - The block's scales and zero points are staged in shared memory once, with the first copies.
// - Dequantization: (nibble | magic) - (magic + zero) is exact in f16 and bf16; the mma sums a step's
//   (code - zero) * x in fp32, and the step's partial is scaled by the group's scale in fp32.
// - The warps' partials meet in shared memory; the epilogue adds the bias.
#include "cuda/int4/tiled_cuda.h"
#include "cuda/ptx.cuh"

namespace pycomp::cuda {
namespace {

constexpr int kTileUnits = 32;  // uint4 per 512-byte tile
constexpr int kMaxGroups = 128;  // groups per row the staged table holds (K <= 16384 at group 128)

template <bool kHalf>
constexpr uint32_t kMagic2 = kHalf ? 0x64006400u : 0x43004300u;  // 1024.0 (f16) or 128.0 (bf16) in both halves

template <bool kHalf>
__device__ __forceinline__ uint32_t add2(uint32_t a, uint32_t b) {
  uint32_t d;
  if constexpr (kHalf) {
    asm("add.f16x2 %0, %1, %2;\n" : "=r"(d) : "r"(a), "r"(b));
  } else {
    asm("fma.rn.bf16x2 %0, %1, %2, %3;\n" : "=r"(d) : "r"(a), "r"(0x3F803F80u), "r"(b));
  }
  return d;
}

// -(magic + zero) in both halves: magic + zero (zero <= 15) is the magic's bits or'ed with zero.
template <bool kHalf>
__device__ __forceinline__ uint32_t neg_zero2(uint32_t zero) {
  return ((kMagic2<kHalf> | 0x80008000u) | zero) | (zero << 16);
}

__device__ __forceinline__ uint32_t word4(const uint4& v, int j) {
  return j == 0 ? v.x : j == 1 ? v.y : j == 2 ? v.z : v.w;
}

// One 64-wide k step of a lane: its 16 bytes of the tile, its 16 elements of each of kMT x rows, the two
// rows' scales and -(magic + zero) constants -> acc += scale * (code - zero) . x over the step, in fp32.
template <bool kHalf, int kMT>
__device__ __forceinline__ void step_mma(float (&acc)[kMT][4], const uint4& wv, const uint4 (&xv)[kMT][2], float s_a,
                                         float s_b, uint32_t nz_a, uint32_t nz_b) {
  float t[kMT][4] = {};
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    const uint32_t w = word4(wv, j);
    uint32_t a[4];
#pragma unroll
    for (int p = 0; p < 4; ++p)
      a[p] = add2<kHalf>(((w >> (4 * p)) & 0x000F000Fu) | kMagic2<kHalf>, (p & 1) ? nz_b : nz_a);
#pragma unroll
    for (int mt = 0; mt < kMT; ++mt) {
      const uint32_t b[2] = {word4(xv[mt][j / 2], 2 * (j % 2)), word4(xv[mt][j / 2], 2 * (j % 2) + 1)};
      mma_16816<kHalf>(t[mt], a, b);
    }
  }
#pragma unroll
  for (int mt = 0; mt < kMT; ++mt) {
    acc[mt][0] += s_a * t[mt][0];
    acc[mt][1] += s_a * t[mt][1];
    acc[mt][2] += s_b * t[mt][2];
    acc[mt][3] += s_b * t[mt][3];
  }
}

// kS > 0: each lane's tile bytes go through a per-warp cp.async ring of kS stages;
// kS < 0: -kS steps per batch are loaded straight into registers (16-byte streaming loads), then computed.
// kMT n8 tiles of x rows: 1 for M <= 8, 2 for M <= 16.
template <DType kT, int kMT, int kW, int kS>
__global__ void __launch_bounds__(kW * 32, kS > 0 ? 32 / kW : (kMT == 1 ? 24 : 16) / kW)
    w4a16_tiled_kernel(const typename Elem<kT>::T* __restrict__ x, int64_t ldx, const uint4* __restrict__ tiles,
                       const __half* __restrict__ scales, const uint8_t* __restrict__ zeros,
                       const typename Elem<kT>::T* __restrict__ bias, typename Elem<kT>::T* __restrict__ out,
                       int64_t ldo, int M, int K, int G, int gs_shift) {
  using E = Elem<kT>;
  using T = typename E::T;
  constexpr bool kHalf = kT == DType::kF16;
  constexpr int kRing = kS > 0 ? kS : 1;
  __shared__ uint4 ring[kW][kRing][32];
  __shared__ float4 partial[kW][kMT * 32];
  __shared__ __align__(16) __half stab[16 * kMaxGroups];
  __shared__ __align__(16) uint8_t ztab[16 * kMaxGroups];

  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int gid = lane / 4, tig = lane % 4;
  const int n0 = blockIdx.x * 16;
  const int steps = K / 64;
  const uint4* src = tiles + static_cast<int64_t>(blockIdx.x) * steps * kTileUnits + lane;
  const T* xr[kMT];
#pragma unroll
  for (int mt = 0; mt < kMT; ++mt)  // rows past M read row 0 and are never stored
    xr[mt] = x + static_cast<int64_t>(gid + 8 * mt < M ? gid + 8 * mt : 0) * ldx + 16 * tig;

  // The block's scales and zero points (16 rows x G groups) are copied to shared memory first, as one
  // cp.async group ahead of the ring's: read per step from global memory, each would stall its warp for a
  // DRAM round trip (they are read once).
  const int srow_units = G / 8, zrow_units = G / 16;  // 16-byte units per row (G % 16 == 0)
  for (int u = threadIdx.x; u < 16 * (srow_units + zrow_units); u += kW * 32) {
    if (u < 16 * srow_units) {
      const int r = u / srow_units, c = u % srow_units;
      cp_async_16_zfill(smem_addr(&stab[r * G + 8 * c]), scales + static_cast<int64_t>(n0 + r) * G + 8 * c, true);
    } else if (zeros != nullptr) {
      const int v = u - 16 * srow_units, r = v / zrow_units, c = v % zrow_units;
      cp_async_16_zfill(smem_addr(&ztab[r * G + 16 * c]), zeros + static_cast<int64_t>(n0 + r) * G + 16 * c, true);
    }
  }
  cp_async_commit();

  // Warp step i is k step warp + i * kW, so at each step the block's warps read kW consecutive tiles.
  const int my_steps = steps > warp ? (steps - warp + kW - 1) / kW : 0;
  // x (L1: every block reads it), the group's scales and zero constants of warp step i.
  const auto side = [&](int i, uint4 (&xv)[kMT][2], float& s_a, float& s_b, uint32_t& nz_a, uint32_t& nz_b) {
    const int k = (warp + i * kW) * 64;
#pragma unroll
    for (int mt = 0; mt < kMT; ++mt) {
      xv[mt][0] = ldg_128(xr[mt] + k);
      xv[mt][1] = ldg_128(xr[mt] + k + 8);
    }
    const int g = k >> gs_shift;
    s_a = __half2float(stab[gid * G + g]);
    s_b = __half2float(stab[(gid + 8) * G + g]);
    nz_a = neg_zero2<kHalf>(zeros == nullptr ? 8u : ztab[gid * G + g]);
    nz_b = neg_zero2<kHalf>(zeros == nullptr ? 8u : ztab[(gid + 8) * G + g]);
  };
  float acc[kMT][4] = {};

  if constexpr (kS > 0) {
    const auto issue = [&](int i) {
      if (i < my_steps)
        cp_async_16_zfill(smem_addr(&ring[warp][i % kS][lane]),
                          src + static_cast<int64_t>(warp + i * kW) * kTileUnits, true);
      cp_async_commit();  // an empty group past the end keeps the wait count uniform
    };
#pragma unroll
    for (int i = 0; i < kS - 1; ++i) issue(i);
    cp_async_wait<kS - 1>();  // this thread's table copies have landed
    __syncthreads();          // and everyone's
    for (int i = 0; i < my_steps; ++i) {
      uint4 xv[kMT][2];
      float s_a, s_b;
      uint32_t nz_a, nz_b;
      side(i, xv, s_a, s_b, nz_a, nz_b);  // first, so its latency hides behind the wait
      cp_async_wait<kS - 2>();            // steps 0 .. i have landed
      const uint4 wv = ring[warp][i % kS][lane];
      asm volatile("" ::: "memory");  // the read above stays before the copy that refills the slot of step i - 1
      issue(i + kS - 1);
      step_mma<kHalf, kMT>(acc, wv, xv, s_a, s_b, nz_a, nz_b);
    }
  } else {
    constexpr int kU = -kS;
    cp_async_wait<0>();
    __syncthreads();
    for (int i0 = 0; i0 < my_steps; i0 += kU) {
      uint4 wv[kU];
#pragma unroll
      for (int u = 0; u < kU; ++u)
        wv[u] = i0 + u < my_steps ? ldg_stream_128(src + static_cast<int64_t>(warp + (i0 + u) * kW) * kTileUnits)
                                  : make_uint4(0, 0, 0, 0);
#pragma unroll
      for (int u = 0; u < kU; ++u) {
        if (i0 + u >= my_steps) break;
        uint4 xv[kMT][2];
        float s_a, s_b;
        uint32_t nz_a, nz_b;
        side(i0 + u, xv, s_a, s_b, nz_a, nz_b);
        step_mma<kHalf, kMT>(acc, wv[u], xv, s_a, s_b, nz_a, nz_b);
      }
    }
  }

  // Accumulator r of lane l in n8 tile mt: row n0 + l/4 + 8 (r/2) of W, row 8 mt + 2 (l % 4) + r % 2 of x.
#pragma unroll
  for (int mt = 0; mt < kMT; ++mt)
    partial[warp][mt * 32 + lane] = make_float4(acc[mt][0], acc[mt][1], acc[mt][2], acc[mt][3]);
  __syncthreads();
  for (int e = threadIdx.x; e < kMT * 128; e += kW * 32) {
    const float* p = reinterpret_cast<const float*>(partial);
    float sum = 0.f;
#pragma unroll
    for (int w = 0; w < kW; ++w) sum += p[w * kMT * 128 + e];
    const int mt = e / 128, l = (e % 128) / 4, r = e % 4;
    const int n = n0 + l / 4 + 8 * (r / 2), m = 8 * mt + 2 * (l % 4) + r % 2;
    if (m < M) {
      if (bias != nullptr) sum += E::to_float(bias[n]);
      out[static_cast<int64_t>(m) * ldo + n] = E::from_float(sum);
    }
  }
}

struct Config {
  int warps, stages;
};
// stages < 0: register batches of -stages steps instead of a ring.
constexpr Config kConfigs[] = {{8, 8}, {4, 8}, {8, 4}, {4, 4}, {8, 2}, {16, 3}, {8, -8}, {4, -8}};
constexpr int kConfigCount = sizeof(kConfigs) / sizeof(kConfigs[0]);

template <DType kT, int kMT, int kC>
cudaError_t launch_mt(const void* x, int64_t ldx, const uint8_t* tiles, const void* scales, const uint8_t* zeros,
                   const void* bias, void* out, int64_t ldo, int64_t M, int64_t N, int64_t K, int gs_shift,
                   cudaStream_t stream) {
  using T = typename Elem<kT>::T;
  constexpr Config c = kConfigs[kC];
  const int G = static_cast<int>(K >> gs_shift);
  w4a16_tiled_kernel<kT, kMT, c.warps, c.stages><<<static_cast<unsigned>(N / 16), c.warps * 32, 0, stream>>>(
      static_cast<const T*>(x), ldx, reinterpret_cast<const uint4*>(tiles), static_cast<const __half*>(scales), zeros,
      static_cast<const T*>(bias), static_cast<T*>(out), ldo, static_cast<int>(M), static_cast<int>(K), G, gs_shift);
  return cudaGetLastError();
}

template <DType kT, int kC>
cudaError_t launch(const void* x, int64_t ldx, const uint8_t* tiles, const void* scales, const uint8_t* zeros,
                   const void* bias, void* out, int64_t ldo, int64_t M, int64_t N, int64_t K, int gs_shift,
                   cudaStream_t stream) {
  return M <= 8 ? launch_mt<kT, 1, kC>(x, ldx, tiles, scales, zeros, bias, out, ldo, M, N, K, gs_shift, stream)
                : launch_mt<kT, 2, kC>(x, ldx, tiles, scales, zeros, bias, out, ldo, M, N, K, gs_shift, stream);
}

template <DType kT>
cudaError_t dispatch(int config, const void* x, int64_t ldx, const uint8_t* tiles, const void* scales,
                     const uint8_t* zeros, const void* bias, void* out, int64_t ldo, int64_t M, int64_t N, int64_t K,
                     int gs_shift, cudaStream_t stream) {
  static_assert(kConfigCount == 8, "the switch names every config");
  switch (config) {
    case 0: return launch<kT, 0>(x, ldx, tiles, scales, zeros, bias, out, ldo, M, N, K, gs_shift, stream);
    case 1: return launch<kT, 1>(x, ldx, tiles, scales, zeros, bias, out, ldo, M, N, K, gs_shift, stream);
    case 2: return launch<kT, 2>(x, ldx, tiles, scales, zeros, bias, out, ldo, M, N, K, gs_shift, stream);
    case 3: return launch<kT, 3>(x, ldx, tiles, scales, zeros, bias, out, ldo, M, N, K, gs_shift, stream);
    case 4: return launch<kT, 4>(x, ldx, tiles, scales, zeros, bias, out, ldo, M, N, K, gs_shift, stream);
    case 5: return launch<kT, 5>(x, ldx, tiles, scales, zeros, bias, out, ldo, M, N, K, gs_shift, stream);
    case 6: return launch<kT, 6>(x, ldx, tiles, scales, zeros, bias, out, ldo, M, N, K, gs_shift, stream);
    default: return launch<kT, 7>(x, ldx, tiles, scales, zeros, bias, out, ldo, M, N, K, gs_shift, stream);
  }
}

}  // namespace

int w4a16_tiled_configs() { return kConfigCount; }

cudaError_t w4a16_tiled_gemv(DType t, const void* x, int64_t ldx, const uint8_t* tiles, const void* scales,
                             const uint8_t* zeros, const void* bias, void* out, int64_t ldo, int64_t M, int64_t N,
                             int64_t K, int group_size, int config, cudaStream_t stream) {
  const int gs_shift = group_size == 64 ? 6 : group_size == 128 ? 7 : 0;
  const bool ok = M >= 1 && M <= 16 && N >= 16 && N % 16 == 0 && N / 16 <= INT32_MAX && K >= 64 && K % 64 == 0 &&
                  K % group_size == 0 && K / group_size <= kMaxGroups && (K / group_size) % 16 == 0 &&
                  gs_shift != 0 && config >= 0 &&
                  config < kConfigCount && aligned16(x) && aligned16(tiles) && ldx % 8 == 0 && ldo >= N;
  if (!ok) return cudaErrorInvalidValue;
  if (t == DType::kF16)
    return dispatch<DType::kF16>(config, x, ldx, tiles, scales, zeros, bias, out, ldo, M, N, K, gs_shift, stream);
  if (t == DType::kBF16)
    return dispatch<DType::kBF16>(config, x, ldx, tiles, scales, zeros, bias, out, ldo, M, N, K, gs_shift, stream);
  return cudaErrorInvalidValue;
}

}  // namespace pycomp::cuda
