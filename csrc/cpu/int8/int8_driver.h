// Blocking, threading and epilogues shared by every ISA's int8 kernels.
//
// Each ISA supplies a traits struct (int8_portable.cpp, int8_avx2.cpp,
// int8_avx512.cpp) with its activation format and its register-blocked tile
// kernels; the drivers here are instantiated once per ISA. They are plain C++
// (no target attributes), so the float epilogue runs the same instructions for
// every ISA and the W8A8 results agree bit for bit across ISAs.
//
// Both ops use the dot-product form that the canonical row-major (N, K) weight
// suits: a tile kernel takes mr activation rows and nr weight rows, keeps
// mr x nr vector accumulators along K and reduces them once per K block.
// Activations are packed once per call (quantized for W8A8), rows padded to
// whole tile steps with zeros; weights are read in place.
//
//   task (threads split N, and M when N is short)
//     m block (mc rows) -> n panel (nc weight rows) -> k block (kc)
//       -> m tile (mr rows) -> n tile (nr rows): Traits::tile
//
// The traits contract (see the ISA files for the three implementations):
//   using Act;                      activation element type in the packed buffer
//   kStep                           K granularity of a tile step; rows are padded to it
//   kGemvPrefetch                   whether GEMV tiles (one m tile per block) get Tile::next
//   kCorrection                     W8A8 only: tiles return sum (w + 128) * q, and the
//                                   driver subtracts 128 * sum_k q[m, k]
//   pack_row(x, K, Kp, act, aux, m) quantizes / copies row m (aux: scale, row sum)
//   blocking(M, K)                  tile and cache block sizes for this shape
//   tile(blocking, Tile)            runs one register tile (struct Tile below)
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>

#include "cpu/parallel.h"
#include "cpu/scratch.h"

namespace pycomp::cpu::int8 {

// One scalar of the activation quantization in the header's words; the SIMD
// paths use it for K tails so that every element follows the same formula.
// std::max/min keep their first argument when the other is NaN, like the
// vector max/min the SIMD code uses: a NaN amax term is skipped and a NaN
// product quantizes to -127.
inline float amax_step(float amax, float v) { return std::max(amax, std::fabs(v)); }
inline float quant_inverse(float amax) { return amax > 0.f ? 127.f / amax : 0.f; }
inline int8_t quantize_value(float v, float inv) {
  return static_cast<int8_t>(std::min(127.f, std::max(-127.f, std::nearbyint(v * inv))));
}

// The reduce-range quantization (int8_linear.h) in scalars, for the portable
// code and the SIMD paths' K tails. Each is one fp32 operation, as the vector
// code and the PyTorch reference do them.
struct Uint7Params {
  float scale, inv, zp;  // zp: an integer in [0, 127], kept in fp32 to add to rint(x * inv)
};
inline Uint7Params uint7_params(float lo, float hi) {
  lo = std::min(lo, 0.f);
  hi = std::max(hi, 0.f);
  const float r = hi - lo;
  const float inv = r > 0.f ? 127.f / r : 0.f;
  return {r / 127.f, inv, std::min(127.f, std::max(0.f, std::nearbyint(-lo * inv)))};
}
inline uint8_t quantize_uint7(float v, const Uint7Params& p) {
  return static_cast<uint8_t>(std::min(127.f, std::max(0.f, std::nearbyint(v * p.inv) + p.zp)));
}

struct Blocking {
  int mr, nr;          // register tile
  int64_t mc, nc, kc;  // cache blocks (kc a multiple of the traits' kStep)
};

// Below this many multiply-adds a call runs on one thread: waking the pool
// costs more than the work.
constexpr int64_t kMinParallelMacs = int64_t(1) << 18;

// Splits the (M, N) output over the threads: N first (each thread streams its
// own weight rows once), M as well when N has too few tiles to go round.
// fn(m0, m1, n0, n1) runs once per task.
template <class Fn>
void parallel_tiles(int64_t M, int64_t N, int64_t K, const Blocking& b, const Fn& fn) {
  int64_t threads = M * N * K < kMinParallelMacs ? 1 : std::max(1, num_threads());
  const int64_t n_units = ceil_div(N, b.nr), m_units = ceil_div(M, b.mr);
  const int64_t tn = std::min(threads, n_units);
  const int64_t tm = std::min(std::max<int64_t>(threads / tn, 1), m_units);
  auto range = [](int64_t units, int64_t parts, int64_t i, int64_t unit, int64_t limit) {
    const int64_t lo = units * i / parts * unit, hi = units * (i + 1) / parts * unit;
    return std::make_pair(std::min(lo, limit), std::min(hi, limit));
  };
  parallel_for(tn * tm, 1, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const auto [m0, m1] = range(m_units, tm, t / tn, b.mr, M);
      const auto [n0, n1] = range(n_units, tn, t % tn, b.nr, N);
      if (m0 < m1 && n0 < n1) fn(m0, m1, n0, n1);
    }
  });
}

