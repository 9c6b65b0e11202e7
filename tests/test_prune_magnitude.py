"""Magnitude pruning: exact counts, deterministic ties, one global threshold, clear errors."""
import math

import pytest
import torch
from torch import nn

from pycomp.prune import apply_masks, magnitude_mask, magnitude_masks, magnitude_prune, sparsity_of


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 5, 3), nn.ReLU(), nn.Flatten(), nn.Linear(5 * 4 * 4, 7), nn.ReLU(),
                         nn.Linear(7, 3))


@pytest.mark.parametrize("sparsity", [0.0, 0.1, 0.25, 0.5, 0.9, 0.999])
def test_per_layer_prunes_exactly_round_s_numel(sparsity):
    model = _model()
    masks = magnitude_prune(model, sparsity)
    assert sorted(masks) == ["0", "3", "5"]
    for name, mask in masks.items():
        w = model.get_submodule(name).weight
        assert mask.dtype == torch.bool and mask.shape == w.shape
        assert int((~mask).sum()) == round(sparsity * w.numel())
        assert torch.all(w[~mask] == 0)
        if (~mask).any() and mask.any():  # every pruned |w| is <= every kept |w|
            dense = _model().get_submodule(name).weight.detach().abs()
            assert dense[~mask].max() <= dense[mask].min()


def test_ties_at_the_threshold_are_broken_by_position():
    w = torch.tensor([[1.0, -1.0, 1.0, 0.5], [1.0, 1.0, -1.0, 2.0]])  # six weights tie at |w| = 1
    mask = magnitude_mask(w, 0.5)  # prune 4: the 0.5, then the first three 1s in flat order
    assert mask.tolist() == [[False, False, False, False], [True, True, True, True]]
    assert torch.equal(magnitude_mask(w, 0.5), mask)
    constant = torch.ones(10, 10)
    assert int((~magnitude_mask(constant, 0.37)).sum()) == 37
    assert (~magnitude_mask(constant, 0.37)).flatten().nonzero().flatten().tolist() == list(range(37))


def test_global_uses_one_threshold_and_exact_total():
    model = _model()
    with torch.no_grad():
        model[3].weight.mul_(10)  # one layer much larger: global pruning spares it
    dense = {n: model.get_submodule(n).weight.detach().abs().clone() for n in ["0", "3", "5"]}
    masks = magnitude_masks(model, 0.6, scope="global")
    total = sum(m.numel() for m in masks.values())
    assert sum(int((~m).sum()) for m in masks.values()) == round(0.6 * total)
    pruned_max = max(float(dense[n][~m].max()) for n, m in masks.items() if (~m).any())
    kept_min = min(float(dense[n][m].min()) for n, m in masks.items() if m.any())
    assert pruned_max <= kept_min
    per_layer = {n: float((~m).float().mean()) for n, m in masks.items()}
    assert per_layer["3"] < 0.6 < per_layer["0"]
    assert all(torch.equal(model.get_submodule(n).weight.abs(), dense[n]) for n in dense)  # weights unchanged


def test_global_scale_per_layer():
    model = _model()
    with torch.no_grad():
        model[3].weight.mul_(10)
    rms = magnitude_masks(model, 0.6, scope="global", scale="rms")
    plain = magnitude_masks(model, 0.6, scope="global")
    assert float((~rms["3"]).float().mean()) > float((~plain["3"]).float().mean())
    shielded = magnitude_masks(model, 0.6, scope="global", scale={"0": 1e6})
    assert bool(shielded["0"].all())
    with pytest.raises(ValueError, match="not pruned here.*'9'"):
        magnitude_masks(model, 0.5, scope="global", scale={"9": 2.0})


def test_skip_and_sparsity_of():
    model = _model()
    masks = magnitude_prune(model, 0.5, skip=["0", "5"])
    assert list(masks) == ["3"]
    assert math.isclose(sparsity_of(model, skip=["0", "5"]), round(0.5 * 560) / 560)
    assert int((model[0].weight == 0).sum()) == 0


@pytest.mark.parametrize("bad", [1.0, 1.5, -0.1, float("nan"), True, "0.5", None])
def test_sparsity_outside_0_1_is_a_clear_error(bad):
    model = _model()
    before = model[3].weight.clone()
    with pytest.raises(ValueError, match=r"sparsity must be a number in \[0, 1\)"):
        magnitude_prune(model, bad)
    with pytest.raises(ValueError, match=r"sparsity must be a number in \[0, 1\)"):
        magnitude_mask(before, bad)
    assert torch.equal(model[3].weight, before)


def test_other_errors_name_the_problem():
    model = _model()
    with pytest.raises(ValueError, match="scope"):
        magnitude_prune(model, 0.5, scope="row")
    with pytest.raises(ValueError, match="no nn.Linear or nn.Conv2d"):
        magnitude_prune(model, 0.5, skip="*")
    with torch.no_grad():
        model[5].weight[0, 0] = float("nan")
    with pytest.raises(ValueError, match="layer '5'.*NaN"):
        magnitude_prune(model, 0.5)
    with pytest.raises(ValueError, match="layer '3'.*mask shape"):
        apply_masks(model, {"3": torch.ones(2, 2, dtype=torch.bool)})


def test_a_single_layer_model():
    layer = nn.Linear(8, 4)
    masks = magnitude_prune(layer, 0.25)
    assert list(masks) == [""] and int((layer.weight == 0).sum()) == 8
