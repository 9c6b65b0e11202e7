// Sparse linear kernels for the CPU (raw pointers, no torch headers):
// out[m, n] = sum_k x[m, k] * W[n, k] + bias[n], W stored in one of the formats of
// pycomp/formats/sparse.py (CSR, block-CSR, 2:4 compressed), fp32 values and activations.
//
// x: (M, K) fp32 row stride ldx (2:4 and block-CSR: K padded to the format's Kp, pad columns zero);
// out: (M, N) fp32 row stride ldo; bias: (N) fp32 or nullptr. Rows run in parallel on torch's pool.
#pragma once

#include <cstdint>

#include "cpu/cpu_features.h"

namespace pycomp::cpu {

// CSR: crow (N+1), col (nnz) int16 (col16, K <= 32768) or int32 (col32; the other is nullptr), val (nnz).
void csr_linear_f32(Isa isa, const float* x, int64_t ldx, const int32_t* crow, const int16_t* col16,
                    const int32_t* col32, const float* val, const float* bias, float* out, int64_t ldo, int64_t M,
                    int64_t N, int64_t K);

// Block-CSR with (bn, bk) blocks: crow (ceil(N/bn)+1), col (nblocks) block columns, val (nblocks, bn, bk);
// x has ceil(K/bk)*bk columns; rows n >= N of the last block row are not written.
void bsr_linear_f32(Isa isa, const float* x, int64_t ldx, const int32_t* crow, const int32_t* col,
                    const float* val, int64_t bn, int64_t bk, const float* bias, float* out, int64_t ldo, int64_t M,
                    int64_t N);

// 2:4: val (N, Kp/2), meta (Np, Kp/16) int16 in the reordered (CUTLASS) layout, Np = ceil(N/32)*32,
// Kp a multiple of 32 (x has Kp columns). int8 values: out[m, n] = scale[n] * sum_k x[m, k] * q[n, k] + bias[n],
// scale (N) fp32; float values take scale = nullptr (1).
void sparse24_linear_f32(Isa isa, const float* x, int64_t ldx, const float* val, const int16_t* meta, int64_t Np,
                         const float* bias, float* out, int64_t ldo, int64_t M, int64_t N, int64_t Kp);
void sparse24_linear_f32(Isa isa, const float* x, int64_t ldx, const int8_t* val, const float* scale,
                         const int16_t* meta, int64_t Np, const float* bias, float* out, int64_t ldo, int64_t M,
                         int64_t N, int64_t Kp);

}  // namespace pycomp::cpu
