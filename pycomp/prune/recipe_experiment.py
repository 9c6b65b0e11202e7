"""Issue 6's three-step recipe on digits, measured: `python -m pycomp.prune.recipe_experiment`.

The cached DigitsCNN compressed by the recipe 2:4 -> distill -> int8 (every layer; the float model is
the teacher), against the float model: test accuracy on the 360 held-out images and the bytes of the
pycomp files (`pycomp.save`, manifest included) of both. "2:4 -> int8" without the distillation step is
reported beside it, to show what the step buys. Validation for the distillation's early stopping is
the last fifth of the training split, as in pycomp.lowrank.experiment.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile

import pycomp
from pycomp.models.digits import accuracy, batches, digits_tensors, pretrained_digits_cnn


def run(epochs: int = 3, mode: str = "dynamic", skip: tuple[str, ...] = ()) -> list[dict]:
    """Rows of {recipe, accuracy, float_accuracy, drop_points, bytes, float_bytes, ratio}."""
    model = pretrained_digits_cnn()
    xtr, ytr, xte, yte = digits_tensors()
    cut = len(ytr) * 4 // 5
    train, val, test = batches(xtr[:cut], ytr[:cut], 64), batches(xtr[cut:], ytr[cut:], 256), batches(xte, yte, 360)
    recipes = {"2:4 -> int8": {"steps": ["2:4", {"int8": {"mode": mode}}], "skip": list(skip)}}
    if epochs:
        recipes["2:4 -> distill -> int8"] = {
            "steps": ["2:4", {"distill": {"epochs": epochs, "val": val, "metric": "accuracy", "progress": False}},
                      {"int8": {"mode": mode}}], "skip": list(skip)}
    rows = []
    with tempfile.TemporaryDirectory() as d:
        float_bytes = pycomp.save(model, os.path.join(d, "float.pcz"))
        base = accuracy(model, test)
        for name, recipe in recipes.items():
            small = pycomp.compress(model, pycomp.Recipe.from_dict(recipe), train=train)
            nbytes = pycomp.save(small, os.path.join(d, "small.pcz"))
            acc = accuracy(small, test)
            rows.append({"recipe": name, "mode": mode, "skip": list(skip), "accuracy": acc, "float_accuracy": base,
                         "drop_points": round(100 * (base - acc), 2), "bytes": nbytes, "float_bytes": float_bytes,
                         "ratio": round(float_bytes / nbytes, 3)})
    return rows


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=3, help="distillation epochs (0: only 2:4 -> int8)")
    ap.add_argument("--mode", choices=["dynamic", "weight_only"], default="dynamic")
    ap.add_argument("--skip", nargs="*", default=[], help="modules kept in float")
    args = ap.parse_args(argv)
    rows = run(args.epochs, args.mode, tuple(args.skip))
    for row in rows:
        print(json.dumps(row), flush=True)
    print(f"\n{'recipe':<26} {'accuracy':>9} {'drop':>6} {'bytes':>9} {'vs float':>9}")
    for r in rows:
        print(f"{r['recipe']:<26} {r['accuracy']:>9.2%} {r['drop_points']:>6.2f} {r['bytes']:>9,} {r['ratio']:>8.2f}x")
    print(f"{'float':<26} {rows[0]['float_accuracy']:>9.2%} {'':>6} {rows[0]['float_bytes']:>9,}")
    return rows


if __name__ == "__main__":
    main()
