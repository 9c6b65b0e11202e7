// A measurement for a decision, not a pycomp kernel: how fast the AVX2 int4 GEMV (M=1) would run if it rounded x
// to int16 per weight group and multiplied in integers, and how far its output would move.
//
// The shipped GEMV (csrc/cpu/int4/int4_avx2.cpp) keeps x in fp32: every 8 weights cost an int->float conversion
// and an FMA, and on Zen 3 the conversions and FMAs fill their pipes (benchmarks/RESULTS.md, CPU session 7), so
// it stays near 2x its memory time at M=1. Here x is rounded per group g to x16 = rint(x / s_g), s_g = max|x_g| /
// 32767 (error at most s_g / 2 = 2^-16 max|x_g| per input), the nibbles meet x16 in vpmaddwd (16 products per
// instruction, exact int32 sums per group), and each group's sum becomes fp32 once:
//   out[n] = sum_g scale[n, g] * s_g * (sum_k code * x16 - zero[n, g] * sum_k x16).
// Rounding x to 16 bits is what "A16" already allows (bf16 x keeps 8 bits); per group it is finer than bf16 for
// every input within 2^7 of its group's largest.
//
// Build and run (the repository root; the kernels it compares against are the package's own sources):
//   g++ -O3 -std=c++17 -fno-wrapv -fopenmp -Icsrc -o /tmp/x16probe benchmarks/cpu_int4_x16_probe.cpp
//       benchmarks/probe_parallel.cpp csrc/cpu/int4/*.cpp csrc/cpu/cpu_features.cpp  (one line)
//   OMP_NUM_THREADS=2 /tmp/x16probe [N=4096] [--check]
// --check: a small shape, the error bound only (tests/test_int4_x16_probe.py), exit status 1 if it fails.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>

#include "cpu/cpu_features.h"
#include "cpu/int4/int4_linear.h"
#include "cpu/parallel.h"

#if defined(__x86_64__)
#include <immintrin.h>

namespace {

using pycomp::cpu::Isa;

double now() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

// x rounded per group: per 32-column chunk c, x16[32c .. 32c+15] holds the even columns and x16[32c+16 ..] the odd
// ones (the order vpmovzxbw gives a chunk's 16 weight bytes); lanes[g * 8 + l] sums what vpmaddwd lane l of
// the group meets, for the zero-point term.
struct X16 {
  std::vector<int16_t> q;
  std::vector<float> s, lanes;
};

X16 round_x(const float* x, int64_t K, int gs) {
  const int64_t G = K / gs;
  X16 r{std::vector<int16_t>(size_t(K)), std::vector<float>(size_t(G)), std::vector<float>(size_t(G * 8), 0.f)};
  for (int64_t g = 0; g < G; ++g) {
    float m = 0.f;
    for (int k = 0; k < gs; ++k) m = std::max(m, std::fabs(x[g * gs + k]));
    const float s = m > 0.f ? m / 32767.f : 1.f;
    r.s[size_t(g)] = s;
    for (int64_t c = g * gs / 32; c < (g + 1) * gs / 32; ++c)
      for (int i = 0; i < 16; ++i) {
        const auto e = int16_t(std::nearbyint(x[32 * c + 2 * i] / s)), o = int16_t(std::nearbyint(x[32 * c + 2 * i + 1] / s));
        r.q[size_t(32 * c + i)] = e;
        r.q[size_t(32 * c + 16 + i)] = o;
        r.lanes[size_t(g * 8 + i / 2)] += float(e) + float(o);
      }
  }
  return r;
}

// Rows [n0, n1) (a multiple of 4 rows), K a multiple of the group size, group size a multiple of 32.
__attribute__((target("avx2,fma,f16c"))) void gemv_x16(const X16& X, const uint8_t* packed, const uint16_t* scales,
                                                       const uint8_t* zeros, float* out, int64_t n0, int64_t n1,
                                                       int64_t K, int gs) {
  constexpr int NR = 4;
  const int64_t Kb = K / 2, G = K / gs, cpg = gs / 32;
  const __m256i low = _mm256_set1_epi16(15);
  for (int64_t n = n0; n < n1; n += NR) {
    __m256 total[NR];
    const uint8_t* row[NR];
    for (int j = 0; j < NR; ++j) {
      total[j] = _mm256_setzero_ps();
      row[j] = packed + (n + j) * Kb;
    }
    for (int64_t g = 0; g < G; ++g) {
      __m256i acc[NR];
      for (int j = 0; j < NR; ++j) {
        acc[j] = _mm256_setzero_si256();
        // The next tile's rows, a group at a time, as the shipped GEMV does.
        _mm_prefetch(reinterpret_cast<const char*>(row[j] + NR * Kb + g * gs / 2), _MM_HINT_T0);
      }
      for (int64_t c = g * cpg; c < (g + 1) * cpg; ++c) {
        const __m256i xe = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(X.q.data() + 32 * c));
        const __m256i xo = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(X.q.data() + 32 * c + 16));
        for (int j = 0; j < NR; ++j) {
          const __m256i b = _mm256_cvtepu8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(row[j] + 16 * c)));
          acc[j] = _mm256_add_epi32(acc[j], _mm256_madd_epi16(_mm256_and_si256(b, low), xe));
          acc[j] = _mm256_add_epi32(acc[j], _mm256_madd_epi16(_mm256_srli_epi16(b, 4), xo));
        }
      }
      const __m256 lanes = _mm256_loadu_ps(X.lanes.data() + g * 8);
      for (int j = 0; j < NR; ++j) {
        const __m256 s = _mm256_set1_ps(_cvtsh_ss(scales[(n + j) * G + g]) * X.s[size_t(g)]);
        const __m256 z = _mm256_set1_ps(float(zeros[(n + j) * G + g]));
        total[j] = _mm256_fmadd_ps(s, _mm256_fnmadd_ps(z, lanes, _mm256_cvtepi32_ps(acc[j])), total[j]);
      }
    }
    for (int j = 0; j < NR; ++j) {
      __m128 h = _mm_add_ps(_mm256_castps256_ps128(total[j]), _mm256_extractf128_ps(total[j], 1));
      h = _mm_add_ps(h, _mm_movehl_ps(h, h));
      out[n + j] = _mm_cvtss_f32(_mm_add_ss(h, _mm_shuffle_ps(h, h, 1)));
    }
  }
}

