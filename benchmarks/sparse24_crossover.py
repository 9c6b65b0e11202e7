#!/usr/bin/env python3
"""Where the CPU 2:4 kernel stops beating dense fp32 F.linear, by M (4096x4096, cold weights).

    PYTHONPATH=. python benchmarks/sparse24_crossover.py [--threads 2]

Also times the kernel with int8 values (per-row scale) and "densify per call + F.linear", the only
faster-at-large-M path that keeps the compressed storage; it decides pycomp.ops.sparse's CPU dispatch
(benchmarks/RESULTS.md).
"""
import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from pycomp import _ext
from pycomp.benchmark.cpu_sparse import pack_24_int8
from pycomp.benchmark.timing import cold_copies
from pycomp.formats import sparse as fmt


def median_ms(fn, reps=12):
    for i in range(3):
        fn(i)
    times = []
    for i in range(reps):
        t0 = time.perf_counter()
        fn(i)
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    n = k = 4096
    torch.manual_seed(0)
    w = torch.randn(n, k)
    keep = w.abs().reshape(n, k // 4, 4).topk(2, dim=-1).indices
    mask = torch.zeros(n, k // 4, 4, dtype=torch.bool).scatter_(-1, keep, True).reshape(n, k)
    w = w * mask
    copies = 12  # 12 x 64 MB dense, 12 x 48 MB packed: beyond 4x a 32 MB L3
    packs = [fmt.pack_24(w.clone()) for _ in range(copies)]
    packs8 = [pack_24_int8(w.clone())]
    packs8 += [tuple(t.clone() for t in packs8[0]) for _ in range(cold_copies(fmt.nbytes(*packs8[0])) - 1)]
    dense = [w.clone() for _ in range(copies)]
    print(f"2:4 {n}x{k}, {args.threads} threads, cold; ms: kernel, kernel with int8 values, densify + F.linear, "
          "dense F.linear")
    for m in (1, 4, 8, 16, 32, 64, 128):
        x = torch.randn(m, k)
        tk = median_ms(lambda i: _ext._C.sparse24_linear_cpu(x, packs[i % copies][0], packs[i % copies][1], None))
        t8 = median_ms(lambda i: _ext._C.sparse24_linear_cpu(x, *packs8[i % len(packs8)][:2], None,
                                                             packs8[i % len(packs8)][2]))
        td = median_ms(lambda i: F.linear(x, fmt.densify_24(packs[i % copies][0], packs[i % copies][1], k)))
        tf = median_ms(lambda i: F.linear(x, dense[i % copies]))
        print(f"M={m:4d} kernel {tk:7.2f} int8 {t8:7.2f} densify+dense {td:7.2f} dense {tf:7.2f}  "
              f"kernel speed-up {tf / tk:5.2f}x, int8 {tf / t8:5.2f}x")


if __name__ == "__main__":
    main()
