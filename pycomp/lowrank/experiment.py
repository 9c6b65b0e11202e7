"""The issue's low-rank target on digits, measured: `python -m pycomp.lowrank.experiment`.

The cached DigitsCNN's two Linear layers factored by SVD to at most half their weights' parameters,
two ways: one ratio per layer (ratio=0.5) and the spectrum-spread budget (budget=0.5). Conv layers
stay dense (the target is about the FC parameters). Each is reported as factored and after a short
distillation fine-tune from the dense model (--finetune-epochs, 0 to skip). Test accuracy on the 360
held-out images; validation for the fine-tune is the last fifth of the training split.
"""
from __future__ import annotations

import argparse
import json

import torch

import pycomp
from pycomp.distill.distiller import Distiller
from pycomp.models.digits import accuracy, batches, digits_tensors, pretrained_digits_cnn
from pycomp.nn import LowRankLinear


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--finetune-epochs", type=int, default=3)
    args = ap.parse_args(argv)
    model = pretrained_digits_cnn()
    xtr, ytr, xte, yte = digits_tensors()
    cut = len(ytr) * 4 // 5
    train, val, test = batches(xtr[:cut], ytr[:cut], 32), batches(xtr[cut:], ytr[cut:], 256), batches(xte, yte, 360)
    dense_fc = sum(model.get_submodule(n).weight.numel() for n in ("fc1", "fc2"))
    base = accuracy(model, test)
    rows = []
    for options in ({"ratio": 0.5}, {"budget": 0.5}):
        small = pycomp.compress(model, "lowrank", conv="none", **options)
        fc = {n: m for n, m in small.named_modules() if isinstance(m, LowRankLinear)}
        row = {"options": options, "ranks": {n: m.rank for n, m in fc.items()},
               "fc_params": sum(m.rank * (m.in_features + m.out_features) for m in fc.values()),
               "dense_fc_params": dense_fc, "accuracy_dense": base, "accuracy_factored": accuracy(small, test)}
        if args.finetune_epochs:
            torch.manual_seed(0)
            Distiller(model, small, temperature=4.0, alpha=0.9).fit(train, val, epochs=args.finetune_epochs,
                                                                     lr=1e-3, metric="accuracy", progress=False)
            row["accuracy_finetuned"] = accuracy(small, test)
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


if __name__ == "__main__":
    main()
