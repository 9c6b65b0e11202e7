// Blocking, threading and activation packing shared by every ISA's int4 kernels.
//
// Each ISA file (int4_portable.cpp, int4_avx2.cpp, int4_avx512.cpp) supplies a
// traits struct with V, its vector width in fp32 lanes, its blocking constants
// and the kernels below; the drivers here are plain C++ instantiated once per ISA.
//
// Unpacking V bytes of a weight row into 32-bit lanes gives the low nibbles
// (columns 0, 2, .., 2V-2 of a 2V-column "chunk") with one AND and the high
// nibbles (columns 1, 3, .., 2V-1) with one shift. Rather than interleave them
// back, each call permutes x once into the same order: per chunk, its V
// even-column values then its V odd-column values, rows zero-padded to whole
// chunks. Every group size (32, 64, 128) is a multiple of 2V for V <= 16, so a
// chunk never straddles two groups. The zero padding also covers the padding
// nibble of odd K and the zero-filled copy a kernel reads for a row's last,
// partial chunk (weights past a row's end are not ours to read).
//
// GEMV (M <= Traits::kGemvMaxM): each weight row is unpacked in registers and
// met by up to kGemvMaxMr activation rows at once; larger M takes several such
// passes over each block of weight rows, which stays in L2 between passes, so
// the weights are still read from memory once. The x86 kernels apply zero
// point and scale per group, from per-group sums of x (GemvTask::xsum), after
// Traits::prepare_gemv_x has rewritten the packed x. Up to M = 16-24 the passes
// beat the GEMM, whose dequantized panel is then reused too few times to pay
// for its stores and reloads (AVX2, 4096x4096: M = 5 2.9x, 8 1.9x, 16 1.3x faster).
//   Traits::prepare_gemv_x(xp, lda, M, Kp)
//   Traits::gemv(const GemvTask&)              rows [n0, n1) for t.mr <= kGemvMaxMr rows
// GEMM (larger M, compute-bound): per (n panel, k block) the weights are
// dequantized once into an fp32 panel (same permuted order, L2-resident);
// register tiles of kNr weight rows x kMt activation rows then broadcast each
// weight against a vector of activation rows (x transposed, pack_xt).
//   Traits::dequant(const Int4Weights&, n0, rows, c0, c1, panel, ldp)
//   Traits::gemm_tile(const GemmTile&)
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>
#include <utility>

#include "cpu/parallel.h"
#include "cpu/scratch.h"
#include "cpu/xrows.h"

namespace pycomp::cpu::int4 {

constexpr int kSymmetricZero = 8;
// The most activation rows one GEMV pass meets (the register tiles' MR).
constexpr int kGemvMaxMr = 4;
// Weight bytes per GEMV row block: every pass of a block after the first finds its rows in L2.
constexpr int64_t kGemvBlockBytes = 64 << 10;
// Below this many multiply-adds a call runs on one thread: waking the pool costs more than the work.
constexpr int64_t kMinParallelMacs = int64_t(1) << 18;

// The weight in the k-nibble layout plus its chunk geometry for a V-lane ISA.
struct Int4Weights {
  const uint8_t* packed;
  const uint16_t* scales;
  const uint8_t* zeros;  // nullptr: symmetric
  int64_t K, Kb, G;      // Kb = ceil(K / 2) bytes per row
  int gs;
  int64_t chunks, full;  // chunks per row (ceil(Kb / V)); the first `full` of them lie wholly inside the row
  int chunks_per_group;  // gs / (2V)

  int zero(int64_t n, int64_t g) const { return zeros ? zeros[n * G + g] : kSymmetricZero; }

