"""Timing helpers shared by the benchmarks, the retention report and the demo."""
from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable

import torch


LLC_BYTES = 32 << 20  # this project's CPU machines (BENCHMARKING.md); cold sets are 4x this


def cold_copies(nbytes: int, cap: int = 160) -> int:
    """How many copies of an `nbytes` weight to rotate so that their total exceeds 4x the LLC (cold
    weights); at most `cap`, so small shapes stay partly cached rather than filling memory."""
    return min(cap, max(2, math.ceil(4 * LLC_BYTES / nbytes) + 1))


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


def time_interleaved(fns: dict[str, Callable[[int], object]], *, repeats: int = 20, warmup: int = 3,
                     device: torch.device | None = None) -> dict[str, list[float]]:
    """Seconds per call of each fn, the fns taking turns: round r calls every fn once, in order.

    Side by side on a shared machine, a slow drift (a neighbour's burst, a clock change) then lands on
    every implementation alike instead of on whichever loop it hit, so the ratios hold still between runs.
    Each call gets the next index of one count over all calls (round r, fn k: r * len(fns) + k), so fns
    that rotate through the same weight copies never find the copy the previous call just read in cache.
    """
    times: dict[str, list[float]] = {name: [] for name in fns}
    for r in range(warmup + repeats):
        for k, (name, fn) in enumerate(fns.items()):
            _sync(device)
            t0 = time.perf_counter()
            fn(r * len(fns) + k)
            _sync(device)
            if r >= warmup:
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
