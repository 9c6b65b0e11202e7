"""pycomp.compress: copies, skips, errors, and retention on the digits CNN."""
import pytest
import torch
from torch import nn

import pycomp
from pycomp.nn import Int8Conv2d, Int8Linear


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 8), nn.ReLU(),
                         nn.Linear(8, 3))


def test_compress_returns_a_copy_and_leaves_the_original():
    model = _model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    small = pycomp.compress(model, "int8")
    assert small is not model
    assert [type(m) for m in model] == [nn.Conv2d, nn.ReLU, nn.Flatten, nn.Linear, nn.ReLU, nn.Linear]
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert isinstance(small[0], Int8Conv2d) and isinstance(small[3], Int8Linear) and isinstance(small[5], Int8Linear)
    assert small[3].name == "3" and small[3].mode == "dynamic"
    x = torch.randn(2, 1, 8, 8)
    assert (small(x) - model(x)).norm() / model(x).norm() < 0.05


def test_skip_patterns_and_options():
    model = _model()
    small = pycomp.compress(model, "int8", skip=["0", "5"], mode="weight_only")
    assert isinstance(small[0], nn.Conv2d) and isinstance(small[5], nn.Linear)
    assert isinstance(small[3], Int8Linear) and small[3].mode == "weight_only"


def test_nested_names_and_wildcards():
    model = nn.Sequential()
    model.add_module("encoder", nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4)))
    model.add_module("head", nn.Linear(4, 2))
    small = pycomp.compress(model, "int8", skip="encoder.*")
    assert isinstance(small.encoder[0], nn.Linear) and isinstance(small.head, Int8Linear)
    assert small.head.name == "head"


def test_errors_are_clear_and_change_nothing():
    model = _model()
    with pytest.raises(ValueError, match="unknown technique 'int3'.*int8"):
        pycomp.compress(model, "int3")
    with pytest.raises(TypeError, match="int8: unknown option.*group_size"):
        pycomp.compress(model, "int8", group_size=128)
    with pytest.raises(ValueError, match="mode"):
        pycomp.compress(model, "int8", mode="static")
    with pytest.raises(ValueError, match="no layer"):
        pycomp.compress(model, "int8", skip=["*"])
    with torch.no_grad():
        model[3].weight[0, 0] = float("inf")
    with pytest.raises(ValueError, match="'3'.*infinite"):
        pycomp.compress(model, "int8")
    assert isinstance(model[3], nn.Linear) and torch.isinf(model[3].weight[0, 0])


@pytest.mark.parametrize("mode", ["dynamic", "weight_only"])
def test_digits_cnn_retention(mode):
    """Target of the foundation issue: int8 loses <= 0.3 points on the digits CNN."""
    from pycomp.models.digits import digits_loaders, pretrained_digits_cnn

    model = pretrained_digits_cnn()
    _, test = digits_loaders()
    report = pycomp.retention.evaluate(model, pycomp.compress(model, "int8", mode=mode), test, latency=False)
    r = report.to_dict()
    assert r["accuracy_original"] > 0.95
    assert r["accuracy_original"] - r["accuracy_compressed"] <= 0.003 + 1e-9
    assert r["agreement"] >= 0.99
    assert 3.5 < r["compression_ratio"] < 4.1


def test_a_single_layer_model_and_sequential_calibration():
    """The calibration hooks (pycomp.calibrate): the model itself as the layer, and layers in call order."""
    from pycomp.nn import Int4Linear

    torch.manual_seed(0)
    lin = nn.Linear(40, 6)
    assert isinstance(pycomp.compress(lin, "int8"), Int8Linear)
    small = pycomp.compress(lin, "int4", method="gptq", group_size=32, calib=[torch.randn(64, 40)])
    assert isinstance(small, Int4Linear) and small.name == ""
    model = _model()
    calib = iter([torch.randn(200, 1, 8, 8)])  # one-shot: read once, kept for every layer
    small = pycomp.compress(model, "int4", method="gptq", group_size=32, calib=calib, skip=["5"])
    assert [type(small[i]).__name__ for i in (0, 3, 5)] == ["Int4Conv2d", "Int4Linear", "Linear"]
    with pytest.raises(ValueError, match="compress: int4 calibrates.*pass calib="):
        pycomp.compress(model, "int4", method="gptq")
    with pytest.raises(ValueError, match="calib holds no batch"):
        pycomp.compress(model, "int4", method="gptq", calib=[])


def test_compress_appends_to_a_compressed_models_recipe():
    first = pycomp.compress(_model(), "int4", skip=["5"], group_size=32)
    second = pycomp.compress(first, "int8")
    assert second._pycomp_recipe == {"spec": ["int4", "int8"], "options": [{"group_size": 32, "skip": ["5"]}, {}],
                                     "skip": []}
    assert isinstance(second[5], Int8Linear) and first._pycomp_recipe["spec"] == ["int4"]


@pytest.mark.parametrize("spec,options", [("int8", {}), ("int4", {"group_size": 32}), ("binary", {}),
                                          ("2:4", {}), ("lowrank", {"rank": 2})])
def test_input_on_another_device_names_the_layer(spec, options):
    # Weights on "meta" stand in for a second device on this CPU-only machine; either direction is refused
    # by the layer, which names itself, before any op sees the tensors.
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Conv2d(4, 4, 3), nn.Flatten(), nn.Linear(4 * 4 * 4, 8),
                          nn.Linear(8, 3))
    small = pycomp.compress(model, spec, **options)
    x = torch.randn(2, 1, 8, 8)
    small(x)
    with pytest.raises(RuntimeError, match=r"Conv2d '\d': input is on cpu but the layer's weights are on meta"):
        small.to("meta")(x)
    layer = small[3]
    with pytest.raises(RuntimeError, match=rf"{type(layer).__name__} '3': input is on meta but the layer's "
                                           "weights are on cpu"):
        pycomp.compress(model, spec, **options)[3](torch.randn(2, 64, device="meta"))
