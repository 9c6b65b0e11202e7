"""Gradual pruning: the cubic schedule by hand, masks that follow it, and pruned weights that stay zero."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pycomp.prune import GradualPruner, cubic_sparsity


def test_cubic_schedule_by_hand():
    kw = dict(initial=0.1, final=0.9, begin_step=100, end_step=500)  # n * dt = 400
    assert cubic_sparsity(0, **kw) == 0.1 and cubic_sparsity(100, **kw) == 0.1  # before and at t0: s_i
    assert cubic_sparsity(300, **kw) == pytest.approx(0.9 - 0.8 * 0.5 ** 3)  # middle: 0.8
    assert cubic_sparsity(200, **kw) == pytest.approx(0.9 - 0.8 * 0.75 ** 3)  # 0.5625
    assert cubic_sparsity(500, **kw) == 0.9 and cubic_sparsity(10_000, **kw) == 0.9  # end and after: s_f


def _setup(seed=0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))
    x, y = torch.randn(32, 6), torch.randint(0, 3, (32,))
    return model, x, y


def _train_step(model, opt, x, y):
    opt.zero_grad()
    F.cross_entropy(model(x), y).backward()
    opt.step()


def test_masks_follow_the_schedule_and_pruned_weights_stay_zero():
    model, x, y = _setup()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)  # momentum would revive pruned weights
    pruner = GradualPruner(model, 0.8, begin_step=2, end_step=10, frequency=2)
    assert pruner.sparsity == 0.0
    pruned_before = torch.zeros_like(model[0].weight, dtype=torch.bool)
    seen = {}
    for t in range(1, 15):
        _train_step(model, opt, x, y)
        pruner.step()
        seen[t] = pruner.sparsity
        w = model[0].weight
        expected = cubic_sparsity(t - t % 2 if t < 10 else 10, initial=0.0, final=0.8, begin_step=2, end_step=10)
        assert pruner.sparsity == pytest.approx(expected)
        assert int((w == 0).sum()) == round(pruner.sparsity * w.numel())  # per layer, exactly
        assert torch.all(w[pruned_before] == 0)  # once pruned, always pruned
        assert torch.all(w.grad[pruned_before] == 0)  # the gradient hook (masks as they were in backward)
        pruned_before = ~pruner.masks["0"]
    assert seen[2] == 0.0 and seen[6] == pytest.approx(0.8 - 0.8 * 0.5 ** 3) and seen[10] == pytest.approx(0.8)
    masks = pruner.remove()
    _train_step(model, opt, x, y)  # hooks gone: training no longer keeps the zeros (remove made them permanent)
    assert model[0].weight.grad[~masks["0"]].abs().sum() > 0


def test_update_at_end_step_off_the_frequency_grid_and_begin_at_zero():
    model, x, y = _setup()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    pruner = GradualPruner(model, 0.5, initial_sparsity=0.2, end_step=5, frequency=4, scope="global")
    assert pruner.sparsity == 0.2  # begin_step 0: s_i applied at construction
    total = sum(m.weight.numel() for m in (model[0], model[2]))
    assert sum(int((m.weight == 0).sum()) for m in (model[0], model[2])) == round(0.2 * total)
    for _ in range(5):
        _train_step(model, opt, x, y)
        pruner.step()
    assert pruner.t == 5 and pruner.sparsity == 0.5
    assert sum(int((m.weight == 0).sum()) for m in (model[0], model[2])) == round(0.5 * total)


@pytest.mark.parametrize("kwargs, match", [
    (dict(final_sparsity=1.0, end_step=10), r"final_sparsity: sparsity must be a number in \[0, 1\)"),
    (dict(final_sparsity=0.5, initial_sparsity=0.6, end_step=10), "exceeds"),
    (dict(final_sparsity=0.5, begin_step=10, end_step=10), "begin_step < end_step"),
    (dict(final_sparsity=0.5, end_step=10, frequency=0), "frequency >= 1"),
    (dict(final_sparsity=0.5, end_step=10, scope="row"), "scope"),
])
def test_bad_settings_raise(kwargs, match):
    model, _, _ = _setup()
    with pytest.raises(ValueError, match=match):
        GradualPruner(model, **kwargs)
