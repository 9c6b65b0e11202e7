"""The C++ CPU int4 kernels (pycomp._C.w4a16_linear_cpu) against plain PyTorch, for every ISA this CPU runs.

What is checked, per ISA (the isa argument; AVX-512 only where the CPU has it):
- random weights and activations: within the fp32 dot-product bound of a float64
  reference on the exactly dequantized weights, |out - ref| <= (K + 4) u sum_k |x| (code + zero) scale
  (+ 2 scale per column, + |bias|), u = 2**-24: the x86 GEMV sums x * code and subtracts
  zero * sum x apart, and forms odd columns' products from whole bytes, so its sums run
  over (code + zero + 2) * scale (see csrc/cpu/int4/int4_linear.h);
- integer activations and power-of-two scales: every partial sum is an integer
  below 2**24, so the output must equal the reference exactly (a wrong nibble,
  group, zero point or tail fails this);
- M = 1..4 (one GEMV pass), M up to the kernel's GEMV limit (passes of <= 4 rows over blocks of
  weight rows) and larger M (GEMM, edge tiles, K over several panel blocks),
  odd K (a shorter last group and the padding nibble; partial last chunks of
  every vector width), group sizes 32/64/128, asymmetric and symmetric, strided x;
- results bit-identical across thread counts.
"""
from __future__ import annotations

import pytest
import torch

from simde_harness import needs_simde, run_emulated

from pycomp import _ext
from pycomp.formats import int4 as fmt
from pycomp.quantize.int4 import rtn_int4

_C = _ext._C
pytestmark = [pytest.mark.usefixtures("one_thread"),
              pytest.mark.skipif(not _ext.has_c("w4a16_linear_cpu"),
                                 reason=f"pycomp._C int4 kernels not built: {_ext.C_ERROR}")]

ISAS = [isa for isa in ("portable", "avx2", "avx512vnni") if _C is not None and _C.cpu_isa_supported(isa)]
U32 = 2.0**-24
# The largest M each kernel family runs as GEMV passes (kGemvMaxM in csrc/cpu/int4/int4_*.cpp).
GEMV_MAX_M = {"portable": 4, "avx2": 24, "avx512": 16}



def _weights(n, k, gs, symmetric, seed=0):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(n, k, generator=g) * torch.rand(n, 1, generator=g)
    packed, scales, zeros = rtn_int4(w, gs, symmetric)
    return packed, scales, zeros, torch.randn(n, generator=g)


def _ref(x, packed, scales, zeros, bias, gs, k):
    """float64 output and sum_k |x| (code + zero + 2) scale + |bias|, the scale of the fp32 summation error."""
    w = fmt.dequantize_int4(packed, scales, zeros, gs, k, torch.float64)
    codes = fmt.unpack_nibbles(packed, k).double()
    per_col = lambda t: t.double().repeat_interleave(gs, dim=1)[:, :k]  # noqa: E731
    z = fmt.SYMMETRIC_ZERO if zeros is None else per_col(zeros)
    out, mag = x.double() @ w.t(), x.double().abs() @ ((codes + z + 2) * per_col(scales)).t()
    if bias is not None:
        out, mag = out + bias.double(), mag + bias.double().abs()
    return out, mag


def _check(out, x, packed, scales, zeros, bias, gs, k):
    ref, mag = _ref(x, packed, scales, zeros, bias, gs, k)
    assert out.dtype == torch.float32 and out.shape == ref.shape
    err = (out.double() - ref).abs()
    tol = (k + 4) * U32 * mag
    bad = ~(err <= tol)  # NaN counts as bad
    assert not bad.any(), f"{int(bad.sum())} outputs beyond the bound; worst {float((err - tol).max()):.3g}"


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("gs", fmt.GROUP_SIZES)
@pytest.mark.parametrize("symmetric", [False, True], ids=["asym", "sym"])
@pytest.mark.parametrize("m", [1, 2, 3, 4, 5, 8, 17, 24, 25, 128, 129])
def test_random_within_fp32_bound(isa, gs, symmetric, m):
    for n, k in [(37, 33), (8, 100), (13, 257), (50, 1100)]:
        packed, scales, zeros, bias = _weights(n, k, gs, symmetric, seed=n + k)
        x = torch.randn(m, k)
        for b in (bias, None):
            out = _C.w4a16_linear_cpu(x, packed, scales, zeros, b, gs, k, isa)
            _check(out, x, packed, scales, zeros, b, gs, k)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("m", [1, 2, 3, 5, 7, 17, 24, 33, 129])
