"""The sparse layers on the digits CNN: prune, fine-tune, then pycomp.compress keeps the fine-tuned pattern
and the SparseLinear/SparseConv2d model computes what the masked dense model computes.

test_prune_digits.py (through benchmarks/prune_retention.py) holds the retention targets of the masked dense models (2:4 <= 0.5 point, 90% gradual
<= 1 point); outputs equal to the masked model's carry them over. The 2:4 case also checks its target here,
end to end; the 90% case uses a shorter schedule to keep CI time down (same code path, fewer steps).
"""
import copy

import pytest
import torch
from bench_modules import load_benchmark

import pycomp
from pycomp.nn import SparseConv2d, SparseLinear
from pycomp.prune import GradualPruner, nm_prune

_finetune = load_benchmark("prune_retention").finetune  # the masked fine-tuning loop the retention targets use


@pytest.fixture(scope="module")
def digits():
    from pycomp.models.digits import accuracy, batches, digits_loaders, digits_tensors, pretrained_digits_cnn

    xtr, ytr, _, _ = digits_tensors()
    _, test = digits_loaders()
    model = pretrained_digits_cnn()
    return model, accuracy(model, test), (lambda m: accuracy(m, test)), (lambda epoch: batches(
        xtr, ytr, 64, shuffle=True, seed=1000 + epoch)), torch.cat([x for x, _ in test])


def _same_as_masked(pruned, small, names, x):
    for name in names:
        layer = small.get_submodule(name)
        assert isinstance(layer, (SparseLinear, SparseConv2d))
        assert torch.equal(layer.to_dense(), pruned.get_submodule(name).weight.detach())  # the fine-tuned weights
    with torch.no_grad():
        torch.testing.assert_close(small(x), pruned(x), rtol=1e-4, atol=1e-4)


def test_2_4_layers_carry_the_fine_tuned_weights_within_half_a_point(digits):
    model, acc0, accuracy, train, xtest = digits
    pruned = copy.deepcopy(model)
    masks = nm_prune(pruned, skip=["conv1"])  # conv1's K = 9 is not a multiple of 4
    _finetune(pruned, train, 3, keep=masks)
    small = pycomp.compress(pruned, "2:4", skip=["conv1"])
    _same_as_masked(pruned, small, masks, xtest)
    assert all(small.get_submodule(n).backend.startswith("cpu-") for n in masks)
    assert acc0 - accuracy(small) <= 0.005 + 1e-9


def test_gradual_90_percent_csr_layers_match_the_masked_model(digits):
    model, _, accuracy, train, xtest = digits
    pruned = copy.deepcopy(model)
    steps = len(train(0))
    pruner = GradualPruner(pruned, 0.9, end_step=steps, frequency=steps // 4, scope="global")
    _finetune(pruned, train, 2, on_step=pruner.step)
    masks = pruner.remove()
    small = pycomp.compress(pruned, "sparse")  # sparsity=None: every layer keeps its fine-tuned zeros
    _same_as_masked(pruned, small, masks, xtest)
    total = sum(small.get_submodule(n).n * small.get_submodule(n).k for n in masks)
    nnz = sum(small.get_submodule(n).nnz for n in masks)
    assert 1 - nnz / total == pytest.approx(0.9, abs=1e-3)
    assert accuracy(small) == accuracy(pruned)