// Row stride of a packed activation buffer: rows a multiple of 1 KB apart would
// share L1 sets (a tile reads several rows at the same offset), so such
// strides get one cache line more.
template <class Act>
int64_t packed_stride(int64_t Kp) {
  const int64_t bytes = Kp * int64_t(sizeof(Act));
  return bytes % 1024 == 0 ? Kp + 64 / int64_t(sizeof(Act)) : Kp;
}

// Packs (quantizes or copies) every activation row once, in parallel over rows.
template <class T, class Aux>
void pack_rows(const float* x, int64_t ldx, int64_t M, int64_t K, int64_t Kp, int64_t lda, typename T::Act* act,
               Aux aux) {
  const int64_t grain = std::max<int64_t>(1, 32768 / K);
  parallel_for(M, grain, [&](int64_t b, int64_t e) {
    for (int64_t m = b; m < e; ++m) T::pack_row(x + m * ldx, K, Kp, act + m * lda, aux, m);
  });
}

// One tile kernel call: activation rows a[0, mr) (stride lda) times weight rows
// w[0, nr) (stride ldw) over klen values of K, into c[mr][nr] (stride ldc),
// added to c when `accumulate`. `next`, when not null, is the first of nr
// weight rows (stride ldw, klen bytes each) that memory will deliver next; the
// kernel prefetches them while it computes (RowPrefetcher).
template <class Act, class Acc>
struct Tile {
  int mr, nr;
  const Act* a;
  int64_t lda;
  const int8_t* w;
  int64_t ldw, klen;
  Acc* c;
  int64_t ldc;
  bool accumulate;
  const int8_t* next;
  int next_rows;  // rows of `next` (stride ldw, klen bytes each)
};

// Walks weight rows a cache line per call of step(), for Tile::next; a tile
// calls it often enough to cover its nr rows of klen bytes.
class RowPrefetcher {
 public:
  RowPrefetcher(const int8_t* rows, int64_t ld, int nrows, int64_t bytes)
      : row_(rows), ld_(ld), bytes_(bytes), left_(rows ? nrows : 0) {}
  void step() {
    if (left_ == 0) return;
    __builtin_prefetch(row_ + offset_, 0, 3);
    offset_ += 64;
    if (offset_ >= bytes_) {
      offset_ = 0;
      row_ += ld_;
      --left_;
    }
  }

 private:
  const int8_t* row_;
  int64_t ld_, bytes_, offset_ = 0;
  int left_;
};

// m tiles over which run_blocks spreads the prefetch of the next block. Before, the first m tile of each block
// fetched it, tile by tile, and waited on memory while the later m tiles found it in cache: AVX2 reduce-range,
// 4096x4096, M = 16, cold weights, 2 threads: C++ harness, five alternating runs, 1.70-1.81 ms against
// 1.84-1.97 ms; `pycomp bench`, three alternating runs on a quiet machine, 1.69-1.73 against 1.77-1.78 (M = 128
// 12.4-13.1 against 12.6-13.8).
constexpr int64_t kPrefetchPasses = 4;

