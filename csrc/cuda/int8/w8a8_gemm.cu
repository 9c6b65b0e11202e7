// W8A8 GEMM on int8 tensor cores (mma.sync m16n8k32, sm_80 and newer) with the
// dequantization epilogue fused: out = (xq @ w^T) * xscale[m] * wscale[n] + bias[n].
//
// Design (CUTLASS's sm80 int8 multistage GEMM, written out):
// - block tile BM x BN x 64 (k in bytes); each warp computes 64x64 (or 32x64)
//   of it as 4x8 (2x8) m16n8k32 mmas per 32-wide k step;
// - global -> shared by cp.async (16 bytes per copy, zero-filled outside M, N,
//   K), kStages tiles in flight;
// - shared rows are 64 bytes = four 16-byte chunks; chunk c of row r is stored
//   at chunk c ^ ((r / 2) % 4), so the 8 rows an ldmatrix phase reads (and the 8
//   chunks a cp.async phase writes) fall in 8 different 16-byte bank groups;
// - ldmatrix.x4 feeds both operands: A (16x32 int8) in one, two n8 tiles of B
//   (W's rows, k-contiguous, i.e. the mma's column-major B) in another;
// - blocks are rastered in groups of kGroupM row tiles so W tiles are read from
//   DRAM about once and reused by the group from L2;
// - epilogue: int32 -> fp32, times xscale[m] * wscale[n], plus bias[n],
//   converted and stored straight from the accumulator registers.

#include "cuda/ptx.cuh"

