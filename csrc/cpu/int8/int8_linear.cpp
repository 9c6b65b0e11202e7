// Portable reference-speed implementation; ISA-specific kernels replace it.
#include "cpu/int8/int8_linear.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "cpu/parallel.h"

namespace pycomp::cpu {

static void quantize_row(const float* x, int64_t K, int8_t* q, float* scale) {
  float amax = 0.f;
  for (int64_t k = 0; k < K; ++k) amax = std::max(amax, std::fabs(x[k]));
  const float inv = amax > 0.f ? 127.f / amax : 0.f;
  *scale = amax / 127.f;
  for (int64_t k = 0; k < K; ++k) {
    float v = std::nearbyint(x[k] * inv);
    q[k] = static_cast<int8_t>(std::min(127.f, std::max(-127.f, v)));
  }
}

void quantize_per_token_int8_f32(Isa, const float* x, int64_t ldx, int8_t* q, float* scale, int64_t M, int64_t K) {
  parallel_for(M, 1, [&](int64_t b, int64_t e) {
    for (int64_t m = b; m < e; ++m) quantize_row(x + m * ldx, K, q + m * K, scale + m);
  });
}

void int8_linear_dynamic_f32(Isa isa, const float* x, int64_t ldx, const int8_t* w, const float* wscale,
                             const float* bias, float* out, int64_t ldo, int64_t M, int64_t N, int64_t K) {
  std::vector<int8_t> q(M * K);
  std::vector<float> s(M);
  quantize_per_token_int8_f32(isa, x, ldx, q.data(), s.data(), M, K);
  parallel_for(N, 16, [&](int64_t b, int64_t e) {
    for (int64_t n = b; n < e; ++n)
      for (int64_t m = 0; m < M; ++m) {
        int32_t acc = 0;
        for (int64_t k = 0; k < K; ++k) acc += int32_t(q[m * K + k]) * int32_t(w[n * K + k]);
        out[m * ldo + n] = float(acc) * s[m] * wscale[n] + (bias ? bias[n] : 0.f);
      }
  });
}

void int8_linear_weight_only_f32(Isa, const float* x, int64_t ldx, const int8_t* w, const float* wscale,
                                 const float* bias, float* out, int64_t ldo, int64_t M, int64_t N, int64_t K) {
  parallel_for(N, 16, [&](int64_t b, int64_t e) {
    for (int64_t n = b; n < e; ++n)
      for (int64_t m = 0; m < M; ++m) {
        float acc = 0.f;
        for (int64_t k = 0; k < K; ++k) acc += x[m * ldx + k] * float(w[n * K + k]);
        out[m * ldo + n] = acc * wscale[n] + (bias ? bias[n] : 0.f);
      }
  });
}

}  // namespace pycomp::cpu
