"""Issue 5's retention targets on the digits CNN: `python benchmarks/prune_retention.py`.

Each method prunes a copy of the cached float CNN (pycomp.models) and fine-tunes it briefly (Adam, lr 1e-3,
batches of 64, the training images), then the test images give the accuracy drop against the float model:
  - 2:4 on every layer but conv1 (K = 9), masks kept during 3 epochs; target <= 0.5 point. A second 2:4 row
    pads conv1's K to 12 (pad=True) and prunes it too (no target; the issue allows either).
  - 90% global magnitude pruning on a gradual schedule over 6 of 8 epochs; target <= 1 point.
  - half of every layer's channels (prune_channels, a quarter of the FLOPs), 5 epochs; target <= 1.5 points.
tests/test_prune_digits.py runs the same functions and holds the targets.
"""
from __future__ import annotations

import argparse
import copy

import torch
import torch.nn.functional as F

from pycomp.models.digits import accuracy, batches, digits_tensors, pretrained_digits_cnn
from pycomp.prune import (GradualPruner, count_flops, is_nm_sparse, keep_masks, nm_prune, prune_channels,
                          sparsity_of)


class Digits:
    """The float CNN, its test accuracy, and the training batches of each epoch."""

    def __init__(self):
        xtr, ytr, xte, yte = digits_tensors()
        self.model = pretrained_digits_cnn()
        self.test = batches(xte, yte, 128)  # digits_loaders()'s test batches
        self.acc0 = accuracy(self.model, self.test)
        self.train = lambda epoch: batches(xtr, ytr, 64, shuffle=True, seed=1000 + epoch)

    def drop(self, model) -> float:
        return self.acc0 - accuracy(model, self.test)


def finetune(model, train, epochs, keep=None, on_step=None):
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


def two_four(d: Digits, pad_conv1: bool = False) -> dict:
    pruned = copy.deepcopy(d.model)
    masks = nm_prune(pruned, skip=[] if pad_conv1 else ["conv1"], pad=pad_conv1)
    finetune(pruned, d.train, 3, keep=masks)
    return {"method": "2:4" + (", conv1 padded" if pad_conv1 else ", conv1 dense"), "drop": d.drop(pruned),
            "layers": sorted(masks), "kept_pattern": all(is_nm_sparse(pruned.get_submodule(n).weight, pad=pad_conv1)
                                                         for n in masks), "target": None if pad_conv1 else 0.005}


def gradual_90(d: Digits) -> dict:
    pruned = copy.deepcopy(d.model)
    steps = len(d.train(0))
    pruner = GradualPruner(pruned, 0.9, end_step=6 * steps, frequency=steps // 2, scope="global")
    finetune(pruned, d.train, 8, on_step=pruner.step)
    pruner.remove()
    return {"method": "90% global, gradual", "drop": d.drop(pruned), "sparsity": sparsity_of(pruned),
            "target": 0.01}


def channels_50(d: Digits) -> dict:
    x = torch.randn(1, 1, 8, 8)
    small = prune_channels(d.model, 0.5, example_input=x)
    flops = count_flops(small, x) / count_flops(d.model, x)
    finetune(small, d.train, 5)
    return {"method": "50% channels", "drop": d.drop(small), "flops": flops, "target": 0.015}


def main(argv: list[str] | None = None) -> None:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args(argv)
    d = Digits()
    print(f"digits CNN, float test accuracy {d.acc0:.4f}")
    print(f"{'method':24} {'drop (points)':>13} {'target':>7}  detail")
    for r in (two_four(d), two_four(d, pad_conv1=True), gradual_90(d), channels_50(d)):
        detail = (f"sparsity {r['sparsity']:.3f}" if "sparsity" in r else f"FLOPs {r['flops']:.2f}x" if "flops" in r
                  else f"layers {','.join(r['layers'])}, pattern kept: {r['kept_pattern']}")
        target = f"{100 * r['target']:.1f}" if r["target"] is not None else "-"
        print(f"{r['method']:24} {100 * r['drop']:13.2f} {target:>7}  {detail}")


if __name__ == "__main__":
    main()
