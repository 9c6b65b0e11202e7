"""2:4 with int8 values (SparseLinear.quantized, the "int8" step after "2:4"), and training float sparse layers.

The int8 form keeps the 2:4 pattern and metadata and stores the kept values as int8 with a per-row scale:
checked against the float64 references (weight-only: the densified weight times its scale; dynamic: the
int8 W8A8 reference of pycomp.ops.int8 on the densified int8 weight), through save/load and torch.compile.
Float sparse layers train their kept values (the pattern never moves), which is what lets a recipe
distil between the "2:4" and "int8" steps.
"""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import pycomp
from pycomp.formats import sparse as fmt
from pycomp.nn import SparseConv2d, SparseLinear
from pycomp.ops import sparse as ops
from pycomp.ops.int8 import int8_linear_dynamic_ref


def _int8_layer(k, n, mode="weight_only", bias=True, seed=0):
    torch.manual_seed(seed)
    return SparseLinear.from_float(nn.Linear(k, n, bias=bias), pattern="2:4", name="fc").quantized(mode)


@pytest.mark.parametrize("m", [1, 2, 3, 5, 8, 17, 129])
@pytest.mark.parametrize("k,n", [(64, 96), (70, 33), (9, 5), (288, 64)])
def test_weight_only_matches_the_float64_reference(m, k, n):
    layer = _int8_layer(k, n, bias=(k % 2 == 0))
    assert layer.values.dtype == torch.int8 and layer.scale.shape == (n,) and layer.quant == "int8"
    x = torch.randn(m, k)
    w = fmt.densify_24(layer.values, layer.meta, k).double() * layer.scale.double().unsqueeze(1)
    ref = x.double() @ w.t() + (layer.bias.double() if layer.bias is not None else 0)
    torch.testing.assert_close(layer(x).double(), ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(layer.to_dense(), w.float())


@pytest.mark.parametrize("m", [1, 4, 33])
def test_dynamic_matches_the_int8_w8a8_reference(m):
    layer = _int8_layer(200, 40, mode="dynamic")
    x = torch.randn(2, m, 200)
    ref = int8_linear_dynamic_ref(x, fmt.densify_24(layer.values, layer.meta, 200), layer.scale, layer.bias)
    torch.testing.assert_close(layer(x), ref, rtol=1e-5, atol=1e-5)
    assert "mode=dynamic" in repr(layer)


def test_quantizing_keeps_the_pattern_and_is_close_to_the_float_layer():
    torch.manual_seed(3)
    lin = nn.Linear(256, 64)
    sparse = SparseLinear.from_float(lin, pattern="2:4")
    q = sparse.quantized()
    assert torch.equal(q.meta, sparse.meta)
    assert not ((q.to_dense() != 0) & (sparse.to_dense() == 0)).any()  # nothing outside the pattern
    err = (q.to_dense() - sparse.to_dense()).abs().amax(1)
    assert (err <= sparse.to_dense().abs().amax(1) / 254 + 1e-7).all()  # half a step of absmax / 127
    assert q.nbytes() * 6 < sparse.nbytes() * 4 * 0.5 + 64 * 4 * 6  # 5 bits per weight plus the scales
    x = torch.randn(8, 256)
    torch.testing.assert_close(q(x), sparse(x), rtol=0.02, atol=0.02)


def test_conv_int8_matches_conv2d_on_the_dequantized_weight():
    torch.manual_seed(4)
    conv = nn.Conv2d(8, 16, 3, padding=1, stride=2)
    layer = SparseConv2d.from_float(conv, pattern="2:4", name="c").quantized()
    x = torch.randn(2, 8, 9, 9)
    torch.testing.assert_close(layer(x), F.conv2d(x, layer.to_dense(), conv.bias, 2, 1), rtol=1e-4, atol=1e-4)


def test_op_checks_and_opcheck():
    layer = _int8_layer(64, 32)
    x = torch.randn(3, 64)
    with pytest.raises(RuntimeError, match="int8 values need a per-row scale"):
        ops.sparse24_linear(x, layer.values, layer.meta, 64, layer.bias)
    with pytest.raises(RuntimeError, match=r"scale must be float32 of shape \(32,\)"):
        ops.sparse24_linear(x, layer.values, layer.meta, 64, None, layer.scale[:5])
    float_layer = SparseLinear.from_float(nn.Linear(64, 32), pattern="2:4")
    with pytest.raises(RuntimeError, match="int8 values need a per-row scale and float values take none"):
        ops.sparse24_linear(x, float_layer.values.detach(), float_layer.meta, 64, None, layer.scale)
    torch.library.opcheck(torch.ops.pycomp.sparse24_linear, (x, layer.values, layer.meta, 64, layer.bias, layer.scale))


def test_bad_requests_are_refused_with_the_rule():
    with pytest.raises(ValueError, match="quant='int8' needs pattern '2:4'"):
        SparseLinear(64, 8, pattern="unstructured", nnz=10, quant="int8", name="fc")
    with pytest.raises(ValueError, match="quant must be one of"):
        SparseLinear(64, 8, quant="int4")
    q = _int8_layer(64, 8)
    with pytest.raises(ValueError, match="SparseLinear 'fc': quantized\\(\\) needs a float 2:4 layer"):
        q.quantized()
    with pytest.raises(ValueError, match="mode must be one of"):
        SparseLinear.from_float(nn.Linear(64, 8), pattern="2:4").quantized("static")
    csr = SparseLinear.from_float(nn.Linear(64, 8), pattern="unstructured", sparsity=0.5)
    with pytest.raises(ValueError, match="needs a float 2:4 layer"):
        csr.quantized()
    nan = SparseLinear.from_float(nn.Linear(64, 8), pattern="2:4", name="bad")
    with torch.no_grad():
        nan.values[0, 0] = float("nan")
    with pytest.raises(ValueError, match="'bad'.*NaN"):
        nan.quantized()


@pytest.mark.parametrize("mode", ["weight_only", "dynamic"])
def test_save_load_round_trip(tmp_path, mode):
    torch.manual_seed(5)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 4 * 4, 10))
    small = pycomp.compress(model, ["2:4", "int8"], mode=mode)
    assert all(m.quant == "int8" and m.mode == mode for m in (small[0], small[3]))
    nbytes = pycomp.save(small, tmp_path / "s.pcz")
    manifest = pycomp.files.read_manifest(tmp_path / "s.pcz")
    assert manifest["layers"]["3"]["format"]["format"] == "sparse24_int8"
    again = pycomp.load(tmp_path / "s.pcz", model=model)
    x = torch.randn(2, 3, 6, 6)
    with torch.no_grad():
        assert torch.equal(again(x), small(x))
    assert nbytes < pycomp.save(pycomp.compress(model, "2:4"), tmp_path / "f.pcz")
    bad = tmp_path / "bad.pcz"  # a scale that is not a scale: refused by the format check at load
    state = {k: v.clone() for k, v in small.state_dict().items()}
    small[3].scale.fill_(-1.0)
    pycomp.save(small, bad)
    small.load_state_dict(state)
    with pytest.raises(ValueError, match="scale must be finite and >= 0"):
        pycomp.load(bad, model=model)


