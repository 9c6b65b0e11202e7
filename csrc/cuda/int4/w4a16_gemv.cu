// Weight-only int4 linear for decode (M <= 16), reading the canonical k-nibble layout.
//
// Memory-bound: the design streams the packed weights at full bandwidth and keeps
// everything else off the critical path.
// - A block owns 16 * kRT rows of W (kRT m16 tiles of a m16n8k16 mma run as
//   out^T = W x^T) and one K slice; its 4 warps take the slice's 128-wide k chunks
//   in turn and meet in shared memory at the end. Slices are the split-K: more of
//   them when the row blocks alone would leave SMs idle, or when x's slice would
//   not fit in shared memory; their fp32 partials are summed by a second kernel.
// - Weights: per chunk, each thread copies 16 bytes (32 codes) of each of its
//   2 * kRT rows with cp.async into its own slots of a kStages-deep ring, so
//   kStages - 1 chunks stay in flight without registers; a thread reads back only
//   what it copied, so no barrier is needed in the loop.
// - x's slice and the slice's scales and zero points are staged once per block,
//   while the first chunks are in flight (x with cp.async, swizzled against bank
//   conflicts; the scale table in the mma's type, loaded a few entries at a time).
// - Dequantization is bit arithmetic: a nibble n or'ed into the mantissa of
//   1024.0 (f16 0x6400) or 128.0 (bf16 0x4300) is that float plus n, so one lop3,
//   one add of -(magic + zero) and one multiply by the scale give two weights.
//   (code - zero) is exact; the product rounds once in f16, twice in bf16 (the
//   f16 scale is first rounded to bf16).
//
// k order: thread t of a quad owns codes 32t..32t+31 of a chunk (its 16 bytes);
// 32-bit word w of them holds codes c0..c7 (nibble i = code 8w+i). The pair
// (c_i, c_{i+4}) comes out of one lop3 on (word >> 4i), so word w feeds two mma
// steps: (c0, c4) and (c1, c5) fill the k slots {2t, 2t+1} and {2t+8, 2t+9} of the
// first, (c2, c6) and (c3, c7) those of the second. x's fragments are permuted to
// match with two byte_perms per pair, so the dot product is unchanged.
#include "cuda/int4/int4_cuda.h"
#include "cuda/ptx.cuh"

#include <atomic>
#include <type_traits>

