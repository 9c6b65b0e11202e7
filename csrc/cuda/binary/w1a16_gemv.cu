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


// ---------------------------------------------------------------------------------------------
// Variant 1: tensor cores. The bits become +-1 bf16/f16 pairs in registers (one shift and one
// lop3 per pair) and feed mma.sync m16n8k16 as out^T = W x^T: 16 weight rows are the A operand,
// up to 8 tokens the B operand (two n8 tiles for M <= 16), fp32 accumulation, the row's alpha
// after the sum (one alpha per row only).
// The k order inside a word is free as long as A and B agree: register i of a word holds bits i
// and i + 16 (sign bits 15 and 31 after a shift by 15 - i), and the B register holds
// x[32 w + i] | x[32 w + i + 16] << 16 (one prmt of two 16-byte activation loads).
// Lane (g, t) streams words 4t..4t+3 of a 16-word unit of rows g and g + 8 (16-byte loads); a warp
// owns 32 rows (two m16 tiles share each B fragment), the block's 4 warps split K by units, with
// the next unit's weights loaded before the current one is multiplied, and sum through shared memory.
constexpr int kV1Rows = 32, kV1Warps = 4, kV1Unit = 16;  // rows per block; words per unit

template <DType kT>
__device__ __forceinline__ uint32_t pm1_pair(uint32_t word, int i) {
  constexpr uint32_t kOne = kT == DType::kBF16 ? 0x3F803F80u : 0x3C003C00u;  // +1.0 in both halves
  // One lop3 for (s & mask) | one: written as C, the compiler splits it into an and plus an or.
  uint32_t r;
  asm("lop3.b32 %0, %1, %2, %3, 0xEA;\n" : "=r"(r) : "r"(word << (15 - i)), "r"(0x80008000u), "r"(kOne));
  return r;
}

// A lane's weight rows in the mma kernels: tile r, half h -> row n0 + 16 r + 8 h + g (clamped: rows past N
// are computed, not stored); load(u) brings words 4t..4t+3 of 16-word unit u of each, zeros past KW.
template <bool kVecW>
struct UnitRows {
  const uint32_t* row[2][2];
  int64_t KW;

  __device__ __forceinline__ UnitRows(const uint32_t* w, int64_t KW_, int N, int n0, int g) : KW(KW_) {
#pragma unroll
    for (int r = 0; r < 2; ++r)
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int n = n0 + 16 * r + 8 * h + g;
        row[r][h] = w + static_cast<int64_t>(n < N ? n : N - 1) * KW;
      }
  }

  __device__ __forceinline__ void load(int64_t u, int t, uint4 (&dst)[2][2]) const {
    const int64_t w0 = u * kV1Unit + 4 * t;
#pragma unroll
    for (int r = 0; r < 2; ++r)
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        if constexpr (kVecW) {  // KW % 4 == 0: the 4 words are all in K or all past it
          dst[r][h] = w0 < KW ? ldg_stream_128(row[r][h] + w0) : make_uint4(0, 0, 0, 0);
        } else {
          dst[r][h].x = w0 < KW ? __ldg(row[r][h] + w0) : 0u;
          dst[r][h].y = w0 + 1 < KW ? __ldg(row[r][h] + w0 + 1) : 0u;
          dst[r][h].z = w0 + 2 < KW ? __ldg(row[r][h] + w0 + 2) : 0u;
          dst[r][h].w = w0 + 3 < KW ? __ldg(row[r][h] + w0 + 3) : 0u;
        }
      }
  }
};