def test_compile_traces_int8_2_4_in_one_graph():
    torch.manual_seed(6)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 5 * 5, 10))
    for mode in ("weight_only", "dynamic"):
        small = pycomp.compress(model, ["2:4", "int8"], mode=mode).eval()
        x = torch.randn(4, 3, 5, 5)
        explained = torch._dynamo.explain(small)(x)
        assert explained.graph_break_count == 0 and explained.graph_count == 1, explained.break_reasons
        compiled = torch.compile(small, fullgraph=True, backend="aot_eager")
        with torch.no_grad():
            torch.testing.assert_close(compiled(x), small(x), rtol=0, atol=0)


# ----------------------------------------------------------------------------- training float sparse layers


@pytest.mark.parametrize("pattern,sparsity", [("2:4", None), ("unstructured", 0.8), ("block", 0.5)])
def test_value_gradients_match_autograd_through_the_reference(pattern, sparsity):
    torch.manual_seed(7)
    layer = SparseLinear.from_float(nn.Linear(70, 24), pattern=pattern, sparsity=sparsity, block_size=(4, 8))
    assert isinstance(layer.values, nn.Parameter) and isinstance(layer.bias, nn.Parameter)
    x = torch.randn(2, 5, 70, requires_grad=True)
    g = torch.randn(2, 5, 24)
    (layer(x) * g).sum().backward()
    values = layer.values.detach().clone().requires_grad_(True)
    x2 = x.detach().clone().requires_grad_(True)
    dense = {"2:4": lambda v: fmt.densify_24(v, layer.meta, 70),
             "unstructured": lambda v: fmt.densify_csr(layer.crow, layer.col, v, 70),
             "block": lambda v: fmt.densify_bsr(layer.crow, layer.col, v, 24, 70)}[pattern]
    (F.linear(x2, dense(values), layer.bias.detach()) * g).sum().backward()
    torch.testing.assert_close(layer.values.grad, values.grad, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(x.grad, x2.grad, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(layer.bias.grad, g.sum((0, 1)))


def test_training_moves_the_kept_weights_and_never_the_pattern():
    torch.manual_seed(8)
    model = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 4))
    small = pycomp.compress(model, "2:4")
    zeros = [small[i].to_dense() == 0 for i in (0, 2)]
    before = [small[i].values.detach().clone() for i in (0, 2)]
    x, y = torch.randn(256, 32), torch.randint(0, 4, (256,))
    opt = torch.optim.Adam(small.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        loss = F.cross_entropy(small(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0]
    for i, z, b in zip((0, 2), zeros, before):
        assert not torch.equal(small[i].values.detach(), b)
        assert ((small[i].to_dense() == 0) | ~z).all() and (small[i].to_dense()[z] == 0).all()
    with torch.no_grad():  # inference keeps no activation for a values gradient it will not take
        assert small(x).grad_fn is None


def test_int8_step_converts_what_the_2_4_step_left_and_only_that():
    torch.manual_seed(9)
    model = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 4))
    small = pycomp.compress(model, ["2:4", "int8"], skip=["2"])
    assert isinstance(small[0], SparseLinear) and small[0].quant == "int8" and small[0].mode == "dynamic"
    assert isinstance(small[2], nn.Linear)
    csr = pycomp.compress(model, "sparse", sparsity=0.9)
    with pytest.raises(pycomp.api.NothingToCompress, match="int8 found no layer.*met \\(SparseLinear\\) have no int8 form"):
        pycomp.compress(csr, "int8")  # CSR has no int8 form: said, not silently skipped
