"""The sparsity issue's targets on the digits CNN, with short fine-tuning (a few seconds each)."""
import copy

import pytest
import torch
import torch.nn.functional as F

from pycomp.prune import (GradualPruner, count_flops, is_nm_sparse, keep_masks, nm_prune, prune_channels,
                          sparsity_of)


@pytest.fixture(scope="module")
def digits():
    from pycomp.models.digits import accuracy, batches, digits_loaders, digits_tensors, pretrained_digits_cnn

    xtr, ytr, _, _ = digits_tensors()
    _, test = digits_loaders()
    model = pretrained_digits_cnn()
    return model, accuracy(model, test), (lambda m: accuracy(m, test)), (lambda epoch: batches(
        xtr, ytr, 64, shuffle=True, seed=1000 + epoch))


def _finetune(model, train, epochs, keep=None, on_step=None):
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    keeper = keep_masks(model, keep, optimizer=opt) if keep is not None else None
    model.train()
    for epoch in range(epochs):
        for x, y in train(epoch):
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()
            if on_step:
                on_step()
    if keeper:
        keeper.remove()
    return model.eval()


def test_2_4_except_conv1_loses_at_most_half_a_point(digits):
    model, acc0, accuracy, train = digits
    pruned = copy.deepcopy(model)
    masks = nm_prune(pruned, skip=["conv1"])  # conv1's K = 9 is not a multiple of 4
    _finetune(pruned, train, 3, keep=masks)
    assert all(is_nm_sparse(pruned.get_submodule(name).weight) for name in masks)
    assert acc0 - accuracy(pruned) <= 0.005 + 1e-9


def test_gradual_90_percent_global_loses_at_most_one_point(digits):
    model, acc0, accuracy, train = digits
    pruned = copy.deepcopy(model)
    steps = len(train(0))
    pruner = GradualPruner(pruned, 0.9, end_step=6 * steps, frequency=steps // 2, scope="global")
    _finetune(pruned, train, 8, on_step=pruner.step)
    pruner.remove()
    assert sparsity_of(pruned) == pytest.approx(0.9, abs=1e-3)
    assert acc0 - accuracy(pruned) <= 0.01 + 1e-9


def test_half_the_channels_quarter_the_flops_within_one_and_a_half_points(digits):
    model, acc0, accuracy, train = digits
    x = torch.randn(1, 1, 8, 8)
    small = prune_channels(model, 0.5, example_input=x)
    assert count_flops(small, x) < 0.26 * count_flops(model, x)
    _finetune(small, train, 5)
    assert acc0 - accuracy(small) <= 0.015 + 1e-9
