// Binary (1-bit) kernels for NVIDIA GPUs (raw pointers, CUDA runtime types only, no torch headers).
//
// Weights are pycomp.formats.binary's packed layout, read as it is: (N, KW) uint32 sign bits,
// KW = ceil(K / 32), bit j of word w of row n set when W[n, 32w + j] < 0, bits past K zero, and
// alpha (N, G) fp32: W[n, k] = alpha[n, g(k)] * (bit ? -1 : +1).
//
// Every launcher checks the preconditions it documents and returns cudaErrorInvalidValue when one
// fails (the torch wrapper checks them first, with messages); otherwise the launch's error code.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "cuda/int8/int8_cuda.h"  // DType

namespace pycomp::cuda {

// Words of a binarized activation row as the XNOR GEMM reads it: KW rounded up to whole
// 512-bit k-steps (the GEMM's BK), zero past K.
int64_t xnor_padded_words(int64_t K);

// Per-token binarization: bits (M, ld_bits) uint32 (ld_bits >= xnor_padded_words(K), zero past K),
// beta[m] = mean_k |x[m, k]| (fp32), popc[m] = number of negative entries. x: (M, K) of type xt,
// row stride ldx. Any M, K >= 1. variant 0: a block per row, element loads and ballots; variant 1:
// a warp per row, 16-byte loads; variant 2: as 1 with 8 loads per lane in flight (1 and 2 run
// variant 0 unless K % 8 == 0 and rows are 16-byte aligned).
cudaError_t binarize_per_token(DType xt, const void* x, int64_t ldx, uint32_t* bits, int64_t ld_bits, float* beta,
                               int32_t* popc, int64_t M, int64_t K, cudaStream_t stream, int variant = 0);

// popc[n] = number of set bits of row n of w (N, KW).
cudaError_t popc_rows(const uint32_t* w, int64_t N, int64_t KW, int32_t* popc, cudaStream_t stream);

// XNOR GEMM on b1 tensor cores (mma.sync m16n8k256 .and.popc), one alpha per output channel:
// variant 0: 128x128 tiles of 8 warps (64x32 each), 2-stage cp.async of 512-bit k-steps, 32-bit
// shared fragment loads; variant 1: 128x128 tiles of 4 warps (64x64 each: half the shared-memory
// bytes per mma), 4-stage cp.async ring, swizzled rows read by ldmatrix.x4; (variant 2, 128x256
// tiles of 8 warps, lost to 1 on both H200 runs and is gone: the number is refused.)
// Variants 3-5: one persistent block per SM holding a 128-row A block and, per warp group of 4,
// a 128-row W tile with the whole K in shared memory; the two groups alternate tiles so that one's
// epilogue and next W copy overlap the other's mmas. 3: variant 1's stores from the mma layout;
// 4: outputs staged per warp and written as whole 16-byte chunks; 5: 4 plus the weight popcounts
// counted in the kernel (popc_w is then unused, see xnor_gemm_counts_popc_w). Variants 6 and 7: 4 and
// 5 with a 256-row A block and 64-row W tiles (half the W copies). 3-7 run variant 1 where the tiles
// do not fit the device's shared memory (K > 4096 on an H100/H200).
//   and[m, n] = popc(a[m] & w[n]);  xor = popc_a[m] + popc_w[n] - 2 * and
//   out[m, n] = beta[m] * alpha[n] * (K - 2 * xor) + bias[n]
// a: (M, ld_a) bits from binarize_per_token (ld_a = xnor_padded_words(K)); w: (N, KW) with
// KW % 4 == 0 and 16-byte aligned (rows are copied 16 bytes at a time); popc_w (N) or, where
// xnor_gemm_counts_popc_w, nullptr; bias of type out_t or nullptr; out: (M, N) of type out_t, row
// stride N. Any M, N >= 1.
// Whether `variant` names an XNOR GEMM kernel (0, 1, 3-7).
bool xnor_gemm_variant_exists(int variant);

// Whether xnor_gemm of this variant counts the weight popcounts itself on the current device for
// this K and output type (variants 5 and 7 where their tiles fit), so that popc_w need not be computed.
bool xnor_gemm_counts_popc_w(int64_t K, DType out_t, int variant);

cudaError_t xnor_gemm(const uint32_t* a, int64_t ld_a, const float* beta, const int32_t* popc_a, const uint32_t* w,
                      const float* alpha, const int32_t* popc_w, const void* bias, DType out_t, void* out, int64_t M,
                      int64_t N, int64_t K, cudaStream_t stream, int variant = 0);

// W1A16 for small M (decode), streaming the packed bits once:
//   out[m, n] = sum_k x[m, k] * alpha[n, g(k)] * (bit ? -1 : +1) + bias[n]
// x: (M, K) of type t with row stride ldx, rows 16-byte aligned (ldx * sizeof(t) % 16 == 0);
// w: (N, KW); alpha: (N, G) with group_words words per group (KW for G = 1); bias of type t or
// nullptr; out: (M, N) of type t, row stride ldo. Any M >= 1 (built for M <= 16), K >= 1.
// variant 0: fp32 FMAs with the activations' sign flipped per bit (any dtype, any G); variant 1:
// bits expanded to +-1 pairs in registers for mma.sync m16n8k16 (bf16/f16 only, G == 1 only);
// (variant 2, the bits in 4 mantissa classes, lost to 1 on both H200 runs and is gone: refused);
// variants 3 (4 warps per block) and 4 (8 warps): as 1, with x staged once per block in shared memory
// as B-fragment pairs and alpha/bias loaded before the loop (variant 1 where min(M, 8) staged rows
// and the reduction pass 48 KB of shared memory).
cudaError_t w1a16_gemv(DType t, const void* x, int64_t ldx, const uint32_t* w, const float* alpha, int64_t G,
                       int64_t group_words, const void* bias, void* out, int64_t ldo, int64_t M, int64_t N, int64_t K,
                       cudaStream_t stream, int variant = 0);

}  // namespace pycomp::cuda