// Runs the tile kernels over one task's output block, handing each finished
// (m block, n panel) of accumulators to `epilogue(acc, ldc, m0, mlen, n0, nlen)`.
// Loop order: m block, n panel, k block, m tile, n tile. The m tiles of each
// (n panel, k block) read its weights from cache: the tiles of the last
// kPrefetchPasses m tiles of the block before prefetched them, each its share
// of the rows. GEMV blocks (a single m tile) prefetch the next tile's weights
// in each tile, and only where T::kGemvPrefetch: the AVX2 W8A8 GEMVs streamed 8-14% faster
// at M=1 on Zen 3 without it (prefetching the next nr rows x K bytes evicts
// lines of the current tile from L1, and the hardware prefetchers keep up).
template <class T, class Acc, class Epilogue>
void run_blocks(const Blocking& b, const typename T::Act* act, int64_t lda, const int8_t* w, int64_t K,
                int64_t m0, int64_t m1, int64_t n0, int64_t n1, const Epilogue& epilogue) {
  Scratch<Acc> acc(b.mc * b.nc);
  const int64_t ldc = b.nc;
  for (int64_t mb = m0; mb < m1; mb += b.mc) {
    const int64_t mlen = std::min(b.mc, m1 - mb);
    for (int64_t nb = n0; nb < n1; nb += b.nc) {
      const int64_t nlen = std::min(b.nc, n1 - nb);
      for (int64_t kb = 0; kb < K; kb += b.kc) {
        const int64_t klen = std::min(b.kc, K - kb);
        const int8_t* next_block = kb + b.kc < K    ? w + nb * K + kb + b.kc
                                   : nb + nlen < n1 ? w + (nb + nlen) * K
                                                    : nullptr;
        // Several m tiles: every tile of the last kPrefetchPasses m tiles prefetches its share of the next block's
        // rows, so the next block is in cache when its first m tile starts. One m tile (GEMV): each tile
        // prefetches the next one's rows.
        const int64_t mtiles = ceil_div(mlen, b.mr), ntiles = ceil_div(nlen, b.nr);
        const int64_t spread = std::min(mtiles, kPrefetchPasses), tiles = spread * ntiles;
        const int64_t next_rows = kb + b.kc < K ? nlen : nb + nlen < n1 ? std::min(b.nc, n1 - nb - nlen) : 0;
        for (int64_t mt = 0; mt < mtiles; ++mt)
          for (int64_t nt = 0; nt < ntiles; ++nt) {
            const int8_t* next = nullptr;
            int rows = 0;
            if (mtiles > 1 && mt >= mtiles - spread) {
              const int64_t t = (mt - (mtiles - spread)) * ntiles + nt, r0 = next_rows * t / tiles,
                            r1 = next_rows * (t + 1) / tiles;
              if (r1 > r0) next = next_block + r0 * K, rows = int(r1 - r0);
            } else if (mtiles == 1 && T::kGemvPrefetch) {
              const int64_t nr = std::min<int64_t>(b.nr, nlen - (nt + 1) * b.nr);
              next = nr > 0 ? w + (nb + (nt + 1) * b.nr) * K + kb : next_block;
              rows = int(nr > 0 ? nr : std::min<int64_t>(b.nr, next_rows));  // none where next is null
            }
            T::tile(b, Tile<typename T::Act, Acc>{int(std::min<int64_t>(b.mr, mlen - mt * b.mr)),
                                                  int(std::min<int64_t>(b.nr, nlen - nt * b.nr)),
                                                  act + (mb + mt * b.mr) * lda + kb, lda, w + (nb + nt * b.nr) * K + kb,
                                                  K, klen, acc.get() + mt * b.mr * ldc + nt * b.nr, ldc, kb > 0, next,
                                                  rows});
          }
      }
      epilogue(acc.get(), ldc, mb, mlen, nb, nlen);
    }
  }
}

// Row data the W8A8 pack step fills in: the activation scale and, for traits
// with kCorrection, sum_k q[m, k].
struct DynamicAux {
  float* scale;
  int32_t* qsum;
};

// The W8A8 epilogue of one output row, in fp32 and in the reference's order, so every kernel agrees bit for
// bit: out[j] = float(dot(j)) * s * wscale[j] (+ bias[j]); dot(j) is the row's exact int32 dot product.
template <class Dot>
inline void dequant_row(float* o, float s, const float* wscale, const float* bias, int64_t n, Dot&& dot) {
  for (int64_t j = 0; j < n; ++j) {
    float v = float(dot(j)) * s;
    v = v * wscale[j];
    o[j] = bias ? v + bias[j] : v;
  }
}