template <DType kT, int NT, bool kVecW>
__global__ void __launch_bounds__(kV1Warps * 32) w1a16_mma_kernel(
    const typename Elem<kT>::T* __restrict__ x, int64_t ldx, const uint32_t* __restrict__ w, int64_t KW,
    const float* __restrict__ alpha, const typename Elem<kT>::T* __restrict__ bias, typename Elem<kT>::T* __restrict__ out,
    int64_t ldo, int M, int N, int64_t K) {
  using T = typename Elem<kT>::T;
  __shared__ float part[kV1Warps][kV1Rows][8 * NT];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, g = lane / 4, t = lane % 4;
  const int n0 = blockIdx.x * kV1Rows, m0 = blockIdx.y * 8 * NT;
  const int64_t units = (KW + kV1Unit - 1) / kV1Unit;

  const UnitRows<kVecW> wrows(w, KW, N, n0, g);
  auto load_unit = [&](int64_t u, uint4 (&dst)[2][2]) { wrows.load(u, t, dst); };

  float acc[2][NT][4] = {};
  uint4 cur[2][2], nxt[2][2] = {};
  int64_t u = warp;
  if (u < units) load_unit(u, cur);
  for (; u < units; u += kV1Warps) {
    if (u + kV1Warps < units) load_unit(u + kV1Warps, nxt);
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int64_t wd = u * kV1Unit + 4 * t + j, k0 = wd * 32;
      uint32_t xp[NT][16];
#pragma unroll
      for (int nt = 0; nt < NT; ++nt) {
        const int m = m0 + 8 * nt + g;
        const T* xr = x + static_cast<int64_t>(m < M ? m : 0) * ldx + k0;
        if (m < M && k0 + 32 <= K) {
          uint4 q[4];
#pragma unroll
          for (int v = 0; v < 4; ++v) q[v] = ldg_128(xr + 8 * v);
          const uint32_t* lo = reinterpret_cast<const uint32_t*>(&q[0]);  // x[0..15] as 8 pairs
          const uint32_t* hi = reinterpret_cast<const uint32_t*>(&q[2]);  // x[16..31]
#pragma unroll
          for (int p = 0; p < 8; ++p) {
            xp[nt][2 * p] = __byte_perm(lo[p], hi[p], 0x5410);
            xp[nt][2 * p + 1] = __byte_perm(lo[p], hi[p], 0x7632);
          }
        } else {
#pragma unroll
          for (int i = 0; i < 16; ++i) {
            const bool in_lo = m < M && k0 + i < K, in_hi = m < M && k0 + i + 16 < K;
            const uint32_t a = in_lo ? reinterpret_cast<const uint16_t*>(xr)[i] : 0u;
            const uint32_t b = in_hi ? reinterpret_cast<const uint16_t*>(xr)[i + 16] : 0u;
            xp[nt][i] = a | (b << 16);
          }
        }
      }
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        const uint32_t w_lo = reinterpret_cast<const uint32_t*>(&cur[r][0])[j];  // row g
        const uint32_t w_hi = reinterpret_cast<const uint32_t*>(&cur[r][1])[j];  // row g + 8
#pragma unroll
        for (int s = 0; s < 8; ++s) {
          const uint32_t a[4] = {pm1_pair<kT>(w_lo, 2 * s), pm1_pair<kT>(w_hi, 2 * s),
                                 pm1_pair<kT>(w_lo, 2 * s + 1), pm1_pair<kT>(w_hi, 2 * s + 1)};
#pragma unroll
          for (int nt = 0; nt < NT; ++nt) {
            const uint32_t b[2] = {xp[nt][2 * s], xp[nt][2 * s + 1]};
            mma_16816<kT == DType::kF16>(acc[r][nt], a, b);
          }
        }
      }
    }
#pragma unroll
    for (int r = 0; r < 2; ++r)
#pragma unroll
      for (int h = 0; h < 2; ++h) cur[r][h] = nxt[r][h];
  }

  // c0..c3 = (row g, token 2t), (g, 2t + 1), (g + 8, 2t), (g + 8, 2t + 1) of each 16 x 8 tile.
#pragma unroll
  for (int r = 0; r < 2; ++r)
#pragma unroll
    for (int nt = 0; nt < NT; ++nt)
#pragma unroll
      for (int c = 0; c < 4; ++c) {
        part[warp][16 * r + g + 8 * (c / 2)][8 * nt + 2 * t + c % 2] = acc[r][nt][c];
      }
  __syncthreads();
  for (int i = threadIdx.x; i < kV1Rows * 8 * NT; i += blockDim.x) {
    const int row = i % kV1Rows, tok = i / kV1Rows, n = n0 + row, m = m0 + tok;
    if (n < N && m < M) {
      float s = 0.f;
#pragma unroll
      for (int v = 0; v < kV1Warps; ++v) s += part[v][row][tok];
      s *= __ldg(alpha + n);
      if (bias != nullptr) s += Elem<kT>::to_float(bias[n]);
      out[static_cast<int64_t>(m) * ldo + n] = Elem<kT>::from_float(s);
    }
  }
}

