// Binary (1-bit weight) linear kernels for the CPU (raw pointers, no torch headers).
//
// Weights: sign bits packed 32 per uint32 along K, row-major (N, KW), KW = ceil(K / 32);
// bit j of word w of row n is 1 when W[n, 32w + j] < 0; bits past K are 0.
// alpha: (N, G) fp32, one scale per group of `group_words` words (G = 1, group_words = KW
// for one scale per output channel). The weight is W[n, k] = alpha[n, g(k)] * (bit ? -1 : +1).
//
// W1A32: out[m, n] = sum_g alpha[n, g] * sum_{k in g} s_nk * x[m, k] + bias[n], s_nk = -1 where the bit
// is set, else +1: the bits choose +x or -x (never a float weight in memory).
//
// XNOR (W1A1): x is binarized per row, bits like the weights' (x < 0) and
// beta[m] = mean_k |x[m, k]|; out[m, n] = beta[m] * sum_g alpha[n, g] * (len_g - 2 * popc_g(a xor w))
// + bias[n], len_g the group's real length (zero padding never disagrees). Counts are exact.
#pragma once

#include <cstdint>
#include <string>

namespace pycomp::cpu::binary {

// Instruction sets of this family, best last. avx512 needs AVX512F/BW/VL and VPOPCNTDQ.
enum class BinaryIsa : int { portable = 0, avx2 = 1, avx512 = 2 };

// The best BinaryIsa this CPU runs, capped like the other families by PYCOMP_CPU_ISA
// (portable -> portable, avx2 -> avx2).
BinaryIsa best_binary_isa();
std::string binary_isa_name(BinaryIsa isa);
// "" (= best), "portable", "avx2", "avx512"; throws std::invalid_argument for other names
// and for an ISA this CPU cannot run.
BinaryIsa parse_binary_isa(const std::string& name);

struct BinaryWeights {
  const uint32_t* w;      // (N, KW)
  const float* alpha;     // (N, G)
  const float* bias;      // (N) or nullptr
  int64_t N, K, KW, G, group_words;
};

// x: (M, K) fp32 with row stride ldx; out: (M, N) fp32 with row stride ldo. Any M, N, K >= 1.
void w1a32_linear_f32(BinaryIsa isa, const float* x, int64_t ldx, const BinaryWeights& wt, float* out, int64_t ldo,
                      int64_t M);
void xnor_linear_f32(BinaryIsa isa, const float* x, int64_t ldx, const BinaryWeights& wt, float* out, int64_t ldo,
                     int64_t M);

// Per-row binarization: bits (M, KW) (bits past K zero) and beta (M).
void binarize_rows_f32(BinaryIsa isa, const float* x, int64_t ldx, int64_t M, int64_t K, uint32_t* bits,
                       float* beta);

// Per-ISA pieces, called by the driver in binary_linear.cpp.
namespace detail {
// Signed dot products: sums[i * nr + j] = sum_{k < 32 * nwords} s_jk * x[i * ldx + k], s_jk = -1 where bit k
// of row j of w (stride ldw) is set, else +1, for mr rows of x (mr <= max_mr) and nr rows of w
// (nr <= max_nr). x holds 32 * nwords entries per row (zero past K, so padding bits add nothing).
using SignedDotFn = void (*)(const float* x, int64_t ldx, int mr, const uint32_t* w, int64_t ldw, int nr,
                             int64_t nwords, float* sums);
// popc(a xor w) over nwords for mr rows of a (stride lda) and nr rows of w (stride ldw):
// counts[i * nr + j].
using XorPopcFn = void (*)(const uint32_t* a, int64_t lda, int mr, const uint32_t* w, int64_t ldw, int nr,
                           int64_t nwords, int64_t* counts);
using BinarizeRowFn = float (*)(const float* x, int64_t K, uint32_t* bits);
// W1A32 by table lookup (ISAs with an 8-lane permute). lut_tables turns one zero-padded row of x (32 * KW
// entries) into kLutFloatsPerWord floats of tables per word; lut_dot then gives the signed_dot sums for mr rows
// of x (tables at stride ldt floats, mr <= lut_mr) and nr rows of w (nr <= lut_nr) over nwords words.
constexpr int64_t kLutFloatsPerWord = 88;
using LutTablesFn = void (*)(const float* xp, int64_t KW, float* tables);
using LutDotFn = void (*)(const float* tables, int64_t ldt, int mr, const uint32_t* w, int64_t ldw, int nr,
                          int64_t nwords, float* sums);
// XNOR by table lookup on pairs of activation rows, kXnorPairRows weight rows at a time (ISAs with a byte
// shuffle): xnor_pair_offsets turns two rows of activation bits (a2 may be a1) into kXnorPairSteps table offsets
// per word; xnor_pair_prep turns nr <= kXnorPairRows weight rows into kXnorPairIdxBytes bytes per word; xnor_pair
// adds popc(a1 xor w_r) to c1[r] and popc(a2 xor w_r) to c2[r] (16-bit: the caller keeps the sums below 65536)
// over nwords words for the prepared rows, offsets and rows at the same first word.
constexpr int kXnorPairRows = 128;
constexpr int64_t kXnorPairSteps = 8, kXnorPairIdxBytes = kXnorPairSteps * kXnorPairRows;
using XnorPairOffsetsFn = void (*)(const uint32_t* a1, const uint32_t* a2, int64_t nwords, uint16_t* off);
using XnorPairPrepFn = void (*)(const uint32_t* w, int64_t ldw, int nr, int64_t nwords, uint8_t* idx);
using XnorPairFn = void (*)(const uint16_t* off, const uint8_t* idx, int64_t nwords, uint16_t* c1, uint16_t* c2);

struct Kernels {
  SignedDotFn signed_dot;
  XorPopcFn xor_popc;
  BinarizeRowFn binarize_row;
  int dot_mr, dot_nr;  // largest mr, nr per signed_dot call
  int xor_mr, xor_nr;  // largest mr, nr per xor_popc call
  LutTablesFn lut_tables;  // nullptr where the ISA has no table path
  LutDotFn lut_dot;
  int lut_mr, lut_nr;
  XnorPairOffsetsFn xnor_pair_offsets;  // nullptr where the ISA has no table path
  XnorPairPrepFn xnor_pair_prep;
  XnorPairFn xnor_pair;
};

Kernels portable_kernels();
#if defined(__x86_64__)
Kernels avx2_kernels();
Kernels avx512_kernels();
#endif
}  // namespace detail

}  // namespace pycomp::cpu::binary
