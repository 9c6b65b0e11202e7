#!/usr/bin/env python3
"""Where the CPU int8 kernels lose to the "cpu-dense" path (fp32 GEMM on int8 values), by K and N.

    PYTHONPATH=. python benchmarks/int8_dense_crossover.py [--threads 2]

Sets CPU_DENSE_MAX_K / CPU_DENSE_MIN_M in pycomp/ops/int8.py (the W8A8 column shows the dense form of
the same integer arithmetic, which was not reliably faster, so W8A8 keeps its kernel). Hot weights on purpose: these
layers are tiny, so they live in cache in a real model too. Median of 30 calls, interleaved.
"""
import argparse
import statistics
import time

import torch

from pycomp import _ext
from pycomp.ops import int8 as ops
from pycomp.quantize.int8 import quantize_weight_int8


def median_us(fn, reps=30):
    for _ in range(3):
        fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e6


def _dense(mode, x, q, s):
    if mode == "weight_only":
        return ops._dense_cpu(x, q, s, None)
    xq, xs = ops.quantize_per_token_int8(x)
    return (xq.float() @ q.float().t()) * xs.unsqueeze(1) * s


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    print(f"threads {args.threads}, isa {_ext._C.cpu_isa()}; kernel/dense time ratio (>1: dense wins)")
    print(f"{'M':>6} {'K':>5} {'N':>5} | {'w8a8 kern':>9} {'dense':>7} {'ratio':>6} | {'w8a32 kern':>10} {'dense':>7} {'ratio':>6}")
    for m in (1, 128, 8192):
        for k in (9, 16, 32, 64, 288):
            for n in (10, 16, 32, 64, 256):
                torch.manual_seed(0)
                x = torch.randn(m, k)
                q, s = quantize_weight_int8(torch.randn(n, k))
                row = []
                for mode, kern in (("dynamic", _ext._C.int8_linear_dynamic_cpu),
                                   ("weight_only", _ext._C.int8_linear_weight_only_cpu)):
                    tk = median_us(lambda: kern(x, q, s, None))
                    td = median_us(lambda: _dense(mode, x, q, s))
                    row += [tk, td, tk / td]
                print(f"{m:6d} {k:5d} {n:5d} | {row[0]:9.1f} {row[1]:7.1f} {row[2]:6.2f} | "
                      f"{row[3]:10.1f} {row[4]:7.1f} {row[5]:6.2f}")


if __name__ == "__main__":
    main()
