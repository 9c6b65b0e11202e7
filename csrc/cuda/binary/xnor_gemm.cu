// XNOR GEMM on b1 tensor cores, plus the per-token binarization and weight popcounts it needs.
//
// mma.sync m16n8k256 .b1 has AND + popc (XOR + popc is gone since sm_90), so a block counts
// popc(a & w) and the epilogue turns it into disagreements, xor = popc(a) + popc(w) - 2 popc(a & w),
// with the row popcounts computed once per call (binarize_per_token for a, popc_rows for w);
// dot = K - 2 xor, exact. Zero padding past K is zero in a and w, so it counts nowhere.
//
// Tiling: 128 x 128 block tile, 8 warps as 2 (M) x 4 (N), 64 x 32 per warp = 4 x 4 mma tiles;
// k-steps of 512 bits (16 words per row) staged through shared memory by cp.async, double-buffered.
// Shared rows are padded to 20 words: the fragment reads (8 rows x 4 consecutive words per
// instruction) then hit 32 distinct banks. Fragments (PTX ISA, m16n8k256 .b1): lane = 4 g + t;
// a0/a1 = word t of rows g / g + 8 of the 256-bit k-slice, a2/a3 = word t + 4; b0/b1 = words t and
// t + 4 of weight row g; c0..c3 = (g, 2t), (g, 2t + 1), (g + 8, 2t), (g + 8, 2t + 1).
#include <cuda_runtime.h>

#include "cuda/binary/binary_cuda.h"
#include "cuda/ptx.cuh"