@pytest.mark.parametrize("k", [1, 2, 15, 17, 31, 33, 63, 65, 97, 129, 255, 513, 1027])
def test_exact_on_integer_sums(isa, m, k):
    g = torch.Generator().manual_seed(k)
    for gs in fmt.GROUP_SIZES:
        for symmetric in (False, True):
            n, groups = 19, fmt.n_groups(k, gs)
            codes = torch.randint(0, 16, (n, k), generator=g, dtype=torch.uint8)
            zeros = None if symmetric else torch.randint(0, 16, (n, groups), generator=g, dtype=torch.uint8)
            scales = (2.0 ** torch.randint(-2, 2, (n, groups), generator=g)).half()
            pad = fmt.SYMMETRIC_ZERO if zeros is None else zeros[:, -1]
            packed = fmt.pack_nibbles(codes, pad)
            x = torch.randint(-4, 5, (m, k), generator=g).float()
            bias = torch.randint(-8, 9, (n,), generator=g).float()
            out = _C.w4a16_linear_cpu(x, packed, scales, zeros, bias, gs, k, isa)
            ref, _ = _ref(x, packed, scales, zeros, bias, gs, k)
            assert torch.equal(out.double(), ref), (gs, symmetric, (out.double() - ref).abs().max())


@pytest.mark.parametrize("isa", ISAS)
def test_padding_nibble_is_ignored(isa):
    """For odd K the last high nibble is padding: whatever it holds, the result is the same."""
    k, gs = 45, 32
    packed, scales, zeros, bias = _weights(6, k, gs, False)
    x = torch.randn(3, k)
    want = _C.w4a16_linear_cpu(x, packed, scales, zeros, bias, gs, k, isa)
    dirty = packed.clone()
    dirty[:, -1] |= 0xF0
    assert torch.equal(_C.w4a16_linear_cpu(x, dirty, scales, zeros, bias, gs, k, isa), want)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("m", [1, 24])
def test_strided_x(isa, m):
    k, gs = 70, 64
    packed, scales, zeros, bias = _weights(9, k, gs, True)
    wide = torch.randn(m, k + 11)
    x = wide[:, 3:3 + k]
    out = _C.w4a16_linear_cpu(x, packed, scales, zeros, bias, gs, k, isa)
    assert torch.equal(out, _C.w4a16_linear_cpu(x.contiguous(), packed, scales, zeros, bias, gs, k, isa))
    _check(out, x, packed, scales, zeros, bias, gs, k)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("m", [5, 13, 24])