template <DType kT, int NT>
cudaError_t launch_mma(const void* x, int64_t ldx, const uint32_t* w, const float* alpha, const void* bias, void* out,
                       int64_t ldo, int64_t M, int64_t N, int64_t K, cudaStream_t stream) {
  using T = typename Elem<kT>::T;
  const int64_t KW = ceil_div(K, 32);
  const dim3 grid(static_cast<unsigned>(ceil_div(N, kV1Rows)), static_cast<unsigned>(ceil_div(M, 8 * NT)));
  const auto* xt = static_cast<const T*>(x);
  const auto* bt = static_cast<const T*>(bias);
  auto* ot = static_cast<T*>(out);
  if (KW % 4 == 0)
    w1a16_mma_kernel<kT, NT, true><<<grid, kV1Warps * 32, 0, stream>>>(
        xt, ldx, w, KW, alpha, bt, ot, ldo, static_cast<int>(M), static_cast<int>(N), K);
  else
    w1a16_mma_kernel<kT, NT, false><<<grid, kV1Warps * 32, 0, stream>>>(
        xt, ldx, w, KW, alpha, bt, ot, ldo, static_cast<int>(M), static_cast<int>(N), K);
  return cudaGetLastError();
}

template <DType kT>
cudaError_t by_m_mma(const void* x, int64_t ldx, const uint32_t* w, const float* alpha, const void* bias, void* out,
                     int64_t ldo, int64_t M, int64_t N, int64_t K, cudaStream_t stream) {
  if (M <= 8) return launch_mma<kT, 1>(x, ldx, w, alpha, bias, out, ldo, M, N, K, stream);
  return launch_mma<kT, 2>(x, ldx, w, alpha, bias, out, ldo, M, N, K, stream);
}


// ---------------------------------------------------------------------------------------------
// Variants 3 and 4: variant 1's mma path with a short serial chain per warp. Variant 1 at M=1 reads
// 7.3 MB in 14.7 us (0.5 TB/s) although it has every weight byte in flight from its start, so the
// time goes to each warp's chain after the data lands: per 32-bit word, four dependent 16-byte x
// loads (the 28 lanes of tokens past M take the element-wise path of the divergent branch), and a
// cold alpha load after the reduction. Here the block first issues its weight loads and its
// epilogue's alpha and bias, then stages x once into shared memory as the pair registers the
// B fragments use (x[32 w + i] | x[32 w + i + 16] << 16, 16 per word, zero past K), so a word's
// B operand is four LDS.128 with no branch (lanes of tokens past M take zeros). Quad q of word w
// sits at quad q ^ ((w / 4) % 4), and rows are padded by 64 bytes: the 8 lanes of an LDS phase
// (two tokens, four words 4 apart) hit distinct banks. Variant 3: 4 warps split K (2 units each at
// K = 4096); variant 4: 8 warps (1 unit each), twice the warps in flight per SM.
// Tokens: 8 per block (grid.y = ceil(M / 8)); x's staging needs min(M, 8) * (64 * 16 * units + 64)
// bytes of shared memory, and the launcher runs variant 1 where that and the reduction's kW KB pass
// 48 KB (K = 4096: M <= 4 for variant 4, M <= 5 for variant 3).
constexpr int kStageRowPad = 64;