namespace pycomp::cuda {
namespace {

constexpr int kBM = 128, kBN = 128, kBKW = 16;  // block tile; words per k-step
constexpr int kRowWords = kBKW + 4;              // padded shared row
constexpr int kThreads = 256;
constexpr int kMI = 4, kNI = 4;                  // mma tiles per warp

// One block per row: each warp turns 32 consecutive inputs into one word with a ballot.
template <DType kT>
__global__ void __launch_bounds__(256) binarize_kernel(const typename Elem<kT>::T* __restrict__ x, int64_t ldx,
                                                       uint32_t* __restrict__ bits, int64_t ld_bits,
                                                       float* __restrict__ beta, int32_t* __restrict__ popc,
                                                       int64_t K) {
  const int64_t m = blockIdx.x;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, nwarps = blockDim.x / 32;
  const auto* xr = x + m * ldx;
  float s = 0.f;
  int count = 0;
  for (int64_t w = warp; w < ld_bits; w += nwarps) {
    const int64_t k = w * 32 + lane;
    const float v = k < K ? Elem<kT>::to_float(xr[k]) : 0.f;
    const uint32_t word = __ballot_sync(0xffffffffu, v < 0.f);
    s += fabsf(v);
    if (lane == 0) {
      bits[m * ld_bits + w] = word;
      count += __popc(word);
    }
  }
  for (int off = 16; off > 0; off /= 2) s += __shfl_xor_sync(0xffffffffu, s, off);
  __shared__ float ssum[32];
  __shared__ int scount[32];
  if (lane == 0) {
    ssum[warp] = s;
    scount[warp] = count;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    float t = 0.f;
    int c = 0;
    for (int i = 0; i < nwarps; ++i) {
      t += ssum[i];
      c += scount[i];
    }
    beta[m] = t / static_cast<float>(K);
    popc[m] = c;
  }
}

// Variant 1 of the binarization: one warp per row, 16-byte loads (8 inputs per lane), the 4 lanes of a
// word OR their sign bytes together by two shuffles. Needs K % 8 == 0 and 16-byte aligned rows.
// Variant 2 (kBatch = 8): the same with 8 loads per lane issued before any is used. Variant 1 has one
// 512-byte load per warp in flight; at M = 4096 (512 blocks of 8 warps, 4 per SM) that is 16 KB per SM,
// which at a microsecond of latency caps the read at about 2 TB/s (the H200 run: 2.5 TB/s, 13.4 us).
template <DType kT, int kBatch>
__global__ void __launch_bounds__(256) binarize_vec_kernel(const typename Elem<kT>::T* __restrict__ x, int64_t ldx,
                                                           uint32_t* __restrict__ bits, int64_t ld_bits,
                                                           float* __restrict__ beta, int32_t* __restrict__ popc,
                                                           int64_t M, int64_t K) {
  using T = typename Elem<kT>::T;
  constexpr int kPer = 16 / sizeof(T);  // inputs per 16-byte load
  const int lane = threadIdx.x % 32;
  const int64_t m = static_cast<int64_t>(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32;
  if (m >= M) return;
  const T* xr = x + m * ldx;
  uint32_t* br = bits + m * ld_bits;
  float s = 0.f;
  int count = 0;
  for (int64_t base = 0; base < ld_bits * 32; base += 32 * kPer * kBatch) {  // the same trip count in every lane
    uint4 raw[kBatch];
#pragma unroll
    for (int b = 0; b < kBatch; ++b) {  // K % 8 == 0: the 8 inputs of a load are all in K or all past it
      const int64_t k0 = base + (32 * b + lane) * kPer;
      raw[b] = k0 < K ? ldg_stream_128(xr + k0) : make_uint4(0, 0, 0, 0);
    }
#pragma unroll
    for (int b = 0; b < kBatch; ++b) {
      const int64_t k0 = base + (32 * b + lane) * kPer;
      uint32_t mask = 0;  // bit j: input k0 + j < 0 (bytes of 8 inputs for 2-byte types, nibbles for fp32)
      if (k0 < K) {
        const T* e = reinterpret_cast<const T*>(&raw[b]);
#pragma unroll
        for (int j = 0; j < kPer; ++j) {
          const float v = Elem<kT>::to_float(e[j]);
          s += fabsf(v);
          mask |= static_cast<uint32_t>(v < 0.f) << j;
        }
      }
      // A 32-bit word is 32 / kPer lanes: shift each lane's bits to its place and OR within the group.
      constexpr int kLanes = 32 / kPer;
      uint32_t word = mask << (kPer * (lane % kLanes));
#pragma unroll
      for (int off = 1; off < kLanes; off *= 2) word |= __shfl_xor_sync(0xffffffffu, word, off);
      const int64_t wi = k0 / 32;
      if (lane % kLanes == 0 && wi < ld_bits) {
        br[wi] = word;
        count += __popc(word);
      }
    }
  }
  for (int off = 16; off > 0; off /= 2) {
    s += __shfl_xor_sync(0xffffffffu, s, off);
    count += __shfl_xor_sync(0xffffffffu, count, off);
  }
  if (lane == 0) {
    beta[m] = s / static_cast<float>(K);
    popc[m] = count;
  }
}

__global__ void __launch_bounds__(256) popc_rows_kernel(const uint32_t* __restrict__ w, int64_t N, int64_t KW,
                                                        int32_t* __restrict__ popc) {
  const int64_t n = static_cast<int64_t>(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (n >= N) return;
  int c = 0;
  for (int64_t k = lane; k < KW; k += 32) c += __popc(__ldg(w + n * KW + k));
  for (int off = 16; off > 0; off /= 2) c += __shfl_xor_sync(0xffffffffu, c, off);
  if (lane == 0) popc[n] = c;
}

template <DType kOut>
__global__ void __launch_bounds__(kThreads) xnor_gemm_kernel(const uint32_t* __restrict__ a, int64_t ld_a,
                                                             const float* __restrict__ beta,
                                                             const int32_t* __restrict__ popc_a,
                                                             const uint32_t* __restrict__ w, int64_t KW,
                                                             const float* __restrict__ alpha,
                                                             const int32_t* __restrict__ popc_w,
                                                             const typename Elem<kOut>::T* __restrict__ bias,
                                                             typename Elem<kOut>::T* __restrict__ out, int M, int N,
                                                             int K) {
  __shared__ __align__(16) uint32_t As[2][kBM * kRowWords];
  __shared__ __align__(16) uint32_t Bs[2][kBN * kRowWords];
  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  const int warp_m = warp / 4, warp_n = warp % 4;
  const int g = lane / 4, t = lane % 4;
  const int m0 = blockIdx.y * kBM, n0 = blockIdx.x * kBN;
  const int64_t steps = (KW + kBKW - 1) / kBKW;

  // Each thread copies 2 chunks of 16 bytes of A and of B per k-step: chunk c = tid + 256 i,
  // row c / 4, words 4 (c % 4) .. + 3.
  auto load_stage = [&](int buf, int64_t step) {
    const int64_t kw0 = step * kBKW;
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      const int c = tid + kThreads * i, row = c / 4, col = (c % 4) * 4;
      const int m = m0 + row, n = n0 + row;
      const bool a_ok = m < M;  // a rows are padded to whole k-steps
      const uint32_t* a_src = a + (a_ok ? static_cast<int64_t>(m) * ld_a + kw0 + col : 0);
      cp_async_16_zfill(smem_addr(&As[buf][row * kRowWords + col]), a_src, a_ok);
      const bool w_ok = n < N && kw0 + col < KW;  // KW % 4 == 0: a chunk is all in or all out
      const uint32_t* w_src = w + (w_ok ? static_cast<int64_t>(n) * KW + kw0 + col : 0);
      cp_async_16_zfill(smem_addr(&Bs[buf][row * kRowWords + col]), w_src, w_ok);
    }
    cp_async_commit();
  };

  int acc[kMI][kNI][4] = {};
  load_stage(0, 0);
  for (int64_t step = 0; step < steps; ++step) {
    const int buf = step & 1;
    if (step + 1 < steps) {
      load_stage(buf ^ 1, step + 1);
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();
#pragma unroll
    for (int h = 0; h < 2; ++h) {  // two 256-bit mma k-slices per step
      uint32_t af[kMI][4], bf[kNI][2];
#pragma unroll
      for (int i = 0; i < kMI; ++i) {
        const uint32_t* r = &As[buf][(warp_m * 64 + i * 16 + g) * kRowWords + h * 8 + t];
        af[i][0] = r[0];
        af[i][1] = r[8 * kRowWords];
        af[i][2] = r[4];
        af[i][3] = r[8 * kRowWords + 4];
      }
#pragma unroll
      for (int j = 0; j < kNI; ++j) {
        const uint32_t* r = &Bs[buf][(warp_n * 32 + j * 8 + g) * kRowWords + h * 8 + t];
        bf[j][0] = r[0];
        bf[j][1] = r[4];
      }
#pragma unroll
      for (int i = 0; i < kMI; ++i)
#pragma unroll
        for (int j = 0; j < kNI; ++j) mma_b1_and_popc(acc[i][j], af[i], bf[j]);
    }
    __syncthreads();  // the next iteration's copy overwrites this buffer
  }

#pragma unroll
  for (int i = 0; i < kMI; ++i) {
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const int m = m0 + warp_m * 64 + i * 16 + g + 8 * half;
      if (m >= M) continue;
      const float bm = beta[m];
      const int pa = popc_a[m];
#pragma unroll
      for (int j = 0; j < kNI; ++j) {
        const int n = n0 + warp_n * 32 + j * 8 + 2 * t;
        float v[2];
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const int nn = n + e < N ? n + e : N - 1;
          const int disagree = pa + popc_w[nn] - 2 * acc[i][j][2 * half + e];
          v[e] = bm * alpha[nn] * static_cast<float>(K - 2 * disagree);
          if (bias != nullptr) v[e] += Elem<kOut>::to_float(bias[nn]);
        }
        if (n < N) {
          const bool pair = n + 1 < N;
          store_pair<kOut>(out + static_cast<int64_t>(m) * N + n, v[0], v[1], pair, pair && (N % 2 == 0));
        }
      }
    }
  }
}


// Variant 1: 128 x 128 block tile of 4 warps as 2 x 2, 64 x 64 per warp (4 x 8 mma tiles: each
// fragment byte read from shared memory feeds twice the mmas of variant 0), 512-bit k-steps in a
// 4-stage cp.async ring (dynamic shared memory, 64 KB), fragments by ldmatrix.x4. Rows are 64 bytes
// (4 chunks of 16); chunk c of row r sits at c ^ ((r / 2) % 4), so the 8 rows an ldmatrix phase reads
// hit 8 distinct 16-byte bank groups. For the b1 layout an 8x8 b16 matrix is 8 rows x 4 words:
// lane l receives word l % 4 of row l / 4, exactly the a0..a3 / b0, b1 fragments above.
constexpr int kV1BM = 128, kV1BN = 128, kV1Threads = 128, kV1Stages = 4, kV1MI = 4, kV1NI = 8;
constexpr int kV1RowBytes = kBKW * 4;  // 64
constexpr int kV1StageBytes = (kV1BM + kV1BN) * kV1RowBytes;
constexpr int kV1Smem = kV1Stages * kV1StageBytes;

__device__ __forceinline__ int v1_swizzle(int row, int chunk) { return row * 4 + (chunk ^ ((row >> 1) & 3)); }

template <DType kOut>
__global__ void __launch_bounds__(kV1Threads, 2) xnor_gemm_v1_kernel(
    const uint32_t* __restrict__ a, int64_t ld_a, const float* __restrict__ beta, const int32_t* __restrict__ popc_a,
    const uint32_t* __restrict__ w, int64_t KW, const float* __restrict__ alpha, const int32_t* __restrict__ popc_w,
    const typename Elem<kOut>::T* __restrict__ bias, typename Elem<kOut>::T* __restrict__ out, int M, int N, int K) {
  extern __shared__ __align__(128) uint4 smem[];  // per stage: A rows then B rows, 4 chunks each
  constexpr int kThr = kV1Threads, kWarpsN = kV1BN / 64, kStageB = kV1StageBytes;
  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  const int warp_m = warp / kWarpsN, warp_n = warp % kWarpsN;
  const int g = lane / 4, t = lane % 4;
  const int m0 = blockIdx.y * kV1BM, n0 = blockIdx.x * kV1BN;
  const int steps = static_cast<int>((KW + kBKW - 1) / kBKW);
  const uint32_t base = smem_addr(smem);

  auto load_a = [&](uint32_t sa, int64_t kw0, int c) {
    const int row = c / 4, chunk = c % 4, m = m0 + row;
    const bool a_ok = m < M;  // a rows are padded to whole k-steps
    const uint32_t* a_src = a + (a_ok ? static_cast<int64_t>(m) * ld_a + kw0 + 4 * chunk : 0);
    cp_async_16_zfill(sa + 16 * v1_swizzle(row, chunk), a_src, a_ok);
  };
  auto load_b = [&](uint32_t sb, int64_t kw0, int c) {
    const int row = c / 4, chunk = c % 4, n = n0 + row;
    const bool w_ok = n < N && kw0 + 4 * chunk < KW;  // KW % 4 == 0: a chunk is all in or all out
    const uint32_t* w_src = w + (w_ok ? static_cast<int64_t>(n) * KW + kw0 + 4 * chunk : 0);
    cp_async_16_zfill(sb + 16 * v1_swizzle(row, chunk), w_src, w_ok);
  };
  auto load_stage = [&](int stage, int step) {
    if (step < steps) {
      const int64_t kw0 = static_cast<int64_t>(step) * kBKW;
      const uint32_t sa = base + stage * kStageB, sb = sa + kV1BM * kV1RowBytes;
#pragma unroll
      for (int i = 0; i < kV1BM * 4 / kThr; ++i) {  // an A chunk, then the B chunk of the same row
        load_a(sa, kw0, tid + kThr * i);
        load_b(sb, kw0, tid + kThr * i);
      }
    }
    cp_async_commit();  // an empty group past the last step keeps the wait counts uniform
  };

  int acc[kV1MI][kV1NI][4] = {};
#pragma unroll
  for (int s = 0; s < kV1Stages - 1; ++s) load_stage(s, s);
  // ldmatrix lane roles: matrix q = lane / 8, row lane % 8 of it.
  const int q = lane / 8, r8 = lane % 8;
  for (int step = 0; step < steps; ++step) {
    cp_async_wait<kV1Stages - 2>();
    __syncthreads();  // stage `step` landed for every thread; stage step - 1 is no longer read
    load_stage((step + kV1Stages - 1) % kV1Stages, step + kV1Stages - 1);
    const uint32_t sa = base + (step % kV1Stages) * kStageB, sb = sa + kV1BM * kV1RowBytes;
#pragma unroll
    for (int h = 0; h < 2; ++h) {  // two 256-bit mma k-slices (chunks 2h, 2h + 1) per step
      uint32_t af[kV1MI][4], bf[kV1NI][2];
#pragma unroll
      for (int i = 0; i < kV1MI; ++i) {  // matrices: rows 0-7 / 8-15 (q % 2) x chunk 2h / 2h + 1 (q / 2)
        const int row = warp_m * 64 + i * 16 + r8 + 8 * (q & 1);
        ldmatrix_x4(af[i], sa + 16 * v1_swizzle(row, 2 * h + (q >> 1)));
      }
#pragma unroll
      for (int p = 0; p < kV1NI / 2; ++p) {  // matrices: chunk 2h / 2h + 1 (q % 2) x n-tile 2p / 2p + 1 (q / 2)
        const int row = warp_n * 64 + p * 16 + r8 + 8 * (q >> 1);
        uint32_t r[4];
        ldmatrix_x4(r, sb + 16 * v1_swizzle(row, 2 * h + (q & 1)));
        bf[2 * p][0] = r[0];
        bf[2 * p][1] = r[1];
        bf[2 * p + 1][0] = r[2];
        bf[2 * p + 1][1] = r[3];
      }
#pragma unroll
      for (int i = 0; i < kV1MI; ++i)
#pragma unroll
        for (int j = 0; j < kV1NI; ++j) mma_b1_and_popc(acc[i][j], af[i], bf[j]);
    }
  }
  cp_async_wait<0>();

  // dot = K - 2 (popc_a + popc_w - 2 and) = (K - 2 popc_w) - 2 popc_a + 4 and: the column terms are
  // read once per thread, not once per output.
  int col_k[kV1NI][2];
  float col_alpha[kV1NI][2], col_bias[kV1NI][2];
#pragma unroll
  for (int j = 0; j < kV1NI; ++j)
#pragma unroll
    for (int e = 0; e < 2; ++e) {
      const int n = n0 + warp_n * 64 + j * 8 + 2 * t + e, nn = n < N ? n : N - 1;
      col_k[j][e] = K - 2 * popc_w[nn];
      col_alpha[j][e] = alpha[nn];
      col_bias[j][e] = bias != nullptr ? Elem<kOut>::to_float(bias[nn]) : 0.f;
    }
#pragma unroll
  for (int i = 0; i < kV1MI; ++i) {
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const int m = m0 + warp_m * 64 + i * 16 + g + 8 * half;
      if (m >= M) continue;
      const float bm = beta[m];
      const int row_k = -2 * popc_a[m];
      typename Elem<kOut>::T* orow = out + static_cast<int64_t>(m) * N;
#pragma unroll
      for (int j = 0; j < kV1NI; ++j) {
        const int n = n0 + warp_n * 64 + j * 8 + 2 * t;
        float v[2];
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const int dot = col_k[j][e] + row_k + 4 * acc[i][j][2 * half + e];
          v[e] = fmaf(bm * col_alpha[j][e], static_cast<float>(dot), col_bias[j][e]);
        }
        if (n < N) {
          const bool pair = n + 1 < N;
          store_pair<kOut>(orow + n, v[0], v[1], pair, pair && (N % 2 == 0));
        }
      }
    }
  }
}

