"""int4 weight-only (W4A16): the k-nibble format, RTN with clipping search, GPTQ, the op, the layers, compress."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import pycomp
from pycomp.formats import int4 as fmt
from pycomp.nn import Int4Conv2d, Int4Linear
from pycomp.ops import int4 as ops
from pycomp.quantize.gptq import Hessian, gptq_int4
from pycomp.quantize.int4 import int4_group_params, rtn_int4


def _weight(n, k, seed=0):
    return torch.randn(n, k, generator=torch.Generator().manual_seed(seed))


# ----------------------------------------------------------------------------- format


@pytest.mark.parametrize("n,k", [(1, 1), (3, 7), (5, 33), (4, 100), (2, 129), (7, 257)])
@pytest.mark.parametrize("group_size", [32, 128])
@pytest.mark.parametrize("symmetric", [False, True])
def test_pack_unpack_round_trip(n, k, group_size, symmetric):
    w = _weight(n, k)
    packed, scales, zeros = rtn_int4(w, group_size, symmetric)
    g = -(-k // group_size)
    assert packed.shape == (n, (k + 1) // 2) and packed.dtype == torch.uint8
    assert scales.shape == (n, g) and scales.dtype == torch.float16
    assert zeros is None if symmetric else (zeros.shape == (n, g) and zeros.dtype == torch.uint8)
    fmt.check_int4(packed, scales, zeros, group_size, k)
    codes = fmt.unpack_nibbles(packed, k)
    assert torch.equal(fmt.pack_nibbles(codes, 8 if symmetric else zeros[:, -1]), packed)
    # the dequantized weight is a fixed point of quantize-then-pack: every value is exactly on the grid
    deq = fmt.dequantize_int4(packed, scales, zeros, group_size, k)
    assert torch.equal(fmt.pack_int4(deq, scales, zeros, group_size), packed)
    if k % 2:  # the padding nibble dequantizes to an exact zero weight
        pad = fmt.dequantize_int4(packed, scales, zeros, group_size, k + 1)[:, -1]
        assert torch.equal(pad, torch.zeros(n))
    step = scales.float().repeat_interleave(group_size, 1)[:, :k]
    assert ((deq - w).abs() <= step * 0.5 + 1e-6).float().mean() > 0.9  # mostly within half a step (clipping aside)


def test_dequantize_by_hand():
    # two rows, K=3, one group of 32 (shorter: K < group_size); byte 0 = col0 | col1 << 4, byte 1 = col2 | pad << 4
    packed = torch.tensor([[1 | 15 << 4, 8 | 8 << 4], [0 | 7 << 4, 3 | 3 << 4]], dtype=torch.uint8)
    scales = torch.tensor([[0.5], [2.0]], dtype=torch.float16)
    zeros = torch.tensor([[8], [3]], dtype=torch.uint8)
    assert fmt.dequantize_int4(packed, scales, zeros, 32, 3).tolist() == [[-3.5, 3.5, 0.0], [-6.0, 8.0, 0.0]]
    # symmetric: zero point 8
    assert fmt.dequantize_int4(packed, scales, None, 32, 3).tolist() == [[-3.5, 3.5, 0.0], [-16.0, -2.0, -10.0]]
    # K=35 with group_size 32: columns 32..34 are the second, short group
    packed = torch.full((1, 18), 9 | 9 << 4, dtype=torch.uint8)
    deq = fmt.dequantize_int4(packed, torch.tensor([[1.0, 10.0]], dtype=torch.float16), None, 32, 35)
    assert deq.tolist() == [[1.0] * 32 + [10.0] * 3]


def test_quantization_rule_by_hand():
    w = torch.tensor([[-1.0, 0.0, 0.25, 0.5, 2.0]])
    scales = torch.tensor([[0.5]], dtype=torch.float16)
    # asymmetric, zero 2: round(w / 0.5) + 2 = [0, 2, 2 (0.5 rounds half to even), 3, 6]
    assert fmt.quantize_codes(w, scales, torch.tensor([[2]], dtype=torch.uint8), 32).tolist() == [[0, 2, 2, 3, 6]]
    # symmetric: + 8, clamped to 15
    assert fmt.quantize_codes(w * 8, scales, None, 32).tolist() == [[0, 8, 12, 15, 15]]


@pytest.mark.parametrize("symmetric", [False, True])
def test_clipping_search_never_worse_than_min_max(symmetric):
    g = torch.Generator().manual_seed(0)
    heavy = torch.distributions.StudentT(2.0).sample((16, 300))
    for w in (torch.randn(16, 300, generator=g), heavy, torch.rand(16, 300, generator=g) + 0.5):
        for gs in fmt.GROUP_SIZES:
            errs = []
            for grid in ((1.0,), None):
                s, z = int4_group_params(w, gs, symmetric) if grid is None else int4_group_params(w, gs, symmetric, grid)
                deq = fmt.dequantize_int4(fmt.pack_int4(w, s, z, gs), s, z, gs, w.shape[1])
                sq = F.pad((deq - w).square(), (0, s.shape[1] * gs - w.shape[1]))
                errs.append(sq.reshape(16, -1, gs).sum(-1))  # per group
            assert (errs[1] <= errs[0]).all()
            assert errs[1].sum() < errs[0].sum()


def test_all_zero_and_tiny_groups_stay_finite():
    w = torch.zeros(2, 64)
    w[1, 40] = 1e-9
    packed, scales, zeros = rtn_int4(w, 32)
    deq = fmt.dequantize_int4(packed, scales, zeros, 32, 64)
    assert torch.isfinite(scales.float()).all() and (deq - w).abs().max() < 1e-7


# ----------------------------------------------------------------------------- GPTQ


def test_gptq_with_identity_hessian_is_rtn():
    """H = 2I: no error to propagate and nothing to reorder, so GPTQ must give RTN's bytes."""
    w = _weight(12, 300)
    h = Hessian(300)
    h.add(torch.eye(300))
    for symmetric in (False, True):
        got = gptq_int4(w, h, 64, symmetric)
        want = rtn_int4(w, 64, symmetric)
        assert all(a is b or torch.equal(a, b) for a, b in zip(got, want))


