"""The C++ binary CPU kernels (pycomp._C) against plain PyTorch, for every ISA this CPU runs.

- binarize_per_token_cpu: bits equal to pack_signs(x) bit for bit (x < 0; -0.0 and NaN give 0), zero past K;
  beta within fp32 summation error of mean|x|.
- xnor_linear_cpu: the popcounts are exact, so the result is within a few fp32 roundings of the float64
  reference; identical across ISAs and thread counts.
- w1a32_linear_cpu: within the fp32 summation bound (sum of |terms|) of the float64 reference.
Shapes: M = 1 (GEMV), edge and full tiles, K blocks, K not a multiple of 32 (tails of every width), K spanning many
256/512-bit steps (and more than 31 AVX2 steps, where byte counts are widened), groups, strided x.
"""
from __future__ import annotations

import pytest
import torch

from simde_harness import needs_simde, run_emulated

from pycomp import _ext
from pycomp.formats import binary as fmt
from pycomp.ops import binary as ops

_C = _ext._C
pytestmark = [pytest.mark.usefixtures("one_thread"),
              pytest.mark.skipif(not _ext.has_c("xnor_linear_cpu"), reason="pycomp._C without binary kernels")]

ISAS = [isa for isa in ("portable", "avx2", "avx512") if _ext.has_c("binary_cpu_isa_supported")
        and _C.binary_cpu_isa_supported(isa)]



def _case(m, n, k, group_size, seed=0):
    g = torch.Generator().manual_seed(seed)
    packed, alpha = fmt.binarize_weight(torch.randn(n, k, generator=g), group_size)
    return torch.randn(m, k, generator=g), packed, alpha, torch.randn(n, generator=g)


# (7, 19, 2100) and (130, 21, 77): several W1A32 tiles (3 x 4 on AVX2) with leftover x rows and weight rows,
# and K blocks of 1024 inputs with a partial last one. AVX2's table paths: W1A32 for M <= 64 in tiles of 4 rows
# of x and passes of 32 weight rows ((1, 77, 100), (4, 70, 300): whole and partial passes, 8-word transposes with
# tails), XNOR for M >= 4 on pairs of x rows in blocks of 128 weight rows ((9, 130, 300): an odd last pair and a
# partial block; (130, 21, 77): 65 pairs, three blocks of 32 pairs; (8, 3, 70000): more words than one run of 16-bit
# counts holds; (11, 257, 1601): passes of 16 words with a partial last one, 60-step count chunks and a 1- or
# 2-step tail).
SHAPES = [(1, 1, 1), (1, 7, 33), (3, 5, 31), (2, 9, 64), (5, 13, 100), (17, 6, 257), (4, 8, 8200), (33, 11, 1000),
          (7, 19, 2100), (130, 21, 77), (1, 77, 100), (4, 70, 300), (9, 130, 300), (8, 3, 70000),
          (11, 257, 1601)]


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("m,k", [(1, 1), (3, 31), (2, 32), (5, 100), (4, 8200)])
def test_binarize_rows(isa, m, k):
    x = torch.randn(m, k)
    x[0, 0] = -0.0
    bits, beta = _C.binarize_per_token_cpu(x, isa)
    want_bits, want_beta = ops.binarize_per_token_ref(x)
    assert torch.equal(bits.view(torch.int32), want_bits.view(torch.int32))
    torch.testing.assert_close(beta, want_beta, rtol=1e-5, atol=0)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("m,n,k", SHAPES)