// Variants 3-5: one persistent block per SM that keeps its A block (128 rows, the whole K) in shared
// memory and walks a run of 128-column weight tiles, each loaded with the whole K at once. At M = 4096
// variant 1 reads 128 KB of A and W bits from L2 per 128 x 128 tile (470 MB in all, half of it A again
// and again); here a tile reads its 64 KB of W only (235 MB). The block's 8 warps are two groups of 4
// (2 x 2 warp tiles of 64 x 64, variant 1's fragments) on alternate tiles with a W buffer each: a group
// issues the copy of its next tile as soon as its mmas are done and writes its outputs while the copy
// flies, and the other group's mmas fill the tensor cores meanwhile, so neither the tile fill nor the
// epilogue stalls the SM. Rows are padded by 16 bytes (row stride = 16 mod 128 bytes): the 8 rows of
// an ldmatrix phase, and the 32 rows a warp's popcount reads, hit distinct 16-byte bank groups.
// Variant 3 stores bf16 pairs from the mma layout (v1's epilogue); variant 4 stages each warp's 8 x 64
// band in shared memory and writes whole 128-byte row segments with 16-byte streaming stores; variant
// 5 is 4 with the weight rows' popcounts counted from the resident tile, so no popc_rows launch.
// Variants 6 and 7 (4 and 5 on a 256-row A block, 64-row W tiles, the 4 warps of a group stacked
// along M): the same shared memory and mmas per tile, and each W byte copied feeds twice the rows,
// so a tile copies 32 KB (M = 4096: W traffic 117 MB, where 3-5 copy 235 MB).
// Shared memory: 384 padded rows (K = 4096: 198 KB) plus the bands and counts; the launcher runs
// variant 1 where that passes the device's opt-in limit (K > 4096 on an H100/H200).
constexpr int kV3Rows = 384, kV3Threads = 256, kV3MI = 4, kV3NI = 8;  // rows: A block plus two W tiles

