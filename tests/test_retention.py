"""pycomp.retention.evaluate against hand-computed cases."""
import math

import pytest
import torch
from torch import nn

import pycomp


class Fixed(nn.Module):
    """Returns preset logits row by row (the input only picks the rows)."""

    def __init__(self, logits):
        super().__init__()
        self.register_buffer("logits", torch.tensor(logits))

    def forward(self, idx):
        return self.logits[idx]


def test_accuracy_agreement_and_kl_by_hand():
    a = Fixed([[2.0, 0.0], [0.0, 2.0], [1.0, 0.0], [0.0, 0.0]])
    b = Fixed([[2.0, 0.0], [2.0, 0.0], [0.0, 1.0], [0.0, 0.0]])
    data = [(torch.tensor([0, 1]), torch.tensor([0, 1])), (torch.tensor([2, 3]), torch.tensor([1, 0]))]
    r = pycomp.retention.evaluate(a, b, data, latency=False).to_dict()
    assert r["n_examples"] == 4
    assert r["accuracy_original"] == pytest.approx(0.75)  # right on 0, 1, 3 (a tie picks class 0)
    assert r["accuracy_compressed"] == pytest.approx(0.75)  # right on 0, 2, 3
    assert r["agreement"] == pytest.approx(0.5)  # same argmax on rows 0 and 3
    p = lambda z: torch.softmax(torch.tensor(z), 0)  # noqa: E731
    kl = lambda u, v: float((p(u) * (p(u) / p(v)).log()).sum())  # noqa: E731
    want = (0 + kl([0.0, 2.0], [2.0, 0.0]) + kl([1.0, 0.0], [0.0, 1.0]) + 0) / 4
    assert r["kl_divergence"] == pytest.approx(want, rel=1e-5)
    assert r["latency_ms_original"] is None


def test_unlabelled_data_and_sizes():
    model = nn.Linear(10, 3)
    small = pycomp.compress(model, "int8")
    data = [torch.randn(4, 10) for _ in range(3)]
    r = pycomp.retention.evaluate(model, small, data, latency_repeats=3).to_dict()
    assert r["accuracy_original"] is None and r["n_examples"] == 12
    # sizes are file sizes: the packed tensors plus a header of a few hundred bytes
    assert pycomp.retention.model_nbytes(model) == (30 + 3) * 4
    assert pycomp.retention.model_nbytes(small) == 30 + 3 * 4 + 3 * 4  # int8 weight, fp32 scales, fp32 bias
    assert 132 < r["size_bytes_original"] < 132 + 4096 and 54 < r["size_bytes_compressed"] < 54 + 4096
    assert r["compression_ratio"] == pytest.approx(r["size_bytes_original"] / r["size_bytes_compressed"])
    assert r["latency_ms_original"] > 0 and r["latency_p99_ms_compressed"] >= r["latency_ms_compressed"]
    assert not math.isnan(r["kl_divergence"])


def test_report_carries_output_metrics_and_extras():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    small = pycomp.compress(model, "int8")
    data = [(torch.rand(16, 6), torch.randint(0, 3, (16,))) for _ in range(2)]
    r = pycomp.retention.evaluate(model, small, data, latency=False, extras=("noise", "fgsm", "cka", "attribution"),
                                  clamp=(0, 1))
    d = r.to_dict()
    assert d["top5_original"] == 1.0  # 3 classes: top-5 always hits
    assert 0 <= d["ece_compressed"] <= 1 and 0 <= d["js_divergence"] <= math.log(2)
    assert set(d["per_class_drop"]) <= {"0", "1", "2"} and d["worst_classes"][0][1] == max(d["per_class_drop"].values())
    assert set(d["flipped"]) == {"disagree", "right_to_wrong", "wrong_to_right"}
    assert [row["sigma"] for row in d["extras"]["noise"]][0] == 0
    assert d["extras"]["fgsm"][0]["accuracy_original"] == d["accuracy_original"]
    assert set(d["extras"]["layer_cka"]) >= {"0", "2"} and d["extras"]["layer_cka"]["0"] > 0.9
    assert d["extras"]["attribution_spearman"] > 0.5
    with pytest.raises(ValueError, match="unknown extras"):
        pycomp.retention.evaluate(model, small, data, latency=False, extras=("shap",))
