"""Binary format, ops, layers and the "binary"/"xnor" techniques against plain-PyTorch references."""
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import pycomp
from pycomp.formats import binary as fmt
from pycomp.nn.binary import BinaryConv2d, BinaryLinear, NotCentredWarning
from pycomp.ops import binary as ops


pytestmark = pytest.mark.usefixtures("one_thread")


def _weights(n, k, group_size=0, seed=0):
    g = torch.Generator().manual_seed(seed)
    packed, alpha = fmt.binarize_weight(torch.randn(n, k, generator=g), group_size)
    return packed, alpha, torch.randn(n, generator=g)


# ----------------------------------------------------------------------------- format


def test_pack_by_hand():
    t = torch.tensor([[-1.0, 2.0, 0.0, -0.5] + [1.0] * 28 + [-3.0]])  # K = 33: two words, one bit used in the second
    p = fmt.pack_signs(t)
    assert p.dtype == torch.uint32 and p.shape == (1, 2)
    assert p.view(torch.int32).tolist() == [[0b1001, 1]]
    assert fmt.unpack_signs(p, 33).tolist() == [[-1.0, 1.0, 1.0, -1.0] + [1.0] * 28 + [-1.0]]
    assert fmt.pack_signs(torch.full((1, 32), -1.0)).view(torch.int32).tolist() == [[-1]]  # bit 31 set: all 32