// One staged output row of a warp (64 columns) plus 16 bytes against bank conflicts.
template <DType kOut>
__host__ __device__ constexpr int v3_band_row_bytes() {
  return 64 * static_cast<int>(sizeof(typename Elem<kOut>::T)) + 16;
}

template <DType kOut, bool kStaged, bool kPopc>
int64_t v3_smem_bytes(int64_t ld_a) {
  return kV3Rows * (ld_a * 4 + 16) + (kStaged ? 8 * 8 * v3_band_row_bytes<kOut>() : 0) + (kPopc ? 2 * 128 * 4 : 0);
}

// The 128 threads of one warp group. Immediate barrier ids (1, 2; 3 for the groups' start) so that the
// block reserves 4 barriers, not 16.
__device__ __forceinline__ void group_barrier(int group) {
  if (group == 0)
    asm volatile("bar.sync 1, 128;\n" ::: "memory");
  else
    asm volatile("bar.sync 2, 128;\n" ::: "memory");
}

// kAM: A block rows (128 or 256); W tiles have 16384 / kAM rows, so a group's tile is 128 x 128 or 256 x 64.
template <DType kOut, int kAM, bool kStaged, bool kPopc>
__global__ void __launch_bounds__(kV3Threads, 1) xnor_gemm_v3_kernel(
    const uint32_t* __restrict__ a, int64_t ld_a, const float* __restrict__ beta, const int32_t* __restrict__ popc_a,
    const uint32_t* __restrict__ w, int64_t KW, const float* __restrict__ alpha, const int32_t* __restrict__ popc_w,
    const typename Elem<kOut>::T* __restrict__ bias, typename Elem<kOut>::T* __restrict__ out, int M, int N, int K,
    int splits) {
  using T = typename Elem<kOut>::T;
  extern __shared__ __align__(128) uint4 smem[];  // A rows, group 0's W rows, group 1's W rows, bands, counts
  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  constexpr int kWN = 16384 / kAM, kWarpsN = kWN / 64;
  static_assert(kAM + 2 * kWN == kV3Rows && kWarpsN * (kAM / 64) == 4, "a group's 4 warps tile kAM x kWN");
  const int grp = warp / 4, gw = warp % 4, warp_m = gw / kWarpsN, warp_n = gw % kWarpsN;
  const int g = lane / 4, t = lane % 4, q = lane / 8, r8 = lane % 8;
  const int m0 = static_cast<int>(blockIdx.x / splits) * kAM, split = static_cast<int>(blockIdx.x % splits);
  const int tiles = (N + kWN - 1) / kWN;
  const int t_end = static_cast<int>(static_cast<int64_t>(split + 1) * tiles / splits);
  const int chunks = static_cast<int>(ld_a / 4), row_bytes = 16 * chunks + 16;  // 16-byte chunks per row
  unsigned char* const sbytes = reinterpret_cast<unsigned char*>(smem);
  const int sb_off = (kAM + grp * kWN) * row_bytes;  // this group's W tile
  const uint32_t sa = smem_addr(smem), sb = sa + sb_off;
  unsigned char* const band = sbytes + kV3Rows * row_bytes + warp * 8 * v3_band_row_bytes<kOut>();
  int* const counts = reinterpret_cast<int*>(sbytes + kV3Rows * row_bytes +
                                             (kStaged ? 8 * 8 * v3_band_row_bytes<kOut>() : 0)) + grp * 128;

  // `rows` rows from row0 of src (row stride ld words, `words` valid words per row, rows < limit) into
  // dst; warp wi of nw copies rows wi, wi + nw, ..., a lane one 16-byte chunk (a warp: 512 bytes of a row).
  auto load_rows = [&](uint32_t dst, const uint32_t* src, int64_t ld, int64_t words, int rows, int row0, int limit,
                       int wi, int nw) {
    for (int r = wi; r < rows; r += nw) {
      const bool row_ok = row0 + r < limit;
      for (int c = lane; c < chunks; c += 32) {
        const bool ok = row_ok && 4 * c < words;  // words % 4 == 0: a chunk is all in or all out
        const uint32_t* p = src + (ok ? static_cast<int64_t>(row0 + r) * ld + 4 * c : 0);
        cp_async_16_zfill(dst + r * row_bytes + 16 * c, p, ok);
      }
    }
  };

  int tile = static_cast<int>(static_cast<int64_t>(split) * tiles / splits) + grp;
  load_rows(sa, a, ld_a, ld_a, kAM, m0, M, warp, 8);
  if (tile < t_end) load_rows(sb, w, KW, KW, kWN, tile * kWN, N, gw, 4);
  cp_async_commit();
  cp_async_wait<0>();
  __syncthreads();  // both groups read every A row

  const int steps = chunks / 4;  // 512-bit steps of two mma k-slices (ld_a % 16 == 0)
  const bool vec_out = N % (16 / static_cast<int>(sizeof(T))) == 0 && (reinterpret_cast<uintptr_t>(out) & 15) == 0;
  // Started together, the groups would stay in step: both multiplying at half speed, then both in
  // their epilogues with the tensor cores idle. Group 1 starts its first mmas when group 0 ends its
  // first (barrier 3: group 0 arrives, group 1 waits); from then on, with an epilogue no longer than
  // a tile's mmas, each group's epilogue falls under the other's mmas.
  const bool stagger = tile - grp + 1 < t_end;  // group 1 has a tile
  for (bool first = true; tile < t_end; tile += 2, first = false) {
    const int n0 = tile * kWN;
    if (grp == 1 && first) asm volatile("bar.sync 3, 256;\n" ::: "memory");
    int acc[kV3MI][kV3NI][4] = {};
    // Unrolled twice so that the compiler interleaves the next step's ldmatrix with this step's mmas
    // (once, each step began with 16 ldmatrix whose latency no mma covered); 242-255 registers, no spills.
#pragma unroll 2
    for (int step = 0; step < steps; ++step) {
#pragma unroll
      for (int h = 0; h < 2; ++h) {  // chunks 4 step + 2h (words t) and + 1 (words t + 4): one 256-bit slice
        const int c0 = 4 * step + 2 * h;
        uint32_t af[kV3MI][4], bf[kV3NI][2];
#pragma unroll
        for (int i = 0; i < kV3MI; ++i) {  // matrices: rows 0-7 / 8-15 (q % 2) x chunk c0 / c0 + 1 (q / 2)
          const int row = warp_m * 64 + i * 16 + r8 + 8 * (q & 1);
          ldmatrix_x4(af[i], sa + row * row_bytes + 16 * (c0 + (q >> 1)));
        }
#pragma unroll
        for (int p = 0; p < kV3NI / 2; ++p) {  // matrices: chunk c0 / c0 + 1 (q % 2) x n-tile 2p / 2p + 1 (q / 2)
          const int row = warp_n * 64 + p * 16 + r8 + 8 * (q >> 1);
          uint32_t r[4];
          ldmatrix_x4(r, sb + row * row_bytes + 16 * (c0 + (q & 1)));
          bf[2 * p][0] = r[0];
          bf[2 * p][1] = r[1];
          bf[2 * p + 1][0] = r[2];
          bf[2 * p + 1][1] = r[3];
        }
#pragma unroll
        for (int i = 0; i < kV3MI; ++i)
#pragma unroll
          for (int j = 0; j < kV3NI; ++j) mma_b1_and_popc(acc[i][j], af[i], bf[j]);
      }
    }
    if (grp == 0 && first && stagger) asm volatile("bar.arrive 3, 256;\n" ::: "memory");
    if constexpr (kPopc) {  // thread r of the group counts W row r while the tile is still resident
      if (tid % 128 < kWN) {
        const unsigned char* row = sbytes + sb_off + (tid % 128) * row_bytes;
        int c = 0;
        for (int ch = 0; ch < chunks; ++ch) {
          const uint4 v = *reinterpret_cast<const uint4*>(row + 16 * ch);
          c += __popc(v.x) + __popc(v.y) + __popc(v.z) + __popc(v.w);
        }
        counts[tid % 128] = c;
      }
    }
    group_barrier(grp);  // the group is done with this W tile (and its counts are written)
    if (tile + 2 < t_end) load_rows(sb, w, KW, KW, kWN, (tile + 2) * kWN, N, gw, 4);
    cp_async_commit();

    // dot = (K - 2 popc_w) - 2 popc_a + 4 and, as in variant 1.
    int col_k[kV3NI][2];
    float col_alpha[kV3NI][2], col_bias[kV3NI][2];
#pragma unroll
    for (int j = 0; j < kV3NI; ++j)
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const int local = warp_n * 64 + j * 8 + 2 * t + e, n = n0 + local, nn = n < N ? n : N - 1;
        col_k[j][e] = K - 2 * (kPopc ? counts[local] : popc_w[nn]);
        col_alpha[j][e] = alpha[nn];
        col_bias[j][e] = bias != nullptr ? Elem<kOut>::to_float(bias[nn]) : 0.f;
      }
#pragma unroll
    for (int i = 0; i < kV3MI; ++i) {
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        const int mb = m0 + warp_m * 64 + i * 16 + 8 * half, m = mb + g;  // mb: the band's first row
        const float bm = m < M ? beta[m] : 0.f;
        const int row_k = m < M ? -2 * popc_a[m] : 0;
        float v[kV3NI][2];
#pragma unroll
        for (int j = 0; j < kV3NI; ++j)
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            const int dot = col_k[j][e] + row_k + 4 * acc[i][j][2 * half + e];
            v[j][e] = fmaf(bm * col_alpha[j][e], static_cast<float>(dot), col_bias[j][e]);
          }
        if constexpr (!kStaged) {
          if (m < M) {
#pragma unroll
            for (int j = 0; j < kV3NI; ++j) {
              const int n = n0 + warp_n * 64 + j * 8 + 2 * t;
              if (n < N) {
                const bool pair = n + 1 < N;
                store_pair<kOut>(out + static_cast<int64_t>(m) * N + n, v[j][0], v[j][1], pair, pair && (N % 2 == 0));
              }
            }
          }
        } else {
          // Lane (g, t) puts its pairs in band row g; then each 16-byte chunk of the 8 x 64 band goes out
          // whole: a warp store covers 4 (16-bit) or 2 (fp32) rows of 128 or 256 contiguous bytes.
          constexpr int kRowB = v3_band_row_bytes<kOut>(), kCPR = 64 * static_cast<int>(sizeof(T)) / 16;
          constexpr int kE = 16 / static_cast<int>(sizeof(T));  // outputs per chunk
#pragma unroll
          for (int j = 0; j < kV3NI; ++j)
            store_pair<kOut>(reinterpret_cast<T*>(band + g * kRowB) + j * 8 + 2 * t, v[j][0], v[j][1], true, true);
          __syncwarp();
#pragma unroll
          for (int it = 0; it < 8 * kCPR / 32; ++it) {
            const int c = lane + 32 * it, r = c / kCPR, ch = c % kCPR, mr = mb + r, n = n0 + warp_n * 64 + ch * kE;
            const uint4 val = *reinterpret_cast<const uint4*>(band + r * kRowB + 16 * ch);
            if (mr < M && n < N) {
              T* o = out + static_cast<int64_t>(mr) * N + n;
              if (vec_out && n + kE <= N) {
                __stcs(reinterpret_cast<uint4*>(o), val);  // written once: evict first, keep the bits in L2
              } else {
                const T* e = reinterpret_cast<const T*>(&val);
#pragma unroll
                for (int x = 0; x < kE; ++x)  // constant indices: val stays in registers
                  if (n + x < N) o[x] = e[x];
              }
            }
          }
          __syncwarp();  // the band is rewritten by the next (i, half)
        }
      }
    }
    cp_async_wait<0>();
    group_barrier(grp);  // the next W tile landed for every thread of the group
  }
}

