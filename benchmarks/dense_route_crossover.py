#!/usr/bin/env python3
"""Where the weight-only CPU kernels lose to the dense route (their weight decoded once, then MKL's fp32 GEMM).

    PYTHONPATH=. python benchmarks/dense_route_crossover.py [--threads 2]

Sets the rule of csrc/cpu/op_entry.h (M >= 1024 and M >= rows_per_k * K): for each weight-only family, each
batch M and input width K, the op's time with the route off (`_C.set_cpu_dense_route(0)`, the kernel) and
on at rows_per_k = 1 (forced for every M >= 1024), interleaved, median of the repeats. Hot weights on purpose:
the layers the route is for (a CNN's convolutions through im2col) are small, so they live in cache in a real
model too. A ratio > 1 means the dense route wins. int8 W8A32 is not here: its small-N tiles beat the dense route
at every shape below (0.52-0.90 in the run recorded in RESULTS.md), so its entry takes no dense route.
"""
import argparse

import torch

from pycomp import _ext
from pycomp.benchmark.timing import median_ms, time_interleaved
from pycomp.formats import sparse as sfmt
from pycomp.formats.binary import binarize_weight
from pycomp.ops import binary, int4, sparse
from pycomp.prune.nm import nm_mask
from pycomp.quantize.int4 import rtn_int4


def families(n: int, k: int) -> dict:
    torch.manual_seed(0)
    w, b = torch.randn(n, k), torch.randn(n)
    packed, scales, zeros = rtn_int4(w, 32)
    bits, alpha = binarize_weight(w)
    v24, meta = sfmt.pack_24(w * nm_mask(w, 2, 4, pad=True))
    csr = sfmt.pack_csr(w * (torch.rand(n, k) > 0.9))
    return {"int4 g32": lambda x: int4.w4a16_linear(x, packed, scales, zeros, b, 32, k),
            "W1A32": lambda x: binary.w1a16_linear(x, bits, alpha, 0, b),
            "2:4": lambda x: sparse.sparse24_linear(x, v24, meta, k, b),
            "CSR 90%": lambda x: sparse.csr_linear(x, *csr, k, b)}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=15)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    default = _ext._C.cpu_dense_route()
    print(f"threads {args.threads}, isa {_ext._C.cpu_isa()}; default rule: M >= 1024 and M >= {default} * K; "
          f"kernel ms / dense ms (> 1: the dense route wins)")
    print(f"| M | K | N | {' | '.join(families(8, 32))} |")
    print("|---|---|---|" + "---|" * len(families(8, 32)))
    try:
        for m, k, n in [(1024, 288, 64), (2048, 288, 64), (8192, 288, 64), (8192, 9, 32), (8192, 1024, 128),
                        (2048, 1024, 128), (1024, 1024, 1024)]:
            x = torch.randn(m, k)
            cells = []
            for op in families(n, k).values():
                def run(rows_per_k):
                    def call(i):
                        _ext._C.set_cpu_dense_route(rows_per_k)
                        return op(x)
                    return call

                times = time_interleaved({"kernel": run(0), "dense": run(1)}, repeats=args.repeats)
                tk, td = median_ms(times["kernel"]), median_ms(times["dense"])
                cells.append(f"{tk:.2f}/{td:.2f} = {tk / td:.2f}")
            print(f"| {m} | {k} | {n} | {' | '.join(cells)} |", flush=True)
    finally:
        _ext._C.set_cpu_dense_route(default)


if __name__ == "__main__":
    main()