namespace pycomp::cuda {
namespace {

constexpr int kWarps = 4;
constexpr int kThreads = kWarps * 32;
constexpr int kChunk = 128;              // k per chunk: 4 threads x 32 codes
constexpr int kStages = 4;               // ring depth: kStages - 1 chunks in flight per warp
constexpr int kMaxSlice = 4096;          // k per block at most (bounds the scale table)
constexpr int kXBudget = 32 * 1024;      // bytes of x per block in shared memory (before padding)
constexpr int kMinSplitSlice = 512;      // k per block at least when splitting only to fill SMs

__device__ __forceinline__ uint32_t word(const uint4& v, int s) {
  return s == 0 ? v.x : s == 1 ? v.y : s == 2 ? v.z : v.w;
}

// 16-byte unit u of a staged x row lives at unit u ^ 2 when bit 3 of u is set: the 8 lanes
// of an ld.shared.v4 phase (2 rows x 4 quads) then hit 8 different bank groups.
__device__ __forceinline__ int swizzle(int u) { return u ^ ((u >> 2) & 2); }

template <bool kHalf>
constexpr uint32_t kMagic = kHalf ? 0x6400u : 0x4300u;  // 1024.0 in f16, 128.0 in bf16

template <bool kHalf>
__device__ __forceinline__ uint32_t add2(uint32_t a, uint32_t b) {
  uint32_t d;
  if constexpr (kHalf) {
    asm("add.f16x2 %0, %1, %2;\n" : "=r"(d) : "r"(a), "r"(b));
  } else {  // a * 1 + b: sm_80 has no bf16x2 add
    asm("fma.rn.bf16x2 %0, %1, %2, %3;\n" : "=r"(d) : "r"(a), "r"(0x3F803F80u), "r"(b));
  }
  return d;
}

template <bool kHalf>
__device__ __forceinline__ uint32_t mul2(uint32_t a, uint32_t b) {
  uint32_t d;
  if constexpr (kHalf) {
    asm("mul.f16x2 %0, %1, %2;\n" : "=r"(d) : "r"(a), "r"(b));
  } else {  // a * b + (-0): sm_80 has no bf16x2 multiply
    asm("fma.rn.bf16x2 %0, %1, %2, %3;\n" : "=r"(d) : "r"(a), "r"(b), "r"(0x80008000u));
  }
  return d;
}

// Codes at bits 0..3 and 16..19 of q -> ((c - zero) * scale) x2. neg2 holds -(magic + zero)
// in both halves, scale2 the scale in both halves.
template <bool kHalf>
__device__ __forceinline__ uint32_t dequant2(uint32_t q, uint32_t neg2, uint32_t scale2) {
  const uint32_t t = (q & 0x000F000Fu) | (kMagic<kHalf> * 0x10001u);  // one lop3
  return mul2<kHalf>(add2<kHalf>(t, neg2), scale2);
}

// One (row, group) entry of the staged table: the scale in the mma's type (low half)
// and -(magic + zero) (high half).
template <bool kHalf>
__device__ __forceinline__ uint32_t table_entry(__half scale, uint32_t zero) {
  uint32_t s;
  if constexpr (kHalf) {
    s = __half_as_ushort(scale);
  } else {
    s = __bfloat16_as_ushort(__float2bfloat16_rn(__half2float(scale)));
  }
  return s | (0x8000u | kMagic<kHalf> | zero) << 16;
}

// x as the mma's B operand: 16-byte unit v holds x's values for one weight word's k slots (see k order
// above); b[0..1] feed the word's first mma step, b[2..3] its second.
__device__ __forceinline__ void x_operand(const uint4& v, uint32_t (&b)[4]) {
  b[0] = __byte_perm(v.x, v.z, 0x5410);  // (x0, x4)
  b[1] = __byte_perm(v.x, v.z, 0x7632);  // (x1, x5)
  b[2] = __byte_perm(v.y, v.w, 0x5410);  // (x2, x6)
  b[3] = __byte_perm(v.y, v.w, 0x7632);  // (x3, x7)
}

// A lane's part of one chunk of an m16 tile: its 32 codes of rows gid (wa) and gid + 8 (wb) times x,
// 8 mma steps into acc. dqa / dqb turn the codes at bits 0..3 and 16..19 of a word into the two
// values the mma takes for that row.
template <bool kHalf, int kMT, class DqA, class DqB>
__device__ __forceinline__ void mma_chunk(float (&acc)[kMT][4], const uint4& wa, const uint4& wb,
                                          const uint32_t (&xb)[kMT][4][4], DqA dqa, DqB dqb) {
#pragma unroll
  for (int w = 0; w < 4; ++w) {
    const uint32_t qa = word(wa, w), qb = word(wb, w);
    uint32_t a[4];
    a[0] = dqa(qa);       // row gid,     (c0, c4)
    a[1] = dqb(qb);       // row gid + 8, (c0, c4)
    a[2] = dqa(qa >> 4);  // row gid,     (c1, c5)
    a[3] = dqb(qb >> 4);  // row gid + 8, (c1, c5)
#pragma unroll
    for (int mt = 0; mt < kMT; ++mt) {
      const uint32_t b[2] = {xb[mt][w][0], xb[mt][w][1]};
      mma_16816<kHalf>(acc[mt], a, b);
    }
    a[0] = dqa(qa >> 8);   // (c2, c6)
    a[1] = dqb(qb >> 8);
    a[2] = dqa(qa >> 12);  // (c3, c7)
    a[3] = dqb(qb >> 12);
#pragma unroll
    for (int mt = 0; mt < kMT; ++mt) {
      const uint32_t b[2] = {xb[mt][w][2], xb[mt][w][3]};
      mma_16816<kHalf>(acc[mt], a, b);
    }
  }
}

// acc += part * the rows' scales (accumulators 0, 1: row gid; 2, 3: row gid + 8), for the variants'
// per-chunk sums of exact (code - zero) x.
template <int kMT>
__device__ __forceinline__ void add_scaled(float (&acc)[kMT][4], const float (&part)[kMT][4], float sa, float sb) {
#pragma unroll
  for (int mt = 0; mt < kMT; ++mt) {
    acc[mt][0] = fmaf(part[mt][0], sa, acc[mt][0]);
    acc[mt][1] = fmaf(part[mt][1], sa, acc[mt][1]);
    acc[mt][2] = fmaf(part[mt][2], sb, acc[mt][2]);
    acc[mt][3] = fmaf(part[mt][3], sb, acc[mt][3]);
  }
}

// The block's result from its warps' accumulators, through shared memory `red` (kWarps * kOutFloats floats).
// Accumulator r of lane l in tile (rt, mt) is row n0 + 16 rt + l/4 + 8 (r/2) of W and row
// 8 mt + 2 (l%4) + r%2 of x. stash_partials writes a warp's; after a block barrier, sum_partials adds
// the warps' up and stores out = sum + bias, or ws[split] = sum when ws is not null (split-K).
template <int kMT, int kRT>
constexpr int kOutFloats = kRT * kMT * 4 * 32;

template <int kMT, int kRT>
__device__ __forceinline__ void stash_partials(float* red, int warp, int lane, const float (&acc)[kRT][kMT][4]) {
  constexpr int kO = kOutFloats<kMT, kRT>;
#pragma unroll
  for (int rt = 0; rt < kRT; ++rt)
#pragma unroll
    for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
      for (int r = 0; r < 4; ++r) red[warp * kO + ((rt * kMT + mt) * 4 + r) * 32 + lane] = acc[rt][mt][r];
}

template <DType kT, int kMT, int kRT>
__device__ __forceinline__ void sum_partials(const float* red, int n0, int M, int N,
                                             const typename Elem<kT>::T* __restrict__ bias,
                                             typename Elem<kT>::T* __restrict__ out, int64_t ldo,
                                             float* __restrict__ ws, unsigned split) {
  using E = Elem<kT>;
  constexpr int kO = kOutFloats<kMT, kRT>;
  for (int f = threadIdx.x; f < kO; f += kThreads) {
    float sum = 0.f;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) sum += red[w * kO + f];
    const int l = f % 32, r = (f / 32) % 4, mt = (f / 128) % kMT, rt = f / (128 * kMT);
    const int n = n0 + 16 * rt + l / 4 + 8 * (r / 2);
    const int m = 8 * mt + 2 * (l % 4) + r % 2;
    if (n < N && m < M) {
      if (ws != nullptr) {
        ws[(static_cast<int64_t>(split) * M + m) * N + n] = sum;
      } else {
        if (bias != nullptr) sum += E::to_float(bias[n]);
        out[static_cast<int64_t>(m) * ldo + n] = E::from_float(sum);
      }
    }
  }
}

template <int kMT, int kRT>
struct Gemv {
  static constexpr int kRows = 16 * kRT;                                   // rows of W per block
  static constexpr int kRingUnits = kWarps * kStages * 2 * kRT * 32;       // uint4 slots
  static constexpr size_t kRingBytes = static_cast<size_t>(kRingUnits) * 16;
  // Shared memory of the largest launch: ring + x (with one pad unit per row) + table.
  static constexpr size_t kMaxSmem =
      kRingBytes + kXBudget + 16 * 16 + static_cast<size_t>(kRows) * (kMaxSlice / 32 + 31) * 4;
  static_assert(kWarps * kRT * kMT * 128 * 4 <= kRingBytes, "the warps' partials reuse the ring");
};

// x: (M, K); slice: k per block (a multiple of kChunk); G groups per row, group = 1 << gs_shift.
// ws == nullptr: one slice, out = sum + bias; else ws[split][m][n] = the slice's sum.
template <DType kT, int kMT, int kRT>
__global__ void __launch_bounds__(kThreads, 2)
    w4a16_gemv_kernel(const typename Elem<kT>::T* __restrict__ x, int64_t ldx, const uint8_t* __restrict__ packed,
                      const __half* __restrict__ scales, const uint8_t* __restrict__ zeros,
                      const typename Elem<kT>::T* __restrict__ bias, typename Elem<kT>::T* __restrict__ out,
                      int64_t ldo, float* __restrict__ ws, int M, int N, int K, int G, int gs_shift, int slice) {
  using C = Gemv<kMT, kRT>;
  constexpr bool kHalf = kT == DType::kF16;
  extern __shared__ uint4 smem[];

  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  const int gid = lane / 4, tig = lane % 4;
  const int n0 = blockIdx.x * C::kRows;
  const int k0 = blockIdx.y * slice;
  const int chunks = (min(slice, K - k0) + kChunk - 1) / kChunk;
  const int groups = slice >> gs_shift;                // table columns (the slice's groups)
  const int tstride = groups + ((4 - groups) & 31);    // = 4 mod 32: a warp's 8 rows x 4 groups hit 32 banks
  const int xunits = slice / 8 + 1;                    // 16-byte units per staged x row, one of padding

  uint4* ring = smem;
  uint4* xs = smem + C::kRingUnits;
  uint32_t* table = reinterpret_cast<uint32_t*>(xs + M * xunits);

  // ---- weight ring: chunk j of this warp is chunk warp + kWarps * j of the slice
  const int64_t row_bytes = K / 2;
  const uint8_t* wrow = packed + static_cast<int64_t>(n0 + gid) * row_bytes + k0 / 2 + 16 * tig;
  uint32_t rows_ok = 0;  // bit i: row n0 + gid + 8i exists
#pragma unroll
  for (int i = 0; i < 2 * kRT; ++i) rows_ok |= (n0 + gid + 8 * i < N ? 1u : 0u) << i;
  const int my_chunks = warp < chunks ? (chunks - warp + kWarps - 1) / kWarps : 0;
  uint4* my_ring = ring + warp * kStages * 2 * kRT * 32 + lane;

  auto issue = [&](int j) {
    const int c = warp + kWarps * j;
    const bool k_ok = k0 + c * kChunk + 32 * tig < K;  // K % 32 == 0: a thread's 32 codes are all in or all out
    uint4* dst = my_ring + (j % kStages) * 2 * kRT * 32;
#pragma unroll
    for (int i = 0; i < 2 * kRT; ++i) {
      const bool ok = k_ok && (rows_ok >> i & 1u);
      cp_async_16_zfill(smem_addr(dst + i * 32), ok ? wrow + 8 * i * row_bytes + c * (kChunk / 2) : packed, ok);
    }
  };

  // ---- prologue: the first kStages - 1 chunks and x's slice (zero past K) go in flight
  // first (x joins chunk 0's group); the table's plain loads then overlap with them.
  const int units = chunks * (kChunk / 8);
  for (int i = tid; i < M * units; i += kThreads) {
    const int m = i / units, u = i - m * units;
    const int k = k0 + 8 * u;
    const bool ok = k < K;
    cp_async_16_zfill(smem_addr(xs + m * xunits + swizzle(u)), x + m * ldx + (ok ? k : 0), ok);
  }
#pragma unroll
  for (int s = 0; s < kStages - 1; ++s) {
    if (s < my_chunks) issue(s);
    cp_async_commit();
  }
  // The table, kBatch entries per thread in flight at a time. Past K or N: scale 0 and
  // zero point 0, so zero-filled codes dequantize to 0, not to garbage.
  constexpr int kBatch = 4;
  const int g0 = k0 >> gs_shift;
  const int entries = C::kRows * groups;
  for (int base = tid; base < entries; base += kBatch * kThreads) {
    __half sc[kBatch];
    uint32_t zp[kBatch];
#pragma unroll
    for (int b = 0; b < kBatch; ++b) {
      const int i = base + b * kThreads;
      const int r = i / groups, g = i - r * groups;
      sc[b] = __ushort_as_half(0);
      zp[b] = 0;
      if (i < entries && n0 + r < N && g0 + g < G) {
        const int64_t idx = static_cast<int64_t>(n0 + r) * G + g0 + g;
        sc[b] = scales[idx];
        zp[b] = zeros != nullptr ? zeros[idx] : 8u;
      }
    }
#pragma unroll
    for (int b = 0; b < kBatch; ++b) {
      const int i = base + b * kThreads;
      if (i < entries) table[i / groups * tstride + i % groups] = table_entry<kHalf>(sc[b], zp[b]);
    }
  }
  cp_async_wait<kStages - 2>();  // the oldest group: x and chunk 0
  __syncthreads();               // everyone's x and table entries are in

  const uint4* xrow[kMT];
#pragma unroll
  for (int mt = 0; mt < kMT; ++mt) xrow[mt] = xs + min(gid + 8 * mt, M - 1) * xunits;  // rows past M: never stored

  float acc[kRT][kMT][4] = {};
  for (int j = 0; j < my_chunks; ++j) {
    if (j + kStages - 1 < my_chunks) issue(j + kStages - 1);
    cp_async_commit();
    cp_async_wait<kStages - 1>();  // chunk j has landed
    const int c = warp + kWarps * j;

    uint32_t xb[kMT][4][4];
#pragma unroll
    for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
      for (int w = 0; w < 4; ++w) x_operand(xrow[mt][swizzle(c * (kChunk / 8) + 4 * tig + w)], xb[mt][w]);

    const int g = (c * kChunk + 32 * tig) >> gs_shift;
    const uint4* wslot = my_ring + (j % kStages) * 2 * kRT * 32;
#pragma unroll
    for (int rt = 0; rt < kRT; ++rt) {
      const uint4 wa = wslot[(2 * rt) * 32], wb = wslot[(2 * rt + 1) * 32];  // rows gid and gid + 8 of tile rt
      const uint32_t ta = table[(16 * rt + gid) * tstride + g], tb = table[(16 * rt + gid + 8) * tstride + g];
      const uint32_t sa = __byte_perm(ta, 0, 0x1010), na = __byte_perm(ta, 0, 0x3232);
      const uint32_t sb = __byte_perm(tb, 0, 0x1010), nb = __byte_perm(tb, 0, 0x3232);
      mma_chunk<kHalf>(acc[rt], wa, wb, xb, [&](uint32_t q) { return dequant2<kHalf>(q, na, sa); },
                       [&](uint32_t q) { return dequant2<kHalf>(q, nb, sb); });
    }
  }

  // ---- the warps' partials meet in the ring, now idle
  cp_async_wait<0>();
  __syncthreads();
  float* red = reinterpret_cast<float*>(smem);
  stash_partials(red, warp, lane, acc);
  __syncthreads();
  sum_partials<kT, kMT, kRT>(red, n0, M, N, bias, out, ldo, ws, blockIdx.y);
}

// out[m, n] = sum over splits of ws[s][m][n] + bias[n].
template <DType kT>
__global__ void __launch_bounds__(256)
    splitk_sum_kernel(const float* __restrict__ ws, int splits, const typename Elem<kT>::T* __restrict__ bias,
                      typename Elem<kT>::T* __restrict__ out, int64_t ldo, int M, int N) {
  using E = Elem<kT>;
  const int64_t total = static_cast<int64_t>(M) * N;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    float sum = 0.f;
    for (int s = 0; s < splits; ++s) sum += ws[s * total + i];
    const int64_t m = i / N, n = i - m * N;
    if (bias != nullptr) sum += E::to_float(bias[n]);
    out[m * ldo + n] = E::from_float(sum);
  }
}

