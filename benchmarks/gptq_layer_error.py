"""GPTQ against round-to-nearest, layer by layer: `python benchmarks/gptq_layer_error.py`.

Issue 3: GPTQ lowers each layer's output error against RTN. For every layer of the digits CNN
(pycomp.models, trained once and cached), both methods quantize the float weights to int4 (asymmetric,
per group); GPTQ calibrates on the layer's inputs over the training images. Each row is the relative
output error ||x W_q^T - x W^T|| / ||x W^T|| (convolutions: conv2d with W_q against W) on the training
images (the calibration data) and on the held-out test images, weights only: the activations stay float.
"""
from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from torch import nn

from pycomp.calibrate import inputs_of
from pycomp.models.digits import digits_tensors, pretrained_digits_cnn
from pycomp.nn import Int4Conv2d, Int4Linear


def _output(layer: nn.Module, weight: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    if isinstance(layer, nn.Conv2d):
        return F.conv2d(x, weight, None, layer.stride, layer.padding, layer.dilation, layer.groups)
    return F.linear(x, weight)


def layer_errors(group_size: int = 128, act_order: bool = False) -> list[dict]:
    """One row per layer: name, shape, RTN and GPTQ relative output errors on train and test images."""
    model = pretrained_digits_cnn()
    xtr, _, xte, _ = digits_tensors()
    names = [n for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    rows = []
    for name in names:
        layer = model.get_submodule(name)
        with torch.no_grad():
            x_train, x_test = inputs_of(model, layer, [xtr, xte], torch.device("cpu"))
        make = Int4Conv2d if isinstance(layer, nn.Conv2d) else Int4Linear
        rtn = make.from_float(layer, group_size=group_size, name=name)
        gptq = make.from_float(layer, group_size=group_size, method="gptq", calib=list(x_train.split(500)),
                               act_order=act_order, name=name)
        row = {"layer": name, "shape": tuple(layer.weight.shape)}
        with torch.no_grad():
            for split, x in (("train", x_train), ("test", x_test)):
                ref = _output(layer, layer.weight, x)
                for method, q in (("rtn", rtn), ("gptq", gptq)):
                    row[f"{method}_{split}"] = float((_output(layer, q.dequantize(), x) - ref).norm() / ref.norm())
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--group-sizes", default="32,128", help="comma-separated int4 group sizes")
    p.add_argument("--act-order", action="store_true", help="GPTQ in order of decreasing Hessian diagonal")
    args = p.parse_args(argv)
    print("relative output error of each layer's int4 weights (digits CNN; train = GPTQ's calibration images)")
    print(f"{'layer':6} {'weight':>14} {'group':>5} | {'RTN train':>9} {'GPTQ train':>10} | {'RTN test':>8} "
          f"{'GPTQ test':>9} {'GPTQ/RTN':>8}")
    for gs in (int(g) for g in args.group_sizes.split(",")):
        for r in layer_errors(gs, args.act_order):
            print(f"{r['layer']:6} {str(r['shape']):>14} {gs:>5} | {r['rtn_train']:9.4f} {r['gptq_train']:10.4f} | "
                  f"{r['rtn_test']:8.4f} {r['gptq_test']:9.4f} {r['gptq_test'] / r['rtn_test']:7.2f}x")


if __name__ == "__main__":
    main()