template <class T>
void linear_dynamic(const float* x, int64_t ldx, const int8_t* w, const float* wscale, const float* bias,
                    float* out, int64_t ldo, int64_t M, int64_t N, int64_t K) {
  const int64_t Kp = round_up(K, T::kStep), lda = packed_stride<typename T::Act>(Kp);
  Scratch<typename T::Act> act(M * lda);
  Scratch<float> scale(M);
  Scratch<int32_t> qsum(T::kCorrection ? M : 0);
  pack_rows<T>(x, ldx, M, K, Kp, lda, act.get(), DynamicAux{scale.get(), qsum.get()});
  const Blocking b = T::blocking(M, K);
  parallel_tiles(M, N, K, b, [&](int64_t m0, int64_t m1, int64_t n0, int64_t n1) {
    run_blocks<T, int32_t>(
        b, act.get(), lda, w, K, m0, m1, n0, n1,
        [&](const int32_t* acc, int64_t ldc, int64_t mb, int64_t mlen, int64_t nb, int64_t nlen) {
          for (int64_t i = 0; i < mlen; ++i) {
            const int64_t m = mb + i;
            // (w + 128) . q - 128 * sum q, in wrapping int32: exact whenever the true dot fits.
            const uint32_t corr = T::kCorrection ? uint32_t(qsum[m]) << 7 : 0u;
            const int32_t* a = acc + i * ldc;
            dequant_row(out + m * ldo + nb, scale[m], wscale + nb, bias ? bias + nb : nullptr, nlen,
                        [&](int64_t j) { return int32_t(uint32_t(a[j]) - corr); });
          }
        });
  });
}

// Row data the reduce-range pack step fills in: the activation scale and zero point.
struct ReduceRangeAux {
  float* scale;
  int32_t* zp;
};

// W8A8 with 7-bit activations: tiles return sum_k q * w (exact: pairs of u8 x s8
// products stay below 2^15); the epilogue subtracts zp * wsum in wrapping int32,
// exact whenever the true dot fits.
template <class T>
void linear_reduce_range(const float* x, int64_t ldx, const int8_t* w, const float* wscale, const int32_t* wsum,
                         const float* bias, float* out, int64_t ldo, int64_t M, int64_t N, int64_t K) {
  const int64_t Kp = round_up(K, T::kStep), lda = packed_stride<uint8_t>(Kp);
  Scratch<uint8_t> act(M * lda);
  Scratch<float> scale(M);
  Scratch<int32_t> zp(M);
  pack_rows<T>(x, ldx, M, K, Kp, lda, act.get(), ReduceRangeAux{scale.get(), zp.get()});
  const Blocking b = T::blocking(M, K);
  parallel_tiles(M, N, K, b, [&](int64_t m0, int64_t m1, int64_t n0, int64_t n1) {
    run_blocks<T, int32_t>(
        b, act.get(), lda, w, K, m0, m1, n0, n1,
        [&](const int32_t* acc, int64_t ldc, int64_t mb, int64_t mlen, int64_t nb, int64_t nlen) {
          for (int64_t i = 0; i < mlen; ++i) {
            const int64_t m = mb + i;
            const uint32_t z = uint32_t(zp[m]);
            const int32_t* a = acc + i * ldc;
            dequant_row(out + m * ldo + nb, scale[m], wscale + nb, bias ? bias + nb : nullptr, nlen,
                        [&](int64_t j) { return int32_t(uint32_t(a[j]) - z * uint32_t(wsum[nb + j])); });
          }
        });
  });
}