// ============================================================================ variants 1, 2, 5, 6, 7, 10, 11 (kV2)
//
// The default kernel above spends its time outside the weight stream: a scale-table
// preamble of dependent scalar loads (queued behind the first weight copies, then an
// idle round trip before the loop starts), x staged per K slice (at M = 16 as many bytes
// as the block's weights, and the budget that forces split-K), and three instructions
// per two weights. The variants below keep its ring and mma layout and change that:
// - the slice's scales and zero points are copied raw with 4-byte cp.async in chunk 0's
//   group (no register round trip before the loop) and converted where they are used;
// - group 128 = one chunk, so a weight dequantizes exactly to (code - zero) with one
//   lop3 and one add, the chunk's mma sums go to a scratch accumulator, and the scale
//   (fp32, exact from f16) multiplies it once per chunk: fewer instructions per weight,
//   and no rounding of the weight at all;
// - at M > 8 (kXRing), x's segment of each chunk travels through the ring with the weights
//   (each lane copies what it reads), so no x budget bounds the slice and no preamble waits
//   for it; at M <= 8 x's slice is staged once as in the default kernel (cheap there).
// - kFold: not even the add: the mma takes magic + code (exact in the mma's type) and the
//   chunk's sum is corrected in fp32, sum x (code - zero) = sum x (magic + code) - (magic + zero)
//   sum x, with sum x from one more mma per k step against a matrix of ones (the cancellation
//   costs about 8 of fp32's 24 bits: far below the output's rounding);
// - rows per block (kRT) and ring depth (kS) come from the variant table; 4 warps, as the default.
// They need group_size 128, K % 512 == 0 and 4-byte aligned scales and zeros; other
// shapes run the default kernel.

__device__ __forceinline__ void cp_async_4_zfill(uint32_t dst, const void* src, bool valid) {
  const int src_bytes = valid ? 4 : 0;
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(dst), "l"(src), "r"(src_bytes));
}

constexpr int kV2Chunk = 128;        // = the group size the variants take
constexpr int kV2MaxSlice = 8192;    // k per block at most (bounds the raw table)
constexpr int kV2MinSlice = 512;     // slices stay multiples of this: 4 groups, 4-byte table copies
constexpr int kV2XBudget = 32 * 1024;  // staged x (kXRing false) per block

template <int kRT, int kMT, int kS>
struct GemvV2 {
  static constexpr bool kXRing = kMT == 2;
  static constexpr int kRows = 16 * kRT;
  static constexpr int kWUnits = 2 * kRT;             // weight units per lane per chunk
  static constexpr int kXUnits = kXRing ? 4 * kMT : 0;  // x units per lane per chunk
  static constexpr int kSlot = (kWUnits + kXUnits) * 32;  // uint4 per warp per stage
  static constexpr int kRingUnits = kWarps * kS * kSlot;
  static constexpr int kMaxGroups = kV2MaxSlice / kV2Chunk;
  static constexpr size_t kMaxSmem = static_cast<size_t>(kRingUnits) * 16 + (kXRing ? 0 : kV2XBudget + 16 * 16) +
                                     static_cast<size_t>(kRows) * ((kMaxGroups / 2 | 1) + (kMaxGroups / 4 | 1)) * 4;
  static_assert(kWarps * kRT * kMT * 128 <= kRingUnits * 4, "the warps' partials reuse the ring");
};

// Table strides in 32-bit words: odd, so the 8 rows a warp reads at once hit 8 banks.
__host__ __device__ constexpr int v2_sstride(int groups) { return groups / 2 | 1; }
__host__ __device__ constexpr int v2_zstride(int groups) { return groups / 4 | 1; }

