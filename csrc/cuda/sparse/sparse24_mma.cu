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
// That is variant 0, the default of both; the other variants (sparse_cuda.h) follow it in this file and
// read the same value and metadata layout.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/ptx.cuh"
#include "cuda/sparse/sparse_cuda.h"

namespace pycomp::cuda {
namespace {

__device__ __forceinline__ uint32_t ld32(const void* p) { return __ldg(reinterpret_cast<const uint32_t*>(p)); }

// The end of the GEMV kernels: the warps wk > 0 of each column wn of warps hand their K part's
// accumulators to warp wk = 0 through shared memory, which adds them up and stores out^T = acc + bias
// (C fragment: weight rows n0 + g and n0 + g + 8, tokens m0 + 8j + 2t and the next one).
template <DType kT, int kNT, int kWN, int kKS>
__device__ __forceinline__ void store_gemv(float (&acc)[kNT][4], int wn, int wk, int lane, int n0, int m0,
                                           const typename Elem<kT>::T* __restrict__ bias,
                                           typename Elem<kT>::T* __restrict__ out, int64_t ldo, int M, int N) {
  using E = Elem<kT>;
  const int g = lane >> 2, t = lane & 3;
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

// kNT n8 tiles of activation rows per warp; kWN warps along N (16 weight rows each); kKS warps split K.
template <DType kT, int kNT, int kWN, int kKS>
__global__ void __launch_bounds__(32 * kWN * kKS)
    sparse24_mma_kernel(const typename Elem<kT>::T* __restrict__ x, int64_t ldx,
                        const typename Elem<kT>::T* __restrict__ values, const uint32_t* __restrict__ meta32,
                        int64_t Np, const typename Elem<kT>::T* __restrict__ bias, typename Elem<kT>::T* __restrict__ out,
                        int64_t ldo, int M, int N, int Kp) {
  using T = typename Elem<kT>::T;
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

  store_gemv<kT, kNT, kWN, kKS>(acc, wn, wk, lane, n0, m0, bias, out, ldo, M, N);
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

// ============================================================================ GEMV variants 1, 2, 4, 5
// Decode (M <= 16) with more bytes in flight per warp and 16-byte weight loads. A warp owns 16 rows and
// a K slice, as variant 0, but walks it in windows of 64 columns (two k32 steps, four 16-column
// metadata chunks): thread (g, t) loads compressed values 8t..8t+7 of the window for rows g and g+8
// (two 16-byte loads; the window's chunk t, all four group positions q = 0..3), kU windows ahead;
// kKS warps per block split K.
//
// The mma wants position t of chunk c' of step h from thread t instead, so the two k32 steps are
// re-labelled rather than the values moved: hardware group (step h, chunk c', position p) is fed the
// window's group (chunk p, position 2h + c'). Register q of thread t then goes to step q/2 as a0/a2
// (row g) and a1/a3 (row g+8), and the rest follows from that relabelling:
// - metadata: thread t hands mma.sp the word of (step t/2, chunk t%2), i.e. nibble q = t of each
//   window chunk p = 0..3 moved to nibble p (both rows at once: mask 0x000F000F); the four stored
//   words of the window are (step 2w + p/2, row r + p%2), two 8-byte loads;
// - x (B): hardware k = 32h + 16c' + 4p + j is x column 64w + 16p + 8h + 4c' + j, so b_i of thread t
//   is the pair at 64w + 32(i%2) + 16(t/2) + 8h + 4(i/2) + 2(t%2) (x is small and stays in L1).
// A half window (Kp % 64 == 32) loads zero values for chunks 2, 3, zero x, and all-zero-group metadata
// (0xE: indices 2, 3), so the relabelled groups from there add nothing.
template <DType kT, int kNT, int kKS, int kU>
__global__ void __launch_bounds__(32 * kKS)
    sparse24_gemv_wide_kernel(const typename Elem<kT>::T* __restrict__ x, int64_t ldx,
                              const typename Elem<kT>::T* __restrict__ values, const uint32_t* __restrict__ meta32,
                              int64_t Np, const typename Elem<kT>::T* __restrict__ bias,
                              typename Elem<kT>::T* __restrict__ out, int64_t ldo, int M, int N, int Kp) {
  using T = typename Elem<kT>::T;
  const int wk = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  const int n0 = blockIdx.x * 16;
  const int windows = (Kp + 63) / 64;
  const int per = (windows + kKS - 1) / kKS;
  const int w_begin = wk * per;
  const int w_end = min(windows, w_begin + per);

  float acc[kNT][4];
#pragma unroll
  for (int j = 0; j < kNT; ++j) acc[j][0] = acc[j][1] = acc[j][2] = acc[j][3] = 0.0f;

  const int64_t half = Kp / 2;
  const T* v_lo = values + static_cast<int64_t>(min(n0 + g, N - 1)) * half + 8 * t;
  const T* v_hi = values + static_cast<int64_t>(min(n0 + g + 8, N - 1)) * half + 8 * t;
  const uint32_t* e_ptr = meta32 + (n0 / 32) * 32 + 4 * g + 2 * ((n0 % 32) / 16);
  const T* b_ptr[kNT];
#pragma unroll
  for (int j = 0; j < kNT; ++j)
    b_ptr[j] = x + static_cast<int64_t>(min(8 * j + g, M - 1)) * ldx + 16 * (t >> 1) + 2 * (t & 1);

  for (int w0 = w_begin; w0 < w_end; w0 += kU) {
    uint4 lo[kU], hi[kU];
    uint2 e01[kU], e23[kU];
#pragma unroll
    for (int u = 0; u < kU; ++u) {
      const int w = w0 + u;
      const bool live = w < w_end;
      const bool full = live && 64 * w + 64 <= Kp;
      const bool v_ok = full || (live && t < 2);
      lo[u] = v_ok ? ldg_stream_128(v_lo + 32 * static_cast<int64_t>(w)) : make_uint4(0, 0, 0, 0);
      hi[u] = v_ok ? ldg_stream_128(v_hi + 32 * static_cast<int64_t>(w)) : make_uint4(0, 0, 0, 0);
      e01[u] = live ? __ldg(reinterpret_cast<const uint2*>(e_ptr + 2 * static_cast<int64_t>(w) * Np))
                    : make_uint2(0xEEEEEEEEu, 0xEEEEEEEEu);
      e23[u] = full ? __ldg(reinterpret_cast<const uint2*>(e_ptr + (2 * static_cast<int64_t>(w) + 1) * Np))
                    : make_uint2(0xEEEEEEEEu, 0xEEEEEEEEu);
    }
#pragma unroll
    for (int u = 0; u < kU; ++u) {
      const int w = w0 + u;
      if (w >= w_end) break;
      const bool full = 64 * w + 64 <= Kp;
      const int sh = 4 * t;
      const uint32_t e = ((e01[u].x >> sh) & 0x000F000Fu) | (((e01[u].y >> sh) & 0x000F000Fu) << 4) |
                         (((e23[u].x >> sh) & 0x000F000Fu) << 8) | (((e23[u].y >> sh) & 0x000F000Fu) << 12);
      const uint32_t a0[4] = {lo[u].x, hi[u].x, lo[u].y, hi[u].y};
      const uint32_t a1[4] = {lo[u].z, hi[u].z, lo[u].w, hi[u].w};
#pragma unroll
      for (int j = 0; j < kNT; ++j) {
        const T* xb = b_ptr[j] + 64 * static_cast<int64_t>(w);
        uint32_t b0[4], b1[4];
        // i = 0..3 -> offset 32 (i % 2) + 4 (i / 2); step h adds 8. Columns 32.. lie past Kp in a half window.
        b0[0] = ld32(xb);
        b0[1] = full ? ld32(xb + 32) : 0u;
        b0[2] = ld32(xb + 4);
        b0[3] = full ? ld32(xb + 36) : 0u;
        b1[0] = ld32(xb + 8);
        b1[1] = full ? ld32(xb + 40) : 0u;
        b1[2] = ld32(xb + 12);
        b1[3] = full ? ld32(xb + 44) : 0u;
        mma_sp_16832<kT, 0>(acc[j], a0, b0, e);
        mma_sp_16832<kT, 1>(acc[j], a1, b1, e);
      }
    }
  }

  store_gemv<kT, kNT, 1, kKS>(acc, 0, wk, lane, n0, 0, bias, out, ldo, M, N);
}

template <DType kT, int kKS, int kU>
cudaError_t launch_gemv_wide(const void* x, int64_t ldx, const void* values, const int16_t* meta, int64_t Np,
                             const void* bias, void* out, int64_t ldo, int64_t M, int64_t N, int64_t Kp,
                             cudaStream_t stream) {
  using T = typename Elem<kT>::T;
  const dim3 grid(static_cast<unsigned>(ceil_div(N, 16)));
  auto run = [&](auto kernel) {
    kernel<<<grid, 32 * kKS, 0, stream>>>(static_cast<const T*>(x), ldx, static_cast<const T*>(values),
                                          reinterpret_cast<const uint32_t*>(meta), Np, static_cast<const T*>(bias),
                                          static_cast<T*>(out), ldo, static_cast<int>(M), static_cast<int>(N),
                                          static_cast<int>(Kp));
  };
  if (M <= 8)
    run(&sparse24_gemv_wide_kernel<kT, 1, kKS, kU>);
  else
    run(&sparse24_gemv_wide_kernel<kT, 2, kKS, kU>);
  return cudaGetLastError();
}

// ============================================================================ GEMM variants 1, 4, 5
// A tiled GEMM, CUTLASS's sm80 multistage design written out for mma.sp: an out^T tile of kBN weight rows x
// kBM tokens per block of 8 warps, each warp kMI m16 tiles x kNJ n8 tiles (kMI x kNJ m16n8k32 mma.sp per k32
// step, fp32 accumulators); K in tiles of 64 (two k32 steps), kStages tiles in flight through cp.async:
// - values: kBN rows x 64 bytes (32 compressed values) per stage, rows padded to 80 bytes so the 8 rows an
//   ldmatrix phase reads fall in 8 different 16-byte bank groups; one ldmatrix.x4 per m16 tile and step
//   gives a0..a3 (matrices: rows 0-7 / 8-15 x compressed columns 0-7 / 8-15 of the step);
// - metadata: the stored int32 words of the two steps for the block's kBN rows (two contiguous runs: the
//   row permutation stays inside 32-row tiles); thread (g, t) reads word (step t/2, row r + t%2) of each
//   m16 tile once per stage and uses it with selector 0 for step 0, 1 for step 1;
// - x: kBM tokens x 128 bytes per stage, rows padded to 144 bytes; one ldmatrix.x4 per n8 tile and step
//   gives b0..b3 (matrices: 8 tokens x k 0-7, 8-15, 16-23, 24-31 of the step);
// - blockIdx.x runs over token tiles, so the blocks resident at once share weight tiles through L2 and
//   W is read from DRAM about once;
// - epilogue: accumulators plus bias, rounded to T, transposed through shared memory, 16-byte stores.
// Outside N, M, Kp the copies are zero-filled (metadata instead reads a valid word: zeros would be
// equal indices), and rows outside N or M are not stored.
// Shared-memory reads per mma: a 64x32 warp tile reads 256 bytes by ldmatrix per mma.sp, a 64x64 one 192:
// at 128 bytes per clock per SM the former caps the mma rate lower, hence the second tile.
template <int kWarpsN_, int kWarpsM_, int kMI_, int kNJ_, int kStages_, int kMinBlocks_>
struct SpTile {
  static constexpr int kWarpsN = kWarpsN_, kWarpsM = kWarpsM_, kMI = kMI_, kNJ = kNJ_;
  static constexpr int kStages = kStages_, kMinBlocks = kMinBlocks_;
  static constexpr int kThreads = 32 * kWarpsN * kWarpsM;
  static constexpr int kBN = kWarpsN * kMI * 16, kBM = kWarpsM * kNJ * 8;
  static constexpr int kValRow = 80, kXRow = 144;  // padded shared row bytes (64 and 128 of data)
  static constexpr int kValBytes = kBN * kValRow;
  static constexpr int kMetaBytes = 2 * kBN * 4;
  static constexpr int kXBytes = kBM * kXRow;
  static constexpr int kStageBytes = kValBytes + kMetaBytes + kXBytes;
  static constexpr int kSmem = kStages * kStageBytes;
  static constexpr int kOutLd = kBN + 8;  // elements per token row of the epilogue tile
  static constexpr int kVCopies = kBN * 4 / kThreads, kXCopies = kBM * 8 / kThreads;
  static constexpr int kVRowStep = kThreads / 4, kXRowStep = kThreads / 8;  // rows between a thread's copies
  static_assert(kVCopies * kThreads == kBN * 4 && kXCopies * kThreads == kBM * 8, "whole 16-byte copies per thread");
  static_assert(kBN / 2 <= kThreads, "one thread per 16-byte metadata chunk");
  static_assert(kBM * kOutLd * 2 <= kSmem, "the epilogue tile fits in the pipeline's shared memory");
};

using TileA = SpTile<2, 4, 4, 4, 3, 2>;  // 128 rows x 128 tokens, warps 64 x 32, 87 KiB, 2 blocks per SM
using TileB = SpTile<4, 2, 4, 8, 4, 1>;  // 256 rows x 128 tokens, warps 64 x 64, 160 KiB
using TileD = SpTile<2, 2, 4, 8, 3, 2>;  // 128 rows x 128 tokens, 4 warps of 64 x 64, 87 KiB, 2 blocks per SM

// Metadata copies, per k-tile: thread tid < kBN/2 copies 16-byte chunk mc = tid % (kBN/4) of step
// ms = tid / (kBN/4) (a step's kBN words are contiguous: the row permutation stays inside 32-row tiles).
template <class C>
struct MetaCopy {
  int ms;
  const uint32_t* src;
  uint32_t dst;  // bytes within a stage

  __device__ __forceinline__ MetaCopy(int tid, int n0, const uint32_t* meta32, int64_t Np) {
    ms = tid / (C::kBN / 4);
    const int mc = tid % (C::kBN / 4);
    // Np % 32 == 0 and n0 < N <= Np: a 4-word chunk is all inside Np or all outside; outside, row n0's.
    src = meta32 + (n0 + 4 * mc < Np ? n0 + 4 * mc : n0);
    dst = C::kValBytes + ms * C::kBN * 4 + mc * 16;
  }

  // Into the stage at shared address st: the words of k-tile kt.
  __device__ __forceinline__ void copy(int tid, uint32_t st, int kt, int steps, int64_t Np) const {
    if (tid < C::kBN / 2) {
      const int s = min(2 * kt + ms, steps - 1);  // a half tile's second step: zero values, any valid word
      cp_async_16_zfill(st + dst, src + static_cast<int64_t>(s) * Np, true);
    }
  }
};

// A thread's fragment addresses within a stage (bytes); lane l gives row l%8 of ldmatrix matrix l/8.
struct FragOffsets {
  uint32_t a;  // A of m16 tile i, step s: + 16 kValRow i + 32 s
  uint32_t b;  // B of n8 tile j, step s: + 8 kXRow j + 64 s
  uint32_t e;  // metadata: see load_meta
};

template <class C>
__device__ __forceinline__ FragOffsets frag_offsets(int lane, int wn, int wm) {
  const int lq = lane >> 3, lr = lane & 7, g = lane >> 2, t = lane & 3;
  // m16 tile i at row wn*kMI*16 + 16i (kMI even): word (wn*kMI*16 + 32(i/2)) + 2(i%2) + 4g + t%2 of step t/2.
  static_assert(C::kMI % 2 == 0, "m16 tiles in pairs: one 32-row metadata tile");
  return {static_cast<uint32_t>((wn * C::kMI * 16 + (lq & 1) * 8 + lr) * C::kValRow + (lq >> 1) * 16),
          static_cast<uint32_t>(C::kValBytes + C::kMetaBytes + (wm * C::kNJ * 8 + lr) * C::kXRow + lq * 16),
          static_cast<uint32_t>(C::kValBytes + ((t >> 1) * C::kBN + wn * C::kMI * 16 + 4 * g + (t & 1)) * 4)};
}

// (= {} on the accumulators gives the double-buffered kernel other code, and no fewer registers.)
template <class C>
__device__ __forceinline__ void zero(float (&acc)[C::kMI][C::kNJ][4]) {
#pragma unroll
  for (int i = 0; i < C::kMI; ++i)
#pragma unroll
    for (int j = 0; j < C::kNJ; ++j) acc[i][j][0] = acc[i][j][1] = acc[i][j][2] = acc[i][j][3] = 0.0f;
}

// The metadata words of a stage (at sp) for the thread's m16 tiles, used with selector 0 for step 0, 1 for step 1.
template <class C>
__device__ __forceinline__ void load_meta(uint32_t (&e)[C::kMI], const uint8_t* sp, uint32_t e_off) {
#pragma unroll
  for (int i = 0; i < C::kMI; ++i)
    e[i] = *reinterpret_cast<const uint32_t*>(sp + e_off + ((i >> 1) * 32 + (i & 1) * 2) * 4);
}

// The epilogue of the tiled GEMMs: accumulators plus bias, rounded to T, as a (token, weight row) tile in
// shared memory (the pipeline's, drained by the caller), then 16-byte rows out.
template <DType kT, class C>
__device__ __forceinline__ void store_tile(uint8_t* smem, const float (&acc)[C::kMI][C::kNJ][4],
                                           const typename Elem<kT>::T* __restrict__ bias,
                                           typename Elem<kT>::T* __restrict__ out, int64_t ldo, int M, int N, int m0,
                                           int n0, int wn, int wm, bool vec_store) {
  using E = Elem<kT>;
  using T = typename E::T;
  constexpr int kBN = C::kBN, kBM = C::kBM, kMI = C::kMI, kNJ = C::kNJ, kOutLd = C::kOutLd;
  const int tid = threadIdx.x, g = (tid & 31) >> 2, t = tid & 3;
  T* os = reinterpret_cast<T*>(smem);
#pragma unroll
  for (int i = 0; i < kMI; ++i) {
    const int nl = wn * kMI * 16 + 16 * i + g;
    const float b0 = bias && n0 + nl < N ? E::to_float(bias[n0 + nl]) : 0.0f;
    const float b1 = bias && n0 + nl + 8 < N ? E::to_float(bias[n0 + nl + 8]) : 0.0f;
#pragma unroll
    for (int j = 0; j < kNJ; ++j) {
      const int ml = wm * kNJ * 8 + 8 * j + 2 * t;
      os[ml * kOutLd + nl] = E::from_float(acc[i][j][0] + b0);
      os[(ml + 1) * kOutLd + nl] = E::from_float(acc[i][j][1] + b0);
      os[ml * kOutLd + nl + 8] = E::from_float(acc[i][j][2] + b1);
      os[(ml + 1) * kOutLd + nl + 8] = E::from_float(acc[i][j][3] + b1);
    }
  }
  __syncthreads();
  constexpr int kChunks = kBN / 8;  // 16-byte chunks per token row
  for (int c = tid; c < kBM * kChunks; c += C::kThreads) {
    const int ml = c / kChunks, oc = c % kChunks, m = m0 + ml, n = n0 + oc * 8;
    if (m >= M || n >= N) continue;
    T* dst = out + static_cast<int64_t>(m) * ldo + n;
    const T* src = os + ml * kOutLd + oc * 8;
    if (vec_store && n + 8 <= N) {
      *reinterpret_cast<uint4*>(dst) = *reinterpret_cast<const uint4*>(src);
    } else {
      for (int e2 = 0; e2 < 8 && n + e2 < N; ++e2) dst[e2] = src[e2];
    }
  }
}

template <DType kT, class C>
__global__ void __launch_bounds__(C::kThreads, C::kMinBlocks)
    sparse24_tiled_kernel(const typename Elem<kT>::T* __restrict__ x, int64_t ldx,
                          const typename Elem<kT>::T* __restrict__ values, const uint32_t* __restrict__ meta32,
                          int64_t Np, const typename Elem<kT>::T* __restrict__ bias,
                          typename Elem<kT>::T* __restrict__ out, int64_t ldo, int M, int N, int Kp, bool vec_store) {
  using T = typename Elem<kT>::T;
  constexpr int kBN = C::kBN, kBM = C::kBM, kMI = C::kMI, kNJ = C::kNJ, kStages = C::kStages;
  constexpr int kValRow = C::kValRow, kXRow = C::kXRow, kValBytes = C::kValBytes, kMetaBytes = C::kMetaBytes;
  constexpr int kStageBytes = C::kStageBytes, kVRowStep = C::kVRowStep, kXRowStep = C::kXRowStep;
  extern __shared__ __align__(128) uint8_t smem[];
  const uint32_t sbase = smem_addr(smem);
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int wn = warp / C::kWarpsM, wm = warp % C::kWarpsM;
  const int m0 = blockIdx.x * kBM, n0 = blockIdx.y * kBN;
  const int64_t half = Kp / 2;
  const int steps = Kp / 32, ktiles = (Kp + 63) / 64;

  // ---- copies: values chunk tid%4 of rows tid/4 + kVRowStep j; x chunk tid%8 of tokens tid/8 + kXRowStep j;
  // metadata as MetaCopy says.
  const int vc = tid & 3, vr = tid >> 2, xc = tid & 7, xr = tid >> 3;
  const T* v_src[C::kVCopies];
  bool v_ok[C::kVCopies];
#pragma unroll
  for (int j = 0; j < C::kVCopies; ++j) {
    const int n = n0 + vr + kVRowStep * j;
    v_ok[j] = n < N;
    v_src[j] = values + (v_ok[j] ? static_cast<int64_t>(n) * half + vc * 8 : 0);
  }
  const T* x_src[C::kXCopies];
  bool x_ok[C::kXCopies];
#pragma unroll
  for (int j = 0; j < C::kXCopies; ++j) {
    const int m = m0 + xr + kXRowStep * j;
    x_ok[j] = m < M;
    x_src[j] = x + (x_ok[j] ? static_cast<int64_t>(m) * ldx + xc * 8 : 0);
  }
  const MetaCopy<C> meta_copy(tid, n0, meta32, Np);

  // Called for kt = 0, 1, 2, ... in order: the sources advance one k-tile per call.
  const uint32_t v_dst = (vr * kValRow + vc * 16), x_dst = kValBytes + kMetaBytes + xr * kXRow + xc * 16;
  int v_col = vc * 8, x_col = xc * 8;  // the thread's column in values and in x at the current k-tile
  auto load_tile = [&](int stage, int kt) {
    const uint32_t st = sbase + stage * kStageBytes;
    const bool vk = v_col < half;  // half % 16 == 0: a chunk is all in or all out
#pragma unroll
    for (int j = 0; j < C::kVCopies; ++j) {
      const bool ok = v_ok[j] && vk;
      cp_async_16_zfill(st + v_dst + j * kVRowStep * kValRow, ok ? v_src[j] : values, ok);
      v_src[j] += 32;
    }
    const bool xk = x_col < Kp;
#pragma unroll
    for (int j = 0; j < C::kXCopies; ++j) {
      const bool ok = x_ok[j] && xk;
      cp_async_16_zfill(st + x_dst + j * kXRowStep * kXRow, ok ? x_src[j] : x, ok);
      x_src[j] += 64;
    }
    v_col += 32;
    x_col += 64;
    meta_copy.copy(tid, st, kt, steps, Np);
  };

  const FragOffsets off = frag_offsets<C>(lane, wn, wm);
  float acc[kMI][kNJ][4];
  zero<C>(acc);

#pragma unroll
  for (int s = 0; s < kStages - 1; ++s) {
    if (s < ktiles) load_tile(s, s);
    cp_async_commit();
  }
  for (int kt = 0; kt < ktiles; ++kt) {
    cp_async_wait<kStages - 2>();
    __syncthreads();  // tile kt landed for every thread; every warp is done with the stage reloaded next
    const int next = kt + kStages - 1;
    if (next < ktiles) load_tile(next % kStages, next);
    cp_async_commit();
    const int stage = kt % kStages;
    const uint32_t st = sbase + stage * kStageBytes;
    uint32_t e[kMI];
    load_meta<C>(e, smem + stage * kStageBytes, off.e);
#pragma unroll
    for (int s = 0; s < 2; ++s) {
      uint32_t a[kMI][4], b[kNJ][4];
#pragma unroll
      for (int i = 0; i < kMI; ++i) ldmatrix_x4(a[i], st + off.a + i * 16 * kValRow + s * 32);
#pragma unroll
      for (int j = 0; j < kNJ; ++j) ldmatrix_x4(b[j], st + off.b + j * 8 * kXRow + s * 64);
#pragma unroll
      for (int i = 0; i < kMI; ++i)
#pragma unroll
        for (int j = 0; j < kNJ; ++j) {
          if (s == 0)
            mma_sp_16832<kT, 0>(acc[i][j], a[i], b[j], e[i]);
          else
            mma_sp_16832<kT, 1>(acc[i][j], a[i], b[j], e[i]);
        }
    }
  }
  cp_async_wait<0>();
  __syncthreads();  // the pipeline's shared memory becomes the epilogue tile

  store_tile<kT, C>(smem, acc, bias, out, ldo, M, N, m0, n0, wn, wm, vec_store);
}

// Variants 4, 5: the tiles and shared-memory layout above, with the main loop of CUTLASS's multistage
// mma (torch's to_sparse_semi_structured, CUTLASS's sm80 sparse GEMM, ran at ~1000 dense-equivalent TFLOP/s
// on the H200, against ~400 for variant 1 and its 256 x 128 form). Variant 1 loads a step's fragments and
// then wait on them before its mma.sp, and the barrier lines every warp up on that wait; here the fragments
// are loaded one k32 step ahead: step 1's ldmatrix go out during step 0's mma.sp, and right after the
// barrier the next stage's step 0 is loaded during this stage's step-1 mma.sp, so ldmatrix latency hides
// behind tensor-core work. Registers (a 64 x 64 warp holds 128 accumulators): A is double-buffered, B
// reloaded column by column as its mma.sp retire, and the copies keep one source pointer per operand (a
// thread's copy rows are kVRowStep or kXRowStep apart) instead of one per copy.
template <DType kT, class C>
__global__ void __launch_bounds__(C::kThreads, C::kMinBlocks)
    sparse24_tiled_db_kernel(const typename Elem<kT>::T* __restrict__ x, int64_t ldx,
                             const typename Elem<kT>::T* __restrict__ values, const uint32_t* __restrict__ meta32,
                             int64_t Np, const typename Elem<kT>::T* __restrict__ bias,
                             typename Elem<kT>::T* __restrict__ out, int64_t ldo, int M, int N, int Kp,
                             bool vec_store) {
  using T = typename Elem<kT>::T;
  constexpr int kBM = C::kBM, kMI = C::kMI, kNJ = C::kNJ, kStages = C::kStages;
  constexpr int kValRow = C::kValRow, kXRow = C::kXRow, kValBytes = C::kValBytes, kMetaBytes = C::kMetaBytes;
  constexpr int kStageBytes = C::kStageBytes, kVRowStep = C::kVRowStep, kXRowStep = C::kXRowStep;
  extern __shared__ __align__(128) uint8_t smem[];
  const uint32_t sbase = smem_addr(smem);
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int wn = warp / C::kWarpsM, wm = warp % C::kWarpsM;
  const int m0 = blockIdx.x * kBM, n0 = blockIdx.y * C::kBN;
  const int64_t half = Kp / 2;
  const int steps = Kp / 32, ktiles = (Kp + 63) / 64;

  // ---- copies as in variant 1; copy j of a thread is live while j < v_live (x_live).
  const int vc = tid & 3, vr = tid >> 2, xc = tid & 7, xr = tid >> 3;
  const int v_live = n0 + vr < N ? (N - n0 - vr + kVRowStep - 1) / kVRowStep : 0;
  const int x_live = m0 + xr < M ? (M - m0 - xr + kXRowStep - 1) / kXRowStep : 0;
  const T* v_cur = values + (v_live > 0 ? static_cast<int64_t>(n0 + vr) * half : 0) + vc * 8;
  const T* x_cur = x + (x_live > 0 ? static_cast<int64_t>(m0 + xr) * ldx : 0) + xc * 8;
  const MetaCopy<C> meta_copy(tid, n0, meta32, Np);
  const uint32_t v_dst = vr * kValRow + vc * 16, x_dst = kValBytes + kMetaBytes + xr * kXRow + xc * 16;
  auto load_tile = [&](int stage, int kt) {
    const uint32_t st = sbase + stage * kStageBytes;
    const bool vk = 32 * kt + vc * 8 < half;
#pragma unroll
    for (int j = 0; j < C::kVCopies; ++j) {
      const bool ok = j < v_live && vk;
      cp_async_16_zfill(st + v_dst + j * kVRowStep * kValRow, ok ? v_cur + j * kVRowStep * half : values, ok);
    }
    const bool xk = 64 * kt + xc * 8 < Kp;
#pragma unroll
    for (int j = 0; j < C::kXCopies; ++j) {
      const bool ok = j < x_live && xk;
      cp_async_16_zfill(st + x_dst + j * kXRowStep * kXRow, ok ? x_cur + j * kXRowStep * ldx : x, ok);
    }
    v_cur += 32;
    x_cur += 64;
    meta_copy.copy(tid, st, kt, steps, Np);
  };

  const FragOffsets off = frag_offsets<C>(lane, wn, wm);
  auto load_a = [&](uint32_t(&a)[kMI][4], int stage, int s) {
#pragma unroll
    for (int i = 0; i < kMI; ++i) ldmatrix_x4(a[i], sbase + stage * kStageBytes + off.a + i * 16 * kValRow + s * 32);
  };
  auto load_b = [&](uint32_t(&b)[4], int stage, int s, int j) {
    ldmatrix_x4(b, sbase + stage * kStageBytes + off.b + j * 8 * kXRow + s * 64);
  };

  float acc[kMI][kNJ][4];
  zero<C>(acc);

#pragma unroll
  for (int s = 0; s < kStages - 1; ++s) {
    if (s < ktiles) load_tile(s, s);
    cp_async_commit();
  }
  cp_async_wait<kStages - 2>();
  __syncthreads();
  // A double-buffered (a[s] holds step s); B rolling: once column j's mma.sp of a step are issued, b[j] is
  // reloaded for the next step, kNJ - 1 columns of mma.sp ahead of its use. 128 + 32 + 32 registers.
  uint32_t a[2][kMI][4], b[kNJ][4], e[kMI];
  load_meta<C>(e, smem, off.e);
  load_a(a[0], 0, 0);
#pragma unroll
  for (int j = 0; j < kNJ; ++j) load_b(b[j], 0, 0, j);
  int read = 0, write = kStages - 1;
#pragma unroll 1
  for (int kt = 0; kt < ktiles; ++kt) {
    load_a(a[1], read, 1);
    // The stage written now was last read (step 1, metadata) before the previous iteration's barrier.
    if (kt + kStages - 1 < ktiles) load_tile(write, kt + kStages - 1);
    cp_async_commit();
#pragma unroll
    for (int j = 0; j < kNJ; ++j) {
#pragma unroll
      for (int i = 0; i < kMI; ++i) mma_sp_16832<kT, 0>(acc[i][j], a[0][i], b[j], e[i]);
      load_b(b[j], read, 1, j);
    }
    cp_async_wait<kStages - 2>();  // tile kt + 1 landed
    __syncthreads();
    read = read + 1 == kStages ? 0 : read + 1;
    write = write + 1 == kStages ? 0 : write + 1;
    // After the last tile these read a stale stage: harmless, and unused.
    load_a(a[0], read, 0);
#pragma unroll
    for (int j = 0; j < kNJ; ++j) {
#pragma unroll
      for (int i = 0; i < kMI; ++i) mma_sp_16832<kT, 1>(acc[i][j], a[1][i], b[j], e[i]);
      load_b(b[j], read, 0, j);
    }
    load_meta<C>(e, smem + read * kStageBytes, off.e);  // the next stage's words, read before the next barrier
  }
  cp_async_wait<0>();
  __syncthreads();  // the pipeline's shared memory becomes the epilogue tile
  store_tile<kT, C>(smem, acc, bias, out, ldo, M, N, m0, n0, wn, wm, vec_store);
}

template <DType kT, class C, bool kDoubleBuffered = false>
cudaError_t launch_tiled(const void* x, int64_t ldx, const void* values, const int16_t* meta, int64_t Np,
                         const void* bias, void* out, int64_t ldo, int64_t M, int64_t N, int64_t Kp,
                         cudaStream_t stream) {
  using T = typename Elem<kT>::T;
  constexpr auto kernel = [] {  // only the chosen kernel is instantiated
    if constexpr (kDoubleBuffered)
      return &sparse24_tiled_db_kernel<kT, C>;
    else
      return &sparse24_tiled_kernel<kT, C>;
  }();
  const cudaError_t err = opt_in_dynamic_smem<kernel>(C::kSmem);
  if (err != cudaSuccess) return err;
  const dim3 grid(static_cast<unsigned>(ceil_div(M, C::kBM)), static_cast<unsigned>(ceil_div(N, C::kBN)));
  if (grid.y > 65535) return cudaErrorInvalidValue;
  const bool vec_store = aligned16(out) && ldo % 8 == 0;
  kernel<<<grid, C::kThreads, C::kSmem, stream>>>(
      static_cast<const T*>(x), ldx, static_cast<const T*>(values), reinterpret_cast<const uint32_t*>(meta), Np,
      static_cast<const T*>(bias), static_cast<T*>(out), ldo, static_cast<int>(M), static_cast<int>(N),
      static_cast<int>(Kp), vec_store);
  return cudaGetLastError();
}

template <DType kT>
cudaError_t dispatch(const void* x, int64_t ldx, const void* values, const int16_t* meta, int64_t Np,
                     const void* bias, void* out, int64_t ldo, int64_t M, int64_t N, int64_t Kp, bool gemv,
                     int variant, cudaStream_t stream) {
  if (gemv) {
    switch (variant) {
      case 0: return launch<kT, 2, 1, 4>(x, ldx, values, meta, Np, bias, out, ldo, M, N, Kp, stream);
      case 1: return launch_gemv_wide<kT, 4, 2>(x, ldx, values, meta, Np, bias, out, ldo, M, N, Kp, stream);
      case 2: return launch_gemv_wide<kT, 4, 4>(x, ldx, values, meta, Np, bias, out, ldo, M, N, Kp, stream);
      case 4: return launch_gemv_wide<kT, 2, 4>(x, ldx, values, meta, Np, bias, out, ldo, M, N, Kp, stream);
      case 5: return launch_gemv_wide<kT, 8, 2>(x, ldx, values, meta, Np, bias, out, ldo, M, N, Kp, stream);
      default: return cudaErrorInvalidValue;
    }
  }
  switch (variant) {
    case 0: return launch<kT, 8, 4, 1>(x, ldx, values, meta, Np, bias, out, ldo, M, N, Kp, stream);
    case 1: return launch_tiled<kT, TileA>(x, ldx, values, meta, Np, bias, out, ldo, M, N, Kp, stream);
    case 4: return launch_tiled<kT, TileD, true>(x, ldx, values, meta, Np, bias, out, ldo, M, N, Kp, stream);
    case 5: return launch_tiled<kT, TileB, true>(x, ldx, values, meta, Np, bias, out, ldo, M, N, Kp, stream);
    default: return cudaErrorInvalidValue;
  }
}

}  // namespace

cudaError_t sparse24_linear(DType t, const void* x, int64_t ldx, const void* values, const int16_t* meta, int64_t Np,
                            const void* bias, void* out, int64_t ldo, int64_t M, int64_t N, int64_t Kp, bool gemv,
                            cudaStream_t stream, int variant) {
  if (M < 1 || N < 1 || Kp < 32 || Kp % 32 || Np % 32 || Np < N || ldx % 2 || ldx < Kp || ldo < N ||
      N > INT32_MAX - 256 || M > INT32_MAX - 256 || Kp > INT32_MAX / 2 || (gemv && M > 16) ||
      reinterpret_cast<uintptr_t>(x) % 4 || reinterpret_cast<uintptr_t>(values) % 4 ||
      reinterpret_cast<uintptr_t>(meta) % 4 || !sparse24_has_variant(gemv, variant))
    return cudaErrorInvalidValue;
  // The new variants read values (and, in the GEMM, x and meta) 16 bytes at a time.
  if (variant > 0 && (!aligned16(values) || !aligned16(meta) || (!gemv && (!aligned16(x) || ldx % 8))))
    return cudaErrorInvalidValue;
  if (t == DType::kBF16)
    return dispatch<DType::kBF16>(x, ldx, values, meta, Np, bias, out, ldo, M, N, Kp, gemv, variant, stream);
  if (t == DType::kF16)
    return dispatch<DType::kF16>(x, ldx, values, meta, Np, bias, out, ldo, M, N, Kp, gemv, variant, stream);
  return cudaErrorInvalidValue;
}

}  // namespace pycomp::cuda
