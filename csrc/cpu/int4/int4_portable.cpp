// Portable int4 kernels: plain C++ for any architecture, on the shared driver
// (the compiler vectorizes the lane loops where it can).
#include "cpu/int4/int4_driver.h"
#include "cpu/int4/int4_kernels.h"

namespace pycomp::cpu::int4 {
namespace {

constexpr int V = 8;

// The chunk's 2V weights in the permuted order, dequantized exactly: (code - zero) * scale
// is a product and a sum of exact values whose result fits in fp32.
inline void dequant_chunk(const uint8_t* p, float s, float zs, float* out) {
  for (int l = 0; l < V; ++l) {
    out[l] = float(p[l] & 15) * s + zs;
    out[V + l] = float(p[l] >> 4) * s + zs;
  }
}

struct Gemm {
  static constexpr int kMt = 2 * V;

  // Sums restart every kSumK values of k, as in the x86 kernels.
  static constexpr int64_t kSumK = 64;

  template <int MV, int NR>
  static void run(const GemmTile& t) {
    for (int64_t k0 = 0; k0 < t.klen; k0 += kSumK) {
      float acc[NR][MV * V] = {};
      for (int64_t k = k0, k1 = std::min(k0 + kSumK, t.klen); k < k1; ++k) {
        const float* xk = t.xt + k * kMt;
        for (int j = 0; j < NR; ++j) {
          const float b = t.w[j * t.ldw + k];
          for (int i = 0; i < MV * V; ++i) acc[j][i] += b * xk[i];
        }
      }
      const bool first = k0 == 0 && !t.accumulate;
      for (int j = 0; j < NR; ++j)
        for (int i = 0; i < MV * V; ++i) {
          float& c = t.c[j * t.ldc + i];
          c = first ? acc[j][i] : c + acc[j][i];
        }
    }
  }
};

struct Portable {
  static constexpr int V = int4::V;
  // A GEMV pass dequantizes each weight in scalar code again: one pass at most.
  static constexpr int64_t kGemvMaxM = 4;
  static constexpr int kGemvNr = 4, kMt = Gemm::kMt, kNr = 4;
  static constexpr int64_t kPanelRows = 32, kPanelK = 256;

  static void prepare_gemv_x(float*, int64_t, int64_t, int64_t) {}

  static void gemv(const GemvTask& t) {
    const Int4Weights& w = *t.w;
    uint8_t tail[V];
    for (int64_t n = t.n0; n < t.n1; ++n) {
      float acc[kGemvMaxMr][2 * V] = {};
      for (int64_t g = 0; g < w.G; ++g) {
        const float s = half_to_float(w.scales[n * w.G + g]), zs = -float(w.zero(n, g)) * s;
        const int64_t c1 = std::min<int64_t>((g + 1) * w.chunks_per_group, w.chunks);
        for (int64_t c = g * w.chunks_per_group; c < c1; ++c) {
          float wv[2 * V];
          dequant_chunk(w.chunk(n, c, V, tail), s, zs, wv);
          for (int i = 0; i < t.mr; ++i) {
            const float* a = t.x.p + i * t.x.lda + c * 2 * V;
            for (int l = 0; l < 2 * V; ++l) acc[i][l] += a[l] * wv[l];
          }
        }
      }
      for (int i = 0; i < t.mr; ++i) {
        float s = 0.f;
        for (float p : acc[i]) s += p;
        t.out[i * t.ldo + n] = t.bias ? s + t.bias[n] : s;
      }
    }
  }

  static void dequant(const Int4Weights& w, int64_t n0, int64_t rows, int64_t c0, int64_t c1, float* panel,
                      int64_t ldp) {
    uint8_t tail[V];
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t n = n0 + r;
      for (int64_t c = c0; c < c1; ++c) {
        const int64_t g = c / w.chunks_per_group;
        const float s = half_to_float(w.scales[n * w.G + g]), zs = -float(w.zero(n, g)) * s;
        dequant_chunk(w.chunk(n, c, V, tail), s, zs, panel + r * ldp + (c - c0) * 2 * V);
      }
    }
  }

  static void gemm_tile(const GemmTile& t) { TileTable<Gemm, kMt / V, kNr, GemmTile>::call(t.mv, t.nr, t); }
};

}  // namespace

void w4a16_linear_portable(const XRows& x, const uint8_t* packed, const uint16_t* scales, const uint8_t* zeros,
                           const float* bias, float* out, int64_t ldo, int64_t M, int64_t N, int64_t K,
                           int group_size) {
  w4a16_linear<Portable>(x, packed, scales, zeros, bias, out, ldo, M, N, K, group_size);
}

}  // namespace pycomp::cpu::int4