@pytest.mark.parametrize("k", [1, 31, 32, 33, 100, 257])
@pytest.mark.parametrize("group_size", [0, 32, 64])
def test_dequantize_is_alpha_times_sign(k, group_size):
    w = torch.randn(7, k)
    packed, alpha = fmt.binarize_weight(w, group_size)
    fmt.check_binary(packed, alpha, k, group_size)
    assert packed.shape == (7, -(-k // 32)) and alpha.shape == (7, fmt.num_groups(k, group_size))
    gs = k if group_size == 0 else group_size
    for g in range(alpha.shape[1]):  # α is the mean |W| over the group's real entries only
        torch.testing.assert_close(alpha[:, g], w[:, g * gs:(g + 1) * gs].abs().mean(1))
    want = torch.where(w < 0, -1.0, 1.0) * fmt.expand_alpha(alpha, k, group_size)
    torch.testing.assert_close(fmt.dequantize_binary(packed, alpha, k, group_size), want, rtol=0, atol=0)


def test_format_errors_name_the_rule():
    packed, alpha, _ = _weights(4, 40)
    with pytest.raises(ValueError, match="multiple of 32"):
        fmt.binarize_weight(torch.randn(4, 40), group_size=48)
    with pytest.raises(ValueError, match="NaN"):
        fmt.binarize_weight(torch.tensor([[1.0, float("nan")]]))
    with pytest.raises(ValueError, match=r"\(N, 3\) for K=80"):
        fmt.check_binary(packed, alpha, 80, 0)
    bad = packed.clone()
    bad[0, -1] = torch.tensor(1 << 20, dtype=torch.int64).to(torch.uint32)  # bit 52 of a 40-bit row
    with pytest.raises(ValueError, match="padding bits"):
        fmt.check_binary(bad, alpha, 40, 0)


# ----------------------------------------------------------------------------- ops


def test_xnor_reference_by_hand():
    x = torch.tensor([[1.0, -2.0, 3.0]])  # β = 2, signs + - +
    w = torch.tensor([[1.0, 1.0, 1.0], [-2.0, 2.0, -2.0]])  # α = 1 and 2
    packed, alpha = fmt.binarize_weight(w)
    # row 0: dot(+-+, +++) = 1 -> 2 * 1 * 1; row 1: dot(+-+, -+-) = -3 -> 2 * 2 * -3
    assert ops.xnor_linear_ref(x, packed, alpha, 0).tolist() == [[2.0, -12.0]]
    assert ops.xnor_linear(x, packed, alpha, 0, torch.tensor([0.5, 0.0])).tolist() == [[2.5, -12.0]]


@pytest.mark.parametrize("lead,n,k", [((1,), 7, 33), ((4,), 16, 64), ((2, 9), 33, 100), ((130,), 5, 257),
                                      ((3,), 9, 1), ((1,), 40, 1024)])
@pytest.mark.parametrize("group_size", [0, 32])
@pytest.mark.parametrize("with_bias", [True, False])
def test_ops_match_reference(lead, n, k, group_size, with_bias):
    packed, alpha, b = _weights(n, k, group_size)
    b = b if with_bias else None
    x = torch.randn(*lead, k)
    mag = x.abs() @ fmt.dequantize_binary(packed, alpha, k, group_size).abs().t()  # sum of |terms|: fp32 bound
    for op, ref in ((ops.w1a16_linear, ops.w1a16_linear_ref), (ops.xnor_linear, ops.xnor_linear_ref)):
        got, want = op(x, packed, alpha, group_size, b), ref(x, packed, alpha, group_size, b)
        assert got.shape == (*lead, n) and got.dtype == x.dtype
        assert ((got - want).abs() <= 1e-5 * mag + 1e-5).all(), (op, (got - want).abs().max())


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_ops_keep_half_dtypes(dtype):
    packed, alpha, b = _weights(9, 70)
    x = torch.randn(5, 70).to(dtype)
    for op, ref in ((ops.w1a16_linear, ops.w1a16_linear_ref), (ops.xnor_linear, ops.xnor_linear_ref)):
        got = op(x, packed, alpha, 0, b)
        assert got.dtype == dtype
        torch.testing.assert_close(got, ref(x, packed, alpha, 0, b), rtol=2e-2, atol=2e-2)


def test_ops_large_m_and_strided_input():
    packed, alpha, b = _weights(24, 96)
    x = torch.randn(300, 96)
    torch.testing.assert_close(ops.w1a16_linear(x, packed, alpha, 0, b), ops.w1a16_linear_ref(x, packed, alpha, 0, b),
                               rtol=1e-4, atol=1e-4)
    wide = torch.randn(6, 150)[:, 10:106]
    xt = torch.randn(96, 6).t()
    for x in (wide, xt):
        torch.testing.assert_close(ops.xnor_linear(x, packed, alpha, 0, b), ops.xnor_linear_ref(x, packed, alpha, 0, b),
                                   rtol=1e-5, atol=1e-4)
    assert ops.xnor_linear(torch.randn(0, 96), packed, alpha, 0, b).shape == (0, 24)
    assert ops.w1a16_linear(torch.randn(2, 0, 96), packed, alpha, 0, b).shape == (2, 0, 24)


def test_op_bad_input_raises_clearly():
    packed, alpha, b = _weights(8, 40)
    with pytest.raises(RuntimeError, match="K=41.*2 words"):
        ops.xnor_linear(torch.randn(2, 41), packed[:, :1].contiguous(), alpha, 0, b)
    with pytest.raises(RuntimeError, match="uint32"):
        ops.w1a16_linear(torch.randn(2, 40), packed.view(torch.int32), alpha, 0, b)
    with pytest.raises(RuntimeError, match="alpha"):
        ops.w1a16_linear(torch.randn(2, 40), packed, alpha, 32, b)
    with pytest.raises(RuntimeError, match="group_size"):
        ops.w1a16_linear(torch.randn(2, 40), packed, alpha, 20, b)
    with pytest.raises(RuntimeError, match="float"):
        ops.xnor_linear(torch.ones(2, 40, dtype=torch.int32), packed, alpha, 0, b)
    with pytest.raises(RuntimeError, match="bias"):
        ops.xnor_linear(torch.randn(2, 40), packed, alpha, 0, b[:3])


@pytest.mark.parametrize("name", ["w1a16_linear", "xnor_linear"])
@pytest.mark.parametrize("group_size", [0, 32])
def test_opcheck(name, group_size):
    packed, alpha, b = _weights(6, 72, group_size)
    op = getattr(torch.ops.pycomp, name)
    torch.library.opcheck(op, (torch.randn(3, 72), packed, alpha, group_size, b))
    torch.library.opcheck(op, (torch.randn(2, 3, 72), packed, alpha, group_size, None))


@pytest.mark.parametrize("op", [ops.w1a16_linear, ops.xnor_linear])
def test_straight_through_gradient(op):
    packed, alpha, b = _weights(6, 40, 32)
    x = torch.randn(3, 40, requires_grad=True)
    op(x, packed, alpha, 32, b).sum().backward()
    torch.testing.assert_close(x.grad, fmt.dequantize_binary(packed, alpha, 40, 32).sum(0).expand(3, 40))


def test_plan_names_backends(monkeypatch):
    from pycomp import _ext

    if _ext.has_c("w1a32_linear_cpu"):
        isa = _ext._C.binary_cpu_isa()
        assert ops.plan("w1a16", "cpu", 1) == ops.plan("w1a16", "cpu", 512) == ops.plan("xnor", "cpu", 4096) == f"cpu-{isa}"
    assert ops.plan("xnor", "meta") == "reference"

    class FakeC:
        w1a16_gemv_cuda = xnor_gemm_cuda = w1a32_linear_cpu = object()

    monkeypatch.setattr(_ext, "_C", FakeC)
    monkeypatch.setattr(ops, "triton_binary", lambda: object())
    assert ops.plan("w1a16", "cuda", 1) == ops.plan("w1a16", "cuda", ops.CUDA_GEMV_MAX_M) == "cuda"
    assert ops.plan("w1a16", "cuda", ops.CUDA_GEMV_MAX_M + 1) == "triton"
    # the tensor-core GEMV takes 16-bit x with one α per channel; fp32 x or grouped α keep the GEMV at M=1 only
    assert ops.plan("w1a16", "cuda", 8, torch.float16) == "cuda"
    assert ops.plan("w1a16", "cuda", 1, torch.float32) == ops.plan("w1a16", "cuda", 1, group_size=128) == "cuda"
    assert ops.plan("w1a16", "cuda", 2, torch.float32) == ops.plan("w1a16", "cuda", 2, group_size=128) == "triton"
    assert ops.plan("xnor", "cuda", 4096, K=4096) == "cuda"
    assert ops.plan("xnor", "cuda", 4096, K=4000) == ops.plan("xnor", "cuda", 64, K=4096, group_size=128) == "reference"
    assert ops.plan("w1a16", "cuda", 1, torch.float64) == "reference"
    monkeypatch.setattr(ops, "triton_binary", lambda: None)
    assert ops.plan("w1a16", "cuda", 64) == "reference"


# ----------------------------------------------------------------------------- layers


@pytest.mark.parametrize("activations", ["float", "binary"])
@pytest.mark.parametrize("group_size", [0, 32])
def test_linear_from_float(activations, group_size):
    torch.manual_seed(0)
    lin = nn.Linear(70, 11)
    layer = BinaryLinear.from_float(lin, activations=activations, group_size=group_size, name="fc")
    x = torch.randn(4, 5, 70)
    ref = ops.xnor_linear_ref if activations == "binary" else ops.w1a16_linear_ref
    torch.testing.assert_close(layer(x), ref(x, layer.packed, layer.alpha, group_size, layer.bias), rtol=1e-4,
                               atol=1e-4)
    w_deq = layer.dequantize()
    assert torch.equal(torch.sign(w_deq), torch.where(lin.weight < 0, -1.0, 1.0))
    assert f"activations={activations}" in repr(layer) and layer.backend in (
        "reference", f"cpu-{pycomp._ext._C.binary_cpu_isa() if pycomp._ext.has_c('binary_cpu_isa') else ''}")


def test_binary_weights_close_to_float_when_activations_float():
    torch.manual_seed(0)
    lin = nn.Linear(512, 64)
    x = torch.randn(16, 512)
    err = (BinaryLinear.from_float(lin)(x) - lin(x)).norm() / lin(x).norm()
    # sign(W) keeps sqrt(2/pi) ~ 0.8 of a Gaussian weight's correlation: relative error about 0.6
    assert 0.45 < err < 0.75


CONV_CASES = [
    dict(kernel_size=3, padding=1),
    dict(kernel_size=3, stride=2, padding=0),
    dict(kernel_size=(3, 5), stride=(2, 1), padding=(1, 2), dilation=(2, 1)),
    dict(kernel_size=1),
    dict(kernel_size=3, padding="same", dilation=2),
    dict(kernel_size=3, padding=1, groups=2, bias=False),
]


@pytest.mark.parametrize("cfg", CONV_CASES, ids=[str(c) for c in CONV_CASES])
def test_conv_float_activations_match_conv2d_on_dequantized_weights(cfg):
    torch.manual_seed(0)
    conv = nn.Conv2d(6, 8, **cfg)
    layer = BinaryConv2d.from_float(conv, name="conv")
    x = torch.randn(2, 6, 11, 9)
    want = F.conv2d(x, layer.dequantize(), conv.bias, conv.stride, conv.padding, conv.dilation, conv.groups)
    torch.testing.assert_close(layer(x), want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("cfg", CONV_CASES[::2], ids=[str(c) for c in CONV_CASES[::2]])
def test_conv_binary_activations_are_xnor_per_patch(cfg):
    torch.manual_seed(0)
    conv = nn.Conv2d(6, 8, **cfg)
    layer = BinaryConv2d.from_float(conv, activations="binary", name="conv")
    x = torch.randn(2, 6, 11, 9)
    rows, ho, wo = layer.patches(x)
    want = ops.xnor_linear_ref(rows, layer.packed, layer.alpha, 0, layer.bias)
    want = want.reshape(2, ho, wo, 8).permute(0, 3, 1, 2)
    torch.testing.assert_close(layer(x), want, rtol=1e-4, atol=1e-4)


def test_xnor_on_a_non_centred_input_warns_and_is_documented_to_lose_the_input():
    """After a ReLU every input is >= 0, so sign(x) is all +1: the output depends on x only through β."""
    torch.manual_seed(0)
    lin = nn.Linear(256, 32)
    layer = BinaryLinear.from_float(lin, activations="binary", name="fc")
    x = torch.relu(torch.randn(8, 256))
    with pytest.warns(NotCentredWarning, match="fc.*no negative entry"):
        out = layer(x)
    beta = x.abs().mean(-1, keepdim=True)
    torch.testing.assert_close(out, beta * (layer.dequantize().sum(1) + 0) + layer.bias, rtol=1e-4, atol=1e-4)
    err_relu = ((out - lin(x)).norm() / lin(x).norm()).item()
    centred = torch.randn(8, 256)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once per layer already; and a centred input is fine
        err_centred = ((layer(centred) - lin(centred)).norm() / lin(centred).norm()).item()
    assert err_relu > err_centred + 0.1, (err_relu, err_centred)


def test_centred_xnor_keeps_relu_inputs_and_is_exact_in_the_mean():
    torch.manual_seed(0)
    lin = nn.Linear(256, 32)
    layer = BinaryLinear.from_float(lin, activations="binary", centre=True, name="fc")
    x = torch.relu(torch.randn(8, 256))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # centred by construction: no warning
        out = layer(x)
    mu = x.mean(-1, keepdim=True)
    want = ops.xnor_linear_ref(x - mu, layer.packed, layer.alpha, 0, layer.bias) + mu * layer.dequantize().sum(1)
    torch.testing.assert_close(out, want, rtol=1e-4, atol=1e-4)
    plain = BinaryLinear.from_float(lin, activations="binary")
    with pytest.warns(NotCentredWarning):
        err_plain = ((plain(x) - lin(x)).norm() / lin(x).norm()).item()
    assert ((out - lin(x)).norm() / lin(x).norm()).item() < err_plain - 0.1
    with pytest.raises(ValueError, match="centre=True applies"):
        BinaryLinear(4, 4, centre=True)


def test_centred_layer_survives_a_meta_skeleton_load(tmp_path):
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 2))
    small = pycomp.compress(model, "xnor", centre=True)
    pycomp.save(small, tmp_path / "c.pcz")
    with torch.device("meta"):
        skeleton = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 2))
    again = pycomp.load(tmp_path / "c.pcz", skeleton)
    x = torch.randn(3, 8)
    torch.testing.assert_close(again(x), small(x), rtol=0, atol=0)
    assert again[2].centre and again[2].w_rowsum.device.type == "cpu"