template <DType kT, int kMT, int kRT, int kS, bool kFold>
__global__ void __launch_bounds__(kThreads, 1)
    w4a16_gemv_v2_kernel(const typename Elem<kT>::T* __restrict__ x, int64_t ldx, const uint8_t* __restrict__ packed,
                         const __half* __restrict__ scales, const uint8_t* __restrict__ zeros,
                         const typename Elem<kT>::T* __restrict__ bias, typename Elem<kT>::T* __restrict__ out,
                         int64_t ldo, float* __restrict__ ws, int M, int N, int K, int G, int slice) {
  using C = GemvV2<kRT, kMT, kS>;
  constexpr bool kXRing = C::kXRing;
  constexpr bool kHalf = kT == DType::kF16;
  extern __shared__ uint4 smem[];

  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  const int gid = lane / 4, tig = lane % 4;
  const int n0 = blockIdx.x * C::kRows;
  const int k0 = blockIdx.y * slice;
  const int chunks = min(slice, K - k0) / kV2Chunk;  // K and slice are multiples of 512
  const int groups = slice / kV2Chunk;               // table columns
  const int g0 = k0 / kV2Chunk;
  const int sstride = v2_sstride(groups), zstride = v2_zstride(groups);
  const int xunits = slice / 8 + 1;

  uint4* ring = smem;
  uint4* xs = smem + C::kRingUnits;
  uint32_t* tscale = reinterpret_cast<uint32_t*>(xs + (kXRing ? 0 : M * xunits));
  uint32_t* tzero = tscale + C::kRows * sstride;

  const int64_t row_bytes = K / 2;
  const uint8_t* wrow = packed + static_cast<int64_t>(n0 + gid) * row_bytes + k0 / 2 + 16 * tig;
  uint32_t rows_ok = 0;
#pragma unroll
  for (int i = 0; i < 2 * kRT; ++i) rows_ok |= (n0 + gid + 8 * i < N ? 1u : 0u) << i;
  const int my_chunks = warp < chunks ? (chunks - warp + kWarps - 1) / kWarps : 0;
  uint4* my_ring = ring + warp * kS * C::kSlot + lane;

  auto issue = [&](int j) {
    const int c = warp + kWarps * j;
    uint4* dst = my_ring + (j % kS) * C::kSlot;
    if constexpr (kXRing) {  // x first: it is in L2, and the chunk waits for it as well
#pragma unroll
      for (int mt = 0; mt < kMT; ++mt) {
        const int m = gid + 8 * mt;
        const bool ok = m < M;
        const auto* src = x + static_cast<int64_t>(ok ? m : 0) * ldx + k0 + c * kV2Chunk + 32 * tig;
#pragma unroll
        for (int w = 0; w < 4; ++w)
          cp_async_16_zfill(smem_addr(dst + (C::kWUnits + 4 * mt + w) * 32), ok ? src + 8 * w : x, ok);
      }
    }
#pragma unroll
    for (int i = 0; i < 2 * kRT; ++i) {
      const bool ok = rows_ok >> i & 1u;
      cp_async_16_zfill(smem_addr(dst + i * 32), ok ? wrow + 8 * i * row_bytes + c * (kV2Chunk / 2) : packed, ok);
    }
  };

  // ---- prologue: the raw table and x's slice (small, so first), then kS - 1 chunks; the
  // table and x join chunk 0's group. Rows past N and groups past G (the last slice's tail) read 0.
  {
    const int su = groups / 2;  // 4-byte words of a row's scales
    for (int i = tid; i < C::kRows * su; i += kThreads) {
      const int r = i / su, u = i - r * su;
      const bool ok = n0 + r < N && g0 + 2 * u < G;  // G % 4 == 0: a word is all in or all out
      cp_async_4_zfill(smem_addr(tscale + r * sstride + u),
                       ok ? scales + static_cast<int64_t>(n0 + r) * G + g0 + 2 * u : scales, ok);
    }
    if (zeros != nullptr) {
      const int zu = groups / 4;
      for (int i = tid; i < C::kRows * zu; i += kThreads) {
        const int r = i / zu, u = i - r * zu;
        const bool ok = n0 + r < N && g0 + 4 * u < G;
        cp_async_4_zfill(smem_addr(tzero + r * zstride + u),
                         ok ? zeros + static_cast<int64_t>(n0 + r) * G + g0 + 4 * u : zeros, ok);
      }
    }
  }
  if constexpr (!kXRing) {
    const int units = chunks * (kV2Chunk / 8);
    for (int i = tid; i < M * units; i += kThreads) {
      const int m = i / units, u = i - m * units;
      cp_async_16_zfill(smem_addr(xs + m * xunits + swizzle(u)), x + m * ldx + k0 + 8 * u, true);
    }
  }
#pragma unroll
  for (int s = 0; s < kS - 1; ++s) {
    if (s < my_chunks) issue(s);
    cp_async_commit();
  }
  cp_async_wait<kS - 2>();  // the oldest group: the table, x and chunk 0
  __syncthreads();

  const uint4* xrow[kMT];
#pragma unroll
  for (int mt = 0; mt < kMT; ++mt) xrow[mt] = xs + min(gid + 8 * mt, M - 1) * xunits;
  const __half* tsh = reinterpret_cast<const __half*>(tscale);
  const uint8_t* tzb = reinterpret_cast<const uint8_t*>(tzero);
  // The magic in a register the compiler cannot fold (M > 0, so the or adds nothing): with both
  // the mask and the magic as immediates, (q & mask) | magic takes two LOP3s (one immediate each).
  const uint32_t magic2 = kMagic<kHalf> * 0x10001u | static_cast<uint32_t>(M) >> 31;

  float acc[kRT][kMT][4] = {};
  for (int j = 0; j < my_chunks; ++j) {
    if (j + kS - 1 < my_chunks) issue(j + kS - 1);
    cp_async_commit();
    cp_async_wait<kS - 1>();  // chunk j has landed
    const int c = warp + kWarps * j;
    const uint4* slot = my_ring + (j % kS) * C::kSlot;

    uint32_t xb[kMT][4][4];
#pragma unroll
    for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
      for (int w = 0; w < 4; ++w)
        x_operand(kXRing ? slot[(C::kWUnits + 4 * mt + w) * 32] : xrow[mt][swizzle(c * (kV2Chunk / 8) + 4 * tig + w)],
                  xb[mt][w]);

    // kFold: sum x over the chunk for the lane's accumulator columns (x rows 2 tig, 2 tig + 1).
    float sx[kMT][4] = {};
    if constexpr (kFold) {
      constexpr uint32_t kOne2 = kHalf ? 0x3C003C00u : 0x3F803F80u;  // 1.0 in both halves
      const uint32_t ones[4] = {kOne2, kOne2, kOne2, kOne2};
#pragma unroll
      for (int mt = 0; mt < kMT; ++mt) {
#pragma unroll
        for (int w = 0; w < 4; ++w) {
          const uint32_t b0[2] = {xb[mt][w][0], xb[mt][w][1]}, b1[2] = {xb[mt][w][2], xb[mt][w][3]};
          mma_16816<kHalf>(sx[mt], ones, b0);
          mma_16816<kHalf>(sx[mt], ones, b1);
        }
      }
    }

#pragma unroll
    for (int rt = 0; rt < kRT; ++rt) {
      const int ra = 16 * rt + gid, rb = ra + 8;
      const uint4 wa = slot[(2 * rt) * 32], wb = slot[(2 * rt + 1) * 32];
      const float sa = __half2float(tsh[2 * ra * sstride + c]), sb = __half2float(tsh[2 * rb * sstride + c]);
      const uint32_t za = zeros != nullptr ? tzb[4 * ra * zstride + c] : 8u;
      const uint32_t zb = zeros != nullptr ? tzb[4 * rb * zstride + c] : 8u;
      const uint32_t na = (0x8000u | kMagic<kHalf> | za) * 0x10001u;  // -(magic + zero), both halves
      const uint32_t nb = (0x8000u | kMagic<kHalf> | zb) * 0x10001u;
      // (q & mask) | magic is magic + code: kFold takes it as is, else one add makes it code - zero, exactly.
      const auto dq = [&](uint32_t q, uint32_t neg) {
        const uint32_t t = (q & 0x000F000Fu) | magic2;
        if constexpr (kFold) {
          return t;
        } else {
          return add2<kHalf>(t, neg);
        }
      };
      float part[kMT][4] = {};
      mma_chunk<kHalf>(part, wa, wb, xb, [&](uint32_t q) { return dq(q, na); }, [&](uint32_t q) { return dq(q, nb); });
      if constexpr (kFold) {  // part -= (magic + zero) * sum x
        const float fa = static_cast<float>((kHalf ? 1024u : 128u) + za);
        const float fb = static_cast<float>((kHalf ? 1024u : 128u) + zb);
#pragma unroll
        for (int mt = 0; mt < kMT; ++mt) {
          part[mt][0] = fmaf(-fa, sx[mt][0], part[mt][0]);
          part[mt][1] = fmaf(-fa, sx[mt][1], part[mt][1]);
          part[mt][2] = fmaf(-fb, sx[mt][2], part[mt][2]);
          part[mt][3] = fmaf(-fb, sx[mt][3], part[mt][3]);
        }
      }
      add_scaled(acc[rt], part, sa, sb);
    }
  }

  // ---- the warps' partials meet in the idle ring, as in the default kernel
  cp_async_wait<0>();
  __syncthreads();
  float* red = reinterpret_cast<float*>(smem);
  stash_partials(red, warp, lane, acc);
  __syncthreads();
  sum_partials<kT, kMT, kRT>(red, n0, M, N, bias, out, ldo, ws, blockIdx.y);
}