template <template <DType> class F, class... Args>
cudaError_t by_dtype(DType t, Args&&... args) {
  switch (t) {
    case DType::kF32: return F<DType::kF32>::run(args...);
    case DType::kF16: return F<DType::kF16>::run(args...);
    case DType::kBF16: return F<DType::kBF16>::run(args...);
  }
  return cudaErrorInvalidValue;
}

template <DType kT>
struct Binarize {
  static cudaError_t run(const void* x, int64_t ldx, uint32_t* bits, int64_t ld_bits, float* beta, int32_t* popc,
                         int64_t M, int64_t K, cudaStream_t stream, int variant) {
    if (variant != 0 && K % 8 == 0 && aligned16(x) && (M == 1 || (ldx * sizeof(typename Elem<kT>::T)) % 16 == 0)) {
      const auto* xt = static_cast<const typename Elem<kT>::T*>(x);
      const auto blocks = static_cast<unsigned>(ceil_div(M, 8));
      if (variant == 2)
        binarize_vec_kernel<kT, 8><<<blocks, 256, 0, stream>>>(xt, ldx, bits, ld_bits, beta, popc, M, K);
      else
        binarize_vec_kernel<kT, 1><<<blocks, 256, 0, stream>>>(xt, ldx, bits, ld_bits, beta, popc, M, K);
      return cudaGetLastError();
    }
    binarize_kernel<kT><<<static_cast<unsigned>(M), 256, 0, stream>>>(
        static_cast<const typename Elem<kT>::T*>(x), ldx, bits, ld_bits, beta, popc, K);
    return cudaGetLastError();
  }
};