  // Bytes of chunk t of row n: in place, or a zero-filled copy of the row's partial last chunk in `tail`.
  const uint8_t* chunk(int64_t n, int64_t t, int V, uint8_t* tail) const {
    const uint8_t* p = packed + n * Kb + t * V;
    if (t < full) return p;
    std::memset(tail, 0, size_t(V));
    std::memcpy(tail, p, size_t(Kb - t * V));
    return tail;
  }
};

// Activations permuted for the chunk order (see the header comment): (M, Kp) fp32, row stride lda.
struct PackedX {
  const float* p;
  int64_t lda;
};

struct GemvTask {
  const Int4Weights* w;
  PackedX x;
  const float* xsum;  // (M, G, V): lane l of group g sums the permuted x over the group's chunks at l and V + l
  int64_t ldxs;       // G * V
  int mr;             // activation rows, 1..kGemvMaxMr
  int64_t n0, n1;
  const float* bias;
  float* out;
  int64_t ldo;
};

// c[j * ldc + i] (j < nr weight rows, i < mv * V activation rows) = (accumulate ? c : 0)
//   + sum_k w[j * ldw + k] * xt[k * kMt + i], k < klen.
struct GemmTile {
  int mv, nr;
  const float* xt;  // activations, k-major: kMt (the tile width) values per k
  const float* w;
  int64_t ldw, klen;
  float* c;
  int64_t ldc;
  bool accumulate;
};

// x's 16-bit types become float32 here, exactly, as the values are copied.
template <int V>
void pack_x(const XRows& x, int64_t M, int64_t K, int64_t Kp, float* xp, int64_t lda) {
  const int64_t grain = std::max<int64_t>(1, 32768 / K);
  visit(x, [&](const auto* xe) {
    parallel_for(M, grain, [&](int64_t b, int64_t e) {
      for (int64_t m = b; m < e; ++m) {
        const auto* xr = xe + m * x.ld;
        float* o = xp + m * lda;
        for (int64_t c = 0; c < Kp; c += 2 * V)
          for (int l = 0; l < V; ++l) {
            const int64_t k = c + 2 * l;
            o[c + l] = k < K ? to_f32(xr[k]) : 0.f;
            o[c + V + l] = k + 1 < K ? to_f32(xr[k + 1]) : 0.f;
          }
      }
    });
  });
}

// The GEMM's activations: x transposed into tiles of MT rows, xt[(t * Kp + k) * MT + i]
// = x[t * MT + i, k] in the chunk order, zero past M and K.
template <int V, int MT>
void pack_xt(const XRows& x, int64_t M, int64_t K, int64_t Kp, float* xt) {
  const int64_t tiles = ceil_div(M, MT);
  visit(x, [&](const auto* xe) {
    parallel_for(tiles, 1, [&](int64_t b, int64_t e) {
      for (int64_t t = b; t < e; ++t) {
        float* o = xt + t * Kp * MT;
        const int64_t rows = std::min<int64_t>(MT, M - t * MT);
        if (rows < MT) std::memset(o, 0, sizeof(float) * size_t(Kp * MT));
        for (int64_t i = 0; i < rows; ++i) {
          const auto* xr = xe + (t * MT + i) * x.ld;
          for (int64_t c = 0; c < Kp; c += 2 * V)
            for (int l = 0; l < V; ++l) {
              const int64_t k = c + 2 * l;
              o[(c + l) * MT + i] = k < K ? to_f32(xr[k]) : 0.f;
              o[(c + V + l) * MT + i] = k + 1 < K ? to_f32(xr[k + 1]) : 0.f;
            }
        }
      }
    });
  });
}

// For the x86 GEMVs: per chunk, the odd-column values x_o become x_o / 16 and the
// even ones x_e become x_e - x_o / 16. A kernel then needs the low nibble lo
// and the whole byte b = lo + 16 hi of each weight pair but not hi itself:
// lo (x_e - x_o / 16) + b x_o / 16 = lo x_e + hi x_o. Saves a shift per 8 weights.
template <int V>
void fold_high_nibbles(float* xp, int64_t lda, int64_t M, int64_t Kp) {
  for (int64_t m = 0; m < M; ++m)
    for (int64_t c = 0; c < Kp; c += 2 * V)
      for (int l = 0; l < V; ++l) {
        float* e = xp + m * lda + c + l;
        e[V] *= 1.f / 16;
        e[0] -= e[V];
      }
}

// Splits the (M, N) output over the threads: N first (each thread streams its
// own weight rows once), M as well when N has too few units to go round.
template <class Fn>
void parallel_tasks(int64_t M, int64_t N, int64_t K, int64_t m_unit, int64_t n_unit, const Fn& fn) {
  const int64_t threads = M * N * K < kMinParallelMacs ? 1 : std::max(1, num_threads());
  const int64_t n_units = ceil_div(N, n_unit), m_units = ceil_div(M, m_unit);
  const int64_t tn = std::min(threads, n_units);
  const int64_t tm = std::min(std::max<int64_t>(threads / tn, 1), m_units);
  auto range = [](int64_t units, int64_t parts, int64_t i, int64_t unit, int64_t limit) {
    return std::make_pair(std::min(units * i / parts * unit, limit), std::min(units * (i + 1) / parts * unit, limit));
  };
  parallel_for(tn * tm, 1, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const auto [m0, m1] = range(m_units, tm, t / tn, m_unit, M);
      const auto [n0, n1] = range(n_units, tn, t % tn, n_unit, N);
      if (m0 < m1 && n0 < n1) fn(m0, m1, n0, n1);
    }
  });
}

