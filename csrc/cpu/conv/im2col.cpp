#include "cpu/conv/im2col.h"

#include "cpu/parallel.h"

namespace pycomp {
namespace cpu {
namespace {

// One output image row (b, oh): Wo patches of K values, read from a (C, kh) set of input rows. The copies
// are kw values long (3 for a 3x3 conv): a memcpy call per copy cost more than the copy (2.6 ms of
// calls for the digits CNN's conv2 input), so a kernel width known at compile time becomes plain moves.
template <int KW>
void image_row(const float* x, int64_t C, int64_t H, int64_t W, int64_t kh, int64_t kw_dyn, int64_t sh, int64_t sw,
               int64_t dh, int64_t dw, int64_t oh, int64_t Wo, float* dst) {
  const int64_t kw = KW > 0 ? KW : kw_dyn;
  for (int64_t ow = 0; ow < Wo; ++ow) {
    const float* src = x + (oh * sh) * W + ow * sw;
    for (int64_t c = 0; c < C; ++c, src += H * W) {
      for (int64_t i = 0; i < kh; ++i) {
        const float* line = src + i * dh * W;
        for (int64_t j = 0; j < kw; ++j) dst[j] = line[j * dw];
        dst += kw;
      }
    }
  }
}

}  // namespace

void im2col_f32(const float* x, int64_t B, int64_t C, int64_t H, int64_t W, int64_t kh, int64_t kw, int64_t sh,
                int64_t sw, int64_t dh, int64_t dw, int64_t Ho, int64_t Wo, float* out) {
  const int64_t K = C * kh * kw;
  auto row = kw == 3 ? &image_row<3> : kw == 1 ? &image_row<1> : kw == 5 ? &image_row<5> : kw == 7 ? &image_row<7>
                                                                                                 : &image_row<0>;
  parallel_for(B * Ho, 4, [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / Ho, oh = task % Ho;
      row(x + b * C * H * W, C, H, W, kh, kw, sh, sw, dh, dw, oh, Wo, out + task * Wo * K);
    }
  });
}

}  // namespace cpu
}  // namespace pycomp