float round_bf16(float v) {
  uint32_t b;
  std::memcpy(&b, &v, 4);
  b = (b + 0x7FFFu + ((b >> 16) & 1u)) & 0xFFFF0000u;
  std::memcpy(&v, &b, 4);
  return v;
}

}  // namespace

int main(int argc, char** argv) {
  bool check = false;
  int64_t N = 4096;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--check") == 0) check = true;
    else N = std::atoll(argv[i]);
  }
  if (!pycomp::cpu::cpu_features().avx2) {
    std::printf("this CPU has no AVX2: nothing to measure\n");
    return 0;
  }
  const int64_t K = check ? 1024 : 4096;
  if (check) N = 256;
  const int gs = 128;
  const int64_t G = K / gs;
  const int copies = check ? 1 : std::max<int>(2, int(4 * (32 << 20) / (N * K / 2)) + 1);  // beyond 4x a 32 MB LLC
  std::mt19937 rng(1);
  const size_t ncopies = static_cast<size_t>(copies);
  std::vector<std::vector<uint8_t>> packed(ncopies), zeros(ncopies);
  std::vector<std::vector<uint16_t>> scales(ncopies);
  for (int c = 0; c < copies; ++c) {
    packed[size_t(c)].resize(size_t(N * K / 2));
    for (auto& v : packed[size_t(c)]) v = uint8_t(rng());
    scales[size_t(c)].resize(size_t(N * G));
    for (auto& v : scales[size_t(c)]) v = uint16_t(0x2000 + (rng() & 0x3ff));  // f16 in [2^-7, 2^-6)
    zeros[size_t(c)].resize(size_t(N * G));
    for (auto& v : zeros[size_t(c)]) v = uint8_t(rng() & 15);
  }
  std::normal_distribution<float> normal;
  const size_t nk = static_cast<size_t>(K), nn = static_cast<size_t>(N);
  std::vector<float> x(nk), xb(nk), ref(nn), bf(nn), out(nn);
  for (auto& v : x) v = normal(rng);
  x[7] = 40.f;  // outliers, as LLM activations have: their groups round the rest more coarsely
  x[size_t(K / 2 + 3)] = -25.f;
  for (int64_t k = 0; k < K; ++k) xb[size_t(k)] = round_bf16(x[size_t(k)]);

  auto shipped = [&](const float* xs, float* o, int c) {
    pycomp::cpu::w4a16_linear_f32(Isa::avx2, xs, K, packed[size_t(c)].data(), scales[size_t(c)].data(),
                                  zeros[size_t(c)].data(), nullptr, o, N, 1, N, K, gs);
  };
  auto probe = [&](int c) {
    const X16 X = round_x(x.data(), K, gs);
    // Tiles of 4 rows, split over the threads as the shipped GEMV splits them.
    pycomp::parallel_for(N / 4, 1, [&](int64_t b, int64_t e) {
      gemv_x16(X, packed[size_t(c)].data(), scales[size_t(c)].data(), zeros[size_t(c)].data(), out.data(), 4 * b,
               4 * e, K, gs);
    });
  };
  shipped(x.data(), ref.data(), 0);
  shipped(xb.data(), bf.data(), 0);
  probe(0);
  double e16 = 0, ebf = 0, top = 0;
  for (int64_t n = 0; n < N; ++n) {
    e16 = std::max(e16, double(std::fabs(out[size_t(n)] - ref[size_t(n)])));
    ebf = std::max(ebf, double(std::fabs(bf[size_t(n)] - ref[size_t(n)])));
    top = std::max(top, double(std::fabs(ref[size_t(n)])));
  }
  std::printf("N=%lld K=%lld g%d: max |out| %.3g; max error against the fp32-x GEMV: int16 x %.3g, bf16 x %.3g\n",
              (long long)N, (long long)K, gs, top, e16, ebf);
  if (check) return e16 <= ebf ? 0 : 1;

  for (int i = 0; i < copies; ++i) {
    shipped(x.data(), ref.data(), i);
    probe(i);
  }
  for (int rep = 0; rep < 3; ++rep) {
    std::vector<double> a, b;
    for (int r = 0; r < 200; ++r) {
      double t0 = now();
      shipped(x.data(), ref.data(), r % copies);
      a.push_back(now() - t0);
      t0 = now();
      probe(r % copies);
      b.push_back(now() - t0);
    }
    std::sort(a.begin(), a.end());
    std::sort(b.begin(), b.end());
    std::printf("cold, taking turns, median of 200 (ms): shipped fp32-x GEMV %.3f, int16-x probe %.3f (%.2fx)\n",
                a[100] * 1e3, b[100] * 1e3, a[100] / b[100]);
  }
  return 0;
}

#else
int main() {
  std::printf("x86-64 only\n");
  return 0;
}
#endif
