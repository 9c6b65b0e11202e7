"""The C++ CPU int8 kernels (pycomp._C) against plain PyTorch, for every ISA this CPU runs.

What is checked, per ISA:
- quantize_per_token_int8_cpu: q and scale equal, bit for bit, to the formula in
  csrc/cpu/int8/int8_linear.h (torch.round rounds half to even, like rint);
- int8_linear_dynamic_cpu (W8A8): within a few fp32 roundings of a float64
  reference built from the reference-quantized activations (the int32 dot is
  exact, so only the epilogue rounds), exactly equal where the epilogue is exact,
  and bit-identical across ISAs and thread counts;
- quantize_per_token_uint7_cpu and int8_linear_dynamic_reduce_range_cpu (W8A8
  with 7-bit activations and a zero point): equal bit for bit to the PyTorch
  reference (pycomp.ops.int8), which does the exact integer dot and then the
  kernels' fp32 epilogue in the kernels' order;
- int8_linear_weight_only_cpu (W8A32): within the fp32 summation bound of a
  float64 reference, and exact when every partial sum is an integer below 2**24.
Shapes cover M = 1..4 (GEMV tiles), larger M (GEMM tiles, edge tiles), odd K
(tails of every vector width), K spanning several cache blocks, strided x.
"""
from __future__ import annotations

import pytest
import torch

from pycomp import _ext
from simde_harness import needs_simde, run_emulated

_C = _ext._C
pytestmark = pytest.mark.skipif(_C is None, reason=f"pycomp._C not built: {_ext.C_ERROR}")

ISAS = [isa for isa in ("portable", "avx2", "avx512vnni") if _C is not None and _C.cpu_isa_supported(isa)]


@pytest.fixture(autouse=True)
def one_thread():
    """Most tests run single-threaded: hundreds of small calls on a loaded 2-core
    machine spend most of their time in OpenMP spin-waits. Threaded runs are
    compared bit for bit with single-threaded ones in test_threads."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


U32 = 2.0**-24  # fp32 unit roundoff

MS = [1, 2, 3, 4, 5, 16, 17, 33, 128]
ODD_KS = [1, 3, 17, 31, 33, 63, 65, 257]
NS = [1, 7, 16, 33]


def quantize_ref(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The header's formula, in fp32: scale = amax / 127, q = clamp(rint(x * (127 / amax)), -127, 127)."""
    amax = x.abs().amax(dim=1)
    # Tensor-by-tensor divisions: `127.0 / amax` runs as amax.reciprocal() * 127,
    # which is not the correctly rounded fp32 division the header specifies.
    c127 = torch.full_like(amax, 127.0)
    inv = torch.where(amax > 0, c127 / amax, torch.zeros_like(amax))
    q = torch.round(x * inv[:, None]).clamp(-127, 127).to(torch.int8)
    return q, amax / c127


def dynamic_ref(x, w, wscale, bias):
    """float64 W8A8 output and the magnitude its fp32 epilogue rounds against."""
    q, s = quantize_ref(x)
    scaled = (q.double() @ w.double().t()) * s.double()[:, None] * wscale.double()
    out = scaled if bias is None else scaled + bias.double()
    mag = scaled.abs() if bias is None else scaled.abs() + bias.double().abs()
    return out, mag


def weight_only_ref(x, w, wscale, bias):
    """float64 W8A32 output and sum_k |x w wscale| (+ |bias|), the scale of fp32 summation error."""
    wd = w.double() * wscale.double()[:, None]
    out = x.double() @ wd.t()
    mag = x.double().abs() @ wd.abs().t()
    if bias is not None:
        out, mag = out + bias.double(), mag + bias.double().abs()
    return out, mag


def assert_within(out: torch.Tensor, ref: torch.Tensor, tol: torch.Tensor, what: str) -> None:
    assert out.dtype == torch.float32 and out.shape == ref.shape, what
    err = (out.double() - ref).abs()
    bad = ~(err <= tol)  # NaN counts as bad
    if bad.any():
        i = tuple(bad.nonzero()[0].tolist())
        raise AssertionError(
            f"{what}: {int(bad.sum())} of {out.numel()} outputs off; first at {i}: "
            f"got {out[i].item()!r}, want {ref[i].item()!r} +- {tol[i].item():.3g}"
        )


