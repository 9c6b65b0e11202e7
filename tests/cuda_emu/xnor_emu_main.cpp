// ---- driver (after the kernels' source): xnor_emu VARIANT M N K SMS DTYPE(f32|bf16) SEED
// Random bits, beta, alpha and bias; the variant's grid as its launcher in xnor_gemm.cu sizes it with
// SMS multiprocessors (variants 5 and 7 get popc_w = nullptr: they must not read it); every output against
// out = beta alpha (K - 2 popc(a ^ w)) + bias in double. Prints the worst relative error; exit 0 when
// within the output type's rounding, 1 when not, 2 on a deadlock.
#include <string>

namespace {

uint64_t rng_state = 1;
uint32_t rnd() {
  rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
  return static_cast<uint32_t>(rng_state >> 32);
}
float rnd_float() { return static_cast<float>(rnd() >> 8) / 16777216.0f; }

template <DType kOut>
int run(int variant, int M, int N, int K, int sms) {
  using T = typename Elem<kOut>::T;
  const int KW = (K + 31) / 32, ld_a = static_cast<int>(ceil_div(KW, kBKW) * kBKW);
  auto bits = [&](int rows, int ld, int valid_words) {
    std::vector<uint32_t> v(static_cast<size_t>(rows) * ld, 0);
    for (int r = 0; r < rows; ++r)
      for (int wd = 0; wd < valid_words; ++wd) {
        uint32_t x = rnd();
        if (wd == KW - 1 && K % 32) x &= (1u << (K % 32)) - 1;  // zero past K, as the format keeps it
        v[static_cast<size_t>(r) * ld + wd] = x;
      }
    return v;
  };
  std::vector<uint32_t> a = bits(M, ld_a, KW), w = bits(N, KW, KW);
  std::vector<float> beta(M), alpha(N);
  std::vector<int32_t> popc_a(M), popc_w(N);
  std::vector<T> bias(N), out(static_cast<size_t>(M) * N, Elem<kOut>::from_float(12345.f));
  for (int m = 0; m < M; ++m) {
    beta[m] = 0.5f + rnd_float();
    int c = 0;
    for (int wd = 0; wd < ld_a; ++wd) c += __builtin_popcount(a[static_cast<size_t>(m) * ld_a + wd]);
    popc_a[m] = c;
  }
  for (int n = 0; n < N; ++n) {
    alpha[n] = 0.5f + rnd_float();
    bias[n] = Elem<kOut>::from_float(rnd_float() - 0.5f);
    int c = 0;
    for (int wd = 0; wd < KW; ++wd) c += __builtin_popcount(w[static_cast<size_t>(n) * KW + wd]);
    popc_w[n] = c;
  }
  bool ok;
  if (variant == 1) {
    const unsigned gx = static_cast<unsigned>(ceil_div(N, kV1BN)), gy = static_cast<unsigned>(ceil_div(M, kV1BM));
    ok = emu::launch(gx, gy, kV1Threads, kV1Smem, [&] {
      xnor_gemm_v1_kernel<kOut>(a.data(), ld_a, beta.data(), popc_a.data(), w.data(), KW, alpha.data(),
                                popc_w.data(), bias.data(), out.data(), M, N, K);
    });
  } else {
    const int am = variant >= 6 ? 256 : 128;
    const int64_t blocks_m = ceil_div(M, am), tiles = ceil_div(N, 16384 / am);
    const int64_t fill = sms / blocks_m;
    const int64_t splits = fill < 1 ? 1 : (fill < tiles ? fill : tiles);
    auto go = [&](auto kernel, size_t smem_bytes, const int32_t* pw) {
      return emu::launch(static_cast<unsigned>(blocks_m * splits), 1, kV3Threads, smem_bytes, [&] {
        kernel(a.data(), ld_a, beta.data(), popc_a.data(), w.data(), KW, alpha.data(), pw, bias.data(), out.data(), M,
               N, K, static_cast<int>(splits));
      });
    };
    if (variant == 3)
      ok = go(xnor_gemm_v3_kernel<kOut, 128, false, false>, v3_smem_bytes<kOut, false, false>(ld_a), popc_w.data());
    else if (variant == 4)
      ok = go(xnor_gemm_v3_kernel<kOut, 128, true, false>, v3_smem_bytes<kOut, true, false>(ld_a), popc_w.data());
    else if (variant == 5)
      ok = go(xnor_gemm_v3_kernel<kOut, 128, true, true>, v3_smem_bytes<kOut, true, true>(ld_a), nullptr);
    else if (variant == 6)
      ok = go(xnor_gemm_v3_kernel<kOut, 256, true, false>, v3_smem_bytes<kOut, true, false>(ld_a), popc_w.data());
    else
      ok = go(xnor_gemm_v3_kernel<kOut, 256, true, true>, v3_smem_bytes<kOut, true, true>(ld_a), nullptr);
  }
  if (!ok) return 2;
  double worst = 0;
  int bad = 0;
  const double tol = kOut == DType::kF32 ? 1e-6 : 1.0 / 256;
  for (int m = 0; m < M; ++m)
    for (int n = 0; n < N; ++n) {
      int x = 0;
      for (int wd = 0; wd < KW; ++wd)
        x += __builtin_popcount(a[static_cast<size_t>(m) * ld_a + wd] ^ w[static_cast<size_t>(n) * KW + wd]);
      const double want = static_cast<double>(beta[m]) * alpha[n] * (K - 2 * x) + Elem<kOut>::to_float(bias[n]);
      const double got = Elem<kOut>::to_float(out[static_cast<size_t>(m) * N + n]);
      const double err = std::fabs(got - want) / (std::fabs(want) + 1.0);
      if (err > worst) worst = err;
      if (!(err <= tol) && bad++ < 5) std::fprintf(stderr, "out[%d, %d] = %g, want %g\n", m, n, got, want);
    }
  std::printf("variant %d M=%d N=%d K=%d sms=%d: worst relative error %.3g, %d wrong\n", variant, M, N, K, sms, worst,
              bad);
  return bad ? 1 : 0;
}

// Binarization variant 1 or 2 of x (M, K) random, row stride ldx >= K: bits, beta, popc against the
// plain loops (bits exactly, zero up to the padded row; beta to fp32 rounding).
template <DType kT>
int run_binarize(int variant, int M, int K, int ldx) {
  using T = typename Elem<kT>::T;
  const int ld_bits = static_cast<int>(ceil_div(ceil_div(K, 32), kBKW) * kBKW);
  std::vector<T> x(static_cast<size_t>(M) * ldx);
  for (auto& v : x) v = Elem<kT>::from_float(rnd_float() * 4.f - 2.f);
  std::vector<uint32_t> bits(static_cast<size_t>(M) * ld_bits, 0xDEADBEEFu);
  std::vector<float> beta(M, -1.f);
  std::vector<int32_t> popc(M, -1);
  const unsigned blocks = static_cast<unsigned>(ceil_div(M, 8));
  const bool ok = emu::launch(blocks, 1, 256, 0, [&] {
    if (variant == 2)
      binarize_vec_kernel<kT, 8>(x.data(), ldx, bits.data(), ld_bits, beta.data(), popc.data(), M, K);
    else
      binarize_vec_kernel<kT, 1>(x.data(), ldx, bits.data(), ld_bits, beta.data(), popc.data(), M, K);
  });
  if (!ok) return 2;
  int bad = 0;
  for (int m = 0; m < M; ++m) {
    double s = 0;
    int c = 0;
    for (int wd = 0; wd < ld_bits; ++wd) {
      uint32_t want = 0;
      for (int j = 0; j < 32; ++j) {
        const int k = 32 * wd + j;
        if (k < K && Elem<kT>::to_float(x[static_cast<size_t>(m) * ldx + k]) < 0.f) want |= 1u << j;
      }
      c += __builtin_popcount(want);
      const uint32_t got = bits[static_cast<size_t>(m) * ld_bits + wd];
      if (got != want && bad++ < 5) std::fprintf(stderr, "bits[%d, %d] = %08x, want %08x\n", m, wd, got, want);
    }
    for (int k = 0; k < K; ++k) s += std::fabs(Elem<kT>::to_float(x[static_cast<size_t>(m) * ldx + k]));
    if (popc[m] != c && bad++ < 5) std::fprintf(stderr, "popc[%d] = %d, want %d\n", m, popc[m], c);
    if (!(std::fabs(beta[m] - s / K) <= 1e-5 * s / K) && bad++ < 5)
      std::fprintf(stderr, "beta[%d] = %g, want %g\n", m, beta[m], s / K);
  }
  std::printf("binarize variant %d M=%d K=%d ldx=%d: %d wrong\n", variant, M, K, ldx, bad);
  return bad ? 1 : 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 7 && std::string(argv[1]) == "bin") {  // xnor_emu bin VARIANT M K LDX SEED (bf16 x)
    rng_state = std::strtoull(argv[6], nullptr, 10) * 2654435761ull + 1;
    const int M = std::atoi(argv[3]), K = std::atoi(argv[4]), ldx = std::atoi(argv[5]);
    if (M < 1 || K < 1 || K % 8 != 0 || ldx < K || ldx % 8 != 0) {  // the vectorized kernels' preconditions
      std::fprintf(stderr, "xnor_emu bin: K and LDX must be multiples of 8, LDX >= K\n");
      return 64;
    }
    return run_binarize<DType::kBF16>(std::atoi(argv[2]), M, K, ldx);
  }
  if (argc != 8) {
    std::fprintf(stderr, "usage: xnor_emu VARIANT M N K SMS f32|bf16 SEED | xnor_emu bin VARIANT M K LDX SEED\n");
    return 64;
  }
  const int variant = std::atoi(argv[1]), M = std::atoi(argv[2]), N = std::atoi(argv[3]), K = std::atoi(argv[4]);
  const int sms = std::atoi(argv[5]);
  if (M < 1 || N < 1 || K < 1 || (K + 31) / 32 % 4 != 0) {  // xnor_gemm's preconditions
    std::fprintf(stderr, "xnor_emu: M, N, K must be positive and ceil(K / 32) a multiple of 4\n");
    return 64;
  }
  rng_state = std::strtoull(argv[7], nullptr, 10) * 2654435761ull + 1;
  return std::string(argv[6]) == "f32" ? run<DType::kF32>(variant, M, N, K, sms)
                                       : run<DType::kBF16>(variant, M, N, K, sms);
}