namespace pycomp::cuda {
namespace {

constexpr int kBK = 64;       // k per tile (bytes per shared row)
constexpr int kGroupM = 8;    // row tiles per raster group

template <int kWarpsM_, int kWarpsN_, int kMI_, int kNI_, int kStages_, int kMinBlocks_>
struct Tile {
  static constexpr int kWarpsM = kWarpsM_, kWarpsN = kWarpsN_;
  static constexpr int kMI = kMI_, kNI = kNI_;  // m16 and n8 mma tiles per warp
  static constexpr int kStages = kStages_, kMinBlocks = kMinBlocks_;
  static constexpr int kThreads = kWarpsM * kWarpsN * 32;
  static constexpr int kBM = kWarpsM * kMI * 16, kBN = kWarpsN * kNI * 8;
  static constexpr int kStageBytes = (kBM + kBN) * kBK;
  static constexpr int kSmemBytes = kStages * kStageBytes;
  static_assert(kNI % 2 == 0, "B is loaded two n8 tiles per ldmatrix.x4");
  static_assert((kBM * 4) % kThreads == 0 && (kBN * 4) % kThreads == 0, "whole copies per thread");
  static_assert((kThreads / 4) % 8 == 0, "a thread's copies stay on one swizzle phase");
};

using TileLarge = Tile<2, 4, 4, 8, 4, 1>;  // 128 x 256, 8 warps of 64 x 64, 96 KiB shared
using TileSmall = Tile<2, 2, 2, 8, 4, 2>;  // 64 x 128, 4 warps of 32 x 64, 48 KiB shared

// Byte offset of 16-byte chunk c (0..3) of row r in a swizzled tile.
__device__ __forceinline__ uint32_t swizzle(int r, int c) {
  return static_cast<uint32_t>(r * kBK + ((c ^ ((r >> 1) & 3)) << 4));
}

template <class C, DType kOut>
__global__ void __launch_bounds__(C::kThreads, C::kMinBlocks)
    w8a8_gemm_kernel(const int8_t* __restrict__ xq, int64_t ldx, const float* __restrict__ xscale,
                     const int8_t* __restrict__ w, const float* __restrict__ wscale,
                     const typename Elem<kOut>::T* __restrict__ bias, typename Elem<kOut>::T* __restrict__ out, int M,
                     int N, int K, bool vec_store) {
  using E = Elem<kOut>;
  constexpr int kBM = C::kBM, kBN = C::kBN, kMI = C::kMI, kNI = C::kNI, kStages = C::kStages;
  constexpr int kACopies = kBM * 4 / C::kThreads, kBCopies = kBN * 4 / C::kThreads;
  constexpr int kCopyRowStep = C::kThreads / 4;  // rows between a thread's successive copies

  extern __shared__ __align__(128) uint8_t smem[];
  const uint32_t smem_base = smem_addr(smem);

  // Grouped raster: kGroupM row tiles sweep the column tiles together.
  const int tiles_m = (M + kBM - 1) / kBM, tiles_n = (N + kBN - 1) / kBN;
  const int per_group = kGroupM * tiles_n;
  const int group = blockIdx.x / per_group;
  const int first_m = group * kGroupM;
  const int group_m = min(tiles_m - first_m, kGroupM);
  const int in_group = blockIdx.x - group * per_group;
  const int m0 = (first_m + in_group % group_m) * kBM;
  const int n0 = (in_group / group_m) * kBN;

  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  const int wm = warp / C::kWarpsN, wn = warp % C::kWarpsN;

  // ---- global -> shared copies: thread tid moves chunk tid % 4 of rows tid / 4 + j * kCopyRowStep.
  const int copy_c = tid % 4, copy_r = tid / 4;
  const uint32_t copy_dst = swizzle(copy_r, copy_c);  // same swizzle phase for every j
  const int8_t* a_src[kACopies];
  bool a_ok[kACopies];
#pragma unroll
  for (int j = 0; j < kACopies; ++j) {
    const int m = m0 + copy_r + j * kCopyRowStep;
    a_ok[j] = m < M;
    a_src[j] = xq + (a_ok[j] ? static_cast<int64_t>(m) * ldx + copy_c * 16 : 0);
  }
  const int8_t* b_src[kBCopies];
  bool b_ok[kBCopies];
#pragma unroll
  for (int j = 0; j < kBCopies; ++j) {
    const int n = n0 + copy_r + j * kCopyRowStep;
    b_ok[j] = n < N;
    b_src[j] = w + (b_ok[j] ? static_cast<int64_t>(n) * K + copy_c * 16 : 0);
  }

  auto load_tile = [&](int stage, int kt) {
    const int k = kt * kBK;
    const bool k_ok = k + copy_c * 16 < K;  // K % 16 == 0: a chunk is all in or all out
    const uint32_t sa = smem_base + stage * C::kStageBytes + copy_dst;
    const uint32_t sb = sa + kBM * kBK;
#pragma unroll
    for (int j = 0; j < kACopies; ++j) {
      const bool ok = a_ok[j] && k_ok;
      cp_async_16_zfill(sa + j * kCopyRowStep * kBK, ok ? a_src[j] + k : xq, ok);
    }
#pragma unroll
    for (int j = 0; j < kBCopies; ++j) {
      const bool ok = b_ok[j] && k_ok;
      cp_async_16_zfill(sb + j * kCopyRowStep * kBK, ok ? b_src[j] + k : w, ok);
    }
  };

  // ---- ldmatrix addresses: lane l gives row l % 8 of matrix l / 8.
  // A (16x32): matrices (rows 0-7, k 0-15), (rows 8-15, k 0-15), (rows 0-7, k 16-31), (rows 8-15, k 16-31)
  //   = the mma's a0..a3 registers.
  // B (two n8 tiles): (n 0-7, k 0-15), (n 0-7, k 16-31), (n 8-15, k 0-15), (n 8-15, k 16-31)
  //   = b0, b1 of the first tile, then of the second.
  const int lq = lane / 8, lr = lane % 8;
  uint32_t a_ld[2], b_ld[2];
#pragma unroll
  for (int ks = 0; ks < 2; ++ks) {
    a_ld[ks] = swizzle(wm * kMI * 16 + (lq & 1) * 8 + lr, ks * 2 + (lq >> 1));
    b_ld[ks] = kBM * kBK + swizzle(wn * kNI * 8 + (lq >> 1) * 8 + lr, ks * 2 + (lq & 1));
  }

  int acc[kMI][kNI][4];
#pragma unroll
  for (int i = 0; i < kMI; ++i)
#pragma unroll
    for (int j = 0; j < kNI; ++j)
#pragma unroll
      for (int r = 0; r < 4; ++r) acc[i][j][r] = 0;

  // Fragments of one 32-wide k step: A for kMI m16 tiles, B for kNI n8 tiles.
  uint32_t af[2][kMI][4], bf[2][kNI][2];
  auto load_frags = [&](int buf, uint32_t stage, int ks) {
#pragma unroll
    for (int i = 0; i < kMI; ++i) ldmatrix_x4(af[buf][i], stage + a_ld[ks] + i * 16 * kBK);
#pragma unroll
    for (int p = 0; p < kNI / 2; ++p) {
      uint32_t r[4];
      ldmatrix_x4(r, stage + b_ld[ks] + p * 16 * kBK);
      bf[buf][2 * p][0] = r[0];
      bf[buf][2 * p][1] = r[1];
      bf[buf][2 * p + 1][0] = r[2];
      bf[buf][2 * p + 1][1] = r[3];
    }
  };
  auto mma_all = [&](int buf) {
#pragma unroll
    for (int i = 0; i < kMI; ++i)
#pragma unroll
      for (int j = 0; j < kNI; ++j) mma_s8_16832(acc[i][j], af[buf][i], bf[buf][j]);
  };
  auto stage_addr = [&](int kt) { return smem_base + (kt % kStages) * C::kStageBytes; };

  // ---- pipeline. Tile kt + kStages - 1 is copied while tile kt is multiplied;
  // fragments are double-buffered so ldmatrix overlaps the mmas: k step 1 of
  // tile kt loads during k step 0, k step 0 of tile kt + 1 during k step 1.
  // One barrier per tile, before the second k step: it publishes tile kt + 1
  // and ends every warp's reads of tile kt - 1's stage, the next copy's target.
  const int k_tiles = (K + kBK - 1) / kBK;
#pragma unroll
  for (int s = 0; s < kStages - 1; ++s) {
    if (s < k_tiles) load_tile(s, s);
    cp_async_commit();
  }
  cp_async_wait<kStages - 2>();  // tile 0 has landed
  __syncthreads();
  load_frags(0, stage_addr(0), 0);
  for (int kt = 0; kt < k_tiles; ++kt) {
    load_frags(1, stage_addr(kt), 1);
    const int next = kt + kStages - 1;
    if (next < k_tiles) load_tile(next % kStages, next);
    cp_async_commit();
    mma_all(0);

    cp_async_wait<kStages - 2>();  // this thread's copies of tile kt + 1 have landed
    __syncthreads();
    if (kt + 1 < k_tiles) load_frags(0, stage_addr(kt + 1), 0);
    mma_all(1);
  }
  cp_async_wait<0>();

  // ---- epilogue. Accumulator r of tile (i, j): row gid + 8 * (r / 2), column 2 * tig + r % 2.
  const int gid = lane / 4, tig = lane % 4;
  float ws[kNI][2], bs[kNI][2];
#pragma unroll
  for (int j = 0; j < kNI; ++j) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int n = n0 + wn * kNI * 8 + j * 8 + 2 * tig + h;
      ws[j][h] = n < N ? wscale[n] : 0.f;
      bs[j][h] = (n < N && bias != nullptr) ? E::to_float(bias[n]) : 0.f;
    }
  }
#pragma unroll
  for (int i = 0; i < kMI; ++i) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int m = m0 + wm * kMI * 16 + i * 16 + gid + 8 * h;
      if (m >= M) continue;
      const float xs = xscale[m];
      auto* out_row = out + static_cast<int64_t>(m) * N;
#pragma unroll
      for (int j = 0; j < kNI; ++j) {
        const int n = n0 + wn * kNI * 8 + j * 8 + 2 * tig;
        if (n >= N) continue;
        const float v0 = fmaf(static_cast<float>(acc[i][j][2 * h]) * xs, ws[j][0], bs[j][0]);
        const float v1 = fmaf(static_cast<float>(acc[i][j][2 * h + 1]) * xs, ws[j][1], bs[j][1]);
        const bool pair = n + 1 < N;
        store_pair<kOut>(out_row + n, v0, v1, pair, pair && vec_store);
      }
    }
  }
}