// K in slices of a multiple of `unit` k, at most max_slice each; more of them, down to min_slice,
// while the row blocks alone would leave SMs idle.
struct Split {
  int64_t splits;  // K slices (grid.y)
  int64_t slice;   // k per slice
};

Split split_k(int64_t K, int64_t row_blocks, int64_t max_slice, int64_t unit, int64_t min_slice) {
  int64_t splits = ceil_div(K, max_slice);
  const int64_t sms = sm_count();
  if (row_blocks * splits < sms) splits = std::max(splits, std::min(ceil_div(sms, row_blocks), K / min_slice));
  const int64_t slice = ceil_div(ceil_div(K, splits), unit) * unit;
  return {ceil_div(K, slice), slice};
}

// The second kernel of a split launch (the first one's error, if any, goes first).
template <DType kT>
cudaError_t sum_splits(const float* ws, int64_t splits, const void* bias, void* out, int64_t ldo, int64_t M,
                       int64_t N, cudaStream_t stream) {
  using T = typename Elem<kT>::T;
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) return err;
  const int64_t blocks = std::min<int64_t>(ceil_div(M * N, 256), 4 * std::max(sm_count(), 1));
  splitk_sum_kernel<kT><<<static_cast<unsigned>(blocks), 256, 0, stream>>>(
      ws, static_cast<int>(splits), static_cast<const T*>(bias), static_cast<T*>(out), ldo, static_cast<int>(M),
      static_cast<int>(N));
  return cudaGetLastError();
}

struct Plan {
  int mt, rt;  // kMT, kRT
  Split k;     // slice: a multiple of kChunk
};

Plan make_plan(int64_t M, int64_t N, int64_t K) {
  Plan p;
  p.mt = M <= 8 ? 1 : 2;
  p.rt = p.mt == 1 ? 2 : 4;  // more rows per block as M grows: x's staging stays <= the weights' bytes
  const int64_t max_slice = std::min<int64_t>(kMaxSlice, kXBudget / (2 * M) / kChunk * kChunk);
  p.k = split_k(K, ceil_div(N, 16 * p.rt), max_slice, kChunk, kMinSplitSlice);
  return p;
}

size_t smem_bytes(const Plan& p, int64_t M, int group_size) {
  const int64_t rows = 16 * p.rt;
  const int64_t groups = p.k.slice / group_size;
  const int64_t tstride = groups + ((4 - groups) & 31);
  return static_cast<size_t>(kWarps * kStages * 2 * p.rt * 32 * 16 + M * (p.k.slice / 8 + 1) * 16 +
                             rows * tstride * 4);
}

template <DType kT, int kMT, int kRT>
cudaError_t launch(const Plan& p, const void* x, int64_t ldx, const uint8_t* packed, const void* scales,
                   const uint8_t* zeros, const void* bias, void* out, int64_t ldo, float* ws, int64_t M, int64_t N,
                   int64_t K, int group_size, cudaStream_t stream) {
  using T = typename Elem<kT>::T;
  using C = Gemv<kMT, kRT>;
  constexpr auto kernel = &w4a16_gemv_kernel<kT, kMT, kRT>;
  const cudaError_t err = opt_in_dynamic_smem<kernel>(static_cast<int>(C::kMaxSmem));
  if (err != cudaSuccess) return err;
  const size_t smem = smem_bytes(p, M, group_size);
  if (smem > C::kMaxSmem) return cudaErrorInvalidValue;
  const int64_t G = ceil_div(K, group_size);
  const int gs_shift = group_size == 32 ? 5 : group_size == 64 ? 6 : 7;
  const dim3 grid(static_cast<unsigned>(ceil_div(N, C::kRows)), static_cast<unsigned>(p.k.splits));
  kernel<<<grid, kThreads, smem, stream>>>(
      static_cast<const T*>(x), ldx, packed, static_cast<const __half*>(scales), zeros,
      static_cast<const T*>(bias), static_cast<T*>(out), ldo, p.k.splits > 1 ? ws : nullptr, static_cast<int>(M),
      static_cast<int>(N), static_cast<int>(K), static_cast<int>(G), gs_shift, static_cast<int>(p.k.slice));
  if (p.k.splits > 1) return sum_splits<kT>(ws, p.k.splits, bias, out, ldo, M, N, stream);
  return cudaGetLastError();
}

template <DType kT>
cudaError_t dispatch(const Plan& p, const void* x, int64_t ldx, const uint8_t* packed, const void* scales,
                     const uint8_t* zeros, const void* bias, void* out, int64_t ldo, float* ws, int64_t M, int64_t N,
                     int64_t K, int group_size, cudaStream_t stream) {
  if (p.mt == 1)
    return launch<kT, 1, 2>(p, x, ldx, packed, scales, zeros, bias, out, ldo, ws, M, N, K, group_size, stream);
  return launch<kT, 2, 4>(p, x, ldx, packed, scales, zeros, bias, out, ldo, ws, M, N, K, group_size, stream);
}

// f(std::integral_constant<int, I>{}) for the entry I of kTable (an array of entries with an `id`)
// whose id is `variant`; cudaErrorInvalidValue when none is. Instantiates f for every entry.
template <const auto& kTable, int I = 0, class F>
cudaError_t with_entry(int variant, F&& f) {
  constexpr int kCount = static_cast<int>(sizeof(kTable) / sizeof(kTable[0]));
  if constexpr (I == kCount) {
    return cudaErrorInvalidValue;
  } else {
    if (kTable[I].id == variant) return f(std::integral_constant<int, I>{});
    return with_entry<kTable, I + 1>(variant, f);
  }
}

// The entry of `table` whose id is `variant`, or nullptr.
template <class E, size_t kN>
constexpr const E* find_entry(const E (&table)[kN], int variant) {
  for (const E& e : table)
    if (e.id == variant) return &e;
  return nullptr;
}

// ---- variants: (kRT, kS, kFold) per variant, for M <= 8 (x staged) and M <= 16 (x through the ring).
struct V2Shape {
  int rt, stages;
  bool fold;
};
struct V2Variant {
  int id;  // the variant number (int4_cuda.h)
  V2Shape m8, m16;
};
// Each chosen so that a 14336-row layer's blocks fit the SMs at once (smem per block: ring + x + table);
// 6 and 7 are 1 and 2 with kFold, as is 10 at M <= 8 of 5. 10, 11 at M > 8: 128 rows per block, so each
// block's x reads (as many bytes as its weights at 64 rows and M = 16, all from L2) halve; a 14336-row
// layer then needs split-K to fill the SMs.
constexpr V2Variant kV2[] = {
    {1, {2, 4, false}, {4, 3, false}}, {2, {2, 5, false}, {4, 2, false}}, {5, {4, 3, false}, {3, 2, false}},
    {6, {2, 4, true}, {4, 3, true}},   {7, {2, 5, true}, {4, 2, true}},   {10, {4, 3, true}, {8, 2, false}},
    {11, {1, 6, true}, {8, 2, true}}};