template <DType kT, int kW, bool kVecW>
__global__ void __launch_bounds__(kW * 32, 4) w1a16_staged_kernel(
    const typename Elem<kT>::T* __restrict__ x, int64_t ldx, const uint32_t* __restrict__ w, int64_t KW,
    const float* __restrict__ alpha, const typename Elem<kT>::T* __restrict__ bias, typename Elem<kT>::T* __restrict__ out,
    int64_t ldo, int M, int N, int64_t K) {
  using T = typename Elem<kT>::T;
  extern __shared__ __align__(16) unsigned char xs_raw[];
  __shared__ float part[kW][kV1Rows][8];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, g = lane / 4, t = lane % 4;
  const int n0 = blockIdx.x * kV1Rows, m0 = blockIdx.y * 8;
  const int rows = M - m0 < 8 ? M - m0 : 8;
  const int64_t units = (KW + kV1Unit - 1) / kV1Unit, row_bytes = units * kV1Unit * 64 + kStageRowPad;

  const UnitRows<kVecW> wrows(w, KW, N, n0, g);
  auto load_unit = [&](int64_t u, uint4 (&dst)[2][2]) { wrows.load(u, t, dst); };
  // 4 warps hold the next unit in flight too; 8 warps (one unit each at K = 4096) keep their
  // registers under 64 for 4 blocks per SM instead.
  constexpr bool kAhead = kW == 4;
  uint4 cur[2][2] = {}, nxt[2][2] = {};
  int64_t u = warp;
  if (u < units) load_unit(u, cur);
  if constexpr (kAhead)
    if (u + kW < units) load_unit(u + kW, nxt);
  // The epilogue's thread i reduces row i % 32 (blockDim is a multiple of 32): its alpha and bias now.
  const int er = threadIdx.x % kV1Rows, en = n0 + er < N ? n0 + er : N - 1;
  const float e_alpha = __ldg(alpha + en);
  const float e_bias = bias != nullptr ? Elem<kT>::to_float(bias[en]) : 0.f;

  const int64_t words = units * kV1Unit;
  for (int64_t i = threadIdx.x; i < rows * words; i += kW * 32) {
    const int m = static_cast<int>(i / words);
    const int64_t wd = i % words, k0 = wd * 32;
    const T* xr = x + static_cast<int64_t>(m0 + m) * ldx + k0;
    uint32_t xp[16];
    if (k0 + 32 <= K) {
      uint4 q[4];
#pragma unroll
      for (int v = 0; v < 4; ++v) q[v] = ldg_128(xr + 8 * v);
      const uint32_t* lo = reinterpret_cast<const uint32_t*>(&q[0]);
      const uint32_t* hi = reinterpret_cast<const uint32_t*>(&q[2]);
#pragma unroll
      for (int p = 0; p < 8; ++p) {
        xp[2 * p] = __byte_perm(lo[p], hi[p], 0x5410);
        xp[2 * p + 1] = __byte_perm(lo[p], hi[p], 0x7632);
      }
    } else {
#pragma unroll
      for (int j = 0; j < 16; ++j) {
        const uint32_t a = k0 + j < K ? reinterpret_cast<const uint16_t*>(xr)[j] : 0u;
        const uint32_t b = k0 + j + 16 < K ? reinterpret_cast<const uint16_t*>(xr)[j + 16] : 0u;
        xp[j] = a | (b << 16);
      }
    }
    unsigned char* dst = xs_raw + m * row_bytes + wd * 64;
    const int sw = static_cast<int>((wd / 4) % 4);
#pragma unroll
    for (int q = 0; q < 4; ++q)
      *reinterpret_cast<uint4*>(dst + 16 * (q ^ sw)) = make_uint4(xp[4 * q], xp[4 * q + 1], xp[4 * q + 2], xp[4 * q + 3]);
  }
  __syncthreads();

  float acc[2][4] = {};
  const bool has_x = g < rows;
  const unsigned char* xrow = xs_raw + (has_x ? g : 0) * row_bytes;
  for (; u < units; u += kW) {
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int64_t wd = u * kV1Unit + 4 * t + j;
      const unsigned char* src = xrow + wd * 64;
      const int sw = static_cast<int>((wd / 4) % 4);
      uint32_t xp[16];
#pragma unroll
      for (int q = 0; q < 4; ++q) {
        const uint4 v = has_x ? *reinterpret_cast<const uint4*>(src + 16 * (q ^ sw)) : make_uint4(0, 0, 0, 0);
        xp[4 * q] = v.x;
        xp[4 * q + 1] = v.y;
        xp[4 * q + 2] = v.z;
        xp[4 * q + 3] = v.w;
      }
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        const uint32_t w_lo = reinterpret_cast<const uint32_t*>(&cur[r][0])[j];
        const uint32_t w_hi = reinterpret_cast<const uint32_t*>(&cur[r][1])[j];
#pragma unroll
        for (int s = 0; s < 8; ++s) {
          const uint32_t a[4] = {pm1_pair<kT>(w_lo, 2 * s), pm1_pair<kT>(w_hi, 2 * s), pm1_pair<kT>(w_lo, 2 * s + 1),
                                 pm1_pair<kT>(w_hi, 2 * s + 1)};
          const uint32_t b[2] = {xp[2 * s], xp[2 * s + 1]};
          mma_16816<kT == DType::kF16>(acc[r], a, b);
        }
      }
    }
    if constexpr (kAhead) {
#pragma unroll
      for (int r = 0; r < 2; ++r)
#pragma unroll
        for (int h = 0; h < 2; ++h) cur[r][h] = nxt[r][h];
      if (u + 2 * kW < units) load_unit(u + 2 * kW, nxt);
    } else if (u + kW < units) {
      load_unit(u + kW, cur);
    }
  }

#pragma unroll
  for (int r = 0; r < 2; ++r)
#pragma unroll
    for (int c = 0; c < 4; ++c) part[warp][16 * r + g + 8 * (c / 2)][2 * t + c % 2] = acc[r][c];
  __syncthreads();
  for (int i = threadIdx.x; i < kV1Rows * 8; i += kW * 32) {
    const int tok = i / kV1Rows, n = n0 + er, m = m0 + tok;  // i % 32 == er
    if (n < N && m < M) {
      float s = 0.f;
#pragma unroll
      for (int v = 0; v < kW; ++v) s += part[v][er][tok];
      out[static_cast<int64_t>(m) * ldo + n] = Elem<kT>::from_float(s * e_alpha + e_bias);
    }
  }
}