// The GEMV schedule: M in passes of at most kGemvMaxMr rows, as even as can be (5 = 3 + 2), each pass over one
// block of weight rows at a time (every pass after the first finds the block in L2), N split over the threads in
// units of n_unit rows. fn(m0, m1, b0, b1): rows [m0, m1) of x against weight rows [b0, b1). 24 rows per block:
// whole tiles for every ISA's tile heights (2..8).
template <class Fn>
void gemv_passes(int64_t M, int64_t N, int64_t K, int64_t Kb, int64_t n_unit, const Fn& fn) {
  const int64_t passes = ceil_div(M, kGemvMaxMr);
  const int64_t block = std::max<int64_t>(1, kGemvBlockBytes / Kb / 24) * 24;
  parallel_tasks(1, N, M * K, 1, n_unit, [&](int64_t, int64_t, int64_t n0, int64_t n1) {
    for (int64_t b0 = n0; b0 < n1; b0 += passes > 1 ? block : n1 - n0) {
      const int64_t b1 = passes > 1 ? std::min(n1, b0 + block) : n1;
      for (int64_t p = 0; p < passes; ++p) fn(M * p / passes, M * (p + 1) / passes, b0, b1);
    }
  });
}

// Bytes [b0, b1) of weight rows [n0, n1), fetched while the GEMMs compute the block before: a block reads a few
// cache lines from each of many rows, too short a run for the hardware prefetcher.
inline void prefetch_rows(const Int4Weights& w, int64_t n0, int64_t n1, int64_t b0, int64_t b1) {
  for (int64_t n = n0; n < n1; ++n)
    for (int64_t b = b0; b < b1; b += 64) __builtin_prefetch(w.packed + n * w.Kb + b);
}