template <class C, DType kOut>
cudaError_t launch(const int8_t* xq, int64_t ldx, const float* xscale, const int8_t* w, const float* wscale,
                   const void* bias, void* out, int64_t M, int64_t N, int64_t K, cudaStream_t stream) {
  using T = typename Elem<kOut>::T;
  constexpr auto kernel = &w8a8_gemm_kernel<C, kOut>;
  if (C::kSmemBytes > 48 * 1024) {
    const cudaError_t err = opt_in_dynamic_smem<kernel>(C::kSmemBytes);
    if (err != cudaSuccess) return err;
  }
  // Two outputs per store only where every (m, even n) pair is 2-element aligned.
  const bool vec_store = N % 2 == 0 && reinterpret_cast<uintptr_t>(out) % (2 * sizeof(T)) == 0;
  const int64_t blocks = ceil_div(M, C::kBM) * ceil_div(N, C::kBN);
  if (blocks > INT32_MAX) return cudaErrorInvalidValue;
  kernel<<<static_cast<unsigned>(blocks), C::kThreads, C::kSmemBytes, stream>>>(
      xq, ldx, xscale, w, wscale, static_cast<const T*>(bias), static_cast<T*>(out), static_cast<int>(M),
      static_cast<int>(N), static_cast<int>(K), vec_store);
  return cudaGetLastError();
}

