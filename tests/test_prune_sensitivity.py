"""Sensitivity scan: one row per prunable layer, one column per sparsity, the original untouched."""
import copy

import pytest
import torch
from torch import nn

from pycomp.prune import sensitivity_scan


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 36, 8), nn.ReLU(),
                         nn.Linear(8, 3))


def test_table_shape_values_and_original_untouched():
    model = _model()
    before = copy.deepcopy(model.state_dict())
    calls = []

    def zeros(m):  # the metric sees exactly one pruned layer at the sparsity asked
        calls.append(m)
        return sum(int((layer.weight == 0).sum()) for layer in (m[0], m[3], m[5]))

    table = sensitivity_scan(model, zeros, sparsities=(0.3, 0.5, 0.9), progress=False)
    assert list(table) == ["0", "3", "5"]
    assert all(list(row) == [0.3, 0.5, 0.9] for row in table.values())
    assert table["0"] == {0.3: round(0.3 * 36), 0.5: 18, 0.9: round(0.9 * 36)}
    assert table["3"][0.5] == 576 and table["5"][0.9] == round(0.9 * 24)
    assert len(calls) == 9 and all(m is not model for m in calls)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_metric_drops_with_sparsity_and_skip():
    model = _model()
    x = torch.randn(64, 1, 8, 8)
    reference = model(x).detach()

    def fidelity(m):
        with torch.no_grad():
            return float(-(m(x) - reference).norm())

    table = sensitivity_scan(model, fidelity, skip=["0"], progress=False)
    assert list(table) == ["3", "5"]
    for row in table.values():
        values = [row[s] for s in (0.3, 0.5, 0.7, 0.9)]
        assert values == sorted(values, reverse=True)
    with pytest.raises(ValueError, match=r"sparsity must be a number in \[0, 1\)"):
        sensitivity_scan(model, fidelity, sparsities=(0.5, 1.0))