struct V2Plan {
  int mt;
  V2Shape shape;
  Split k;  // slice: a multiple of kV2MinSlice
};

V2Plan make_plan_v2(int64_t M, int64_t N, int64_t K, const V2Variant& v) {
  V2Plan p;
  p.mt = M <= 8 ? 1 : 2;
  p.shape = p.mt == 1 ? v.m8 : v.m16;
  int64_t max_slice = kV2MaxSlice;
  if (p.mt == 1) max_slice = std::min<int64_t>(max_slice, kV2XBudget / (2 * M) / kV2MinSlice * kV2MinSlice);
  p.k = split_k(K, ceil_div(N, 16 * p.shape.rt), max_slice, kV2MinSlice, kV2MinSlice);
  return p;
}

// Shared memory per block: the ring (weights, and x at M > 8), x's slice (M <= 8), the raw table.
int64_t v2_smem_bytes(const V2Plan& p, int64_t M) {
  const int64_t rows = 16 * p.shape.rt, groups = p.k.slice / kV2Chunk;
  const int64_t ring = int64_t{kWarps} * p.shape.stages * (2 * p.shape.rt + (p.mt == 2 ? 4 * p.mt : 0)) * 32;
  return ring * 16 + (p.mt == 2 ? 0 : M * (p.k.slice / 8 + 1) * 16) +
         rows * (v2_sstride(groups) + v2_zstride(groups)) * 4;
}

bool v2_supported(int64_t K, int group_size, const void* scales, const void* zeros) {
  const auto a4 = [](const void* q) { return (reinterpret_cast<uintptr_t>(q) & 3) == 0; };
  return group_size == kV2Chunk && K % kV2MinSlice == 0 && a4(scales) && (zeros == nullptr || a4(zeros));
}

template <DType kT, int kMT, int kRT, int kS, bool kFold>
cudaError_t launch_v2(const V2Plan& p, const void* x, int64_t ldx, const uint8_t* packed, const void* scales,
                      const uint8_t* zeros, const void* bias, void* out, int64_t ldo, float* ws, int64_t M, int64_t N,
                      int64_t K, cudaStream_t stream) {
  using T = typename Elem<kT>::T;
  using C = GemvV2<kRT, kMT, kS>;
  constexpr auto kernel = &w4a16_gemv_v2_kernel<kT, kMT, kRT, kS, kFold>;
  const cudaError_t err = opt_in_dynamic_smem<kernel>(static_cast<int>(C::kMaxSmem));
  if (err != cudaSuccess) return err;
  const size_t smem = static_cast<size_t>(v2_smem_bytes(p, M));
  if (smem > C::kMaxSmem) return cudaErrorInvalidValue;
  const dim3 grid(static_cast<unsigned>(ceil_div(N, C::kRows)), static_cast<unsigned>(p.k.splits));
  kernel<<<grid, kThreads, smem, stream>>>(
      static_cast<const T*>(x), ldx, packed, static_cast<const __half*>(scales), zeros, static_cast<const T*>(bias),
      static_cast<T*>(out), ldo, p.k.splits > 1 ? ws : nullptr, static_cast<int>(M), static_cast<int>(N),
      static_cast<int>(K), static_cast<int>(ceil_div(K, kV2Chunk)), static_cast<int>(p.k.slice));
  if (p.k.splits > 1) return sum_splits<kT>(ws, p.k.splits, bias, out, ldo, M, N, stream);
  return cudaGetLastError();
}

template <DType kT>
cudaError_t dispatch_v2(int variant, const V2Plan& p, const void* x, int64_t ldx, const uint8_t* packed,
                        const void* scales, const uint8_t* zeros, const void* bias, void* out, int64_t ldo, float* ws,
                        int64_t M, int64_t N, int64_t K, cudaStream_t stream) {
  return with_entry<kV2>(variant, [&](auto i) {
    constexpr V2Shape a = kV2[decltype(i)::value].m8, b = kV2[decltype(i)::value].m16;
    if (p.mt == 1)
      return launch_v2<kT, 1, a.rt, a.stages, a.fold>(p, x, ldx, packed, scales, zeros, bias, out, ldo, ws, M, N, K,
                                                      stream);
    return launch_v2<kT, 2, b.rt, b.stages, b.fold>(p, x, ldx, packed, scales, zeros, bias, out, ldo, ws, M, N, K,
                                                    stream);
  });
}

// ============================================================================ persistent variants 12, 14 (kP)
//
// On a 14336-row layer every variant above sits near 2.1 TB/s while a 28672 x 8192 one reaches
// 3 TB/s: per block, the stream only starts after a prologue (the scale table, x's slice, a block
// barrier), and on the large layer 896 blocks run in 1.7 waves whose seams drain the ring. These
// variants keep the ring and the mma layout of the ones above (x through the ring, group 128 = one
// chunk) and remove both:
// - a grid of at most (SMs x resident blocks) blocks loops over row tiles (tile = blockIdx.x +
//   i * gridDim.x, each block the same number of tiles, +-1), and each warp's ring runs straight
//   across tile boundaries: the next tile's first chunks are in flight during this tile's last math;
// - no per-block prologue at all: chunk j's scales and zero points (one 4-byte word each per row,
//   copied by the quad lane whose index is the row's) and x's M rows of the chunk travel in chunk j's
//   cp.async group, so a lane reads its quad-mates' copies after the wait and a warp barrier;
// - at a tile's last chunk the warps' partials meet in a double-buffered reduction area (one block
//   barrier per tile; the buffer a tile writes was last read before the previous tile's barrier).
// No split-K: a tile is all of K. 32 rows per tile (a quad's 4 lanes copy the metadata of its 4
// rows); ring depths at M <= 8 and at M <= 16 per variant (at M <= 16 x's 16 rows take as much of
// a stage as the weights, so fewer stages keep every launch within sm_80's 163 KiB); 4 warps.
constexpr int kPRT = 2;  // m16 tiles of a row tile
struct PVariant {
  int id;  // the variant number (int4_cuda.h)
  int stages8, stages16;
};
constexpr PVariant kP[] = {{12, 4, 4}, {14, 8, 5}};

// uint4 units of one warp's ring stage: weights (2 kPRT per lane), metadata (64 words), x (M rows of 16).
__host__ __device__ constexpr int p_slot_units(int M) { return 2 * kPRT * 32 + 16 + 16 * M; }
__host__ __device__ constexpr int64_t p_smem_bytes(int stages, int mt, int M) {
  return int64_t{kWarps} * stages * p_slot_units(M) * 16 + 2 * int64_t{kWarps} * kPRT * mt * 128 * 4;
}