// The device's opt-in shared-memory limit per block, or 0 when it cannot be read.
int smem_optin() {
  int device = 0, bytes = 0;
  if (cudaGetDevice(&device) != cudaSuccess ||
      cudaDeviceGetAttribute(&bytes, cudaDevAttrMaxSharedMemoryPerBlockOptin, device) != cudaSuccess)
    return 0;
  return bytes;
}

template <DType kT, bool kStaged, bool kPopc>
bool v3_fits(int64_t ld_a) {
  return v3_smem_bytes<kT, kStaged, kPopc>(ld_a) <= smem_optin();
}

template <DType kT>
struct Gemm {
  using T = typename Elem<kT>::T;

  static cudaError_t v1(const uint32_t* a, int64_t ld_a, const float* beta, const int32_t* popc_a, const uint32_t* w,
                        int64_t KW, const float* alpha, const int32_t* popc_w, const void* bias, void* out, int64_t M,
                        int64_t N, int64_t K, cudaStream_t stream) {
    const dim3 grid(static_cast<unsigned>(ceil_div(N, kV1BN)), static_cast<unsigned>(ceil_div(M, kV1BM)));
    const cudaError_t e = opt_in_dynamic_smem<xnor_gemm_v1_kernel<kT>>(kV1Smem);
    if (e != cudaSuccess) return e;
    xnor_gemm_v1_kernel<kT><<<grid, kV1Threads, kV1Smem, stream>>>(
        a, ld_a, beta, popc_a, w, KW, alpha, popc_w, static_cast<const T*>(bias), static_cast<T*>(out),
        static_cast<int>(M), static_cast<int>(N), static_cast<int>(K));
    return cudaGetLastError();
  }

