#include "cpu/conv/im2col.h"

#include <cstring>

#include "cpu/parallel.h"

namespace pycomp {
namespace cpu {

void im2col_f32(const float* x, int64_t B, int64_t C, int64_t H, int64_t W, int64_t kh, int64_t kw, int64_t sh,
                int64_t sw, int64_t dh, int64_t dw, int64_t Ho, int64_t Wo, float* out) {
  const int64_t K = C * kh * kw;
  // One task per output image row: Wo patches of K values, read from a (C, kh) set of input rows.
  parallel_for(B * Ho, 4, [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / Ho, oh = task % Ho;
      float* dst = out + task * Wo * K;
      for (int64_t ow = 0; ow < Wo; ++ow) {
        const float* src = x + b * C * H * W + (oh * sh) * W + ow * sw;
        for (int64_t c = 0; c < C; ++c, src += H * W) {
          for (int64_t i = 0; i < kh; ++i) {
            const float* line = src + i * dh * W;
            if (dw == 1) {
              std::memcpy(dst, line, static_cast<size_t>(kw) * sizeof(float));
              dst += kw;
            } else {
              for (int64_t j = 0; j < kw; ++j) *dst++ = line[j * dw];
            }
          }
        }
      }
    }
  });
}

}  // namespace cpu
}  // namespace pycomp