template <DType kT, int kMT, int kS>
__global__ void __launch_bounds__(kThreads, 1)
    w4a16_gemv_p_kernel(const typename Elem<kT>::T* __restrict__ x, int64_t ldx, const uint8_t* __restrict__ packed,
                        const __half* __restrict__ scales, const uint8_t* __restrict__ zeros,
                        const typename Elem<kT>::T* __restrict__ bias, typename Elem<kT>::T* __restrict__ out,
                        int64_t ldo, int M, int N, int K, int G, int tiles) {
  constexpr bool kHalf = kT == DType::kF16;
  constexpr int kRows = 16 * kPRT, kWUnits = 2 * kPRT * 32;
  extern __shared__ uint4 smem[];

  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  const int gid = lane / 4, tig = lane % 4;
  const int slot_units = p_slot_units(M);
  const int cpw = K / kV2Chunk / kWarps;  // chunks per warp per tile (K % 512 == 0)
  const int my_tiles = static_cast<int>(blockIdx.x) < tiles
                           ? (tiles - static_cast<int>(blockIdx.x) + static_cast<int>(gridDim.x) - 1) /
                                 static_cast<int>(gridDim.x)
                           : 0;
  const int steps = my_tiles * cpw;
  uint4* my_ring = smem + warp * kS * slot_units;
  float* red = reinterpret_cast<float*>(smem + kWarps * kS * slot_units);
  const int64_t row_bytes = K / 2;

  // Step j of this warp: tile i = j / cpw of the block, chunk warp + kWarps * (j % cpw) of it.
  auto issue = [&](int j) {
    const int i = j / cpw, c = warp + kWarps * (j - i * cpw);
    const int n0 = (static_cast<int>(blockIdx.x) + i * static_cast<int>(gridDim.x)) * kRows;
    uint4* slot = my_ring + (j % kS) * slot_units;
    for (int u = lane; u < 16 * M; u += 32) {  // x: row m's 128 values of the chunk
      const int m = u >> 4, q = u & 15;
      cp_async_16_zfill(smem_addr(slot + kWUnits + 16 + m * 16 + swizzle(q)),
                        x + static_cast<int64_t>(m) * ldx + c * kV2Chunk + 8 * q, true);
    }
#pragma unroll
    for (int r = 0; r < 2 * kPRT; ++r) {
      const int row = n0 + gid + 8 * r;
      const bool ok = row < N;
      cp_async_16_zfill(smem_addr(slot + r * 32 + lane),
                        ok ? packed + static_cast<int64_t>(row) * row_bytes + c * (kV2Chunk / 2) + 16 * tig : packed,
                        ok);
    }
    if (tig < 2 * kPRT) {  // lane tig copies row gid + 8 tig's words; G % 4 == 0, so a word never crosses a row
      const int row = n0 + gid + 8 * tig;
      const bool ok = row < N;
      const int64_t idx = static_cast<int64_t>(ok ? row : 0) * G + c;
      uint32_t* meta = reinterpret_cast<uint32_t*>(slot + kWUnits);
      cp_async_4_zfill(smem_addr(meta + 8 * tig + gid), scales + (idx & ~int64_t{1}), ok);
      if (zeros != nullptr) cp_async_4_zfill(smem_addr(meta + 32 + 8 * tig + gid), zeros + (idx & ~int64_t{3}), ok);
    }
  };

#pragma unroll
  for (int s = 0; s < kS - 1; ++s) {
    if (s < steps) issue(s);
    cp_async_commit();
  }
  const uint32_t magic2 = kMagic<kHalf> * 0x10001u | static_cast<uint32_t>(M) >> 31;  // see the v2 kernel

  float acc[kPRT][kMT][4] = {};
  for (int j = 0; j < steps; ++j) {
    __syncwarp();  // every lane is done reading stage (j - 1) % kS before anyone refills it
    if (j + kS - 1 < steps) issue(j + kS - 1);
    cp_async_commit();
    cp_async_wait<kS - 1>();  // this lane's copies of step j have landed
    __syncwarp();             // and so have its quad-mates' (metadata) and the warp's (x)
    const int i = j / cpw, c = warp + kWarps * (j - i * cpw);
    const uint4* slot = my_ring + (j % kS) * slot_units;
    const uint32_t* meta = reinterpret_cast<const uint32_t*>(slot + kWUnits);
    const uint4* xs = slot + kWUnits + 16;

    uint32_t xb[kMT][4][4];
#pragma unroll
    for (int mt = 0; mt < kMT; ++mt) {
      const uint4* xr = xs + min(gid + 8 * mt, M - 1) * 16;  // rows past M: never stored
#pragma unroll
      for (int w = 0; w < 4; ++w) x_operand(xr[swizzle(4 * tig + w)], xb[mt][w]);
    }

#pragma unroll
    for (int rt = 0; rt < kPRT; ++rt) {
      const uint4 wa = slot[(2 * rt) * 32 + lane], wb = slot[(2 * rt + 1) * 32 + lane];  // rows gid, gid + 8
      const uint32_t swa = meta[8 * (2 * rt) + gid], swb = meta[8 * (2 * rt + 1) + gid];
      const float sa = __half2float(__ushort_as_half(static_cast<unsigned short>(swa >> (16 * (c & 1)))));
      const float sb = __half2float(__ushort_as_half(static_cast<unsigned short>(swb >> (16 * (c & 1)))));
      const uint32_t za = zeros != nullptr ? meta[32 + 8 * (2 * rt) + gid] >> (8 * (c & 3)) & 0xFu : 8u;
      const uint32_t zb = zeros != nullptr ? meta[32 + 8 * (2 * rt + 1) + gid] >> (8 * (c & 3)) & 0xFu : 8u;
      const uint32_t na = (0x8000u | kMagic<kHalf> | za) * 0x10001u;  // -(magic + zero), both halves
      const uint32_t nb = (0x8000u | kMagic<kHalf> | zb) * 0x10001u;
      const auto dq = [&](uint32_t q, uint32_t neg) { return add2<kHalf>((q & 0x000F000Fu) | magic2, neg); };
      float part[kMT][4] = {};
      mma_chunk<kHalf>(part, wa, wb, xb, [&](uint32_t q) { return dq(q, na); }, [&](uint32_t q) { return dq(q, nb); });
      add_scaled(acc[rt], part, sa, sb);
    }

    if (j - i * cpw == cpw - 1) {  // the tile's last chunk: the warps' partials meet
      float* r = red + (i & 1) * kWarps * kOutFloats<kMT, kPRT>;
      stash_partials(r, warp, lane, acc);
#pragma unroll
      for (int rt = 0; rt < kPRT; ++rt)
#pragma unroll
        for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
          for (int e = 0; e < 4; ++e) acc[rt][mt][e] = 0.f;
      __syncthreads();
      const int n0 = (static_cast<int>(blockIdx.x) + i * static_cast<int>(gridDim.x)) * kRows;
      sum_partials<kT, kMT, kPRT>(r, n0, M, N, bias, out, ldo, nullptr, 0);
    }
  }
  cp_async_wait<0>();  // no copy outlives the block (the tail's groups are empty, but keep it exact)
}

// The persistent grid: as many blocks as fit the SMs at once, then as few as give every block the
// same number of tiles (+-1).
template <DType kT, int kMT, int kS>
cudaError_t p_grid(int64_t M, int64_t N, int64_t& grid, int64_t& tiles, int64_t& smem) {
  constexpr auto kernel = &w4a16_gemv_p_kernel<kT, kMT, kS>;
  cudaError_t err = opt_in_dynamic_smem<kernel>(static_cast<int>(p_smem_bytes(kS, kMT, 8 * kMT)));
  if (err != cudaSuccess) return err;
  smem = p_smem_bytes(kS, kMT, static_cast<int>(M));
  // The occupancy query once per device and M: it costs host time on every decode step otherwise.
  static std::atomic<int> occupancy_of[64][17] = {};
  int device = 0;
  err = cudaGetDevice(&device);
  if (err != cudaSuccess) return err;
  const bool cached = device >= 0 && device < 64;
  int occupancy = cached ? occupancy_of[device][M].load(std::memory_order_relaxed) : 0;
  if (occupancy == 0) {
    err = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&occupancy, kernel, kThreads, static_cast<size_t>(smem));
    if (err != cudaSuccess) return err;
    if (cached) occupancy_of[device][M].store(occupancy, std::memory_order_relaxed);
  }
  tiles = ceil_div(N, 16 * kPRT);
  const int64_t slots = std::max<int64_t>(1, int64_t{occupancy} * sm_count());
  grid = ceil_div(tiles, ceil_div(tiles, slots));
  return cudaSuccess;
}

