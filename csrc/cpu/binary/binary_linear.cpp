// ISA choice and the threaded driver of the binary kernels; the inner loops are in
// binary_portable.cpp, binary_avx2.cpp and binary_avx512.cpp.
#include "cpu/binary/binary_linear.h"

#include <algorithm>
#include <cstdlib>
#include <stdexcept>
#include <vector>

#include "cpu/cpu_features.h"
#include "cpu/parallel.h"
#include "cpu/scratch.h"

namespace pycomp::cpu::binary {

using cpu::ceil_div;
using cpu::Scratch;

namespace {

bool supported(BinaryIsa isa) {
  const CpuFeatures& f = cpu_features();
  switch (isa) {
    case BinaryIsa::portable:
      return true;
    case BinaryIsa::avx2:
      return f.avx2;
    case BinaryIsa::avx512:
      return f.avx2 && f.avx512f && f.avx512bw && f.avx512vl && f.avx512vpopcntdq;
  }
  return false;
}

BinaryIsa parse_name(const std::string& name) {
  if (name == "portable") return BinaryIsa::portable;
  if (name == "avx2") return BinaryIsa::avx2;
  if (name == "avx512") return BinaryIsa::avx512;
  throw std::invalid_argument("unknown binary CPU ISA '" + name + "' (expected portable, avx2 or avx512)");
}

detail::Kernels kernels(BinaryIsa isa) {
#if defined(__x86_64__)
  if (isa == BinaryIsa::avx512) return detail::avx512_kernels();
  if (isa == BinaryIsa::avx2) return detail::avx2_kernels();
#endif
  (void)isa;
  return detail::portable_kernels();
}

// Words of K per block of the W1A32 GEMM: 1024 inputs, a 4 KB row of x.
constexpr int64_t kDotBlockWords = 32;
// Rows of x from which the XNOR table path (where the ISA has one) beats xor_popc: it transposes the weights
// once per call. (AVX2, 4096x4096, 2 threads: M = 2 0.13 against 0.10 ms, M = 4 0.16 against 0.17-0.18, M = 6
// 0.18 against 0.26.)
constexpr int64_t kXnorLutMinM = 4;
// XNOR table path blocking: words of K per pass over the pairs of x rows (their 16 KB of prepared weight rows stay
// in L1 while every pair passes under them); pairs of x rows per block (their 16-bit counts and float sums,
// 48 KB, stay in L2); words per run of 16-bit counts (32 per word at most: 2047 * 32 < 65536).
constexpr int64_t kXnorChunkWords = 16, kXnorPairBlock = 32, kXnorSpanWords = 2047;
// Rows of x up to which the W1A32 table path (where the ISA has one) beats signed_dot (A/B at 4096x4096: 1.3-1.9x
// for M = 1..64, even at M = 128); its tables take 11 KB per 1024 inputs per row of x.
constexpr int64_t kLutMaxM = 64;
// Largest mr * nr tile of any ISA.
constexpr int kMaxTile = 128;

// Rows of weights per parallel task: enough work per task to amortize the dispatch.
int64_t grain_rows(int64_t M, int64_t KW) { return std::max<int64_t>(8, 65536 / std::max<int64_t>(1, M * KW)); }

}  // namespace

BinaryIsa best_binary_isa() {
  static const BinaryIsa best = [] {
    BinaryIsa isa = BinaryIsa::portable;
    for (BinaryIsa cand : {BinaryIsa::avx2, BinaryIsa::avx512})
      if (supported(cand)) isa = cand;
    // The shared cap of every CPU family (cpu_features.h): "portable" and "avx2" cap this one too.
    if (const char* cap = std::getenv("PYCOMP_CPU_ISA"); cap && *cap) {
      const std::string c(cap);
      if (c == "portable") isa = BinaryIsa::portable;
      if (c == "avx2" && isa == BinaryIsa::avx512) isa = BinaryIsa::avx2;
    }
    return isa;
  }();
  return best;
}

std::string binary_isa_name(BinaryIsa isa) {
  switch (isa) {
    case BinaryIsa::portable:
      return "portable";
    case BinaryIsa::avx2:
      return "avx2";
    case BinaryIsa::avx512:
      return "avx512";
  }
  return "unknown";
}

BinaryIsa parse_binary_isa(const std::string& name) {
  if (name.empty()) return best_binary_isa();
  const BinaryIsa isa = parse_name(name);
  if (!supported(isa)) throw std::invalid_argument("this CPU cannot run the '" + name + "' binary kernels");
  return isa;
}

void binarize_rows_f32(BinaryIsa isa, const float* x, int64_t ldx, int64_t M, int64_t K, uint32_t* bits,
                       float* beta) {
  const detail::BinarizeRowFn fn = kernels(isa).binarize_row;
  const int64_t KW = (K + 31) / 32;
  parallel_for(M, std::max<int64_t>(1, 16384 / K), [&](int64_t m0, int64_t m1) {
    for (int64_t m = m0; m < m1; ++m) beta[m] = fn(x + m * ldx, K, bits + m * KW);
  });
}

void w1a32_linear_f32(BinaryIsa isa, const float* x, int64_t ldx, const BinaryWeights& wt, float* out, int64_t ldo,
                      int64_t M) {
  const detail::Kernels kern = kernels(isa);
  const int64_t K = wt.K, KW = wt.KW, G = wt.G, gw = wt.group_words, KP = KW * 32;
  // x zero-padded to whole words, so the kernels read full words and padding bits add nothing.
  Scratch<float> xp(M * KP);
  for (int64_t m = 0; m < M; ++m) {
    std::copy(x + m * ldx, x + m * ldx + K, xp.get() + m * KP);
    std::fill(xp.get() + m * KP + K, xp.get() + (m + 1) * KP, 0.f);
  }
  if (kern.lut_dot && M <= kLutMaxM) {
    const int64_t ldt = KW * detail::kLutFloatsPerWord, nb = kern.lut_nr;
    parallel_for(ceil_div(wt.N, nb), std::max<int64_t>(1, grain_rows(M, KW) / nb), [&](int64_t b0, int64_t b1) {
      // Each task builds its own tables (a few microseconds per row of x at K = 4096): cheaper than a second
      // parallel region, and they stay in this core's cache.
      Scratch<float> tables(M * ldt);
      for (int64_t m = 0; m < M; ++m) kern.lut_tables(xp.get() + m * KP, KW, tables.get() + m * ldt);
      float sums[kMaxTile];
      for (int64_t n = b0 * nb; n < std::min(wt.N, b1 * nb); n += nb) {
        const int nr = static_cast<int>(std::min(nb, wt.N - n));
        for (int64_t m0 = 0; m0 < M; m0 += kern.lut_mr) {
          const int mt = static_cast<int>(std::min<int64_t>(kern.lut_mr, M - m0));
          for (int64_t g = 0; g < G; ++g) {
            const int64_t w0 = g * gw, nw = std::min(gw, KW - w0);
            kern.lut_dot(tables.get() + m0 * ldt + w0 * detail::kLutFloatsPerWord, ldt, mt, wt.w + n * KW + w0, KW,
                         nr, nw, sums);
            for (int i = 0; i < mt; ++i)
              for (int r = 0; r < nr; ++r) {
                const float v = wt.alpha[(n + r) * G + g] * sums[i * nr + r];
                float& o = out[(m0 + i) * ldo + n + r];
                o = g ? o + v : v + (wt.bias ? wt.bias[n + r] : 0.f);
              }
          }
        }
      }
    });
    return;
  }
  // One x tile needs no K blocks; more tiles take turns over blocks of K whose x tile stays in L1 while the
  // thread's weight rows (a block each, in L2) pass under it.
  const int64_t kc = M <= kern.dot_mr ? KW : kDotBlockWords;
  parallel_for(wt.N, grain_rows(M, KW), [&](int64_t n0, int64_t n1) {
    for (int64_t m = 0; m < M; ++m)
      for (int64_t n = n0; n < n1; ++n) out[m * ldo + n] = wt.bias ? wt.bias[n] : 0.f;
    float sums[kMaxTile];
    for (int64_t g = 0; g < G; ++g) {
      const int64_t g1 = std::min(KW, (g + 1) * gw);
      for (int64_t w0 = g * gw; w0 < g1; w0 += kc) {
        const int64_t nw = std::min(kc, g1 - w0);
        for (int64_t m = 0; m < M; m += kern.dot_mr) {
          const int mr = static_cast<int>(std::min<int64_t>(kern.dot_mr, M - m));
          for (int64_t n = n0; n < n1; n += kern.dot_nr) {
            const int nr = static_cast<int>(std::min<int64_t>(kern.dot_nr, n1 - n));
            kern.signed_dot(xp.get() + m * KP + w0 * 32, KP, mr, wt.w + n * KW + w0, KW, nr, nw, sums);
            for (int i = 0; i < mr; ++i)
              for (int r = 0; r < nr; ++r) out[(m + i) * ldo + n + r] += wt.alpha[(n + r) * G + g] * sums[i * nr + r];
          }
        }
      }
    }
  });
}

void xnor_linear_f32(BinaryIsa isa, const float* x, int64_t ldx, const BinaryWeights& wt, float* out, int64_t ldo,
                     int64_t M) {
  const detail::Kernels kern = kernels(isa);
  const int64_t K = wt.K, KW = wt.KW, G = wt.G, gw = wt.group_words;
  std::vector<uint32_t> bits(static_cast<size_t>(M * KW));
  std::vector<float> beta(static_cast<size_t>(M));
  binarize_rows_f32(isa, x, ldx, M, K, bits.data(), beta.data());
  if (kern.xnor_pair && M >= kXnorLutMinM) {
    constexpr int R = detail::kXnorPairRows;
    const int64_t P = (M + 1) / 2, ldoff = KW * detail::kXnorPairSteps;
    // Table offsets of each pair of x rows (an odd M pairs its last row with itself).
    Scratch<uint16_t> off(P * ldoff);
    parallel_for(P, std::max<int64_t>(1, 4096 / KW), [&](int64_t p0, int64_t p1) {
      for (int64_t p = p0; p < p1; ++p)
        kern.xnor_pair_offsets(bits.data() + 2 * p * KW, bits.data() + std::min(2 * p + 1, M - 1) * KW, KW,
                               off.get() + p * ldoff);
    });
    parallel_for(ceil_div(wt.N, R), 1, [&](int64_t b0, int64_t b1) {
      Scratch<uint8_t> idx(KW * detail::kXnorPairIdxBytes);
      Scratch<uint16_t> cnt(kXnorPairBlock * 2 * R);  // [pair][row of the pair][weight row]
      Scratch<float> acc(kXnorPairBlock * 2 * R);     // [row of x in the block][weight row]
      // alpha per group and weight row, contiguous, so folding counts is one vectorizable pass per row of x.
      std::vector<float> alpha(static_cast<size_t>(G * R));
      float bias[R];
      for (int64_t n = b0 * R; n < std::min(wt.N, b1 * R); n += R) {
        const int nr = static_cast<int>(std::min<int64_t>(R, wt.N - n));
        kern.xnor_pair_prep(wt.w + n * KW, KW, nr, KW, idx.get());
        for (int r = 0; r < R; ++r) bias[r] = wt.bias && r < nr ? wt.bias[n + r] : 0.f;
        for (int64_t g = 0; g < G; ++g)
          for (int r = 0; r < R; ++r) alpha[g * R + r] = r < nr ? wt.alpha[(n + r) * G + g] : 0.f;
        for (int64_t p0 = 0; p0 < P; p0 += kXnorPairBlock) {
          const int64_t pt = std::min(kXnorPairBlock, P - p0), mt = std::min(2 * pt, M - 2 * p0);
          std::fill(acc.get(), acc.get() + mt * R, 0.f);
          for (int64_t g = 0; g < G; ++g) {
            const float* a = alpha.data() + g * R;
            const int64_t g1 = std::min(KW, (g + 1) * gw);
            for (int64_t s0 = g * gw; s0 < g1; s0 += kXnorSpanWords) {
              const int64_t s1 = std::min(g1, s0 + kXnorSpanWords);
              std::fill(cnt.get(), cnt.get() + pt * 2 * R, uint16_t{0});
              for (int64_t c0 = s0; c0 < s1; c0 += kXnorChunkWords) {
                const int64_t nw = std::min(kXnorChunkWords, s1 - c0);
                for (int64_t p = 0; p < pt; ++p)
                  kern.xnor_pair(off.get() + (p0 + p) * ldoff + c0 * detail::kXnorPairSteps,
                                 idx.get() + c0 * detail::kXnorPairIdxBytes, nw, cnt.get() + p * 2 * R,
                                 cnt.get() + p * 2 * R + R);
              }
              // Padding bits are zero in x and w, so they count nothing; len is the span's valid inputs.
              const float len = static_cast<float>(std::min(K, s1 * 32) - s0 * 32);
              for (int64_t i = 0; i < mt; ++i) {
                const uint16_t* c = cnt.get() + i * R;  // pair i / 2, its row i % 2
                float* o = acc.get() + i * R;
                for (int r = 0; r < R; ++r) o[r] += a[r] * (len - 2.f * static_cast<float>(c[r]));
              }
            }
          }
          for (int64_t i = 0; i < mt; ++i) {
            float* o = out + (2 * p0 + i) * ldo + n;
            const float b = beta[2 * p0 + i];
            for (int r = 0; r < nr; ++r) o[r] = b * acc[i * R + r] + bias[r];
          }
        }
      }
    });
    return;
  }
  parallel_for(wt.N, grain_rows(M, KW), [&](int64_t n0, int64_t n1) {
    int64_t counts[kMaxTile];
    for (int64_t n = n0; n < n1; n += kern.xor_nr) {
      const int nr = static_cast<int>(std::min<int64_t>(kern.xor_nr, n1 - n));
      for (int64_t m = 0; m < M; m += kern.xor_mr) {
        const int mr = static_cast<int>(std::min<int64_t>(kern.xor_mr, M - m));
        float acc[kMaxTile];  // only the tile's mr * nr sums: zeroing all kMaxTile took 18% of the call (rep stos)
        std::fill(acc, acc + mr * nr, 0.f);
        for (int64_t g = 0; g < G; ++g) {
          const int64_t w0 = g * gw, nw = std::min(gw, KW - w0);
          const float len = static_cast<float>(std::min(K, (g + 1) * gw * 32) - w0 * 32);
          kern.xor_popc(bits.data() + m * KW + w0, KW, mr, wt.w + n * KW + w0, KW, nr, nw, counts);
          for (int i = 0; i < mr; ++i)
            for (int r = 0; r < nr; ++r)
              acc[i * nr + r] += wt.alpha[(n + r) * G + g] * (len - 2.f * static_cast<float>(counts[i * nr + r]));
        }
        for (int i = 0; i < mr; ++i)
          for (int r = 0; r < nr; ++r)
            out[(m + i) * ldo + n + r] = beta[m + i] * acc[i * nr + r] + (wt.bias ? wt.bias[n + r] : 0.f);
      }
    }
  });
}

}  // namespace pycomp::cpu::binary