def test_state_dict_and_file_round_trip(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1), nn.Flatten(),
                          nn.Linear(8 * 25, 33), nn.Linear(33, 4))
    small = pycomp.compress(model, "binary", keep_first_last=False, group_size=32)
    x = torch.randn(2, 3, 5, 5)
    path = tmp_path / "m.pcz"
    pycomp.save(small, path)
    again = pycomp.load(path, model)
    assert type(again[3]) is BinaryLinear and again[3].group_size == 32
    torch.testing.assert_close(again(x), small(x), rtol=0, atol=0)
    manifest = pycomp.files.read_manifest(path)
    assert manifest["layers"]["3"]["format"]["format"] == "binary"
    # 1 bit per weight + α: far below the float file
    assert manifest["nbytes"]["compressed"] < sum(p.numel() for p in model.parameters()) * 4 / 10
    fresh = BinaryLinear(8 * 25, 33, group_size=32)
    fresh.load_state_dict(small[3].state_dict())
    assert torch.equal(fresh.packed, small[3].packed)


def test_loading_packed_bits_into_another_shape_is_a_clear_error():
    small = BinaryLinear.from_float(nn.Linear(100, 8), name="fc")
    other = BinaryLinear(64, 8, name="fc2")
    with pytest.raises(ValueError, match=r"fc2.*K=64.*\(8, 2\).*another shape"):
        other.load_state_dict(small.state_dict())


