"""N:M masks: the pattern along K, ties, K not a multiple of M, and fine-tuning that keeps the pattern."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pycomp.prune import is_nm_sparse, keep_masks, nm_mask, nm_masks, nm_prune


def test_2_4_keeps_the_two_largest_of_each_group_along_k():
    w = torch.tensor([[0.1, -3.0, 2.0, 0.5, 1.0, 1.0, 1.0, -1.0],
                      [4.0, 0.0, 0.0, -4.0, 0.2, 0.3, -0.1, 0.0]])
    mask = nm_mask(w)
    assert mask.tolist() == [[False, True, True, False, True, True, False, False],  # ties keep the lower index
                             [True, False, False, True, True, True, False, False]]
    assert is_nm_sparse(w * mask) and not is_nm_sparse(w)
    assert nm_mask(w, 1, 4).sum().item() == 4 and is_nm_sparse(w * nm_mask(w, 1, 4), 1, 4)


@pytest.mark.parametrize("n, m", [(2, 4), (1, 4), (4, 8), (1, 2)])
def test_conv_k_is_in_channels_kh_kw_in_weight_order(n, m):
    torch.manual_seed(0)
    w = torch.randn(6, 8, 3, 3)  # K = 72
    mask = nm_mask(w, n, m)
    assert mask.shape == w.shape
    groups = (w * mask).reshape(6, -1, m)
    assert torch.all((groups != 0).sum(-1) == n)
    kept_min = torch.where(mask.reshape(6, -1, m), w.abs().reshape(6, -1, m), torch.inf).amin(-1)
    pruned_max = torch.where(mask.reshape(6, -1, m), -torch.inf, w.abs().reshape(6, -1, m)).amax(-1)
    assert torch.all(pruned_max <= kept_min)
    assert is_nm_sparse(w * mask, n, m)


def test_k_not_a_multiple_of_m_raises_or_pads():
    w = torch.arange(1.0, 10.0).reshape(1, 1, 3, 3)  # K = 9: groups [1..4], [5..8], [9]
    with pytest.raises(ValueError, match="K = 9.*not a multiple of M = 4.*pad=True"):
        nm_mask(w)
    mask = nm_mask(w, pad=True)
    assert mask.flatten().tolist() == [False, False, True, True, False, False, True, True, True]
    assert not is_nm_sparse(w * mask)  # no 2:4 kernel takes K = 9 as it is
    assert is_nm_sparse(w * mask, pad=True)
    assert nm_mask(torch.tensor([[1.0, 2.0, 3.0, 4.0, 0.0, 0.0]]), pad=True).tolist() == \
        [[False, False, True, True, True, True]]  # a real zero still outranks the padding


def test_model_masks_name_the_layer_and_change_nothing_on_error():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 36, 8))
    before = model[3].weight.clone()
    with pytest.raises(ValueError, match="nm 2:4: layer '0': K = 9"):
        nm_prune(model)
    assert torch.equal(model[3].weight, before)
    masks = nm_prune(model, skip=["0"])
    assert list(masks) == ["3"] and is_nm_sparse(model[3].weight)
    assert float((model[3].weight == 0).float().mean()) == 0.5
    assert sorted(nm_masks(model, pad=True)) == ["0", "3"]
    for n, m in [(0, 4), (4, 4), (2.0, 4), (True, 4)]:
        with pytest.raises(ValueError, match="0 < n < m"):
            nm_mask(before, n, m)


def test_pattern_holds_through_fine_tuning():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(4, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 25, 16), nn.ReLU(),
                          nn.Linear(16, 3))
    x, y = torch.randn(16, 4, 5, 5), torch.randint(0, 3, (16,))
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for _ in range(3):  # optimizer state from the dense model: momentum would revive pruned weights
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    masks = nm_prune(model)
    start = {k: model.get_submodule(k).weight.detach().clone() for k in masks}
    with keep_masks(model, masks, optimizer=opt):
        for _ in range(5):
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()
            for name, mask in masks.items():
                w = model.get_submodule(name).weight
                assert is_nm_sparse(w) and torch.all(w[~mask] == 0) and torch.all(w.grad[~mask] == 0)
    for name, mask in masks.items():
        assert not torch.equal(model.get_submodule(name).weight[mask], start[name][mask])  # the kept ones trained


def test_without_the_optimizer_the_gradient_hook_keeps_zeros_for_fresh_state():
    torch.manual_seed(0)
    model = nn.Linear(8, 4)
    masks = nm_prune(model)
    opt = torch.optim.Adam(model.parameters(), lr=0.1)  # created after pruning: no stale state
    keeper = keep_masks(model, masks)
    for _ in range(3):
        opt.zero_grad()
        model(torch.randn(5, 8)).square().sum().backward()
        opt.step()
        assert is_nm_sparse(model.weight)
    keeper.remove()
    opt.zero_grad()
    model(torch.randn(5, 8)).square().sum().backward()
    assert model.weight.grad[~masks[""]].abs().sum() > 0  # hooks removed