def test_hessian_accumulates_over_batches():
    x = _weight(50, 20, seed=1)
    one, two = Hessian(20), Hessian(20)
    one.add(x)
    two.add(x[:17])
    two.add(x[17:])
    assert two.rows == 50
    torch.testing.assert_close(one.matrix(), two.matrix())
    torch.testing.assert_close(one.matrix(), 2 * x.t() @ x / 50)


def test_gptq_dead_columns_and_act_order():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(400, 96, generator=g) @ torch.randn(96, 96, generator=g)  # correlated inputs
    x[:, 5] = 0  # a dead input
    w = _weight(10, 96)
    h = Hessian(96)
    h.add(x)
    rtn = rtn_int4(w, 32)
    for act_order in (False, True):
        packed, scales, zeros = gptq_int4(w, h, 32, act_order=act_order)
        deq = fmt.dequantize_int4(packed, scales, zeros, 32, 96)
        assert deq[:, 5].abs().max() == 0
        err = (x @ (deq - w).t()).norm()
        assert err < 0.85 * (x @ (fmt.dequantize_int4(*rtn, 32, 96) - w).t()).norm()


def test_gptq_lowers_every_layers_output_error_against_rtn():
    # benchmarks/gptq_layer_error.py prints this table (RESULTS.md records it): all four digits CNN layers, on
    # the calibration images and on held-out ones. conv1 (K = 9, one group) gains least: 0.68x measured.
    from bench_modules import load_benchmark

    rows = load_benchmark("gptq_layer_error").layer_errors(group_size=128)
    assert [r["layer"] for r in rows] == ["conv1", "conv2", "fc1", "fc2"]
    for r in rows:
        for split in ("train", "test"):
            bound = 0.8 if r["layer"] == "conv1" else 0.5
            assert r[f"gptq_{split}"] < bound * r[f"rtn_{split}"], r


# ----------------------------------------------------------------------------- op


def _packed(n, k, group_size=32, symmetric=False, seed=0):
    packed, scales, zeros = rtn_int4(_weight(n, k, seed), group_size, symmetric)
    return packed, scales, zeros, torch.randn(n, generator=torch.Generator().manual_seed(seed + 1))


