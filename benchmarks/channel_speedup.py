"""Does channel pruning that halves a CNN's FLOPs make it faster? `python benchmarks/channel_speedup.py`.

Issue 5's target: channel pruning that removes half of a CNN's FLOPs gives >= 1.6x measured CPU speed-up.
pycomp.prune.prune_channels returns a smaller dense model, so the speed-up is whatever the dense kernels
(oneDNN/MKL) make of the smaller shapes. For each CNN this finds the channel ratio that removes half of the
FLOPs (count_flops), prunes, and times the original and the pruned model side by side (interleaved, same
threads, median of the repeats), once with the plain channel counts and once with round_to=8 (each
layer keeps a multiple of 8 channels, which fills the convolution kernels' vectors).

CNNs: a VGG-style stack on 32x32 inputs (64-128-256 channels, random weights: speed does not depend on the
values), and the digits CNN of pycomp.models on 8x8 images, at a serving batch and at batch 1.
"""
from __future__ import annotations

import argparse

import torch
from torch import nn

from pycomp.benchmark.timing import median_ms, time_interleaved
from pycomp.prune import count_flops, prune_channels


def vgg_small() -> nn.Module:
    def block(cin, cout):
        return [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(),
                nn.Conv2d(cout, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(), nn.MaxPool2d(2)]

    return nn.Sequential(*block(3, 64), *block(64, 128), *block(128, 256), nn.Flatten(),
                         nn.Linear(256 * 4 * 4, 256), nn.ReLU(), nn.Linear(256, 10)).eval()


def ratio_for_half_flops(model: nn.Module, x: torch.Tensor, round_to: int) -> tuple[float, nn.Module]:
    """The smallest channel ratio (to 0.01) whose pruned model has at most half the FLOPs."""
    full = count_flops(model, x)

    def pruned(ratio):
        return prune_channels(model, ratio, example_input=x[:1], round_to=round_to).eval()

    lo, hi = 0.0, 0.9
    while hi - lo > 0.01:
        mid = (lo + hi) / 2
        if count_flops(pruned(mid), x) <= full / 2:
            hi = mid
        else:
            lo = mid
    return hi, pruned(hi)


def measure(name: str, model: nn.Module, x: torch.Tensor, repeats: int, round_to: int) -> dict:
    ratio, small = ratio_for_half_flops(model, x, round_to)
    with torch.no_grad():
        torch.testing.assert_close(small(x).shape, model(x).shape)
        times = time_interleaved({"full": lambda i: model(x), "pruned": lambda i: small(x)}, repeats=repeats,
                                 warmup=5)
    full_ms, small_ms = median_ms(times["full"]), median_ms(times["pruned"])
    return {"model": name, "batch": x.shape[0], "round_to": round_to, "ratio": ratio,
            "flops_kept": count_flops(small, x) / count_flops(model, x), "full_ms": full_ms, "pruned_ms": small_ms,
            "speedup": full_ms / small_ms}


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=20)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    from pycomp.models.digits import pretrained_digits_cnn

    digits = pretrained_digits_cnn().eval()
    vgg = vgg_small()
    cases = [("vgg-small 32x32", vgg, torch.randn(32, 3, 32, 32)), ("vgg-small 32x32", vgg, torch.randn(1, 3, 32, 32)),
             ("digits CNN 8x8", digits, torch.randn(1024, 1, 8, 8)), ("digits CNN 8x8", digits, torch.randn(1, 1, 8, 8))]
    rows = [measure(name, model, x, args.repeats, round_to) for name, model, x in cases for round_to in (1, 8)]
    print(f"{torch.get_num_threads()} threads, torch {torch.__version__}; target >= 1.6x at half the FLOPs")
    print("| model | batch | round_to | channel ratio | FLOPs kept | full ms | pruned ms | speed-up |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['batch']} | {r['round_to']} | {r['ratio']:.2f} | {r['flops_kept']:.3f} | "
              f"{r['full_ms']:.3f} | {r['pruned_ms']:.3f} | {r['speedup']:.2f}x |")
    return rows


if __name__ == "__main__":
    main()
