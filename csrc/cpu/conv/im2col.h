// im2col for the Conv2d forms of the compressed layers (pycomp/nn/conv.py).
//
// torch's F.unfold plus the transpose-and-copy to (B*L, K) rows took 6.6 ms for the digits
// CNN's conv2 input (128x32x8x8, 3x3): longer than the GEMM after it. This writes the rows
// directly, in F.unfold's patch order.
#pragma once

#include <cstdint>

namespace pycomp {
namespace cpu {

// x: (B, C, H, W) float32, contiguous, already padded. out: (B * Ho * Wo, C * kh * kw) rows, where
// row (b, oh, ow) holds x[b, c, oh*sh + i*dh, ow*sw + j*dw] at column (c * kh + i) * kw + j.
void im2col_f32(const float* x, int64_t B, int64_t C, int64_t H, int64_t W, int64_t kh, int64_t kw, int64_t sh,
                int64_t sw, int64_t dh, int64_t dw, int64_t Ho, int64_t Wo, float* out);

}  // namespace cpu
}  // namespace pycomp