@pytest.mark.parametrize("group_size", [0, 32, 96])
def test_xnor(isa, m, n, k, group_size):
    x, packed, alpha, b = _case(m, n, k, group_size)
    got = _C.xnor_linear_cpu(x, packed, alpha, group_size, b, isa)
    want = ops.xnor_linear_ref(x.double(), packed, alpha, group_size, b)
    # exact counts; then beta (summed in fp32), alpha, and the G-term sum each round once or so
    scale = x.abs().mean(1, keepdim=True).double() * (alpha.double().sum(1) * min(k, group_size or k)) + b.abs()
    assert ((got.double() - want).abs() <= 1e-5 * scale).all(), (got.double() - want).abs().max()


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("k", [1919, 4100])
def test_xnor_extreme_counts(isa, k):
    """Counts at their largest and smallest side by side: the AVX2 table path keeps two rows of x per byte and
    separates them only at the end of each run of steps, so a row of x whose every bit differs from a weight row
    (popc = k), paired with a row that agrees everywhere (popc = 0), is where a carry between the two would show."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(12, k, generator=g)
    x[0::3] = -x[0::3].abs()  # every bit set
    x[1::3] = x[1::3].abs()   # no bit set
    w = torch.randn(140, k, generator=g)
    w[0::3] = w[0::3].abs()
    w[1::3] = -w[1::3].abs()
    packed, alpha = fmt.binarize_weight(w, 0)
    b = torch.zeros(140)
    got = _C.xnor_linear_cpu(x, packed, alpha, 0, b, isa)
    want = ops.xnor_linear_ref(x.double(), packed, alpha, 0, b)
    scale = x.abs().mean(1, keepdim=True).double() * alpha.double().sum(1) * k
    assert ((got.double() - want).abs() <= 1e-5 * scale).all(), (got.double() - want).abs().max()
    # the all-equal and all-different pairs are exactly +-beta * alpha * k
    beta = x.abs().mean(1).double()
    torch.testing.assert_close(got[0, 0].double(), -beta[0] * alpha[0, 0].double() * k, rtol=1e-5, atol=0)
    torch.testing.assert_close(got[1, 0].double(), beta[1] * alpha[0, 0].double() * k, rtol=1e-5, atol=0)
    torch.testing.assert_close(got[0, 1].double(), beta[0] * alpha[1, 0].double() * k, rtol=1e-5, atol=0)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("m,n,k", SHAPES)
@pytest.mark.parametrize("group_size", [0, 64])
def test_w1a32(isa, m, n, k, group_size):
    x, packed, alpha, b = _case(m, n, k, group_size)
    got = _C.w1a32_linear_cpu(x, packed, alpha, group_size, b, isa)
    want = ops.w1a16_linear_ref(x.double(), packed, alpha, group_size, b)
    mag = x.abs().double() @ fmt.dequantize_binary(packed, alpha, k, group_size, torch.float64).abs().t()
    bound = 4 * k * 2.0**-24 * (2 * mag + b.abs().double()) + 1e-6  # sum and the 2x subtraction, fp32 order
    assert ((got.double() - want).abs() <= bound).all(), (got.double() - want).abs().max()


def test_isas_and_threads_agree():
    x, packed, alpha, b = _case(37, 200, 777, 0)
    outs = [_C.xnor_linear_cpu(x, packed, alpha, 0, b, isa) for isa in ISAS]
    one = _C.w1a32_linear_cpu(x[:3], packed, alpha, 0, b, "")
    torch.set_num_threads(2)
    outs.append(_C.xnor_linear_cpu(x, packed, alpha, 0, b, ""))
    for o in outs[1:]:
        torch.testing.assert_close(o, outs[0], rtol=1e-6, atol=1e-5)  # same counts; epilogue order may differ
    # each output's sum runs on one thread in one order, whatever the split
    assert torch.equal(_C.w1a32_linear_cpu(x[:3], packed, alpha, 0, b, ""), one)


def test_strided_x_and_bad_arguments():
    x, packed, alpha, b = _case(6, 8, 70, 0)
    wide = torch.zeros(6, 100)
    wide[:, 3:73] = x
    torch.testing.assert_close(_C.xnor_linear_cpu(wide[:, 3:73], packed, alpha, 0, b),
                               _C.xnor_linear_cpu(x, packed, alpha, 0, b), rtol=0, atol=0)
    with pytest.raises(RuntimeError, match="uint32"):
        _C.w1a32_linear_cpu(x, packed.view(torch.int32), alpha, 0, b)
    with pytest.raises(RuntimeError, match=r"\(8, 3\)"):
        _C.w1a32_linear_cpu(x, packed, alpha, 32, b)
    with pytest.raises(RuntimeError, match="float32"):
        _C.xnor_linear_cpu(x.double(), packed, alpha, 0, b)
    with pytest.raises(RuntimeError, match="unknown binary CPU ISA"):
        _C.xnor_linear_cpu(x, packed, alpha, 0, b, "sse9")


_SIMDE_SHIM = r"""
static inline int64_t pyc_reduce_add_epi64(simde__m512i v) {
  int64_t a[8]; simde_mm512_storeu_si512(a, v); int64_t s = 0; for (int64_t i : a) s += i; return s;
}
// Reads only the lanes in the mask, as the instruction does.
static inline simde__m512i pyc_maskz_loadu_epi32(simde__mmask16 k, const void* p) {
  int32_t a[16] = {}; const int32_t* q = static_cast<const int32_t*>(p);
  for (int l = 0; l < 16; ++l) if ((k >> l) & 1) a[l] = q[l];
  return simde_mm512_loadu_si512(a);
}
typedef simde__mmask16 __mmask16;
"""

_SIMDE_MAIN = r"""
#include "cpu/binary/binary_linear.h"
using namespace pycomp::cpu::binary;
int main() {
  std::mt19937 rng(7);
  int bad = 0, cases = 0;
  for (int64_t K : {1, 31, 33, 100, 513, 1100})
    for (int64_t gw : {int64_t(0), int64_t(1), int64_t(3)})
      for (int64_t M : {1, 2, 5})
        for (int64_t N : {1, 5, 9, 21}) {
          const int64_t KW = (K + 31) / 32, gwords = gw ? gw : KW, G = (KW + gwords - 1) / gwords;
          std::vector<uint32_t> w(N * KW);
          for (auto& v : w) v = rng();
          if (K % 32)
            for (int64_t n = 0; n < N; ++n) w[n * KW + KW - 1] &= (1u << (K % 32)) - 1;
          std::vector<float> x(M * K), alpha(N * G), bias(N), o1(M * N), o2(M * N);
          // small integers and powers of two: every sum is exact in any order, so the ISAs agree bit for bit
          for (auto& v : x) v = float(int(rng() % 9) - 4);
          for (auto& v : alpha) v = float(1 << (rng() % 3)) / 4.f;
          for (auto& v : bias) v = float(int(rng() % 17) - 8);
          const BinaryWeights wt{w.data(), alpha.data(), bias.data(), N, K, KW, G, gwords};
          for (int op = 0; op < 2; ++op) {
            auto fn = op ? &xnor_linear_f32 : &w1a32_linear_f32;
            fn(BinaryIsa::portable, x.data(), K, wt, o1.data(), N, M);
            fn(BinaryIsa::avx512, x.data(), K, wt, o2.data(), N, M);
            ++cases;
            for (int64_t i = 0; i < M * N; ++i)
              if (o1[i] != o2[i]) { ++bad; printf("op=%d K=%ld gw=%ld M=%ld N=%ld: %g vs %g\n", op, long(K), long(gw), long(M), long(N), o1[i], o2[i]); break; }
          }
        }
  printf("%d cases, %d mismatching\n", cases, bad);
  return bad != 0;
}
"""


@needs_simde
def test_avx512_kernels_under_simde_emulation(tmp_path):
    """Where the CPU hides AVX-512 (this project's machines), binary_avx512.cpp is compiled with its
    intrinsics emulated by SIMDe and run through the real driver against the portable kernels, bit for bit
    on sums that are exact in any order: W1A32 and XNOR, M = 1 and tiles, odd K and N, groups."""
    run_emulated(tmp_path, "csrc/cpu/binary/binary_avx512.cpp",
                 [('"avx512f,avx512bw,avx512vl,avx512vpopcntdq,avx2,fma,popcnt"', '"avx2,fma,popcnt"'),
                  ("_mm512_reduce_add_ps(", "pyc_reduce_add_ps("),
                  ("_mm512_reduce_add_epi64(", "pyc_reduce_add_epi64("),
                  ("_mm512_maskz_loadu_epi32(", "pyc_maskz_loadu_epi32(")],
                 _SIMDE_SHIM, _SIMDE_MAIN, tuple(f"csrc/cpu/{f}" for f in (
                     "binary/binary_portable.cpp", "binary/binary_avx2.cpp", "binary/binary_linear.cpp",
                     "cpu_features.cpp")))