template <class T>
void linear_weight_only(const float* x, int64_t ldx, const int8_t* w, const float* wscale, const float* bias,
                        float* out, int64_t ldo, int64_t M, int64_t N, int64_t K) {
  const int64_t Kp = round_up(K, T::kStep), lda = packed_stride<float>(Kp);
  Scratch<float> act(M * lda);
  pack_rows<T>(x, ldx, M, K, Kp, lda, act.get(), nullptr);
  const Blocking b = T::blocking(M, K);
  parallel_tiles(M, N, K, b, [&](int64_t m0, int64_t m1, int64_t n0, int64_t n1) {
    run_blocks<T, float>(b, act.get(), lda, w, K, m0, m1, n0, n1,
                         [&](const float* acc, int64_t ldc, int64_t mb, int64_t mlen, int64_t nb, int64_t nlen) {
                           for (int64_t i = 0; i < mlen; ++i) {
                             float* o = out + (mb + i) * ldo + nb;
                             const float* a = acc + i * ldc;
                             for (int64_t j = 0; j < nlen; ++j) {
                               const float v = a[j] * wscale[nb + j];
                               o[j] = bias ? v + bias[nb + j] : v;
                             }
                           }
                         });
  });
}

// --------------------------------------------------------------- small N, large M
//
// A conv layer's im2col GEMM (M = batch * H * W rows, N = output channels,
// K = in_channels * kh * kw) has few weights, hot in cache, and many rows. The
// dot-product tiles above then spend much of their time on a horizontal sum
// per output and on tile calls. The small-N tiles keep outputs in vector lanes
// along N instead: the weights are packed once per call into panels of
// T::kCols columns, interleaved by K step (T::kKStep values of K per lane),
// and each step broadcasts one K step of an activation row against the
// panel's vectors, with the epilogue fused into the tile. Each thread packs
// (quantizes) its rows a block at a time, and the block stays in cache while
// every panel meets it (W8A32 reads x in place). The int32 dots are exact, so
// W8A8 outputs (both quantizations) equal the dot-product kernels' bit for bit;
// W8A32 sums K in order.
//
// The traits contract (int8_avx2.cpp):
//   using Act, WAct;             activation / packed weight element types
//   kRows, kCols, kKStep         register tile rows, panel columns, K values per step
//   kPackRows                    whether rows are packed (W8A8: quantized); if not,
//                                the tiles read x in place (Act is float, kKStep 1)
//   pack_row(x, K, Kp, act, zp)  with kPackRows: packs one row (zero-padded to Kp; it may
//                                write up to the next 64-byte boundary), returns its scale
//                                and stores its zero point to *zp (reduce-range only)
//   tile(SmallNTile)             one kRows x kCols tile over all of K, epilogue included

// One small-N tile: activation rows a[0, rows) (stride lda) against one weight
// panel w (steps x kCols x kKStep), written to out rows [0, rows) and columns
// [0, cols): out = acc * row_scale[i] * wscale[j] + bias[j] (W8A8; reduce-range
// with acc - row_zp[i] * wsum[j] in wrapping int32 for acc) or
// acc * wscale[j] + bias[j] (W8A32), bias optional. A tile with fewer than
// kRows rows reads its last row again in place of the missing ones and
// stores nothing for them. wscale, bias and wsum hold kCols values, zero past cols.
template <class Act, class WAct>
struct SmallNTile {
  const Act* a;
  int64_t lda;
  const float* row_scale;
  const int32_t* row_zp;
  const WAct* w;
  int64_t steps;
  const float* wscale;
  const float* bias;
  const int32_t* wsum;
  float* out;
  int64_t ldo;
  int rows, cols;
};

// The shapes the small-N tiles serve: weights small enough to pack per call
// (at most 1 MB packed), and enough rows to repay the packing, which costs
// about as much as a row's share of the work at M = K / 2 (Zen 3: M = 64..256
// with K = 1024..4096 ran slower than the dot-product tiles, M >= K / 2 faster
// or level).
inline bool small_n_shape(int64_t M, int64_t N, int64_t K) {
  return M >= 64 && N <= 128 && K <= 4096 && 2 * M >= K;
}