def make_weight(N: int, K: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    w = torch.randint(-127, 128, (N, K), dtype=torch.int8, generator=gen)
    wscale = torch.rand(N, generator=gen) * 0.02 + 1e-3
    return w, wscale


def make_x(M: int, K: int, gen: torch.Generator) -> torch.Tensor:
    # rows of very different magnitudes, so the per-row scales differ
    return torch.randn(M, K, generator=gen) * torch.logspace(-3, 3, M)[:, None]


# ----------------------------------------------------------------------------- quantization


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("K", [*ODD_KS, 64, 4096])
def test_quantize_matches_formula(isa, K):
    gen = torch.Generator().manual_seed(K)
    x = make_x(9, K, gen)
    q, s = _C.quantize_per_token_int8_cpu(x, isa)
    q_ref, s_ref = quantize_ref(x)
    assert q.dtype == torch.int8 and s.dtype == torch.float32
    assert torch.equal(q, q_ref) and torch.equal(s, s_ref)


@pytest.mark.parametrize("isa", ISAS)
def test_quantize_ties_extremes_and_zero_rows(isa):
    # amax = 127 makes the inverse scale exactly 1, so x * inv = x: the .5 ties
    # land exactly and must round to even, in the vector body and in the tails.
    ties = [0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 126.5, -126.5, 125.5, 3.49999976, -3.50000024]
    K = 45  # vector body of 32 or 16 or 8 lanes, then a scalar tail
    row = torch.tensor((ties * 5)[:K], dtype=torch.float32)
    rows = [row.clone(), row.clone(), torch.zeros(K), torch.zeros(K)]
    rows[0][7], rows[1][40] = 127.0, -127.0  # amax at a body lane / a tail lane, either sign
    rows[3][K - 1] = -3.0e-3  # one non-zero in the tail: it quantizes to -127 exactly
    # 127 / amax correctly rounded gives x * inv = -20.500002 -> -21; the
    # reciprocal-times-127 shortcut gives exactly -20.5 -> -20
    rows.append(torch.zeros(K))
    rows[4][3] = 4.025964736938477
    rows[4][10] = rows[4][K - 2] = -0.6498605012893677  # in the vector body and in the tail
    x = torch.stack(rows)
    q, s = _C.quantize_per_token_int8_cpu(x, isa)
    q_ref, s_ref = quantize_ref(x)
    assert torch.equal(q, q_ref) and torch.equal(s, s_ref)
    assert q[0, 0].item() == 0 and q[0, 1].item() == 2 and q[0, 2].item() == 2 and q[0, 6].item() == 126
    assert q[0, 7].item() == 127 and q[1, 40].item() == -127 and q[3, K - 1].item() == -127
    assert s[2].item() == 0.0 and not q[2].any()
    assert q[4, 10].item() == -21 and q[4, K - 2].item() == -21


@pytest.mark.parametrize("isa", ISAS)
def test_quantize_strided_rows(isa):
    gen = torch.Generator().manual_seed(1)
    wide = torch.randn(5, 80, generator=gen)
    x = wide[:, 3:70]  # row stride 80 > K = 67
    q, s = _C.quantize_per_token_int8_cpu(x, isa)
    q_ref, s_ref = quantize_ref(x)
    assert torch.equal(q, q_ref) and torch.equal(s, s_ref)


# ----------------------------------------------------------------------------- W8A8


def check_dynamic(isa, x, w, wscale, bias, what):
    out = _C.int8_linear_dynamic_cpu(x, w, wscale, bias, isa)
    ref, mag = dynamic_ref(x, w, wscale, bias)
    # fp32 epilogue: float(int32 dot), * scale, * wscale, + bias: four roundings
    assert_within(out, ref, 8 * U32 * mag + 1e-37, what)
    return out


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("M", MS)
@pytest.mark.parametrize("K", [*ODD_KS, 64])
def test_dynamic_matches_reference(isa, M, K):
    gen = torch.Generator().manual_seed(1000 * M + K)
    x = make_x(M, K, gen)
    for N in NS:
        w, wscale = make_weight(N, K, gen)
        for bias in (None, torch.randn(N, generator=gen)):
            check_dynamic(isa, x, w, wscale, bias, f"{isa} M={M} K={K} N={N} bias={bias is not None}")


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("M", [1, 3, 5, 16, 128])
@pytest.mark.parametrize("K", [4096, 9000])
def test_dynamic_long_k(isa, M, K):
    # K = 9000 spans several K cache blocks of the GEMM paths (partial sums
    # carried across blocks) and ends in a tail.
    gen = torch.Generator().manual_seed(M + K)
    x = make_x(M, K, gen)
    for N in (1, 16):
        w, wscale = make_weight(N, K, gen)
        check_dynamic(isa, x, w, wscale, torch.randn(N, generator=gen), f"{isa} M={M} K={K} N={N}")


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("M,K", [(1, 1000), (4, 1000), (17, 1000), (6, 3000), (6, 9000)])
def test_dynamic_exact_integer_dot(isa, M, K):
    # Rows reaching +-127 quantize with inv = scale = 1, so q = x; with unit
    # weight scales, no bias and |dot| < 2**24 the output is the int32 dot exactly.
    gen = torch.Generator().manual_seed(K + M)
    x = torch.randint(-127, 128, (M, K), generator=gen).float()
    x[:, K // 2] = 127.0
    x[::2, K - 1] = -127.0
    limit = (2**24 - 1) // (127 * K)  # keeps |dot| < 2**24 for any row
    w = torch.randint(-min(127, limit), min(127, limit) + 1, (19, K), dtype=torch.int8, generator=gen)
    w[:, 0] = 127
    out = _C.int8_linear_dynamic_cpu(x, w, torch.ones(19), None, isa)
    assert torch.equal(out, (x.double() @ w.double().t()).float())


@pytest.mark.parametrize("isa", ISAS)
def test_dynamic_extremes_and_zero_rows(isa):
    # Every product at +-127 * 127 (the largest int32 sums the kernels make),
    # zero rows (scale 0: output = bias), and ties.
    K, N = 1031, 9
    x = torch.full((6, K), 127.0)
    x[1] = -127.0
    x[2] = 0.0
    x[3] = 0.0
    x[3, ::3] = -0.5
    x[3, 0] = 1.0  # row 3: amax 1, so the -0.5 scale to the tie -63.5 (-> -64)
    x[4] = 0.0
    x[5, ::2] = -127.0
    w = torch.full((N, K), 127, dtype=torch.int8)
    w[1::2] = -127
    bias = torch.arange(N, dtype=torch.float32)
    out = check_dynamic(isa, x, w, torch.ones(N), bias, f"{isa} extremes")
    assert torch.equal(out[2], bias) and torch.equal(out[4], bias)
    assert out[0, 0].item() == 127 * 127 * K and out[1, 0].item() == -127 * 127 * K


@pytest.mark.parametrize("isa", ISAS)
def test_dynamic_strided_x(isa):
    gen = torch.Generator().manual_seed(7)
    for M, K in [(1, 33), (3, 64), (17, 257)]:
        wide = torch.randn(M, K + 40, generator=gen)
        x = wide[:, 5 : 5 + K]  # a column slice: row stride K + 40
        assert x.stride(0) > K and x.stride(1) == 1
        w, wscale = make_weight(16, K, gen)
        out = check_dynamic(isa, x, w, wscale, None, f"{isa} strided M={M} K={K}")
        assert torch.equal(out, _C.int8_linear_dynamic_cpu(x.contiguous(), w, wscale, None, isa))


@pytest.mark.skipif(len(ISAS) < 2, reason="one ISA only")
def test_dynamic_isas_agree_bit_for_bit():
    gen = torch.Generator().manual_seed(3)
    for M, K, N in [(1, 4096, 33), (3, 65, 7), (5, 257, 33), (33, 31, 16), (128, 1000, 40)]:
        x = make_x(M, K, gen)
        w, wscale = make_weight(N, K, gen)
        bias = torch.randn(N, generator=gen)
        outs = [_C.int8_linear_dynamic_cpu(x, w, wscale, bias, isa) for isa in ISAS]
        for isa, out in zip(ISAS[1:], outs[1:]):
            assert torch.equal(out, outs[0]), f"{isa} and {ISAS[0]} differ at M={M} K={K} N={N}"


# ----------------------------------------------------------------------------- W8A8 reduce-range

RR_MS = [1, 2, 3, 5, 17, 129]
RR_KS = [1, 3, 31, 33, 63, 65, 257]  # none a multiple of the AVX2 step (32) but 1 step + tails


def uint7_x(M: int, K: int, gen: torch.Generator) -> torch.Tensor:
    """make_x, plus rows that are all positive (zp 0), all negative (zp 127) and zero (scale 0)."""
    x = make_x(M, K, gen)
    if M >= 3:
        x[0] = x[0].abs() + 0.1
        x[1] = -x[1].abs() - 0.1
        x[2] = 0.0
    return x


def check_reduce_range(isa, x, w, wscale, bias, what):
    from pycomp.ops.int8 import int8_linear_dynamic_reduce_range_ref, weight_row_sums

    wsum = weight_row_sums(w)
    out = _C.int8_linear_dynamic_reduce_range_cpu(x, w, wscale, wsum, bias, isa)
    want = int8_linear_dynamic_reduce_range_ref(x, w, wscale, wsum, bias)
    if not torch.equal(out, want):
        bad = (out != want).nonzero()[0].tolist()
        raise AssertionError(f"{what}: {int((out != want).sum())} outputs differ; first at {bad}: "
                             f"got {out[tuple(bad)].item()!r}, want {want[tuple(bad)].item()!r}")
    return out


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("K", [*ODD_KS, 64, 4096])
def test_quantize_uint7_matches_reference(isa, K):
    from pycomp.ops.int8 import quantize_per_token_uint7_ref

    gen = torch.Generator().manual_seed(K + 7)
    x = uint7_x(9, K, gen)
    q, s, zp = _C.quantize_per_token_uint7_cpu(x, isa)
    q_ref, s_ref, zp_ref = quantize_per_token_uint7_ref(x)
    assert q.dtype == torch.uint8 and s.dtype == torch.float32 and zp.dtype == torch.int32
    assert torch.equal(q, q_ref) and torch.equal(s, s_ref) and torch.equal(zp, zp_ref)
    assert int(q.max()) <= 127
    assert zp[0].item() == 0 and zp[1].item() == 127 and s[2].item() == 0.0 and not q[2].any()


@pytest.mark.parametrize("isa", ISAS)
def test_quantize_uint7_ties_and_strided_rows(isa):
    from pycomp.ops.int8 import quantize_per_token_uint7_ref

    # lo = -63.5, hi = 63.5: r = 127, inv = 1, zp = rint(63.5) = 64 (half to even); the .5 inputs tie.
    ties = torch.tensor([0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 62.5, -62.5, 63.5, -63.5] * 5)[:45]
    wide = torch.zeros(3, 60)
    wide[0, 7:52] = ties
    wide[1, 7:52] = ties * 0.37
    x = wide[:, 7:52]  # row stride 60 > K = 45; the vector body and the scalar tail both see ties
    q, s, zp = _C.quantize_per_token_uint7_cpu(x, isa)
    q_ref, s_ref, zp_ref = quantize_per_token_uint7_ref(x)
    assert torch.equal(q, q_ref) and torch.equal(s, s_ref) and torch.equal(zp, zp_ref)
    assert zp[0].item() == 64 and q[0, :3].tolist() == [64, 66, 66] and q[0, 8].item() == 127


@pytest.mark.parametrize("isa", ISAS)
def test_quantize_and_dynamic_nan_and_inf_follow_the_reference(isa):
    from pycomp.ops.int8 import int8_linear_dynamic_ref, quantize_per_token_int8_ref

    K = 45  # NaN / inf in the vector body and in the tail
    x = torch.randn(5, K, generator=torch.Generator().manual_seed(2))
    x[0, 3] = x[0, 40] = float("nan")  # left out of max|x|, quantized to -127
    x[1, 5] = float("inf")  # infinite max|x|: inv = 0, the inf itself inf * 0 = NaN -> -127
    x[2, 41] = float("-inf")
    x[3] = float("nan")
    q, s = _C.quantize_per_token_int8_cpu(x, isa)
    q_ref, s_ref = quantize_per_token_int8_ref(x)
    assert torch.equal(q, q_ref) and torch.equal(s, s_ref)
    assert q[0, 3].item() == -127 and q[0, 40].item() == -127 and torch.isfinite(s[0])
    assert q[1, 5].item() == -127 and q[1, :5].eq(0).all() and s[1].item() == float("inf")
    w, wscale = make_weight(7, K, torch.Generator().manual_seed(3))
    out = _C.int8_linear_dynamic_cpu(x, w, wscale, None, isa)
    want = int8_linear_dynamic_ref(x, w, wscale)
    assert torch.isfinite(out[0]).all() and torch.isfinite(out[4]).all()
    assert torch.allclose(out, want, rtol=1e-5, atol=1e-5, equal_nan=True)  # NaN / inf where the reference has them


@pytest.mark.parametrize("isa", ISAS)
def test_quantize_uint7_nan_and_inf_follow_the_reference(isa):
    from pycomp.ops.int8 import int8_linear_dynamic_reduce_range_ref, quantize_per_token_uint7_ref, weight_row_sums

    K = 45  # NaN / inf in the vector body (32 lanes) and in the scalar tail
    x = torch.randn(5, K, generator=torch.Generator().manual_seed(2))
    x[0, 3] = x[0, 40] = float("nan")  # skipped by min/max, quantized to 0
    x[1, 5] = float("inf")  # infinite range: inv = 0, every product inf * 0 or 0
    x[2, 41] = float("-inf")
    x[3] = float("nan")
    got = _C.quantize_per_token_uint7_cpu(x, isa)
    for g, w in zip(got, quantize_per_token_uint7_ref(x)):
        assert torch.equal(g, w)
    assert got[0][0, 3].item() == 0 and got[0][0, 40].item() == 0
    w, wscale = make_weight(7, K, torch.Generator().manual_seed(3))
    out = _C.int8_linear_dynamic_reduce_range_cpu(x, w, wscale, weight_row_sums(w), None, isa)
    want = int8_linear_dynamic_reduce_range_ref(x, w, wscale, weight_row_sums(w))
    assert torch.allclose(out, want, rtol=0, atol=0, equal_nan=True)  # exact; NaN where the reference has NaN


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("M", RR_MS)
@pytest.mark.parametrize("K", RR_KS)
def test_reduce_range_matches_reference(isa, M, K):
    gen = torch.Generator().manual_seed(3000 * M + K)
    x = uint7_x(M, K, gen)
    for N in (1, 7, 33):
        w, wscale = make_weight(N, K, gen)
        bias = torch.randn(N, generator=gen) if N != 7 else None
        check_reduce_range(isa, x, w, wscale, bias, f"{isa} M={M} K={K} N={N}")


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("M", [1, 4, 5, 17])
@pytest.mark.parametrize("K", [4096, 9000])
def test_reduce_range_long_k(isa, M, K):
    gen = torch.Generator().manual_seed(M * K + 1)
    x = uint7_x(M, K, gen)
    w, wscale = make_weight(25, K, gen)
    check_reduce_range(isa, x, w, wscale, torch.randn(25, generator=gen), f"{isa} M={M} K={K}")


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("M,K", [(1, 1000), (3, 1000), (17, 1001), (6, 9000)])
def test_reduce_range_exact_integer_dot(isa, M, K):
    # Rows spanning exactly 127 (lo = -a, hi = 127 - a) quantize with inv = scale = 1 and zp = a, so
    # q - zp = x; with unit weight scales, no bias and |dot| < 2**24 the output is the integer dot.
    gen = torch.Generator().manual_seed(M + K)
    a = torch.randint(1, 127, (M, 1), generator=gen)
    x = (torch.randint(0, 128, (M, K), generator=gen) - a).float()
    x[:, K // 3] = (-a).float().squeeze(1)
    x[:, K - 1] = (127 - a).float().squeeze(1)
    limit = (2**24 - 1) // (127 * K)
    w = torch.randint(-min(127, limit), min(127, limit) + 1, (19, K), dtype=torch.int8, generator=gen)
    from pycomp.ops.int8 import weight_row_sums

    out = _C.int8_linear_dynamic_reduce_range_cpu(x, w, torch.ones(19), weight_row_sums(w), None, isa)
    assert torch.equal(out, (x.double() @ w.double().t()).float())


@pytest.mark.parametrize("isa", ISAS)
def test_reduce_range_extremes_do_not_saturate(isa):
    # q = 127 against w = +-127 everywhere: every vpmaddubsw pair sum is +-32258, the most
    # it can see; zero rows give the bias; all-negative rows have zp = 127.
    K, N = 1031, 9
    x = torch.full((5, K), 3.0)
    x[1] = -3.0
    x[2] = 0.0
    x[3, ::2] = -3.0
    w = torch.full((N, K), 127, dtype=torch.int8)
    w[1::2] = -127
    bias = torch.arange(N, dtype=torch.float32)
    out = check_reduce_range(isa, x, w, torch.ones(N), bias, f"{isa} extremes")
    assert torch.equal(out[2], bias)
    assert out[0, 0].item() == pytest.approx(3.0 * 127 * K + 0.0, rel=1e-6)


@pytest.mark.parametrize("isa", ISAS)
def test_reduce_range_threads_and_strided_x(isa):
    gen = torch.Generator().manual_seed(17)
    for M, K, N in [(1, 4096, 100), (5, 1001, 97), (33, 257, 160), (129, 65, 40)]:
        wide = uint7_x(M, K + 9, gen)
        x = wide[:, 4 : 4 + K]
        w, wscale = make_weight(N, K, gen)
        bias = torch.randn(N, generator=gen)
        outs = []
        for t in (1, 2, 3):
            torch.set_num_threads(t)
            outs.append(check_reduce_range(isa, x, w, wscale, bias, f"{isa} M={M} K={K} N={N} threads={t}"))
        assert all(torch.equal(o, outs[0]) for o in outs[1:])


def test_reduce_range_checks_wsum():
    x, w, s = torch.randn(2, 8), torch.zeros(3, 8, dtype=torch.int8), torch.ones(3)
    with pytest.raises(RuntimeError, match="wsum must be a contiguous int32"):
        _C.int8_linear_dynamic_reduce_range_cpu(x, w, s, torch.zeros(3), None)
    with pytest.raises(RuntimeError, match="N=3"):
        _C.int8_linear_dynamic_reduce_range_cpu(x, w, s, torch.zeros(2, dtype=torch.int32), None)


# ----------------------------------------------------------------------------- W8A32


def check_weight_only(isa, x, w, wscale, bias, what):
    out = _C.int8_linear_weight_only_cpu(x, w, wscale, bias, isa)
    ref, mag = weight_only_ref(x, w, wscale, bias)
    K = x.shape[1]
    # any summation order of K fp32 products is within (K + 1) u of sum |terms|;
    # then * wscale and + bias round twice more
    assert_within(out, ref, (K + 3) * U32 * mag + 1e-37, what)
    return out


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("M", MS)
@pytest.mark.parametrize("K", [*ODD_KS, 64])
def test_weight_only_matches_reference(isa, M, K):
    gen = torch.Generator().manual_seed(2000 * M + K)
    x = make_x(M, K, gen)
    for N in NS:
        w, wscale = make_weight(N, K, gen)
        for bias in (None, torch.randn(N, generator=gen)):
            check_weight_only(isa, x, w, wscale, bias, f"{isa} M={M} K={K} N={N} bias={bias is not None}")


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("M", [1, 2, 3, 4, 5, 16, 33])
@pytest.mark.parametrize("K", [3, 17, 65, 257, 4096, 9000])
def test_weight_only_exact_on_integers(isa, M, K):
    # Small-integer x and power-of-two scales: every partial sum is an integer
    # below 2**24, so any summation order is exact and a lost or doubled term shows.
    gen = torch.Generator().manual_seed(M * K)
    x = torch.randint(-8, 9, (M, K), generator=gen).float()
    w = torch.randint(-127, 128, (11, K), dtype=torch.int8, generator=gen)
    wscale = 2.0 ** torch.randint(-6, 3, (11,), generator=gen).float()
    bias = torch.randint(-50, 50, (11,), generator=gen).float()
    out = _C.int8_linear_weight_only_cpu(x, w, wscale, bias, isa)
    assert torch.equal(out, (x.double() @ (w.double() * wscale.double()[:, None]).t() + bias.double()).float())


@pytest.mark.parametrize("isa", ISAS)
def test_weight_only_strided_x_and_zero_rows(isa):
    gen = torch.Generator().manual_seed(11)
    wide = torch.randn(6, 300, generator=gen)
    wide[2] = 0.0
    x = wide[:, 7:264]  # K = 257, row stride 300
    w, wscale = make_weight(33, 257, gen)
    bias = torch.randn(33, generator=gen)
    out = check_weight_only(isa, x, w, wscale, bias, f"{isa} strided")
    assert torch.equal(out, _C.int8_linear_weight_only_cpu(x.contiguous(), w, wscale, bias, isa))
    assert torch.equal(out[2], bias)


# ----------------------------------------------------------------------------- small N, large M

# The AVX2 kernels run shapes with M >= 64, N <= 128, K <= min(4096, 2M) (a conv layer's im2col GEMM)
# through outer-product tiles of 6 rows x 16 columns over weights packed per call (int8_driver.h,
# small_n_shape, linear_small_n). M = 63 stays on the dot-product tiles, and so does M < K / 2; the
# others cover partial row tiles, partial and single-column panels, and K tails of the W8A8 pair step
# and of the quantization's 16-lane vectors.
SMALL_N_MS = [63, 64, 67, 151]
SMALL_N_NS = [1, 2, 3, 15, 16, 17, 63, 64, 65, 128]
SMALL_N_KS = [1, 3, 9, 17, 288, 289]


@pytest.mark.parametrize("K", SMALL_N_KS)
def test_small_n_dynamic_matches_portable_bit_for_bit(K):
    gen = torch.Generator().manual_seed(K + 40)
    for i, N in enumerate(SMALL_N_NS):
        M = SMALL_N_MS[i % len(SMALL_N_MS)]
        x = make_x(M, K, gen)
        w, wscale = make_weight(N, K, gen)
        for bias in (None, torch.randn(N, generator=gen)):
            what = f"M={M} K={K} N={N} bias={bias is not None}"
            outs = [check_dynamic(isa, x, w, wscale, bias, f"{isa} {what}") for isa in ISAS]
            for isa, out in zip(ISAS[1:], outs[1:]):
                assert torch.equal(out, outs[0]), f"{isa} and {ISAS[0]} differ at {what}"


@pytest.mark.parametrize("K", SMALL_N_KS)
def test_small_n_weight_only_matches_reference(K):
    gen = torch.Generator().manual_seed(K + 41)
    for i, N in enumerate(SMALL_N_NS):
        M = SMALL_N_MS[(i + 1) % len(SMALL_N_MS)]
        x = make_x(M, K, gen)
        w, wscale = make_weight(N, K, gen)
        for bias in (None, torch.randn(N, generator=gen)):
            for isa in ISAS:
                check_weight_only(isa, x, w, wscale, bias, f"{isa} M={M} K={K} N={N} bias={bias is not None}")


@pytest.mark.parametrize("K", SMALL_N_KS)
def test_small_n_reduce_range_matches_reference(K):
    # bit for bit against the PyTorch reference, as every reduce-range kernel
    gen = torch.Generator().manual_seed(K + 42)
    for i, N in enumerate(SMALL_N_NS):
        M = SMALL_N_MS[(i + 2) % len(SMALL_N_MS)]
        x = uint7_x(M, K, gen)
        w, wscale = make_weight(N, K, gen)
        for bias in (None, torch.randn(N, generator=gen)):
            for isa in ISAS:
                check_reduce_range(isa, x, w, wscale, bias, f"{isa} M={M} K={K} N={N} bias={bias is not None}")


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("M,K,N", [(2048, 4096, 3), (2100, 4095, 17), (200, 288, 64), (67, 9, 33)])
def test_small_n_exact(isa, M, K, N):
    # W8A8 on rows that quantize to themselves (q = x) and W8A32 on small integers with power-of-two
    # scales: both outputs are exact integers, so a lost, doubled or misplaced term shows. The first
    # rows put every product at +-127 * 127, the largest int32 sums the tiles make.
    gen = torch.Generator().manual_seed(M + K + N)
    x = torch.randint(-127, 128, (M, K), generator=gen).float()
    x[:, 0] = 127.0
    limit = (2**24 - 1) // (127 * K)
    w = torch.randint(-min(127, limit), min(127, limit) + 1, (N, K), dtype=torch.int8, generator=gen)
    want = (x.double() @ w.double().t()).float()
    assert torch.equal(_C.int8_linear_dynamic_cpu(x, w, torch.ones(N), None, isa), want)
    x8 = torch.randint(-8, 9, (M, K), generator=gen).float()
    wscale = 2.0 ** torch.randint(-6, 3, (N,), generator=gen).float()
    bias = torch.randint(-50, 50, (N,), generator=gen).float()
    want = (x8.double() @ (w.double() * wscale.double()[:, None]).t() + bias.double()).float()
    assert torch.equal(_C.int8_linear_weight_only_cpu(x8, w, wscale, bias, isa), want)
    xe = torch.full((M, K), 127.0)
    xe[1::2] = -127.0
    we = torch.full((N, K), 127, dtype=torch.int8)
    we[1::2] = -127
    out = _C.int8_linear_dynamic_cpu(xe, we, torch.ones(N), None, isa)
    sign = torch.where(torch.arange(M)[:, None] % 2 == torch.arange(N) % 2, 1.0, -1.0)
    assert torch.equal(out, (sign.double() * 127 * 127 * K).float())
    check_reduce_range(isa, xe, we, torch.ones(N), None, f"{isa} reduce-range extremes M={M} K={K} N={N}")


@pytest.mark.skipif(len(ISAS) < 2, reason="one ISA only")
def test_small_n_nan_and_inf_agree_across_isas():
    # NaN / inf in the vector bodies (16 and 32 lanes) and in the K tails of the small-N quantizations
    # (K = 41): amax and min / max skip NaN, an infinite range makes inv 0, NaN products quantize to -127
    # (W8A8) or 0 (reduce-range), as in every ISA and in the reduce-range reference.
    M, K, N = 70, 41, 20
    gen = torch.Generator().manual_seed(29)
    x = make_x(M, K, gen)
    x[0, 3] = x[0, 37] = float("nan")
    x[1, 5] = float("inf")
    x[2, 40] = float("-inf")
    x[3] = float("nan")
    w, wscale = make_weight(N, K, gen)
    bias = torch.randn(N, generator=gen)
    outs = [_C.int8_linear_dynamic_cpu(x, w, wscale, bias, isa) for isa in ISAS]
    for isa, out in zip(ISAS[1:], outs[1:]):
        assert torch.allclose(out, outs[0], rtol=0, atol=0, equal_nan=True), f"{isa} and {ISAS[0]} differ"
    assert torch.equal(outs[0][4:], check_dynamic(ISAS[0], x[4:], w, wscale, bias, "finite rows"))
    from pycomp.ops.int8 import int8_linear_dynamic_reduce_range_ref, weight_row_sums

    want = int8_linear_dynamic_reduce_range_ref(x, w, wscale, weight_row_sums(w), bias)
    for isa in ISAS:
        out = _C.int8_linear_dynamic_reduce_range_cpu(x, w, wscale, weight_row_sums(w), bias, isa)
        assert torch.allclose(out, want, rtol=0, atol=0, equal_nan=True), f"{isa} reduce-range"


@pytest.mark.parametrize("isa", ISAS)
def test_small_n_threads_and_strided_x(isa):
    # Threads split the rows in blocks; each output's summation is fixed by the tile, so any thread
    # count gives the single-threaded bits (all three modes). x is a column slice (row stride > K):
    # W8A32 reads it in place.
    gen = torch.Generator().manual_seed(23)
    for M, K, N in [(1000, 288, 64), (777, 9, 32), (600, 1001, 10)]:
        x = make_x(M, K + 7, gen)[:, 3 : 3 + K]
        w, wscale = make_weight(N, K, gen)
        bias = torch.randn(N, generator=gen)
        results = []
        for t in (1, 2, 3):
            torch.set_num_threads(t)
            what = f"{isa} M={M} K={K} N={N} threads={t}"
            results.append((check_dynamic(isa, x, w, wscale, bias, what),
                            check_weight_only(isa, x, w, wscale, bias, what),
                            check_reduce_range(isa, x, w, wscale, bias, what)))
        torch.set_num_threads(1)
        contiguous = (_C.int8_linear_dynamic_cpu(x.contiguous(), w, wscale, bias, isa),
                      _C.int8_linear_weight_only_cpu(x.contiguous(), w, wscale, bias, isa),
                      check_reduce_range(isa, x.contiguous(), w, wscale, bias, f"{isa} contiguous"))
        for outs in [*results[1:], contiguous]:
            assert all(torch.equal(o, r) for o, r in zip(outs, results[0])), (M, K, N)


# ----------------------------------------------------------------------------- threads and errors


@pytest.mark.parametrize("isa", ISAS)
def test_threads(isa):
    # Threads split N (or M when N is short); each output's summation order is
    # fixed by the blocking, so results match the single-threaded ones bit for bit.
    gen = torch.Generator().manual_seed(5)
    cases = [(16, 512, 64), (128, 512, 5), (1, 4096, 100), (5, 1001, 97), (33, 257, 160)]
    for M, K, N in cases:
        x = make_x(M, K, gen)
        w, wscale = make_weight(N, K, gen)
        bias = torch.randn(N, generator=gen)
        results = []
        for t in (1, 2, 3):
            torch.set_num_threads(t)
            what = f"{isa} M={M} K={K} N={N} threads={t}"
            dyn = check_dynamic(isa, x, w, wscale, bias, what)
            results.append((dyn, check_weight_only(isa, x, w, wscale, bias, what)))
        for dyn, wo in results[1:]:
            assert torch.equal(dyn, results[0][0]) and torch.equal(wo, results[0][1]), (M, K, N)


def test_isa_names_are_checked():
    x, w, s = torch.randn(2, 8), torch.zeros(3, 8, dtype=torch.int8), torch.ones(3)
    with pytest.raises(RuntimeError, match="unknown CPU ISA"):
        _C.int8_linear_dynamic_cpu(x, w, s, None, "sse9")
    missing = [isa for isa in ("avx2", "avx512vnni") if not _C.cpu_isa_supported(isa)]
    for isa in missing:
        with pytest.raises(RuntimeError, match="cannot run"):
            _C.int8_linear_weight_only_cpu(x, w, s, None, isa)


_SIMDE_SHIM = r"""
typedef simde__mmask16 __mmask16;
typedef simde__mmask64 __mmask64;
// Masked byte loads lane by lane (reading only the selected bytes, as the hardware does).
static inline simde__m512i pyc_maskz_loadu_epi8_512(simde__mmask64 k, const void* p) {
  int8_t b[64] = {}; for (int l = 0; l < 64; ++l) if ((k >> l) & 1) b[l] = static_cast<const int8_t*>(p)[l];
  return simde_mm512_loadu_si512(b);
}
static inline simde__m128i pyc_maskz_loadu_epi8_128(simde__mmask16 k, const void* p) {
  int8_t b[16] = {}; for (int l = 0; l < 16; ++l) if ((k >> l) & 1) b[l] = static_cast<const int8_t*>(p)[l];
  return simde_mm_loadu_si128(reinterpret_cast<const simde__m128i*>(b));
}
static inline simde__m512i pyc_cvtepi8_epi32(simde__m128i b) {
  int8_t s[16]; int32_t i[16]; simde_mm_storeu_si128(reinterpret_cast<simde__m128i*>(s), b);
  for (int l = 0; l < 16; ++l) i[l] = s[l];
  return simde_mm512_loadu_si512(i);
}
static inline int32_t pyc_reduce_add_epi32(simde__m512i v) {
  int32_t a[16]; simde_mm512_storeu_si512(a, v); uint32_t s = 0; for (int32_t i : a) s += uint32_t(i);
  return int32_t(s);
}
"""

_SIMDE_MAIN = r"""
#include <cstdlib>
#include "cpu/int8/int8_tiles.h"
using namespace pycomp::cpu::int8;
// The AVX-512 path quantizes with the AVX2 row quantizer, bit-identical to the portable one (checked by
// test_dynamic_isas_agree_bit_for_bit); the portable one stands in for it here.
float pycomp::cpu::int8::quantize_row_avx2(const float* x, int64_t K, int8_t* q) {
  float scale;
  quantize_portable(x, K, q, &scale, 1, K);
  return scale;
}
float pycomp::cpu::int8::quantize_row_uint7_avx2(const float* x, int64_t K, uint8_t* q, int32_t* zp) {
  float scale;
  quantize_uint7_portable(x, K, q, &scale, zp, 1, K);
  return scale;
}
// The reduce-range entry hands conv shapes to the AVX2 small-N kernels, which are not compiled here.
void pycomp::cpu::int8::linear_reduce_range_avx2(const float*, int64_t, const int8_t*, const float*, const int32_t*,
                                                 const float*, float*, int64_t, int64_t, int64_t, int64_t) {
  std::abort();
}
int main() {
  std::mt19937 rng(11);
  std::normal_distribution<float> normal;
  int bad = 0, cases = 0;
  for (int64_t K : {1, 17, 63, 64, 65, 127, 200, 1031, 4096, 4161})
    for (int64_t M : {1, 2, 3, 4, 5, 6, 7, 13})
      for (int64_t N : {1, 3, 9, 50}) {
        // x: normal for W8A8; small integers for W8A32, so every fp32 partial sum is exact in any order.
        std::vector<float> xd(M * K), xw(M * K), ws(N), b(N), o1(M * N), o2(M * N);
        std::vector<int8_t> w(N * K);
        for (auto& v : xd) v = normal(rng);
        for (auto& v : xw) v = float(int(rng() % 17) - 8);
        for (auto& v : w) v = int8_t(int(rng() % 255) - 127);
        for (int64_t n = 0; n < N; ++n) ws[n] = 0.001f * float(1 + rng() % 97), b[n] = normal(rng);
        const float* bias = (K % 2) ? b.data() : nullptr;
        auto compare = [&](const char* what) {
          ++cases;
          for (int64_t i = 0; i < M * N; ++i)
            if (o1[i] != o2[i]) {
              ++bad;
              printf("%s M=%ld N=%ld K=%ld at %ld: %.9g vs %.9g\n", what, long(M), long(N), long(K), long(i), o1[i], o2[i]);
              break;
            }
        };
        linear_dynamic_avx512(xd.data(), K, w.data(), ws.data(), bias, o1.data(), N, M, N, K);
        linear_dynamic_portable(xd.data(), K, w.data(), ws.data(), bias, o2.data(), N, M, N, K);
        compare("W8A8");
        std::vector<int32_t> wsum(N, 0);
        for (int64_t n = 0; n < N; ++n)
          for (int64_t k = 0; k < K; ++k) wsum[n] += w[n * K + k];
        linear_reduce_range_avx512(xd.data(), K, w.data(), ws.data(), wsum.data(), bias, o1.data(), N, M, N, K);
        linear_reduce_range_portable(xd.data(), K, w.data(), ws.data(), wsum.data(), bias, o2.data(), N, M, N, K);
        compare("W8A8 reduce-range");
        linear_weight_only_avx512(xw.data(), K, w.data(), ws.data(), bias, o1.data(), N, M, N, K);
        linear_weight_only_portable(xw.data(), K, w.data(), ws.data(), bias, o2.data(), N, M, N, K);
        compare("W8A32");
      }
  printf("%d cases, %d mismatching\n", cases, bad);
  return bad != 0;
}
"""


@needs_simde
def test_avx512_vnni_kernels_under_simde_emulation(tmp_path):
    """Where the CPU hides AVX-512 (the Zen 3 machines of sessions 1-10), int8_avx512.cpp is compiled with its
    intrinsics emulated by SIMDe (its two asm statements swapped for the same intrinsics) and checked bit
    for bit against the portable kernels: W8A8 (vpdpbusd on w + 128, the driver's 128 * sum q correction),
    W8A8 reduce-range (u8 activations against the weights as they are) and W8A32 on exact sums; GEMV (M <= 4) and 6 x 4 GEMM tiles, edge tiles, masked K tails, K blocks."""
    run_emulated(tmp_path, "csrc/cpu/int8/int8_avx512.cpp",
                 [('"avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma"', '"avx2,fma"'),
                  ('__asm__("vpdpbusd %[s], %[u], %[acc]" : [acc] "+v"(acc) : [u] "v"(u), [s] "v"(s));',
                   "acc = _mm512_dpbusd_epi32(acc, u, s);"),
                  ('__asm__("vfmadd231ps %[a], %[w], %[acc]"\n'
                   '          : [acc] "+v"(acc)\n'
                   '          : [w] "v"(w), [a] "m"(*reinterpret_cast<const __m512*>(a)));',
                   "acc = _mm512_fmadd_ps(_mm512_loadu_ps(a), w, acc);"),
                  ("_mm512_reduce_add_epi32(", "pyc_reduce_add_epi32("),
                  ("_mm512_reduce_add_ps(", "pyc_reduce_add_ps("),
                  ("_mm512_cvtepi32_ps(", "pyc_cvtepi32_ps("),
                  ("_mm512_cvtepi8_epi32(", "pyc_cvtepi8_epi32("),
                  ("_mm512_maskz_loadu_epi8(", "pyc_maskz_loadu_epi8_512("),
                  ("_mm_maskz_loadu_epi8(", "pyc_maskz_loadu_epi8_128(")],
                 _SIMDE_SHIM, _SIMDE_MAIN,
                 ("csrc/cpu/int8/int8_portable.cpp",), no_inline=True)