  // Blocks: ceil(M / kAM) A blocks times `splits` runs of W tiles, as many as fill the SMs once
  // (M = 4096 on 132 SMs: 32 x 4 or 16 x 8 blocks of 28 tiles); past one block per SM, one run per A block.
  template <int kAM, bool kStaged, bool kPopc>
  static cudaError_t v3(const uint32_t* a, int64_t ld_a, const float* beta, const int32_t* popc_a, const uint32_t* w,
                        int64_t KW, const float* alpha, const int32_t* popc_w, const void* bias, void* out, int64_t M,
                        int64_t N, int64_t K, cudaStream_t stream) {
    if (!v3_fits<kT, kStaged, kPopc>(ld_a))
      return v1(a, ld_a, beta, popc_a, w, KW, alpha, popc_w, bias, out, M, N, K, stream);
    constexpr auto kernel = xnor_gemm_v3_kernel<kT, kAM, kStaged, kPopc>;
    const cudaError_t e = opt_in_dynamic_smem<kernel>(smem_optin());
    if (e != cudaSuccess) return e;
    const int64_t blocks_m = ceil_div(M, kAM), tiles = ceil_div(N, 16384 / kAM);
    const int64_t fill = sm_count() / blocks_m;
    const int64_t splits = fill < 1 ? 1 : (fill < tiles ? fill : tiles);
    const auto smem = static_cast<size_t>(v3_smem_bytes<kT, kStaged, kPopc>(ld_a));
    kernel<<<static_cast<unsigned>(blocks_m * splits), kV3Threads, smem, stream>>>(
        a, ld_a, beta, popc_a, w, KW, alpha, popc_w, static_cast<const T*>(bias), static_cast<T*>(out),
        static_cast<int>(M), static_cast<int>(N), static_cast<int>(K), static_cast<int>(splits));
    return cudaGetLastError();
  }