template <class C>
cudaError_t dispatch_out(DType out_t, const int8_t* xq, int64_t ldx, const float* xscale, const int8_t* w,
                         const float* wscale, const void* bias, void* out, int64_t M, int64_t N, int64_t K,
                         cudaStream_t stream) {
  switch (out_t) {
    case DType::kF32: return launch<C, DType::kF32>(xq, ldx, xscale, w, wscale, bias, out, M, N, K, stream);
    case DType::kF16: return launch<C, DType::kF16>(xq, ldx, xscale, w, wscale, bias, out, M, N, K, stream);
    case DType::kBF16: return launch<C, DType::kBF16>(xq, ldx, xscale, w, wscale, bias, out, M, N, K, stream);
  }
  return cudaErrorInvalidValue;
}

// Fraction of the SM slots that the last wave of `tiles` keeps busy, over all waves.
double wave_efficiency(int64_t tiles, int64_t slots) {
  const int64_t waves = (tiles + slots - 1) / slots;
  return static_cast<double>(tiles) / static_cast<double>(waves * slots);
}

}  // namespace

GemmTile w8a8_gemm_auto_tile(int64_t M, int64_t N) {
  if (M < 1 || N < 1) return GemmTile::k128x256;
  const int sms = sm_count();
  int small_per_sm = 0;  // resident 64x128 blocks per SM (3 on sm_80 and sm_90: registers bound it)
  if (sms <= 0 || cudaOccupancyMaxActiveBlocksPerMultiprocessor(&small_per_sm,
                                                                &w8a8_gemm_kernel<TileSmall, DType::kBF16>,
                                                                TileSmall::kThreads, TileSmall::kSmemBytes) !=
                      cudaSuccess ||
      small_per_sm <= 0)
    return GemmTile::k128x256;
  // The small tile reads more shared memory and L2 per multiply-add: count it
  // as 0.8 of the large one (a guess to be tuned on the GPU), and pick the tile
  // that keeps more of the machine busy. The large tile runs one block per SM.
  const double large = wave_efficiency(ceil_div(M, TileLarge::kBM) * ceil_div(N, TileLarge::kBN), sms);
  const double small = 0.8 * wave_efficiency(ceil_div(M, TileSmall::kBM) * ceil_div(N, TileSmall::kBN),
                                             int64_t{small_per_sm} * sms);
  return large >= small ? GemmTile::k128x256 : GemmTile::k64x128;
}

cudaError_t w8a8_gemm(const int8_t* xq, int64_t ldxq, const float* xscale, const int8_t* w, const float* wscale,
                      const void* bias, DType out_t, void* out, int64_t M, int64_t N, int64_t K, GemmTile tile,
                      cudaStream_t stream) {
  // M, N stay a tile below INT32_MAX: the kernel's int row/column indices run up to a tile past them.
  constexpr int64_t kMaxMN = INT32_MAX - 256;
  const bool shapes_ok = M >= 1 && N >= 1 && K >= 16 && K % 16 == 0 && M <= kMaxMN && N <= kMaxMN &&
                         K <= INT32_MAX - 64 && ldxq >= 0;
  const bool aligned = aligned16(xq) && aligned16(w) && ldxq % 16 == 0;
  if (!shapes_ok || !aligned) return cudaErrorInvalidValue;
  if (tile == GemmTile::kAuto) tile = w8a8_gemm_auto_tile(M, N);
  switch (tile) {
    case GemmTile::k128x256:
      return dispatch_out<TileLarge>(out_t, xq, ldxq, xscale, w, wscale, bias, out, M, N, K, stream);
    case GemmTile::k64x128:
      return dispatch_out<TileSmall>(out_t, xq, ldxq, xscale, w, wscale, bias, out, M, N, K, stream);
    default: return cudaErrorInvalidValue;
  }
}

}  // namespace pycomp::cuda
