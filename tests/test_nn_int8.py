"""Int8Linear and Int8Conv2d against plain-PyTorch layers."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pycomp.nn import Int8Conv2d, Int8Linear
from pycomp.ops import int8 as ops


@pytest.mark.parametrize("mode", ["dynamic", "weight_only"])
def test_linear_from_float_matches_reference(mode):
    torch.manual_seed(0)
    lin = nn.Linear(37, 11)
    layer = Int8Linear.from_float(lin, mode=mode, name="fc")
    x = torch.randn(4, 5, 37)
    ref = ops.int8_linear_dynamic_ref if mode == "dynamic" else ops.int8_linear_weight_only_ref
    torch.testing.assert_close(layer(x), ref(x, layer.qweight, layer.wscale, layer.bias), rtol=1e-4, atol=1e-4)
    # and close to the float layer: per-channel int8 weights keep ~2 significant digits
    err = (layer(x) - lin(x)).norm() / lin(x).norm()
    assert err < 0.02
    assert layer.backend.startswith("cpu-") and "mode=" + mode in repr(layer)


def test_linear_weight_quantization_is_per_channel_symmetric():
    lin = nn.Linear(8, 3, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0, -0.5] * 4, [0.0] * 8, [3.0, 1.5] * 4]))
    layer = Int8Linear.from_float(lin)
    assert layer.qweight[0].tolist() == [127, -64] * 4  # -63.5 rounds half to even
    assert layer.qweight[1].abs().sum() == 0 and layer.wscale[1] == 0
    assert layer.wscale.tolist() == pytest.approx([1 / 127, 0.0, 3 / 127])
    assert layer.bias is None


CONV_CASES = [
    dict(kernel_size=3, padding=1),
    dict(kernel_size=3, stride=2, padding=0),
    dict(kernel_size=(3, 5), stride=(2, 1), padding=(1, 2), dilation=(2, 1)),
    dict(kernel_size=1),
    dict(kernel_size=1, stride=2),
    dict(kernel_size=3, padding="same", dilation=2),
    dict(kernel_size=4, padding="same"),
    dict(kernel_size=3, padding="valid", bias=False),
    dict(kernel_size=3, padding=1, groups=2),
]


@pytest.mark.parametrize("cfg", CONV_CASES, ids=[str(c) for c in CONV_CASES])
def test_conv_weight_only_matches_conv2d_on_dequantized_weights(cfg):
    torch.manual_seed(0)
    conv = nn.Conv2d(6, 8, **cfg)
    layer = Int8Conv2d.from_float(conv, mode="weight_only", name="conv")
    x = torch.randn(2, 6, 11, 9)
    want = F.conv2d(x, layer.dequantize(), conv.bias, conv.stride, conv.padding, conv.dilation, conv.groups)
    torch.testing.assert_close(layer(x), want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("cfg", CONV_CASES[:3], ids=[str(c) for c in CONV_CASES[:3]])
def test_conv_dynamic_is_im2col_of_the_dynamic_op(cfg):
    torch.manual_seed(1)
    conv = nn.Conv2d(5, 7, **cfg)
    layer = Int8Conv2d.from_float(conv, name="conv")
    x = torch.randn(2, 5, 10, 10)
    got = layer(x)
    p = conv.padding
    cols = F.unfold(x, conv.kernel_size, dilation=conv.dilation, padding=p, stride=conv.stride).transpose(1, 2)
    want = ops.int8_linear_dynamic_ref(cols, layer.qweight, layer.wscale, layer.bias).transpose(1, 2)
    torch.testing.assert_close(got, want.reshape(got.shape), rtol=1e-4, atol=1e-4)
    assert (got - conv(x)).norm() / conv(x).norm() < 0.03


def test_layers_keep_float32_scales_under_half_and_bfloat16():
    layer = Int8Linear.from_float(nn.Linear(16, 4))
    layer = layer.to(torch.bfloat16)
    assert layer.wscale.dtype == torch.float32 and layer.qweight.dtype == torch.int8
    assert layer.bias.dtype == torch.bfloat16
    out = layer(torch.randn(3, 16, dtype=torch.bfloat16))
    assert out.dtype == torch.bfloat16


def test_state_dict_round_trip():
    src = Int8Conv2d.from_float(nn.Conv2d(3, 4, 3, padding=1))
    dst = Int8Conv2d(3, 4, 3, padding=1)
    dst.load_state_dict(src.state_dict())
    x = torch.randn(1, 3, 6, 6)
    assert torch.equal(src(x), dst(x))


def test_bad_input_names_the_layer():
    layer = Int8Linear.from_float(nn.Linear(16, 4), name="encoder.fc")
    with pytest.raises(ValueError, match="encoder.fc.*16"):
        layer(torch.randn(3, 15))
    with pytest.raises(TypeError, match="encoder.fc"):
        layer(torch.ones(3, 16, dtype=torch.long))
    conv = Int8Conv2d.from_float(nn.Conv2d(3, 4, 3), name="stem")
    with pytest.raises(ValueError, match="stem.*4-D"):
        conv(torch.randn(3, 8, 8))
    with pytest.raises(ValueError, match="stem.*smaller than the kernel"):
        conv(torch.randn(1, 3, 2, 2))
    with pytest.raises(ValueError, match="padding_mode"):
        Int8Conv2d.from_float(nn.Conv2d(3, 4, 3, padding=1, padding_mode="reflect"), name="x")
    lin = nn.Linear(4, 2)
    with torch.no_grad():
        lin.weight[1, 2] = float("nan")
    with pytest.raises(ValueError, match="fc2.*NaN"):
        Int8Linear.from_float(lin, name="fc2")
    with pytest.raises(ValueError, match="mode"):
        Int8Linear.from_float(nn.Linear(4, 2), mode="int8")


def test_empty_batch_and_3d_input():
    layer = Int8Linear.from_float(nn.Linear(16, 4))
    assert layer(torch.randn(0, 16)).shape == (0, 4)
    assert layer(torch.randn(2, 7, 16)).shape == (2, 7, 4)
    conv = Int8Conv2d.from_float(nn.Conv2d(3, 4, 3))
    assert conv(torch.randn(0, 3, 8, 8)).shape == (0, 4, 6, 6)


def test_compiles_without_graph_breaks():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 4))
    import pycomp

    small = pycomp.compress(model, "int8")
    x = torch.randn(5, 32)
    compiled = torch.compile(small, fullgraph=True)
    torch.testing.assert_close(compiled(x), small(x))


# ----------------------------------------------------------------------------- reduce_range (7-bit activations)


def test_reduce_range_layers_match_reference_and_round_trip(tmp_path):
    import pycomp

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Flatten(), nn.Linear(4 * 5 * 5, 7))
    small = pycomp.compress(model, "int8", reduce_range=True)
    conv, lin = small[0], small[2]
    assert conv.reduce_range and lin.reduce_range and "reduce_range=True" in repr(lin)
    assert torch.equal(lin.wsum, lin.qweight.sum(1, dtype=torch.int32))
    assert lin.backend_for(1) in ("cpu-avx2", "cpu-portable")
    x = torch.randn(2, 3, 5, 5)
    feats = small[1](conv(x))
    want = ops.int8_linear_dynamic_reduce_range_ref(feats, lin.qweight, lin.wscale, lin.wsum, lin.bias)
    assert torch.equal(lin(feats), want)
    assert (small(x) - model(x)).norm() / model(x).norm() < 0.05
    assert lin.settings()["reduce_range"] is True and conv.settings()["reduce_range"] is True
    pycomp.save(small, tmp_path / "rr.pcz")
    with torch.device("meta"):
        skeleton = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Flatten(), nn.Linear(4 * 5 * 5, 7))
    loaded = pycomp.load(tmp_path / "rr.pcz", skeleton)
    assert torch.equal(loaded(x), small(x)) and loaded[2].reduce_range
    default = Int8Linear.from_float(nn.Linear(8, 3))
    assert not default.reduce_range and "wsum" not in default.state_dict()


def test_reduce_range_needs_dynamic_and_checks_wsum():
    import pycomp

    with pytest.raises(ValueError, match="fc.*reduce_range=True.*mode='dynamic'"):
        Int8Linear.from_float(nn.Linear(4, 2), mode="weight_only", name="fc", reduce_range=True)
    with pytest.raises(ValueError, match="int8: reduce_range"):
        pycomp.compress(nn.Sequential(nn.Linear(4, 2)), "int8", mode="weight_only", reduce_range=True)
    layer = Int8Linear.from_float(nn.Linear(16, 4), name="fc", reduce_range=True)
    layer.check_buffers()
    layer.wsum[0] += 1
    with pytest.raises(ValueError, match="fc.*wsum"):
        layer.check_buffers()
