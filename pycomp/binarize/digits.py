"""Binary retention on the digits CNN: STE fine-tuning from the cached float model, then packed layers.

    python -m pycomp.binarize.digits [--epochs 15]

prints float, post-hoc and STE-trained accuracies for binary weights (BWN, first and last layer float)
and for W1A1 (XNOR), plain and centred (the CNN's binary layers take ReLU outputs). The tests run `finetune_digits` with a few epochs and a looser bound.
"""
from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from torch import nn

import pycomp
from pycomp.binarize.ste import convert, prepare
from pycomp.models.digits import accuracy, batches, digits_tensors, pretrained_digits_cnn


def finetune(student: nn.Module, data: list, epochs: int, lr: float = 1e-3, seed: int = 0) -> nn.Module:
    """Plain cross-entropy training of a prepared model (Adam, cosine schedule); returns it in eval mode."""
    torch.manual_seed(seed)
    opt = torch.optim.Adam(student.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(1, epochs))
    student.train()
    for _ in range(epochs):
        for x, y in data:
            opt.zero_grad()
            F.cross_entropy(student(x), y).backward()
            opt.step()
        sched.step()
    return student.eval()


def finetune_digits(activations: str = "float", epochs: int = 15, lr: float = 1e-3, centre: bool = False,
                    limit: int | None = None) -> dict:
    """Accuracies (in [0, 1]) of the float CNN, its post-hoc binarization and the STE-trained packed model.

    limit: train on the first `limit` training images only (a CI-length run); the test set is always whole.
    """
    model = pretrained_digits_cnn()
    xtr, ytr, xte, yte = digits_tensors()
    test = batches(xte, yte, 360)
    start = time.perf_counter()
    xtr, ytr = xtr[:limit], ytr[:limit]
    student = finetune(prepare(model, activations=activations, centre=centre), batches(xtr, ytr, 64, shuffle=True),
                       epochs, lr)
    packed = convert(student)
    post_hoc = pycomp.compress(model, "binary" if activations == "float" else "xnor",
                               **({"centre": True} if centre else {}))
    return {"activations": activations, "centre": centre, "epochs": epochs, "float": accuracy(model, test),
            "post_hoc": accuracy(post_hoc, test),
            "ste_latent": accuracy(student, test), "ste_packed": accuracy(packed, test),
            "train_seconds": time.perf_counter() - start, "model": packed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=15)
    args = parser.parse_args()
    import warnings

    warnings.simplefilter("ignore")  # the W1A1 run warns (by design) about its non-centred inputs
    for act, centre in (("float", False), ("binary", False), ("binary", True)):
        r = finetune_digits(act, args.epochs, centre=centre)
        print(f"activations={act:6s} centre={centre!s:5s} epochs={r['epochs']}: float {r['float']:.4f}  "
              f"post-hoc {r['post_hoc']:.4f}  "
              f"STE latent {r['ste_latent']:.4f}  STE packed {r['ste_packed']:.4f}  "
              f"(drop {100 * (r['float'] - r['ste_packed']):.2f} points, {r['train_seconds']:.1f} s)")


if __name__ == "__main__":
    main()
