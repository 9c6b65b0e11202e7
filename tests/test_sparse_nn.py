"""SparseLinear and SparseConv2d: from_float (prune or keep the pattern), forward, save/load, compress."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import pycomp
from pycomp.nn import LAYERS, SparseConv2d, SparseLinear
from pycomp.prune import is_nm_sparse, magnitude_prune, nm_prune


@pytest.mark.parametrize("pattern,sparsity", [("2:4", None), ("unstructured", 0.9), ("block", 0.75)])
def test_linear_prunes_a_dense_weight_and_matches_masked_linear(pattern, sparsity):
    torch.manual_seed(0)
    lin = nn.Linear(70, 33)
    layer = SparseLinear.from_float(lin, pattern=pattern, sparsity=sparsity, block_size=(4, 8), name="fc")
    w = layer.to_dense()
    nz = w != 0
    assert torch.equal(w[nz], lin.weight.detach()[nz])  # kept weights are the float ones
    if pattern == "2:4":
        assert is_nm_sparse(w, pad=True) and layer.sparsity == pytest.approx(0.5, abs=0.02)
    elif pattern == "unstructured":
        assert layer.sparsity == pytest.approx(sparsity, abs=0.02)
        assert w.abs()[nz].min() >= lin.weight.detach().abs()[~nz].max()  # the smallest |w| went
    else:
        blocks = (-(-33 // 4)) * (-(-70 // 8))
        assert layer.values.shape == (round(blocks * (1 - sparsity)), 4, 8)  # whole blocks pruned
    x = torch.randn(4, 5, 70)
    torch.testing.assert_close(layer(x), F.linear(x, w, lin.bias), rtol=1e-5, atol=1e-5)
    assert layer.backend.startswith("cpu-") and f"pattern={pattern}" in repr(layer)


def test_linear_keeps_an_existing_pattern():
    torch.manual_seed(1)
    lin = nn.Linear(64, 16)
    magnitude_prune(lin, 0.95)
    with torch.no_grad():  # fine-tuning moved the kept weights: a fresh magnitude ranking would differ
        lin.weight.mul_(torch.rand_like(lin.weight) * 4)
    before = lin.weight.detach().clone()
    layer = SparseLinear.from_float(lin, pattern="unstructured", sparsity=0.9)
    assert torch.equal(layer.to_dense(), before)  # 95% >= 90%: kept, not re-pruned
    nm = nn.Linear(64, 16)
    nm_prune(nm)
    with torch.no_grad():
        nm.weight.mul_(torch.rand_like(nm.weight) * 4)
    assert torch.equal(SparseLinear.from_float(nm, pattern="2:4").to_dense(), nm.weight.detach())


def test_bad_sparsity_and_pattern_raise():
    lin = nn.Linear(8, 4)
    for bad in (1.0, -0.1, 1.5):
        with pytest.raises(ValueError, match=r"sparsity must be a number in \[0, 1\)"):
            SparseLinear.from_float(lin, pattern="unstructured", sparsity=bad, name="fc")
    with pytest.raises(ValueError, match="'2:4' keeps exactly half"):
        SparseLinear.from_float(lin, pattern="2:4", sparsity=0.9)
    with pytest.raises(ValueError, match="pattern must be one of"):
        SparseLinear.from_float(lin, pattern="1:4")
    with pytest.raises(ValueError, match=r"sparsity must be a number in \[0, 1\)"):
        pycomp.compress(nn.Sequential(lin), "sparse", sparsity=1.0)
    layer = SparseLinear.from_float(nn.Linear(8, 4), pattern="2:4", name="fc")
    with pytest.raises(ValueError, match="SparseLinear 'fc': expected 8 input features"):
        layer(torch.randn(2, 9))


def test_k_not_a_multiple_of_4_is_padded_and_all_zero_rows_work():
    torch.manual_seed(2)
    lin = nn.Linear(9, 5)
    with torch.no_grad():
        lin.weight[2] = 0
    layer = SparseLinear.from_float(lin, pattern="2:4")
    w = layer.to_dense()
    assert w.shape == (5, 9) and is_nm_sparse(w, pad=True) and bool((w[2] == 0).all())
    x = torch.randn(3, 9)
    torch.testing.assert_close(layer(x), F.linear(x, w, lin.bias), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(layer(x)[:, 2], lin.bias[2].expand(3))


CONV_CASES = [dict(kernel_size=3, padding=1), dict(kernel_size=(3, 5), stride=(2, 1), padding=(1, 2)),
              dict(kernel_size=1, bias=False)]


@pytest.mark.parametrize("pattern", ["2:4", "unstructured", "block"])
@pytest.mark.parametrize("cfg", CONV_CASES, ids=[str(c) for c in CONV_CASES])
def test_conv_matches_conv2d_on_the_sparse_weight(pattern, cfg):
    torch.manual_seed(3)
    conv = nn.Conv2d(6, 8, **cfg)
    layer = SparseConv2d.from_float(conv, pattern=pattern, sparsity=None if pattern == "2:4" else 0.8,
                                    block_size=(4, 4), name="conv")
    x = torch.randn(2, 6, 11, 9)
    w = layer.to_dense()
    assert w.shape == conv.weight.shape
    want = F.conv2d(x, w, conv.bias, conv.stride, conv.padding, conv.dilation)
    torch.testing.assert_close(layer(x), want, rtol=1e-4, atol=1e-4)


def test_grouped_conv_is_refused_clearly():
    with pytest.raises(ValueError, match="SparseConv2d 'c': groups=2 is not supported"):
        SparseConv2d.from_float(nn.Conv2d(4, 4, 3, groups=2), name="c")


@pytest.mark.parametrize("pattern", ["2:4", "unstructured", "block"])
def test_save_load_round_trip(tmp_path, pattern):
    torch.manual_seed(4)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 6 * 6, 10))
    spec, opts = ("2:4", {}) if pattern == "2:4" else ("sparse", {"sparsity": 0.8, "pattern": pattern})
    small = pycomp.compress(model, spec, **opts)
    assert isinstance(small[0], SparseConv2d) and isinstance(small[3], SparseLinear)
    assert type(model[3]) is nn.Linear  # the original is untouched
    path = tmp_path / "m.pcz"
    pycomp.save(small, path)
    again = pycomp.load(path, model=model)
    x = torch.randn(2, 3, 6, 6)
    torch.testing.assert_close(again(x), small(x))
    for name in ("0", "3"):
        a, b = small.get_submodule(name), again.get_submodule(name)
        assert a.settings() == b.settings() and a.format_info() == b.format_info()
        assert all(torch.equal(t, b.state_dict()[k]) for k, t in a.state_dict().items())
    assert LAYERS["SparseLinear"] is SparseLinear


def test_compress_unstructured_hits_the_sparsity_and_block_pattern():
    torch.manual_seed(5)
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 32))
    small = pycomp.compress(model, "sparse", sparsity=0.9)
    for i in (0, 2):
        assert small[i].pattern == "unstructured" and small[i].sparsity == pytest.approx(0.9, abs=1e-3)
        assert small[i].nbytes() < 0.2 * model[i].weight.numel() * 4  # values + int16 indices + row offsets
    blocks = pycomp.compress(model, "sparse", sparsity=0.5, pattern="block", block_size=(8, 8))
    assert blocks[0].values.shape[1:] == (8, 8) and blocks[0].values.shape[0] == 32  # half of 64 blocks
    with pytest.raises(ValueError, match="pattern must be 'unstructured' or 'block'"):
        pycomp.compress(model, "sparse", pattern="2:4")