template <DType kT, int kW>
cudaError_t launch_staged(const void* x, int64_t ldx, const uint32_t* w, const float* alpha, const void* bias,
                          void* out, int64_t ldo, int64_t M, int64_t N, int64_t K, cudaStream_t stream) {
  using T = typename Elem<kT>::T;
  const int64_t KW = ceil_div(K, 32), units = ceil_div(KW, kV1Unit);
  const int64_t smem = (M < 8 ? M : 8) * (units * kV1Unit * 64 + kStageRowPad);
  // Static (part) and dynamic shared memory together within the 48 KB a launch gets without opting in.
  if (smem + kW * kV1Rows * 8 * 4 > 48 * 1024)
    return by_m_mma<kT>(x, ldx, w, alpha, bias, out, ldo, M, N, K, stream);
  const dim3 grid(static_cast<unsigned>(ceil_div(N, kV1Rows)), static_cast<unsigned>(ceil_div(M, 8)));
  const auto* xt = static_cast<const T*>(x);
  const auto* bt = static_cast<const T*>(bias);
  auto* ot = static_cast<T*>(out);
  const auto sm = static_cast<size_t>(smem);
  if (KW % 4 == 0)
    w1a16_staged_kernel<kT, kW, true><<<grid, kW * 32, sm, stream>>>(xt, ldx, w, KW, alpha, bt, ot, ldo,
                                                                   static_cast<int>(M), static_cast<int>(N), K);
  else
    w1a16_staged_kernel<kT, kW, false><<<grid, kW * 32, sm, stream>>>(xt, ldx, w, KW, alpha, bt, ot, ldo,
                                                                    static_cast<int>(M), static_cast<int>(N), K);
  return cudaGetLastError();
}

}  // namespace

cudaError_t w1a16_gemv(DType t, const void* x, int64_t ldx, const uint32_t* w, const float* alpha, int64_t G,
                       int64_t group_words, const void* bias, void* out, int64_t ldo, int64_t M, int64_t N, int64_t K,
                       cudaStream_t stream, int variant) {
  const int64_t KW = ceil_div(K, 32);
  const int64_t elem = t == DType::kF32 ? 4 : 2;
  if (M < 1 || N < 1 || K < 1 || M > INT32_MAX || N > INT32_MAX - kRows || G < 1 || group_words < 1 ||
      ceil_div(KW, group_words) != G || !aligned16(x) || (M > 1 && (ldx * elem) % 16 != 0) || ldx < K || ldo < N)
    return cudaErrorInvalidValue;
  if (variant == 3 || variant == 4) {
    if (G != 1 || N > INT32_MAX - kV1Rows) return cudaErrorInvalidValue;
    if (t == DType::kBF16)
      return variant == 3 ? launch_staged<DType::kBF16, 4>(x, ldx, w, alpha, bias, out, ldo, M, N, K, stream)
                          : launch_staged<DType::kBF16, 8>(x, ldx, w, alpha, bias, out, ldo, M, N, K, stream);
    if (t == DType::kF16)
      return variant == 3 ? launch_staged<DType::kF16, 4>(x, ldx, w, alpha, bias, out, ldo, M, N, K, stream)
                          : launch_staged<DType::kF16, 8>(x, ldx, w, alpha, bias, out, ldo, M, N, K, stream);
    return cudaErrorInvalidValue;
  }
  if (variant == 1) {
    if (G != 1 || N > INT32_MAX - kV1Rows) return cudaErrorInvalidValue;
    if (t == DType::kBF16) return by_m_mma<DType::kBF16>(x, ldx, w, alpha, bias, out, ldo, M, N, K, stream);
    if (t == DType::kF16) return by_m_mma<DType::kF16>(x, ldx, w, alpha, bias, out, ldo, M, N, K, stream);
    return cudaErrorInvalidValue;
  }
  if (variant != 0) return cudaErrorInvalidValue;
  switch (t) {
    case DType::kF32: return by_m<DType::kF32>(x, ldx, w, alpha, G, group_words, bias, out, ldo, M, N, K, stream);
    case DType::kF16: return by_m<DType::kF16>(x, ldx, w, alpha, G, group_words, bias, out, ldo, M, N, K, stream);
    case DType::kBF16: return by_m<DType::kBF16>(x, ldx, w, alpha, G, group_words, bias, out, ldo, M, N, K, stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace pycomp::cuda
