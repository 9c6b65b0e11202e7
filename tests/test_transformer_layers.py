"""compress on torch's transformer modules, which read some children's weights instead of calling them:
nn.MultiheadAttention's out_proj stays float, and the encoder's fused fast paths are turned off where a
compressed layer sits, so the compressed layers run (and save/load keeps it so)."""
import warnings

import pytest
import torch
from torch import nn

import pycomp
from pycomp.nn.base import CompressedLayer

TECHNIQUES = [("int8", {}), ("int4", {"group_size": 32}), ("binary", {}), ("xnor", {}), ("2:4", {}),
              ("lowrank", {"rank": 8})]


def _encoder():
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(64, 4, 128, batch_first=True)
    return nn.TransformerEncoder(layer, 2, enable_nested_tensor=True).eval()


def _plain(model, *args, **kwargs):
    """The model's output with every torch fast path off: the children are all called."""
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        return model(*args, **kwargs)
    finally:
        torch.backends.mha.set_fastpath_enabled(True)


@pytest.mark.parametrize("spec,options", TECHNIQUES, ids=[t for t, _ in TECHNIQUES])
@torch.no_grad()
def test_encoder_layers_compress_and_run_their_own_forward(spec, options):
    model = _encoder()
    small = pycomp.compress(model, spec, **options)
    for i, layer in enumerate(small.layers):
        assert type(layer.self_attn.out_proj) is nn.modules.linear.NonDynamicallyQuantizableLinear
        # binary keeps the model's first and last replaceable Linear (layers.0.linear1, layers.1.linear2) float
        first = i == 0 and spec in ("binary", "xnor")
        assert isinstance(layer.linear1, CompressedLayer) != first
    assert all(layer.activation_relu_or_gelu == 1 for layer in model.layers), "the original model was changed"
    assert all(layer.activation_relu_or_gelu == 0 for layer in small.layers) and not small.use_nested_tensor
    x = torch.randn(3, 7, 64)
    mask = torch.zeros(3, 7, dtype=torch.bool)
    mask[1, 5:] = True
    # The all-plain path's numbers (up to MultiheadAttention's own float fast path, ~1e-6), far from the
    # float model's: the fused layer kernel, which would read the float weights, did not run.
    ref = model(x)
    assert (small(x) - ref).abs().max() > 1e-3
    torch.testing.assert_close(small(x), _plain(small, x), atol=1e-4, rtol=1e-4)
    masked = small(x, src_key_padding_mask=mask)
    torch.testing.assert_close(masked, _plain(small, x, src_key_padding_mask=mask), atol=1e-4, rtol=1e-4)
    if spec == "int8":
        assert (small(x) - ref).norm() / ref.norm() < 0.05


@torch.no_grad()
def test_out_proj_stays_float_even_when_named_and_save_load_keeps_the_plain_path(tmp_path):
    model = _encoder()
    with pytest.warns(UserWarning, match=r"overrides name layers.0.self_attn.out_proj, layers.1.self_attn.out_proj, "
                                         "which stay float"):
        small = pycomp.compress(model, "int8", overrides={"*.out_proj": {"mode": "weight_only"}})
    assert type(small.layers[0].self_attn.out_proj) is nn.modules.linear.NonDynamicallyQuantizableLinear
    with warnings.catch_warnings():  # a pattern that also names layers it can change is not about out_proj
        warnings.simplefilter("error")
        pycomp.compress(model, "int8", overrides={"layers.*": {"mode": "weight_only"}})
    again = pycomp.compress(pycomp.compress(model, "2:4"), "int8")  # two steps
    assert all(layer.activation_relu_or_gelu == 0 for layer in again.layers)
    path = tmp_path / "enc.pycomp"
    pycomp.save(small, path)
    loaded = pycomp.load(path, model=_encoder())
    x = torch.randn(2, 5, 64)
    mask = torch.tensor([[False] * 5, [False] * 3 + [True] * 2])
    assert torch.equal(loaded(x), small(x))
    assert torch.equal(loaded(x, src_key_padding_mask=mask), small(x, src_key_padding_mask=mask))


@torch.no_grad()
def test_qat_and_binary_training_routes_on_an_encoder():
    from pycomp.binarize import ste
    from pycomp.quantize import qat

    model = _encoder()
    x = torch.randn(2, 5, 64)
    prepared = qat.prepare_qat(model, "int8")
    assert type(prepared.layers[0].self_attn.out_proj) is nn.modules.linear.NonDynamicallyQuantizableLinear
    torch.testing.assert_close(prepared(x), _plain(prepared, x), atol=1e-4, rtol=1e-4)  # fake quant ran
    packed = qat.convert(prepared)
    torch.testing.assert_close(packed(x), _plain(packed, x), atol=1e-4, rtol=1e-4)
    latent = ste.prepare(model, keep_first_last=False)
    assert type(latent.layers[0].self_attn.out_proj) is nn.modules.linear.NonDynamicallyQuantizableLinear
    binary = ste.convert(latent)
    assert isinstance(binary.layers[0].linear2, CompressedLayer)
    torch.testing.assert_close(binary(x), _plain(binary, x), atol=1e-4, rtol=1e-4)
    assert (binary(x) - model(x)).abs().max() > 1e-3


@torch.no_grad()
def test_every_layer_list_leaves_out_proj_out():
    """The binary first/last rule, the low-rank budget plan, binarize.prepare and the sensitivity scan enumerate
    layers as compress does (pycomp.nn.base.replaceable). Before, the binary rule took layers.0.self_attn.out_proj
    for the first layer (and binarized layers.0.linear1), and the budget plan gave ranks to both out_proj,
    which were never converted, so the model overran its budget."""
    from pycomp.binarize import first_and_last, prepare
    from pycomp.lowrank.config import plan_budget
    from pycomp.nn.lowrank import LowRankLinear
    from pycomp.retention.sensitivity import compressible_layers

    model = _encoder()
    assert first_and_last(model) == {"layers.0.linear1", "layers.1.linear2"}
    plan = plan_budget(model, 0.5)
    assert plan and not any(n.endswith("out_proj") for n in plan)
    small = pycomp.compress(model, "lowrank", budget=0.5)
    dense = sum(m.weight.numel() for n, m in model.named_modules() if isinstance(m, nn.Linear) and n in plan)
    factors = sum(p.numel() for m in small.modules() if isinstance(m, LowRankLinear)
                  for n, p in m.named_parameters() if not n.endswith("bias"))
    assert 0 < factors <= dense // 2, (factors, dense)
    assert not any(n.endswith("out_proj") for n in compressible_layers(model))
    prepared = prepare(model, skip=["layers.1.*"])  # skip takes fnmatch patterns, as compress does
    assert type(prepared.layers[1].linear1) is nn.Linear and type(prepared.layers[0].linear2) is not nn.Linear
