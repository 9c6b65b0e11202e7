"""Timing helpers shared by the benchmarks, the retention report and the demo."""
from __future__ import annotations

import math
import os
import statistics
import time
from collections.abc import Callable

import torch


LLC_BYTES = 32 << 20  # this project's CPU machines (BENCHMARKING.md); cold sets are 4x this

# PYCOMP_BENCH_SMOKE=1: the pytest-benchmark suites (benchmarks/test_cpu_*.py) run every case once on a small
# odd shape with two weight copies, so tests/test_benchmark_suites.py can check that they still run.
SMOKE = os.environ.get("PYCOMP_BENCH_SMOKE") == "1"
SMOKE_SHAPE, SMOKE_MS = (80, 256), [1, 5]  # N: torch's int4pack peer needs a multiple of 16


def suite_sizes(shapes: list[tuple[int, int]], ms: list[int]) -> tuple[list[tuple[int, int]], list[int]]:
    """A benchmark suite's (N, K) shapes and batch sizes, or the smoke ones under PYCOMP_BENCH_SMOKE=1."""
    return ([SMOKE_SHAPE], SMOKE_MS) if SMOKE else (shapes, ms)


def cold_copies(nbytes: int, cap: int = 160) -> int:
    """How many copies of an `nbytes` weight to rotate so that their total exceeds 4x the LLC (cold
    weights); at most `cap`, so small shapes stay partly cached rather than filling memory."""
    return 2 if SMOKE else min(cap, max(2, math.ceil(4 * LLC_BYTES / nbytes) + 1))


def _sync(device: torch.device | None) -> None:
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)


def time_calls(fn: Callable[[int], object], *, repeats: int = 20, warmup: int = 3,
               device: torch.device | None = None) -> list[float]:
    """Seconds per call of fn(i) for i = 0..repeats-1, after `warmup` untimed calls.

    fn takes the call index so a caller can rotate through input or weight copies
    (cold-cache timing); device synchronises CUDA around each call.
    """
    for i in range(warmup):
        fn(i)
    _sync(device)
    times = []
    for i in range(repeats):
        t0 = time.perf_counter()
        fn(i)
        _sync(device)
        times.append(time.perf_counter() - t0)
    return times


# Calls per turn of time_interleaved when the caller does not say. On the 2-vCPU VMs here the first op of any
# kind after a few milliseconds of other work (a Python spin, a sleep, another op) pays 0.15-0.35 ms more than
# the same op back to back: a 1 MB torch sum took 0.026 ms back to back and 0.180 after a 4 ms spin, an
# L2-resident 256^3 fp32 matmul 0.465 and 0.673 (benchmarks/RESULTS.md, session 6).
# Taking turns call by call charges that to every call, which compresses the ratio of a 0.3 ms kernel against a
# 4 ms one; turns of BLOCK calls, the first untimed, measure each op in its steady state while a slow drift of
# the machine still lands on every op alike. pycomp bench --block 1 gives the call-by-call figures.
BLOCK = 4


def time_interleaved(fns: dict[str, Callable[[int], object]], *, repeats: int = 20, warmup: int = 3,
                     device: torch.device | None = None, block: int | None = None) -> dict[str, list[float]]:
    """Seconds per call of each fn, the fns taking turns: round r calls every fn `block` times, in order.

    Side by side on a shared machine, a slow drift (a neighbour's burst, a clock change) then lands on
    every implementation alike instead of on whichever loop it hit, so the ratios hold still between runs.
    In each turn of `block` calls (default BLOCK) the first is untimed: it absorbs the cost of switching from
    the previous fn (see BLOCK); with block=1 every call is timed and pays it. Each call gets the next index
    of one count over all calls, so fns that rotate through the same weight copies never find the copy the
    previous call just read in cache. Every fn gets `repeats` timed calls.
    """
    block = BLOCK if block is None else block
    if block < 1:
        raise ValueError(f"time_interleaved: block must be >= 1 call, got {block}")
    timed_per_turn = max(1, block - 1)
    rounds = -(-repeats // timed_per_turn)
    times: dict[str, list[float]] = {name: [] for name in fns}
    count = 0
    for r in range(warmup + rounds):
        for name, fn in fns.items():
            for j in range(block):
                _sync(device)
                t0 = time.perf_counter()
                fn(count)
                _sync(device)
                count += 1
                if r >= warmup and (j > 0 or block == 1) and len(times[name]) < repeats:
                    times[name].append(time.perf_counter() - t0)
    return times


def median_ms(times: list[float]) -> float:
    return statistics.median(times) * 1e3


def percentile_ms(times: list[float], q: float) -> float:
    ordered = sorted(times)
    idx = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[idx] * 1e3


def read_bandwidth_gbs(nbytes: int = 1 << 30) -> float:
    """Memory read ceiling: GB/s of a large float32 sum on the current threads."""
    buf = torch.rand(nbytes // 4)
    return nbytes / median_ms(time_calls(lambda i: buf.sum(), repeats=7, warmup=2)) / 1e6