def test_gemv_passes_over_row_blocks(isa, m):
    """Up to the ISA's GEMV limit, M > 4 runs as GEMV passes of at most 4 activation rows over
    blocks of weight rows (csrc/cpu/int4/int4_driver.h): 301 rows of K = 1000 make several
    blocks and a partial one, each pass meeting its own rows of x, xsum and out."""
    packed, scales, zeros, bias = _weights(301, 1000, 128, False, seed=m)
    x = torch.randn(m, 1000)
    out = _C.w4a16_linear_cpu(x, packed, scales, zeros, bias, 128, 1000, isa)
    _check(out, x, packed, scales, zeros, bias, 128, 1000)
    if m > GEMV_MAX_M[_C.w4a16_cpu_kernel(isa)]:  # the GEMM's turn
        return
    passes = -(-m // 4)
    for p in range(passes):  # pass p (rows m * p // passes ..) is the GEMV call on just its rows, bit for bit
        m0, m1 = m * p // passes, m * (p + 1) // passes
        assert torch.equal(_C.w4a16_linear_cpu(x[m0:m1], packed, scales, zeros, bias, 128, 1000, isa), out[m0:m1]), p


@pytest.mark.parametrize("n", [301, 5], ids=["split-N", "split-M"])
def test_threads_bit_identical(n):
    """Two threads split N, or M when N has too few rows to share: each output's sum runs in the same order."""
    packed, scales, zeros, bias = _weights(n, 1000, 128, False)
    for m in (1, 3, 13, 40, 300):
        x = torch.randn(m, 1000)
        for isa in ISAS:
            torch.set_num_threads(1)
            one = _C.w4a16_linear_cpu(x, packed, scales, zeros, bias, 128, 1000, isa)
            torch.set_num_threads(2)
            assert torch.equal(_C.w4a16_linear_cpu(x, packed, scales, zeros, bias, 128, 1000, isa), one), (m, isa)


def test_isa_names_and_default():
    assert _C.w4a16_cpu_kernel("portable") == "portable"
    assert _C.w4a16_cpu_kernel() in ("avx512", "avx2", "portable")
    if _C.cpu_isa_supported("avx2") and _C.cpu_features()["f16c"]:
        assert _C.w4a16_cpu_kernel("avx2") == "avx2"


def test_binding_rejects_bad_tensors():
    packed, scales, zeros, bias = _weights(4, 40, 32, False)
    f = _C.w4a16_linear_cpu
    x = torch.randn(2, 40)
    with pytest.raises(RuntimeError, match="w4a16_linear_cpu: x must be a 2-D float32"):
        f(x.double(), packed, scales, zeros, bias, 32, 40)
    with pytest.raises(RuntimeError, match="w4a16_linear_cpu: group_size must be 32, 64 or 128"):
        f(x, packed, scales, zeros, bias, 16, 40)
    with pytest.raises(RuntimeError, match="w4a16_linear_cpu: packed must be a contiguous \\(N, 20\\) uint8"):
        f(x, packed[:, :19], scales, zeros, bias, 32, 40)
    with pytest.raises(RuntimeError, match="w4a16_linear_cpu: scales must be a contiguous float16"):
        f(x, packed, scales.float(), zeros, bias, 32, 40)
    with pytest.raises(RuntimeError, match="w4a16_linear_cpu: zeros must be None or"):
        f(x, packed, scales, zeros[:, :1].contiguous(), bias, 32, 40)
    with pytest.raises(RuntimeError, match="w4a16_linear_cpu: bias must be"):
        f(x, packed, scales, zeros, bias.double(), 32, 40)
    with pytest.raises(RuntimeError, match="w4a16_linear_cpu: .*unknown CPU ISA"):
        f(x, packed, scales, zeros, bias, 32, 40, "sse9")
    assert f(torch.randn(0, 40), packed, scales, zeros, bias, 32, 40).shape == (0, 4)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("round_x", [False, True], ids=["f32x", "x16"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_16_bit_x_is_read_in_place_bit_for_bit(isa, round_x, dtype):
    """bfloat16 and float16 x reach the kernels as they are: the packing (and round_x's int16 rounding, with
    its 8-wide loads and scalar tails) converts each value, exactly, so the output equals that for the same
    values as float32, bit for bit. GEMV passes and GEMM tiles, odd K and partial chunks, strided rows,
    float16 subnormals, and a row holding inf and NaN."""
    for m in (1, 3, 5, 16, 17, 40):
        for n, k, gs in ((9, 37, 32), (20, 300, 64), (33, 1100, 128)):
            packed, scales, zeros, bias = _weights(n, k, gs, False, seed=m + k)
            g = torch.Generator().manual_seed(m * k)
            full = torch.randn(m, k + 7, generator=g) * 3
            full[:, ::5] *= 1e-6  # float16 subnormals
            if m > 2:
                full[1, 4], full[2, k // 2] = float("inf"), float("nan")
            x = full.to(dtype)[:, 3:3 + k]
            assert x.stride() == (k + 7, 1)
            got = _C.w4a16_linear_cpu(x, packed, scales, zeros, bias, gs, k, isa, round_x)
            want = _C.w4a16_linear_cpu(x.float(), packed, scales, zeros, bias, gs, k, isa, round_x)
            assert got.dtype == torch.float32
            torch.testing.assert_close(got, want, rtol=0, atol=0, equal_nan=True, msg=f"m={m} k={k}")


# ----------------------------------------------------------------------------- AVX-512 without the hardware

_SIMDE_SHIM = r"""
#include <simde/x86/f16c.h>
static inline simde__m512i pyc_cvtepu8_epi32(simde__m128i b) {
  uint8_t u[16]; int32_t i[16]; simde_mm_storeu_si128(reinterpret_cast<simde__m128i*>(u), b);
  for (int l = 0; l < 16; ++l) i[l] = u[l];
  return simde_mm512_loadu_si512(i);
}
"""

_SIMDE_MAIN = r"""
#include "cpu/int4/int4_kernels.h"
using namespace pycomp::cpu::int4;
int main() {
  std::mt19937 rng(7);
  int bad = 0, cases = 0;
  const uint16_t pow2[4] = {0x3400, 0x3800, 0x3C00, 0x4000};  // float16 0.25 .. 2: every sum exact
  for (int64_t K : {1, 2, 15, 17, 31, 33, 63, 65, 97, 129, 255, 513, 1027, 1100})
    for (int gs : {32, 64, 128})
      for (int sym = 0; sym < 2; ++sym)
        for (int64_t M : {1, 2, 3, 4, 5, 7, 16, 17, 33, 65}) {
          const int64_t N = 37, Kb = (K + 1) / 2, G = (K + gs - 1) / gs;
          std::vector<uint8_t> p(N * Kb), z(N * G);
          std::vector<uint16_t> s(N * G);
          for (auto& v : p) v = rng();
          for (auto& v : z) v = rng() & 15;
          for (auto& v : s) v = pow2[rng() & 3];
          std::vector<float> x(M * K), bias(N), o1(M * N), o2(M * N);
          for (auto& v : x) v = float(int(rng() % 9) - 4);
          for (auto& v : bias) v = float(int(rng() % 17) - 8);
          const uint8_t* zp = sym ? nullptr : z.data();
          const pycomp::cpu::XRows xr{pycomp::cpu::XType::f32, x.data(), K};
          w4a16_linear_portable(xr, p.data(), s.data(), zp, bias.data(), o1.data(), N, M, N, K, gs);
          w4a16_linear_avx512(xr, p.data(), s.data(), zp, bias.data(), o2.data(), N, M, N, K, gs);
          ++cases;
          for (int64_t i = 0; i < M * N; ++i)
            if (o1[i] != o2[i]) { ++bad; printf("K=%ld gs=%d sym=%d M=%ld: %g vs %g\n", long(K), gs, sym, long(M), o1[i], o2[i]); break; }
        }
  printf("%d cases, %d mismatching\n", cases, bad);
  return bad != 0;
}
"""


@needs_simde
def test_avx512_kernels_under_simde_emulation(tmp_path):
    """Where the CPU hides AVX-512 (this project's machines), int4_avx512.cpp is compiled with its
    intrinsics emulated by SIMDe and checked bit for bit against the portable kernels on integer
    sums (exact in any order): GEMV and GEMM paths, odd K, every group size, both variants."""
    run_emulated(tmp_path, "csrc/cpu/int4/int4_avx512.cpp",
                 [('"avx512f,avx512bw,avx512vl,avx2,fma,f16c"', '"avx2,fma"'),
                  ("return _cvtsh_ss(h);", "return half_to_float(h);"),
                  ("_mm512_reduce_add_ps(", "pyc_reduce_add_ps("),
                  ("_mm512_cvtepu8_epi32(", "pyc_cvtepu8_epi32("),
                  ("_mm512_cvtepi32_ps(", "pyc_cvtepi32_ps(")],
                 _SIMDE_SHIM, _SIMDE_MAIN, ("csrc/cpu/int4/int4_portable.cpp",))
