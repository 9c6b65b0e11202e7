"""int4 with round_x: the CPU kernels round x to int16 per (row, weight group) and multiply in integers
(csrc/cpu/int4/int4_avx2_x16.cpp). Checked against round_x_ref (the rounding, bit for bit, then a float64
product) on random and odd shapes through the GEMV and the GEMM, and against the exact product within
round_x_bound."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import pycomp
from pycomp import _ext
from pycomp.formats import int4 as fmt
from pycomp.nn import Int4Linear
from pycomp.ops import int4 as ops
from pycomp.quantize.int4 import rtn_int4

HAS_C = _ext.has_c("w4a16_linear_cpu")
X16 = HAS_C and _ext._C.w4a16_cpu_kernel("", True) == "avx2-x16"
needs_x16 = pytest.mark.skipif(not X16, reason="the int16 kernels need pycomp._C on an AVX2 + F16C CPU")


def _weights(n, k, gs, symmetric, seed=0):
    g = torch.Generator().manual_seed(seed)
    packed, scales, zeros = rtn_int4(torch.randn(n, k, generator=g), gs, symmetric)
    return packed, scales, zeros, torch.randn(n, generator=g)


def _x(m, k, seed=1):
    x = torch.randn(m, k, generator=torch.Generator().manual_seed(seed))
    x[0, min(3, k - 1)] = 40.0  # an outlier: its group rounds the rest more coarsely
    return x


def test_round_x_ref_is_a_16_bit_rounding_per_group():
    x = _x(3, 100)
    x[1, 32:64] = 0.0  # an all-zero group stays zero
    r = ops.round_x_ref(x, 32)
    assert r.dtype == torch.float64 and r.shape == x.shape
    for g in range(4):
        xs = x[:, g * 32:(g + 1) * 32]
        s = (xs.abs().amax(1, keepdim=True) / 32767).double()
        q = r[:, g * 32:(g + 1) * 32] / torch.where(s > 0, s, torch.ones_like(s))
        assert torch.equal(q, q.round()) and q.abs().max() <= 32767
        assert ((r[:, g * 32:(g + 1) * 32] - xs.double()).abs() <= s / 2 + 1e-12).all()
    assert torch.equal(r[1, 32:64], torch.zeros(32, dtype=torch.float64))
    bad = x.clone()
    bad[2, 70] = float("nan")
    assert ops.round_x_ref(bad, 32)[2, 64:96].isnan().all() and not ops.round_x_ref(bad, 32)[:2].isnan().any()


@needs_x16
@pytest.mark.parametrize("m", [1, 2, 3, 4, 5, 8, 13, 16, 17, 33, 130])
@pytest.mark.parametrize("n,k,gs", [(37, 1000, 128), (50, 77, 32), (33, 129, 64), (17, 65, 64), (64, 4096, 128)])
@pytest.mark.parametrize("symmetric", [False, True])
def test_kernel_matches_round_x_ref(m, n, k, gs, symmetric):
    packed, scales, zeros, bias = _weights(n, k, gs, symmetric, seed=m + k)
    x = _x(m, k, seed=m)
    got = _ext._C.w4a16_linear_cpu(x, packed, scales, zeros, bias, gs, k, "", True)
    want = ops.w4a16_linear_ref(x, packed, scales, zeros, bias, gs, k, round_x=True)
    # int32 sums per group are exact; what is left is float32 rounding of the per-group terms
    scale = F.linear(ops.round_x_ref(x, gs).abs(), fmt.dequantize_int4(packed, scales, zeros, gs, k, torch.float64).abs())
    assert ((got.double() - want).abs() <= 1e-6 * (scale + bias.double().abs() + 1)).all()
    exact = ops.w4a16_linear_ref(x.double(), packed, scales, zeros, bias, gs, k)
    bound = ops.round_x_bound(x, packed, scales, zeros, gs, k)
    assert ((got.double() - exact).abs() <= bound + 1e-6 * (scale + 1)).all()
    assert ((got.double() - exact).abs() > 0).any()  # the rounding happened: this is not the float32 kernel


@needs_x16
def test_round_x_is_far_finer_than_bfloat16_x():
    packed, scales, zeros, bias = _weights(64, 1024, 128, False)
    x = _x(4, 1024)
    exact = ops.w4a16_linear_ref(x.double(), packed, scales, zeros, bias, 128, 1024)
    got = _ext._C.w4a16_linear_cpu(x, packed, scales, zeros, bias, 128, 1024, "", True)
    bf16 = ops.w4a16_linear_ref(x.bfloat16().double(), packed, scales, zeros, bias, 128, 1024)
    assert (got.double() - exact).abs().max() * 8 < (bf16 - exact).abs().max()


@needs_x16
@pytest.mark.parametrize("m", [1, 3, 40])
def test_non_finite_x_gives_nan_rows_only(m):
    packed, scales, zeros, bias = _weights(20, 300, 64, False)
    x = _x(m, 300)
    x[0, 100] = float("nan")
    x[-1, 5] = float("inf")
    got = _ext._C.w4a16_linear_cpu(x, packed, scales, zeros, bias, 64, 300, "", True)
    assert got[0].isnan().all() and got[-1].isnan().all()
    if m > 2:
        assert got[1:-1].isfinite().all()


@needs_x16
def test_strided_rows_and_threads_agree():
    packed, scales, zeros, bias = _weights(70, 500, 32, False)
    big = _x(40, 600)
    x = big[:, 50:550]  # row stride 600
    got = _ext._C.w4a16_linear_cpu(x, packed, scales, zeros, bias, 32, 500, "", True)
    assert torch.equal(got, _ext._C.w4a16_linear_cpu(x.contiguous(), packed, scales, zeros, bias, 32, 500, "", True))
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = _ext._C.w4a16_linear_cpu(x.contiguous(), packed, scales, zeros, bias, 32, 500, "", True)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one, got)
    for m0, m1 in ((0, 1), (3, 7), (9, 40)):  # each row's result depends on that row only
        part = _ext._C.w4a16_linear_cpu(x[m0:m1].contiguous(), packed, scales, zeros, bias, 32, 500, "", True)
        torch.testing.assert_close(part, got[m0:m1], rtol=1e-6, atol=1e-5)


@pytest.mark.skipif(not HAS_C, reason="pycomp._C not built")
def test_plan_and_the_portable_kernels_keep_float32():
    assert ops.plan("cpu", round_x=True) == ("cpu-avx2-x16" if X16 else ops.plan("cpu"))
    assert ops.plan("cpu", 1, 64, torch.float64, round_x=True) == "reference"
    assert _ext._C.w4a16_cpu_kernel("portable", True) == "portable"
    packed, scales, zeros, bias = _weights(9, 70, 32, False)
    x = _x(3, 70)
    got = _ext._C.w4a16_linear_cpu(x, packed, scales, zeros, bias, 32, 70, "portable", True)
    torch.testing.assert_close(got, _ext._C.w4a16_linear_cpu(x, packed, scales, zeros, bias, 32, 70, "portable", False))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_op_with_round_x_stays_within_the_bound(dtype):
    packed, scales, zeros, bias = _weights(12, 200, 64, False)
    x = _x(5, 200).to(dtype)
    got = ops.w4a16_linear(x, packed, scales, zeros, bias, 64, 200, True)
    assert got.dtype == dtype
    exact = ops.w4a16_linear_ref(x.double(), packed, scales, zeros, bias, 64, 200)
    slack = {torch.float32: 1e-4, torch.bfloat16: 0.05, torch.float64: 1e-9}[dtype] * (exact.abs() + 1)
    assert ((got.double() - exact).abs() <= ops.round_x_bound(x, packed, scales, zeros, 64, 200) + slack).all()


def test_opcheck_and_gradient_with_round_x():
    packed, scales, zeros, bias = _weights(6, 45, 32, False)
    torch.library.opcheck(torch.ops.pycomp.w4a16_linear, (torch.randn(3, 45), packed, scales, zeros, bias, 32, 45, True))
    x = torch.randn(3, 45, requires_grad=True)
    ops.w4a16_linear(x, packed, scales, zeros, bias, 32, 45, True).sum().backward()
    torch.testing.assert_close(x.grad, fmt.dequantize_int4(packed, scales, zeros, 32, 45).sum(0).expand(3, 45))


@pytest.mark.skipif(not HAS_C, reason="pycomp._C not built")
def test_dense_route_decodes_exactly():
    """A large batch of a small layer runs MKL on the weight decoded with an identity; that decode must not be
    rounded (an identity row rounds 1 to 32767 * (1 / 32767))."""
    packed, scales, zeros, bias = _weights(8, 64, 32, False)
    x = torch.randn(4096, 64)
    if ops.plan("cpu", 4096, 64, round_x=True) != "cpu-dense":
        pytest.skip("no dense route for this shape here")
    got = ops.w4a16_linear(x, packed, scales, zeros, bias, 32, 64, True)
    torch.testing.assert_close(got, F.linear(x, fmt.dequantize_int4(packed, scales, zeros, 32, 64), bias),
                               rtol=1e-5, atol=1e-5)


def test_layer_setting_round_trips_through_files(tmp_path):
    def arch():
        return nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 8))

    model = arch()
    fast = pycomp.compress(model, "int4", group_size=32)
    exact = pycomp.compress(model, "int4", group_size=32, round_x=False)
    assert fast[0].round_x and not exact[0].round_x and fast[0].settings()["round_x"]
    x = torch.randn(5, 64)
    torch.testing.assert_close(exact(x), F.linear(F.relu(F.linear(x, exact[0].dequantize(), exact[0].bias)),
                                                  exact[2].dequantize(), exact[2].bias), rtol=1e-5, atol=1e-5)
    pycomp.save(exact, tmp_path / "exact")
    loaded = pycomp.load(tmp_path / "exact", model=arch())
    assert not loaded[0].round_x and torch.equal(loaded(x), exact(x))
    assert isinstance(Int4Linear(64, 8), Int4Linear) and Int4Linear(64, 8).round_x