template <class T>
void w4a16_linear(const XRows& x, const uint8_t* packed, const uint16_t* scales, const uint8_t* zeros,
                  const float* bias, float* out, int64_t ldo, int64_t M, int64_t N, int64_t K, int gs) {
  constexpr int V = T::V;
  const int64_t Kb = (K + 1) / 2;
  const Int4Weights w{packed, scales, zeros, K, Kb, ceil_div(K, gs), gs, ceil_div(Kb, V), Kb / V, gs / (2 * V)};
  const int64_t Kp = w.chunks * 2 * V;

  if (M <= T::kGemvMaxM) {
    // Rows a multiple of 1 KB apart would share L1 sets (a tile reads several rows at one offset).
    const int64_t lda = (Kp * 4) % 1024 == 0 ? Kp + 16 : Kp;
    Scratch<float> xp(M * lda);
    pack_x<V>(x, M, K, Kp, xp.get(), lda);
    const PackedX px{xp.get(), lda};
    const int64_t ldxs = w.G * V;
    Scratch<float> xsum(M * ldxs);
    for (int64_t m = 0; m < M; ++m)
      for (int64_t g = 0; g < w.G; ++g) {
        float* o = xsum.get() + m * ldxs + g * V;
        std::fill(o, o + V, 0.f);
        const int64_t c1 = std::min<int64_t>((g + 1) * w.chunks_per_group, w.chunks);
        for (int64_t c = g * w.chunks_per_group; c < c1; ++c)
          for (int l = 0; l < V; ++l) o[l] += px.p[m * lda + c * 2 * V + l] + px.p[m * lda + c * 2 * V + V + l];
      }
    T::prepare_gemv_x(xp.get(), lda, M, Kp);
    gemv_passes(M, N, K, w.Kb, T::kGemvNr, [&](int64_t m0, int64_t m1, int64_t b0, int64_t b1) {
      T::gemv(GemvTask{&w, PackedX{px.p + m0 * lda, lda}, xsum.get() + m0 * ldxs, ldxs, int(m1 - m0), b0, b1, bias,
                       out + m0 * ldo, ldo});
    });
    return;
  }

  // GEMM: per (n panel, k block) the weights are dequantized once into an fp32
  // panel that every activation tile then reads; each tile's sums build up in
  // ct, transposed (weight rows by activation rows), written out with the bias
  // once the panel has seen all of K.
  constexpr int MT = T::kMt;
  Scratch<float> xt(ceil_div(M, MT) * Kp * MT);
  pack_xt<V, MT>(x, M, K, Kp, xt.get());
  const int64_t nc = T::kPanelRows, kc = T::kPanelK;  // kc: a multiple of 2V
  parallel_tasks(M, N, K, MT, T::kNr, [&](int64_t m0, int64_t m1, int64_t n0, int64_t n1) {
    const int64_t ldc = round_up(m1 - m0, MT);
    Scratch<float> panel(nc * kc), ct(nc * ldc);
    for (int64_t nb = n0; nb < n1; nb += nc) {
      const int64_t nlen = std::min(nc, n1 - nb);
      for (int64_t kb = 0; kb < Kp; kb += kc) {
        const int64_t klen = std::min(kc, Kp - kb);
        T::dequant(w, nb, nlen, kb / (2 * V), (kb + klen) / (2 * V), panel.get(), kc);
        // The next block's weight bytes, fetched while this one's tiles compute.
        const bool last_k = kb + kc >= Kp;
        const int64_t pn = last_k ? nb + nc : nb, pb0 = (last_k ? 0 : kb + kc) / 2;
        prefetch_rows(w, pn, std::min(pn + nc, n1), pb0, std::min(pb0 + kc / 2, w.Kb));
        for (int64_t mt = m0; mt < m1; mt += MT) {
          const int mv = int(ceil_div(std::min<int64_t>(MT, m1 - mt), V));
          const float* xtile = xt.get() + (mt / MT * Kp + kb) * MT;
          for (int64_t nt = 0; nt < nlen; nt += T::kNr)
            T::gemm_tile(GemmTile{mv, int(std::min<int64_t>(T::kNr, nlen - nt)), xtile, panel.get() + nt * kc, kc, klen,
                                  ct.get() + nt * ldc + (mt - m0), ldc, kb > 0});
        }
      }
      for (int64_t m = m0; m < m1; ++m)
        for (int64_t j = 0; j < nlen; ++j)
          out[m * ldo + nb + j] = ct[j * ldc + m - m0] + (bias ? bias[nb + j] : 0.f);
    }
  });
}

// Fn::template run<MR, NR> for MR in 1..MaxMR and NR in 1..MaxNR, indexed by the runtime tile shape.
template <class Fn, int MaxMR, int MaxNR, class Arg>
struct TileTable {
  using F = void (*)(const Arg&);
  static void call(int mr, int nr, const Arg& arg) { fns[(mr - 1) * MaxNR + (nr - 1)](arg); }

 private:
  template <int... I>
  static constexpr std::array<F, sizeof...(I)> make(std::integer_sequence<int, I...>) {
    return {{&Fn::template run<I / MaxNR + 1, I % MaxNR + 1>...}};
  }
  static constexpr std::array<F, MaxMR * MaxNR> fns = make(std::make_integer_sequence<int, MaxMR * MaxNR>{});
};

}  // namespace pycomp::cpu::int4