template <DType kT, int kMT, int kS>
cudaError_t launch_p(const void* x, int64_t ldx, const uint8_t* packed, const void* scales, const uint8_t* zeros,
                     const void* bias, void* out, int64_t ldo, int64_t M, int64_t N, int64_t K, cudaStream_t stream) {
  using T = typename Elem<kT>::T;
  int64_t grid = 0, tiles = 0, smem = 0;
  const cudaError_t err = p_grid<kT, kMT, kS>(M, N, grid, tiles, smem);
  if (err != cudaSuccess) return err;
  w4a16_gemv_p_kernel<kT, kMT, kS><<<static_cast<unsigned>(grid), kThreads, static_cast<size_t>(smem), stream>>>(
      static_cast<const T*>(x), ldx, packed, static_cast<const __half*>(scales), zeros, static_cast<const T*>(bias),
      static_cast<T*>(out), ldo, static_cast<int>(M), static_cast<int>(N), static_cast<int>(K),
      static_cast<int>(ceil_div(K, kV2Chunk)), static_cast<int>(tiles));
  return cudaGetLastError();
}

template <DType kT>
cudaError_t dispatch_p(int variant, const void* x, int64_t ldx, const uint8_t* packed, const void* scales,
                       const uint8_t* zeros, const void* bias, void* out, int64_t ldo, int64_t M, int64_t N, int64_t K,
                       cudaStream_t stream) {
  return with_entry<kP>(variant, [&](auto i) {
    constexpr PVariant v = kP[decltype(i)::value];
    return M <= 8 ? launch_p<kT, 1, v.stages8>(x, ldx, packed, scales, zeros, bias, out, ldo, M, N, K, stream)
                  : launch_p<kT, 2, v.stages16>(x, ldx, packed, scales, zeros, bias, out, ldo, M, N, K, stream);
  });
}

// The launch info of a persistent variant (bf16 instantiation: the f16 one has the same resources).
cudaError_t p_launch_info(int variant, int64_t M, int64_t N, int64_t& grid, int64_t& smem) {
  int64_t tiles = 0;
  return with_entry<kP>(variant, [&](auto i) {
    constexpr PVariant v = kP[decltype(i)::value];
    return M <= 8 ? p_grid<DType::kBF16, 1, v.stages8>(M, N, grid, tiles, smem)
                  : p_grid<DType::kBF16, 2, v.stages16>(M, N, grid, tiles, smem);
  });
}

// Each number the header lists is 0 or names one table entry, and every entry is listed.
constexpr bool tables_match_header() {
  for (int v : kW4A16GemvVariants)
    if ((v == 0) + (find_entry(kV2, v) != nullptr) + (find_entry(kP, v) != nullptr) != 1) return false;
  return sizeof(kW4A16GemvVariants) / sizeof(int) == 1 + sizeof(kV2) / sizeof(kV2[0]) + sizeof(kP) / sizeof(kP[0]);
}
static_assert(tables_match_header(), "kV2 and kP name exactly the variants kW4A16GemvVariants lists, 0 aside");

}  // namespace

W4A16GemvLaunch w4a16_gemv_launch(int64_t M, int64_t N, int64_t K, int group_size, int variant) {
  W4A16GemvLaunch l{};
  if (M < 1 || M > 16 || N < 1 || K < 32 || !w4a16_gemv_has_variant(variant)) return l;
  const bool takes = group_size == kV2Chunk && K % kV2MinSlice == 0;  // the shapes the variants take
  if (const PVariant* v = find_entry(kP, variant); v && takes) {
    int64_t grid = 0, smem = 0;
    if (p_launch_info(variant, M, N, grid, smem) == cudaSuccess) {
      l = {true, 16 * kPRT, kWarps, M <= 8 ? v->stages8 : v->stages16, false, true, grid, 1, smem, true};
      return l;
    }
  }
  if (const V2Variant* v = find_entry(kV2, variant); v && takes) {
    const V2Plan q = make_plan_v2(M, N, K, *v);
    const int rows = 16 * q.shape.rt;
    l = {true, rows, kWarps, q.shape.stages, q.shape.fold, q.mt == 2, ceil_div(N, rows), q.k.splits,
         v2_smem_bytes(q, M), false};
    return l;
  }
  const Plan p = make_plan(M, N, K);
  l = {variant == 0, 16 * p.rt, kWarps, kStages, false, false, ceil_div(N, 16 * p.rt), p.k.splits,
       static_cast<int64_t>(smem_bytes(p, M, group_size)), find_entry(kP, variant) != nullptr};
  return l;
}

int64_t w4a16_gemv_workspace(int64_t M, int64_t N, int64_t K, int variant) {
  if (M < 1 || M > 16 || N < 1 || K < 32 || !w4a16_gemv_has_variant(variant)) return 0;
  const Plan p = make_plan(M, N, K);
  int64_t need = p.k.splits > 1 ? p.k.splits * M * N : 0;  // the persistent variants need none beyond variant 0's
  // Either kernel may run: the launcher falls back on the scales' alignment.
  if (const V2Variant* v = find_entry(kV2, variant); v && K % kV2MinSlice == 0) {
    const V2Plan q = make_plan_v2(M, N, K, *v);
    if (q.k.splits > 1) need = std::max(need, q.k.splits * M * N);
  }
  return need;
}

cudaError_t w4a16_gemv(DType t, const void* x, int64_t ldx, const uint8_t* packed, const void* scales,
                       const uint8_t* zeros, const void* bias, void* out, int64_t ldo, float* workspace, int64_t M,
                       int64_t N, int64_t K, int group_size, cudaStream_t stream, int variant) {
  // N and K stay clear of INT32_MAX: the kernel's int row and k indices run a block / a chunk past them.
  const bool shapes_ok = M >= 1 && M <= 16 && N >= 1 && K >= 32 && K % 32 == 0 && N <= INT32_MAX - 1024 &&
                         K <= INT32_MAX - 1024 && ldo >= N && ldx >= 0 &&
                         (group_size == 32 || group_size == 64 || group_size == 128);
  const bool aligned = aligned16(x) && aligned16(packed) && (ldx * 2) % 16 == 0;
  if (!shapes_ok || !aligned || (t != DType::kF16 && t != DType::kBF16) || !w4a16_gemv_has_variant(variant))
    return cudaErrorInvalidValue;
  const bool takes = v2_supported(K, group_size, scales, zeros);
  if (find_entry(kP, variant) && takes) {
    if (t == DType::kF16)
      return dispatch_p<DType::kF16>(variant, x, ldx, packed, scales, zeros, bias, out, ldo, M, N, K, stream);
    return dispatch_p<DType::kBF16>(variant, x, ldx, packed, scales, zeros, bias, out, ldo, M, N, K, stream);
  }
  if (const V2Variant* v = find_entry(kV2, variant); v && takes) {
    const V2Plan q = make_plan_v2(M, N, K, *v);
    if (q.k.splits > 65535 || (q.k.splits > 1 && workspace == nullptr)) return cudaErrorInvalidValue;
    if (t == DType::kF16)
      return dispatch_v2<DType::kF16>(variant, q, x, ldx, packed, scales, zeros, bias, out, ldo, workspace, M, N, K,
                                      stream);
    return dispatch_v2<DType::kBF16>(variant, q, x, ldx, packed, scales, zeros, bias, out, ldo, workspace, M, N, K,
                                     stream);
  }
  const Plan p = make_plan(M, N, K);
  if (p.k.splits > 65535 || (p.k.splits > 1 && workspace == nullptr)) return cudaErrorInvalidValue;
  if (t == DType::kF16)
    return dispatch<DType::kF16>(p, x, ldx, packed, scales, zeros, bias, out, ldo, workspace, M, N, K, group_size,
                                 stream);
  return dispatch<DType::kBF16>(p, x, ldx, packed, scales, zeros, bias, out, ldo, workspace, M, N, K, group_size,
                                stream);
}

}  // namespace pycomp::cuda
