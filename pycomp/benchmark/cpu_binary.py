"""CPU binary linear benchmark: W1A32 and XNOR (W1A1) against fp32 F.linear, cold weights.

Cold weights: each timed call uses the next of several weight copies whose total exceeds 4x the
last-level cache (BENCHMARKING.md); the packed bits are 32x smaller than fp32, so they rotate
through more copies. fp32, W1A32 and XNOR take turns (timing.time_interleaved, in turns of timing.BLOCK
calls), so a drift in the machine's speed lands on all three alike. Every row checks our output against the reference op before
it is timed.
Targets (issue 4, 4096x4096): W1A32 at M=1 >= 10x fp32; XNOR at M=128 >= 15x fp32.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from pycomp.benchmark.timing import cold_copies, median_ms, read_bandwidth_gbs, time_interleaved
from pycomp.formats.binary import binarize_weight, dequantize_binary
from pycomp.ops import binary as ops


@dataclass
class Row:
    shape: str
    m: int
    fp32_ms: float
    w1a32_ms: float
    xnor_ms: float
    w1a32_vs_fp32: float  # fp32_ms / w1a32_ms: > 1 means we are faster
    xnor_vs_fp32: float
    w1a32_backend: str
    xnor_backend: str
    xnor_tops: float  # binary ops (2 per multiply-add) per second
    w1a32_gbs: float  # the packed weight's bytes (bits and alphas) per second: the memory-bound rows' rate
    # w1a32_gbs as % of the measured read ceiling where M <= 4 (one weight read per call, memory-bound); None
    # for the compute-bound rows
    pct_ceiling: float | None


def copies(nbytes: int) -> int:
    return cold_copies(nbytes, cap=1024)


def weights(n: int, k: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(n, k, generator=g) / math.sqrt(k)
    b = torch.randn(n, generator=g) * 0.1
    packed, alpha = binarize_weight(w)
    return w, b, packed, alpha


def check(x, packed, alpha, b) -> None:
    """Our ops against their float64 references (bounded by the sum of |terms| in fp32)."""
    k = x.shape[1]
    mag = x.abs() @ dequantize_binary(packed, alpha, k).abs().t()
    for op, ref in ((ops.w1a16_linear, ops.w1a16_linear_ref), (ops.xnor_linear, ops.xnor_linear_ref)):
        err = (op(x, packed, alpha, 0, b) - ref(x, packed, alpha, 0, b)).abs()
        if not bool((err <= 1e-4 * mag + 1e-4).all()):
            raise AssertionError(f"{op.__name__} disagrees with its reference by {float(err.max())}")


def bench_shape(n: int, k: int, ms: list[int], repeats: int, ceiling_gbs: float) -> list[Row]:
    w, b, packed, alpha = weights(n, k)
    wbytes = packed.numel() * packed.element_size() + alpha.numel() * alpha.element_size()
    n_f32, n_bits = copies(w.numel() * 4), copies(packed.numel() * 4)
    w_sets = [w.clone() for _ in range(n_f32)]
    p_sets = [(packed.clone(), alpha.clone()) for _ in range(n_bits)]
    rows = []
    for m in ms:
        x = torch.randn(m, k)
        with torch.no_grad():
            check(x, packed, alpha, b)
            t = time_interleaved({
                "fp32": lambda i: F.linear(x, w_sets[i % n_f32], b),
                "w1a32": lambda i: ops.w1a16_linear(x, *p_sets[i % n_bits], 0, b),
                "xnor": lambda i: ops.xnor_linear(x, *p_sets[i % n_bits], 0, b),
            }, repeats=repeats)
        med = {name: median_ms(v) for name, v in t.items()}
        gbs = wbytes / med["w1a32"] / 1e6
        rows.append(Row(f"{n}x{k}", m, med["fp32"], med["w1a32"], med["xnor"], med["fp32"] / med["w1a32"],
                        med["fp32"] / med["xnor"], ops.plan("w1a16", "cpu", m), ops.plan("xnor", "cpu", m),
                        2 * m * n * k / med["xnor"] / 1e9, gbs, 100 * gbs / ceiling_gbs if m <= 4 else None))
    return rows


def run(shapes=((4096, 4096),), ms=(1, 16, 128), repeats: int = 15) -> dict:
    ceiling = read_bandwidth_gbs()
    rows = [r for n, k in shapes for r in bench_shape(n, k, list(ms), repeats, ceiling)]
    return {"read_bandwidth_gbs": ceiling, "threads": torch.get_num_threads(), "rows": [asdict(r) for r in rows]}


def table(result: dict) -> str:
    """The rows of run() as a plain-text table."""
    lines = [f"CPU binary linear, {result['threads']} threads, cold weights, read ceiling "
             f"{result['read_bandwidth_gbs']:.1f} GB/s",
             f"{'shape':>10} {'M':>5} {'fp32 ms':>9} {'W1A32 ms':>9} {'x fp32':>7} {'GB/s':>6} {'% ceil':>6} "
             f"{'XNOR ms':>9} {'x fp32':>7} {'XNOR TOP/s':>10}  backends"]
    for r in result["rows"]:
        pct = f"{r['pct_ceiling']:6.0f}" if r["pct_ceiling"] is not None else f"{'-':>6}"
        lines.append(f"{r['shape']:>10} {r['m']:>5} {r['fp32_ms']:9.3f} {r['w1a32_ms']:9.3f} {r['w1a32_vs_fp32']:7.1f} "
                     f"{r['w1a32_gbs']:6.1f} {pct} {r['xnor_ms']:9.3f} {r['xnor_vs_fp32']:7.1f} {r['xnor_tops']:10.2f}  "
                     f"{r['w1a32_backend']}, {r['xnor_backend']}")
    return "\n".join(lines)


if __name__ == "__main__":
    print(table(run()))