// wsum: the reduce-range column sums (int8_linear.h), nullptr for the other modes.
template <class T>
void linear_small_n(const float* x, int64_t ldx, const int8_t* w, const float* wscale, const float* bias,
                    float* out, int64_t ldo, int64_t M, int64_t N, int64_t K, const int32_t* wsum = nullptr) {
  using Act = typename T::Act;
  using WAct = typename T::WAct;
  constexpr int64_t R = T::kRows, C = T::kCols, S = T::kKStep;
  const int64_t steps = ceil_div(K, S), Kp = steps * S, panels = ceil_div(N, C), panel_len = steps * C * S;
  Scratch<WAct> wp(panels * panel_len);
  Scratch<float> ws(panels * C), bs(bias ? panels * C : 0);
  Scratch<int32_t> sums(wsum ? panels * C : 0);
  std::fill(wp.get(), wp.get() + panels * panel_len, WAct(0));
  for (int64_t n = 0; n < N; ++n) {
    WAct* dst = wp.get() + n / C * panel_len + n % C * S;  // column n % C of panel n / C
    const int8_t* src = w + n * K;
    for (int64_t k = 0; k < K; ++k) dst[k / S * (C * S) + k % S] = WAct(src[k]);
  }
  for (int64_t n = 0; n < panels * C; ++n) {
    ws[n] = n < N ? wscale[n] : 0.f;
    if (bias) bs[n] = n < N ? bias[n] : 0.f;
    if (wsum) sums[n] = n < N ? wsum[n] : 0;
  }
  // Row blocks of about 48 KB of activations (L2), whole register tiles; packed
  // rows padded to whole cache lines, so that pack_row may store whole vectors.
  const int64_t lda = T::kPackRows ? packed_stride<Act>(round_up(Kp, 64 / int64_t(sizeof(Act)))) : ldx;
  const int64_t mb = R * std::clamp<int64_t>((48 << 10) / (R * Kp * int64_t(sizeof(Act))), 1, 16);
  const int64_t blocks = ceil_div(M, mb);
  parallel_for(blocks, M * N * K < kMinParallelMacs ? blocks : 1, [&](int64_t b0, int64_t b1) {
    Scratch<Act> act(T::kPackRows ? mb * lda : 0);
    Scratch<float> scale(T::kPackRows ? mb : 0);
    Scratch<int32_t> zp(T::kPackRows ? mb : 0);
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t m0 = b * mb, rows = std::min(mb, M - m0);
      const Act* a = nullptr;
      if constexpr (T::kPackRows) {
        for (int64_t i = 0; i < rows; ++i)
          scale[i] = T::pack_row(x + (m0 + i) * ldx, K, Kp, act.get() + i * lda, zp.get() + i);
        a = act.get();
      } else {
        a = x + m0 * ldx;
      }
      for (int64_t p = 0; p < panels; ++p)
        for (int64_t i = 0; i < rows; i += R)
          T::tile(SmallNTile<Act, WAct>{a + i * lda, lda, T::kPackRows ? scale.get() + i : nullptr,
                                        T::kPackRows ? zp.get() + i : nullptr, wp.get() + p * panel_len, steps,
                                        ws.get() + p * C, bias ? bs.get() + p * C : nullptr,
                                        wsum ? sums.get() + p * C : nullptr, out + (m0 + i) * ldo + p * C, ldo,
                                        int(std::min(R, rows - i)), int(std::min(C, N - p * C))});
    }
  });
}

// Activation quantization alone (the quantize_per_token_int8 op): q has row stride K.
template <class RowFn>
void quantize_rows(const float* x, int64_t ldx, int8_t* q, float* scale, int64_t M, int64_t K, const RowFn& row) {
  const int64_t grain = std::max<int64_t>(1, 32768 / K);
  parallel_for(M, grain, [&](int64_t b, int64_t e) {
    for (int64_t m = b; m < e; ++m) scale[m] = row(x + m * ldx, K, q + m * K);
  });
}

// The reduce-range quantization alone (the quantize_per_token_uint7 op): q has row stride K;
// row(x, K, q) returns the row's Uint7Params.
template <class RowFn>
void quantize_uint7_rows(const float* x, int64_t ldx, uint8_t* q, float* scale, int32_t* zp, int64_t M, int64_t K,
                         const RowFn& row) {
  const int64_t grain = std::max<int64_t>(1, 32768 / K);
  parallel_for(M, grain, [&](int64_t b, int64_t e) {
    for (int64_t m = b; m < e; ++m) {
      const Uint7Params p = row(x + m * ldx, K, q + m * K);
      scale[m] = p.scale;
      zp[m] = int32_t(p.zp);
    }
  });
}

}  // namespace pycomp::cpu::int8
