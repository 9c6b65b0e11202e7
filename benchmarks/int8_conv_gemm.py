#!/usr/bin/env python3
"""The int8 kernels at the digits CNN's GEMM shapes (im2col rows x small N), beside fp32 F.linear.

    PYTHONPATH=. python benchmarks/int8_conv_gemm.py [--threads 2] [--reps 30]

Shapes (M, K, N) from pycomp/models/digits.py at batch 128: conv1 (8192, 9, 32), conv2 (8192, 288, 64),
fc1 (128, 1024, 128), fc2 (128, 128, 10), plus conv2 at batch 32 (2048, 288, 64). Hot weights on
purpose: a conv layer's weights are a few KB to tens of KB and stay in cache from call to call in a real
model, so the cold-copy rotation of pycomp/benchmark is not used here. Each kernel's output is checked
against its PyTorch reference before it is timed.

Two timings per shape, implementations interleaved call by call (pycomp.benchmark.timing):
- one thread, process CPU time per call (median): steadiest on a shared machine;
- --threads threads, wall time per call (median): what a user sees, noisy while others work.
"""
import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from pycomp import _ext
from pycomp.benchmark.timing import time_interleaved
from pycomp.ops.int8 import int8_linear_dynamic_ref, int8_linear_weight_only_ref
from pycomp.quantize.int8 import quantize_weight_int8

SHAPES = [("conv1", 8192, 9, 32), ("conv2", 8192, 288, 64), ("conv2 b32", 2048, 288, 64),
          ("fc1", 128, 1024, 128), ("fc2", 128, 128, 10)]


def cpu_time_interleaved(fns, reps, warmup=3):
    """Process CPU seconds per call of each fn (one thread), the fns taking turns."""
    times = {name: [] for name in fns}
    for r in range(warmup + reps):
        for name, fn in fns.items():
            t0 = time.process_time()
            fn()
            if r >= warmup:
                times[name].append(time.process_time() - t0)
    return {name: statistics.median(t) * 1e3 for name, t in times.items()}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--reps", type=int, default=30)
    args = p.parse_args()
    C = _ext._C
    print(f"torch {torch.__version__}, kernels {C.cpu_isa()}, hot weights; ms per call, median of {args.reps}")
    head = (f"{'layer':>10} {'M':>5} {'K':>5} {'N':>4} | {'fp32':>7} {'W8A8':>7} {'x fp32':>6} "
            f"{'W8A32':>7} {'x fp32':>6}")
    for threads, what in ((1, "1 thread, process CPU time"), (args.threads, f"{args.threads} threads, wall (noisy)")):
        print(f"\n{what}\n{head}")
        for name, M, K, N in SHAPES:
            torch.set_num_threads(threads)
            gen = torch.Generator().manual_seed(M + K + N)
            x = torch.randn(M, K, generator=gen)
            q, s = quantize_weight_int8(torch.randn(N, K, generator=gen))
            wf = q.float() * s[:, None]
            bias = torch.randn(N, generator=gen)
            torch.testing.assert_close(C.int8_linear_dynamic_cpu(x, q, s, bias),
                                       int8_linear_dynamic_ref(x, q, s, bias), rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(C.int8_linear_weight_only_cpu(x, q, s, bias),
                                       int8_linear_weight_only_ref(x, q, s, bias), rtol=1e-4, atol=1e-4)
            fns = {"fp32": lambda: F.linear(x, wf, bias),
                   "w8a8": lambda: C.int8_linear_dynamic_cpu(x, q, s, bias),
                   "w8a32": lambda: C.int8_linear_weight_only_cpu(x, q, s, bias)}
            if threads == 1:
                t = cpu_time_interleaved(fns, args.reps)
            else:
                t = {k: statistics.median(v) * 1e3
                     for k, v in time_interleaved({k: (lambda i, f=f: f()) for k, f in fns.items()},
                                                  repeats=args.reps).items()}
            print(f"{name:>10} {M:5d} {K:5d} {N:4d} | {t['fp32']:7.3f} {t['w8a8']:7.3f} {t['fp32'] / t['w8a8']:5.2f}x "
                  f"{t['w8a32']:7.3f} {t['fp32'] / t['w8a32']:5.2f}x")


if __name__ == "__main__":
    main()