  static cudaError_t run(const uint32_t* a, int64_t ld_a, const float* beta, const int32_t* popc_a,
                         const uint32_t* w, int64_t KW, const float* alpha, const int32_t* popc_w, const void* bias,
                         void* out, int64_t M, int64_t N, int64_t K, cudaStream_t stream, int variant) {
    switch (variant) {
      case 1: return v1(a, ld_a, beta, popc_a, w, KW, alpha, popc_w, bias, out, M, N, K, stream);
      case 3: return v3<128, false, false>(a, ld_a, beta, popc_a, w, KW, alpha, popc_w, bias, out, M, N, K, stream);
      case 4: return v3<128, true, false>(a, ld_a, beta, popc_a, w, KW, alpha, popc_w, bias, out, M, N, K, stream);
      case 5: return v3<128, true, true>(a, ld_a, beta, popc_a, w, KW, alpha, popc_w, bias, out, M, N, K, stream);
      case 6: return v3<256, true, false>(a, ld_a, beta, popc_a, w, KW, alpha, popc_w, bias, out, M, N, K, stream);
      case 7: return v3<256, true, true>(a, ld_a, beta, popc_a, w, KW, alpha, popc_w, bias, out, M, N, K, stream);
      default: break;
    }
    const dim3 grid(static_cast<unsigned>(ceil_div(N, kBN)), static_cast<unsigned>(ceil_div(M, kBM)));
    xnor_gemm_kernel<kT><<<grid, kThreads, 0, stream>>>(a, ld_a, beta, popc_a, w, KW, alpha, popc_w,
                                                        static_cast<const T*>(bias), static_cast<T*>(out),
                                                        static_cast<int>(M), static_cast<int>(N),
                                                        static_cast<int>(K));
    return cudaGetLastError();
  }
};

}  // namespace

int64_t xnor_padded_words(int64_t K) { return ceil_div(ceil_div(K, 32), kBKW) * kBKW; }

cudaError_t binarize_per_token(DType xt, const void* x, int64_t ldx, uint32_t* bits, int64_t ld_bits, float* beta,
                               int32_t* popc, int64_t M, int64_t K, cudaStream_t stream, int variant) {
  if (M < 1 || K < 1 || M > INT32_MAX || ld_bits < ceil_div(K, 32) || ldx < K || variant < 0 || variant > 2)
    return cudaErrorInvalidValue;
  return by_dtype<Binarize>(xt, x, ldx, bits, ld_bits, beta, popc, M, K, stream, variant);
}

cudaError_t popc_rows(const uint32_t* w, int64_t N, int64_t KW, int32_t* popc, cudaStream_t stream) {
  if (N < 1 || KW < 1) return cudaErrorInvalidValue;
  popc_rows_kernel<<<static_cast<unsigned>(ceil_div(N, 8)), 256, 0, stream>>>(w, N, KW, popc);
  return cudaGetLastError();
}

bool xnor_gemm_variant_exists(int variant) { return variant == 0 || variant == 1 || (variant >= 3 && variant <= 7); }

template <DType kT>
struct CountsPopcW {
  static bool run(int64_t K) { return v3_fits<kT, true, true>(xnor_padded_words(K)); }
};

bool xnor_gemm_counts_popc_w(int64_t K, DType out_t, int variant) {
  if ((variant != 5 && variant != 7) || K < 1) return false;
  switch (out_t) {
    case DType::kF32: return CountsPopcW<DType::kF32>::run(K);
    case DType::kF16: return CountsPopcW<DType::kF16>::run(K);
    case DType::kBF16: return CountsPopcW<DType::kBF16>::run(K);
  }
  return false;
}

cudaError_t xnor_gemm(const uint32_t* a, int64_t ld_a, const float* beta, const int32_t* popc_a, const uint32_t* w,
                      const float* alpha, const int32_t* popc_w, const void* bias, DType out_t, void* out, int64_t M,
                      int64_t N, int64_t K, cudaStream_t stream, int variant) {
  const int64_t KW = ceil_div(K, 32);
  if (!xnor_gemm_variant_exists(variant)) return cudaErrorInvalidValue;
  // int indices inside the kernel run a tile (up to 256 rows) past M and N; 2 K fits int for any K below 2^30.
  if (M < 1 || N < 1 || K < 1 || M > INT32_MAX - 2 * kBM || N > INT32_MAX - kBN || K > (1 << 30) || KW % 4 != 0 ||
      ld_a != xnor_padded_words(K) || !aligned16(a) || !aligned16(w))
    return cudaErrorInvalidValue;
  if (popc_w == nullptr && !xnor_gemm_counts_popc_w(K, out_t, variant)) return cudaErrorInvalidValue;
  return by_dtype<Gemm>(out_t, a, ld_a, beta, popc_a, w, KW, alpha, popc_w, bias, out, M, N, K, stream, variant);
}

}  // namespace pycomp::cuda
