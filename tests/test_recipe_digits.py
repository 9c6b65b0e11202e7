"""Issue 6's recipe target on the digits CNN: 2:4 -> distill -> int8 loses <= 1 point at >= 6x fewer bytes.

Bytes are the sizes of the pycomp files (manifest included) of the compressed and the float model. CI runs
one distillation epoch (`python -m pycomp.prune.recipe_experiment` runs three; both are in RESULTS.md).
"""
from pycomp.nn import SparseConv2d, SparseLinear
from pycomp.prune.recipe_experiment import run


def test_three_step_recipe_keeps_accuracy_at_six_times_fewer_bytes():
    rows = {r["recipe"]: r for r in run(epochs=1)}
    row = rows["2:4 -> distill -> int8"]
    assert row["drop_points"] <= 1.0, row
    assert row["bytes"] * 6 <= row["float_bytes"], row


def test_every_layer_of_the_result_is_int8_2_4():
    import pycomp
    from pycomp.models.digits import pretrained_digits_cnn

    small = pycomp.compress(pretrained_digits_cnn(), ["2:4", "int8"])
    layers = [m for m in small.modules() if isinstance(m, (SparseLinear, SparseConv2d))]
    assert len(layers) == 4 and all(m.quant == "int8" and m.backend.startswith("cpu-") for m in layers)