def test_half_keeps_bits_and_float32_scales():
    layer = BinaryLinear.from_float(nn.Linear(40, 6)).half()
    assert layer.packed.dtype == torch.uint32 and layer.alpha.dtype == torch.float32
    assert layer.bias.dtype == torch.float16
    assert layer(torch.randn(2, 40, dtype=torch.float16)).dtype == torch.float16


# ----------------------------------------------------------------------------- techniques


def _mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(20, 32), nn.ReLU(), nn.Linear(32, 32), nn.Tanh(), nn.Linear(32, 32),
                         nn.Linear(32, 3))


def test_compress_keeps_first_and_last_layer_float_by_default():
    model = _mlp()
    small = pycomp.compress(model, "binary")
    kinds = [type(m).__name__ for m in small if not isinstance(m, (nn.ReLU, nn.Tanh))]
    assert kinds == ["Linear", "BinaryLinear", "BinaryLinear", "Linear"]
    assert small[2].activations == "float" and type(model[2]) is nn.Linear  # the original is untouched
    everything = pycomp.compress(model, "binary", keep_first_last=False)
    assert all(type(everything[i]) is BinaryLinear for i in (0, 2, 4, 5))
    xnor = pycomp.compress(model, "xnor", skip=["4"])
    assert xnor[2].activations == "binary" and type(xnor[4]) is nn.Linear and type(xnor[5]) is nn.Linear
    assert small._pycomp_recipe["spec"] == ["binary"]


def test_compress_bad_options():
    with pytest.raises(ValueError, match="activations"):
        pycomp.compress(_mlp(), "binary", activations="ternary")
    with pytest.raises(ValueError, match="multiple of 32"):
        pycomp.compress(_mlp(), "xnor", group_size=10)
    with pytest.raises(ValueError, match="no layer"):
        pycomp.compress(nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2)), "binary")  # both kept in float