@pytest.mark.parametrize("lead,n,k", [((1,), 7, 33), ((4,), 16, 64), ((2, 9), 33, 100), ((130,), 5, 257)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("symmetric", [False, True])
def test_op_matches_dense_layer_on_dequantized_weights(lead, n, k, dtype, symmetric):
    packed, scales, zeros, bias = _packed(n, k, 32, symmetric)
    x = torch.randn(*lead, k).to(dtype)
    got = ops.w4a16_linear(x, packed, scales, zeros, bias, 32, k)
    want = F.linear(x.double(), fmt.dequantize_int4(packed, scales, zeros, 32, k, torch.float64), bias.double())
    assert got.shape == (*lead, n) and got.dtype == dtype
    tol = {torch.float32: 1e-4, torch.bfloat16: 2e-2, torch.float64: 1e-12}[dtype]
    torch.testing.assert_close(got, want.to(dtype), rtol=tol, atol=tol)


@pytest.mark.parametrize("symmetric", [False, True])
def test_opcheck(symmetric):
    packed, scales, zeros, bias = _packed(6, 45, 32, symmetric)
    op = torch.ops.pycomp.w4a16_linear
    torch.library.opcheck(op, (torch.randn(3, 45), packed, scales, zeros, bias, 32, 45))
    torch.library.opcheck(op, (torch.randn(2, 3, 45), packed, scales, zeros, None, 32, 45))


def test_plan_names_what_runs():
    from pycomp import _ext

    kernel = f"cpu-{_ext._C.w4a16_cpu_kernel()}" if _ext.has_c("w4a16_linear_cpu") else "reference"
    assert ops.plan("cpu") == kernel and ops.plan("cpu", 1, 4095, torch.bfloat16) == kernel
    assert ops.plan("cpu", 7, 64, torch.float64) == "reference"
    # CUDA: the int4 dispatcher (tests/test_cuda_int4.py covers its routes); here no CUDA kernel is built
    from pycomp.ops.int4_cuda import plan_cuda

    assert ops.plan("cuda", 1, 4096) == plan_cuda(1, 4096, torch.bfloat16)
    assert ops.plan("cuda", 1, 4096, torch.float64) == "reference"


@pytest.mark.skipif(ops.plan("cpu") == "reference", reason="pycomp._C int4 kernels not built")
@pytest.mark.parametrize("group_size", [32, 64, 128])
@pytest.mark.parametrize("symmetric", [False, True])
def test_op_runs_the_cpu_kernel(monkeypatch, group_size, symmetric):
    """The CPU impl calls the kernel (through its C++ entry) for float32/bfloat16/float16 x, with a padded
    last group when K is not a multiple of the group size, and the reference for float64."""
    from pycomp import _ext

    calls = []
    entry = _ext._C.w4a16_linear_op
    monkeypatch.setattr(_ext._C, "w4a16_linear_op", lambda *a: calls.append(a[0].shape) or entry(*a),
                        raising=True)
    k = group_size * 2 + 9
    packed, scales, zeros, bias = _packed(10, k, group_size, symmetric)
    want_w = fmt.dequantize_int4(packed, scales, zeros, group_size, k, torch.float64)
    torch.manual_seed(group_size + symmetric)
    for lead in [(1,), (3,), (17,), (2, 64)]:
        for dtype, tol in ((torch.float32, None), (torch.bfloat16, 2e-2), (torch.float16, 2e-3)):
            x = torch.randn(*lead, k).to(dtype)
            got = ops.w4a16_linear(x, packed, scales, zeros, bias, group_size, k)
            exact = F.linear(x.double(), want_w, bias.double())
            assert got.dtype == dtype and got.shape == (*lead, 10)
            if tol is None:  # float32 sums of k products: within k units of roundoff of the sum of |terms|
                bound = k * 2.0 ** -24 * (F.linear(x.double().abs(), want_w.abs(), bias.double().abs()) + 1)
                assert ((got.double() - exact).abs() <= bound).all(), float(((got.double() - exact).abs() / bound).max())
            else:
                torch.testing.assert_close(got, exact.to(dtype), rtol=tol, atol=tol)
    assert len(calls) == 12
    ops.w4a16_linear(torch.randn(2, k, dtype=torch.float64), packed, scales, zeros, bias, group_size, k)
    assert len(calls) == 12


def test_straight_through_gradient_and_empty_batch():
    packed, scales, zeros, bias = _packed(6, 40)
    x = torch.randn(3, 40, requires_grad=True)
    ops.w4a16_linear(x, packed, scales, zeros, bias, 32, 40).sum().backward()
    torch.testing.assert_close(x.grad, fmt.dequantize_int4(packed, scales, zeros, 32, 40).sum(0).expand(3, 40))
    assert ops.w4a16_linear(torch.randn(0, 40), packed, scales, zeros, bias, 32, 40).shape == (0, 6)


def test_op_bad_input_raises_clearly():
    packed, scales, zeros, bias = _packed(8, 40)
    op = ops.w4a16_linear
    with pytest.raises(RuntimeError, match="40"):
        op(torch.randn(2, 41), packed, scales, zeros, bias, 32, 40)
    with pytest.raises(RuntimeError, match="uint8"):
        op(torch.randn(2, 40), packed.to(torch.int8), scales, zeros, bias, 32, 40)
    with pytest.raises(RuntimeError, match="scales must be float16"):
        op(torch.randn(2, 40), packed, scales.float(), zeros, bias, 32, 40)
    with pytest.raises(RuntimeError, match="zeros"):
        op(torch.randn(2, 40), packed, scales, zeros[:, :1], bias, 32, 40)
    with pytest.raises(RuntimeError, match="group_size"):
        op(torch.randn(2, 40), packed, scales, zeros, bias, 48, 40)
    with pytest.raises(RuntimeError, match="bias"):
        op(torch.randn(2, 40), packed, scales, zeros, bias[:3], 32, 40)
    with pytest.raises(RuntimeError, match="float"):
        op(torch.ones(2, 40, dtype=torch.int32), packed, scales, zeros, bias, 32, 40)


# ----------------------------------------------------------------------------- layers


@pytest.mark.parametrize("method", ["rtn", "gptq"])
@pytest.mark.parametrize("symmetric", [False, True])
def test_linear_matches_float_layer_on_dequantized_weights(method, symmetric):
    torch.manual_seed(0)
    lin = nn.Linear(150, 11)
    calib = [torch.randn(100, 150), torch.randn(2, 50, 150)] if method == "gptq" else None
    layer = Int4Linear.from_float(lin, group_size=64, method=method, calib=calib, symmetric=symmetric, name="fc")
    x = torch.randn(4, 5, 150)
    # by default x may be rounded to int16 per group: the rounded product exactly, within its bound of the float one
    q = (layer.packed, layer.scales, layer.zeros)
    torch.testing.assert_close(layer(x), ops.w4a16_linear_ref(x, *q, lin.bias, 64, 150, round_x=True).float(),
                               rtol=1e-5, atol=1e-5)
    exact = F.linear(x.double(), layer.dequantize().double(), lin.bias.double())
    assert ((layer(x) - exact).abs() <= ops.round_x_bound(x, *q, 64, 150) + 1e-5).all()
    assert (layer(x) - lin(x)).norm() / lin(x).norm() < 0.12
    assert layer.backend == ops.plan("cpu", round_x=True) and layer.backend_for(1) == ops.plan("cpu", 1, 150, None, True)
    assert layer.backend_for(1, torch.float64) == "reference"
    assert "group_size=64" in repr(layer) and f"symmetric={symmetric}" in repr(layer) and "round_x=True" in repr(layer)
    exact_layer = Int4Linear.from_float(lin, group_size=64, method=method, calib=calib, symmetric=symmetric,
                                        round_x=False)
    torch.testing.assert_close(exact_layer(x), F.linear(x, layer.dequantize(), lin.bias), rtol=1e-5, atol=1e-5)
    assert exact_layer.backend == ops.plan("cpu")
    assert layer.nbytes() == 11 * 75 + 11 * 3 * 2 + (0 if symmetric else 11 * 3)


CONV_CASES = [
    dict(kernel_size=3, padding=1),
    dict(kernel_size=(3, 5), stride=(2, 1), padding=(1, 2), dilation=(2, 1)),
    dict(kernel_size=1),
    dict(kernel_size=3, padding="same", dilation=2, bias=False),
    dict(kernel_size=3, padding=1, groups=2),
]


@pytest.mark.parametrize("cfg", CONV_CASES, ids=[str(c) for c in CONV_CASES])
@pytest.mark.parametrize("method", ["rtn", "gptq"])
def test_conv_matches_conv2d_on_dequantized_weights(cfg, method):
    torch.manual_seed(0)
    conv = nn.Conv2d(6, 8, **cfg)
    calib = [torch.randn(3, 6, 11, 9), torch.randn(2, 6, 11, 9)] if method == "gptq" else None
    layer = Int4Conv2d.from_float(conv, group_size=32, method=method, calib=calib, name="conv", round_x=False)
    x = torch.randn(2, 6, 11, 9)
    want = F.conv2d(x, layer.dequantize(), conv.bias, conv.stride, conv.padding, conv.dilation, conv.groups)
    torch.testing.assert_close(layer(x), want, rtol=1e-5, atol=1e-5)
    assert (layer(x) - conv(x)).norm() / conv(x).norm() < 0.12
    # x rounded to int16 per group moves an output by at most max|x| / 65534 * sum |w[n]| (round_x_bound's ceiling)
    layer.round_x = True
    w_l1 = layer.dequantize().abs().flatten(1).sum(1).max()
    assert (layer(x) - want).abs().max() <= x.abs().max() / 65534 * w_l1 + 1e-5


def test_layers_keep_exact_float16_scales_under_dtype_changes():
    layer = Int4Linear.from_float(nn.Linear(64, 4), group_size=32)
    scales = layer.scales.clone()
    layer = layer.to(torch.bfloat16).float().half()
    assert layer.scales.dtype == torch.float16 and torch.equal(layer.scales, scales)
    assert layer.packed.dtype == torch.uint8 and layer.bias.dtype == torch.float16
    assert layer(torch.randn(3, 64, dtype=torch.float16)).dtype == torch.float16


def test_state_dict_round_trip():
    src = Int4Conv2d.from_float(nn.Conv2d(3, 4, 3, padding=1), group_size=32, symmetric=True)
    assert "zeros" not in src.state_dict()
    dst = Int4Conv2d(3, 4, 3, padding=1, group_size=32, symmetric=True)
    dst.load_state_dict(src.state_dict())
    x = torch.randn(1, 3, 6, 6)
    assert torch.equal(src(x), dst(x))
    assert src.format_info() == {"format": "int4", "layout": "k-nibble", "version": 1, "group_size": 32,
                                 "symmetric": True, "in_features": 27, "scale_dtype": "float16", "zero_dtype": None}


def test_compiles_without_graph_breaks():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(40, 16), nn.ReLU(), nn.Linear(16, 4))
    small = pycomp.compress(model, "int4", group_size=32)
    x = torch.randn(5, 40)
    torch.testing.assert_close(torch.compile(small, fullgraph=True)(x), small(x))


# ----------------------------------------------------------------------------- compress


def test_gptq_calibrates_layers_in_call_order_on_compressed_inputs():
    class TwoLayers(nn.Module):
        def __init__(self):
            super().__init__()
            self.second = nn.Linear(64, 8)  # registered first, called last
            self.first = nn.Linear(40, 64)

        def forward(self, x):
            return self.second(torch.relu(self.first(x)))

    torch.manual_seed(0)
    model = TwoLayers()
    calib = [torch.randn(50, 40), (torch.randn(30, 40), torch.zeros(30))]
    small = pycomp.compress(model, "int4", group_size=32, method="gptq", calib=iter(calib))
    assert not model._forward_pre_hooks and not model.first._forward_pre_hooks
    xs = [calib[0], calib[1][0]]
    first = Int4Linear.from_float(model.first, group_size=32, method="gptq", calib=xs)
    assert torch.equal(small.first.packed, first.packed)
    with torch.no_grad():
        second = Int4Linear.from_float(model.second, group_size=32, method="gptq",
                                       calib=[torch.relu(first(x)) for x in xs])
    assert torch.equal(small.second.packed, second.packed)


def test_digits_cnn_retention():
    """The issue's targets: int4 g128 RTN loses <= 1 point, GPTQ <= 0.5 point on the digits CNN."""
    from pycomp.models.digits import digits_loaders, pretrained_digits_cnn

    model = pretrained_digits_cnn()
    train, test = digits_loaders()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    results = {}
    for method, limit in (("rtn", 0.01), ("gptq", 0.005)):
        small = pycomp.compress(model, "int4", group_size=128, method=method, calib=train)
        assert isinstance(small.fc1, Int4Linear) and isinstance(small.conv2, Int4Conv2d)
        # the C++ kernel where built, on x rounded to int16 per group
        assert small.fc1.backend == small.conv2.backend == ops.plan("cpu", round_x=True)
        r = pycomp.retention.evaluate(model, small, test, latency=False).to_dict()
        assert r["accuracy_original"] > 0.95
        assert r["accuracy_original"] - r["accuracy_compressed"] <= limit + 1e-9, r
        results[method] = r
    assert results["gptq"]["kl_divergence"] < results["rtn"]["kl_divergence"]
    assert 6 < results["rtn"]["compression_ratio"] < 8.5
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


# ----------------------------------------------------------------------------- errors


def test_bad_input_names_the_layer_and_the_rule():
    lin = nn.Linear(64, 2)
    with torch.no_grad():
        lin.weight[1, 2] = float("nan")
    with pytest.raises(ValueError, match="fc2.*NaN"):
        Int4Linear.from_float(lin, name="fc2")
    with pytest.raises(ValueError, match="fc2.*NaN"):
        Int4Linear.from_float(lin, method="gptq", calib=torch.randn(100, 64), name="fc2")
    with pytest.raises(ValueError, match="fc.*group_size must be one of \\(32, 64, 128\\)"):
        Int4Linear.from_float(nn.Linear(64, 2), group_size=100, name="fc")
    with pytest.raises(ValueError, match="fc.*gptq.*needs calib"):
        Int4Linear.from_float(nn.Linear(64, 2), method="gptq", name="fc")
    with pytest.raises(ValueError, match="fc.*at least 64 calibration rows.*got 40"):
        Int4Linear.from_float(nn.Linear(64, 2), method="gptq", calib=[torch.randn(20, 64)] * 2, name="fc")
    with pytest.raises(ValueError, match="stem.*at least 27 calibration rows.*got 16"):
        Int4Conv2d.from_float(nn.Conv2d(3, 4, 3), method="gptq", calib=torch.randn(1, 3, 6, 6), name="stem")
    with pytest.raises(ValueError, match="fc.*64 input features"):
        Int4Linear.from_float(nn.Linear(64, 2), method="gptq", calib=torch.randn(100, 63), name="fc")
    with pytest.raises(ValueError, match="method"):
        Int4Linear.from_float(nn.Linear(64, 2), method="awq")
    huge = nn.Linear(64, 2)
    with torch.no_grad():
        huge.weight[0, 0] = 1e7
    with pytest.raises(ValueError, match="big.*beyond float16"):
        Int4Linear.from_float(huge, name="big")
    layer = Int4Linear.from_float(nn.Linear(64, 2), name="head")
    with pytest.raises(ValueError, match="head.*64"):
        layer(torch.randn(3, 63))


def test_compress_errors_are_clear_and_change_nothing():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 4))
    with pytest.raises(ValueError, match="int4 calibrates.*calib="):
        pycomp.compress(model, "int4", method="gptq")
    with pytest.raises(ValueError, match="group_size"):
        pycomp.compress(model, "int4", group_size=16)
    with pytest.raises(ValueError, match="act_order"):
        pycomp.compress(model, "int4", act_order=True)
    with pytest.raises(ValueError, match="'0'.*at least 64 calibration rows"):
        pycomp.compress(model, "int4", method="gptq", calib=[torch.randn(10, 64)])
    with pytest.raises(ValueError, match="no batch"):
        pycomp.compress(model, "int4", method="gptq", calib=[])

    class WithUnusedHead(nn.Module):
        def __init__(self):
            super().__init__()
            self.body, self.unused = model, nn.Linear(4, 4)

        def forward(self, x):
            return self.body(x)

    with pytest.raises(ValueError, match="'unused' never ran"):
        pycomp.compress(WithUnusedHead(), "int4", method="gptq", calib=[torch.randn(100, 64)])
    small = pycomp.compress(WithUnusedHead(), "int4", method="gptq", calib=[torch.randn(100, 64)], skip=["unused"])
    assert isinstance(small.body[0], Int4Linear) and isinstance(model[0], nn.Linear)
