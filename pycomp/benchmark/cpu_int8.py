"""CPU int8 linear benchmark: ours (W8A8 exact and reduce-range, W8A32) against fp32 F.linear and torch's
fbgemm dynamic int8.

W8A8 exact quantizes activations to full-range int8; W8A8 reduce-range to 7 bits with a
zero point, fbgemm's own numerics (apples to apples with it).

Cold weights: each timed call uses the next of several weight copies whose total
exceeds 4x the last-level cache, so memory traffic is real (BENCHMARKING.md).
The implementations take turns (timing.time_interleaved, in turns of timing.BLOCK calls), so a drift in the
machine's speed lands on all of them alike.
Every row checks our output against the reference op before timing it.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from pycomp.benchmark.timing import cold_copies, median_ms, read_bandwidth_gbs, time_interleaved
from pycomp.ops import int8 as int8_ops
from pycomp.quantize.int8 import quantize_weight_int8



@dataclass
class Row:
    shape: str
    m: int
    fp32_ms: float
    fbgemm_ms: float
    w8a8_ms: float
    w8a8_rr_ms: float  # reduce-range W8A8
    w8a32_ms: float
    vs_fbgemm: float  # fbgemm_ms / w8a8_ms: > 1 means we are faster
    vs_fp32: float
    rr_vs_fbgemm: float  # fbgemm_ms / w8a8_rr_ms
    rr_vs_fp32: float
    w8a8_rate: float  # GB/s of weight traffic (memory-bound rows) or TOP/s
    w8a8_rr_rate: float
    rate_unit: str
    pct_ceiling: float | None
    rr_pct_ceiling: float | None


def _fbgemm_linear(w: torch.Tensor, b: torch.Tensor) -> nn.Module:
    lin = nn.Linear(w.shape[1], w.shape[0])
    with torch.no_grad():
        lin.weight.copy_(w), lin.bias.copy_(b)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization is deprecated: this is the peer users move from
        return torch.ao.quantization.quantize_dynamic(nn.Sequential(lin), {nn.Linear}, dtype=torch.qint8)


def bench_shape(n: int, k: int, ms: list[int], repeats: int, ceiling_gbs: float) -> list[Row]:
    torch.manual_seed(0)
    w = torch.randn(n, k) / math.sqrt(k)
    b = torch.randn(n) * 0.1
    q, s = quantize_weight_int8(w)
    n_i8, n_f32 = cold_copies(q.numel()), cold_copies(w.numel() * 4)
    wsum = int8_ops.weight_row_sums(q)
    q_sets = [(q.clone(), s.clone(), wsum.clone()) for _ in range(n_i8)]
    w_sets = [w.clone() for _ in range(n_f32)]
    with torch.no_grad():
        fb_sets = [_fbgemm_linear(w, b) for _ in range(n_i8)]
    rows = []
    for m in ms:
        x = torch.randn(m, k)
        with torch.no_grad():
            got = int8_ops.int8_linear_dynamic(x, q, s, b)
            torch.testing.assert_close(got, int8_ops.int8_linear_dynamic_ref(x, q, s, b), rtol=1e-4, atol=1e-4)
            got = int8_ops.int8_linear_dynamic_reduce_range(x, q, s, wsum, b)
            assert torch.equal(got, int8_ops.int8_linear_dynamic_reduce_range_ref(x, q, s, wsum, b))
            got = int8_ops.int8_linear_weight_only(x, q, s, b)
            torch.testing.assert_close(got, int8_ops.int8_linear_weight_only_ref(x, q, s, b), rtol=1e-4, atol=1e-4)
            t = time_interleaved({
                "fp32": lambda i: F.linear(x, w_sets[i % n_f32], b),
                "fbgemm": lambda i: fb_sets[i % n_i8](x),
                "w8a8": lambda i: int8_ops.int8_linear_dynamic(x, *q_sets[i % n_i8][:2], b),
                "w8a8_rr": lambda i: int8_ops.int8_linear_dynamic_reduce_range(x, *q_sets[i % n_i8], b),
                "w8a32": lambda i: int8_ops.int8_linear_weight_only(x, *q_sets[i % n_i8][:2], b),
            }, repeats=repeats)
        med = {name: median_ms(v) for name, v in t.items()}
        unit = "GB/s" if m <= 4 else "TOP/s"

        def rate(ms):
            return n * k / ms / 1e6 if m <= 4 else 2 * m * n * k / ms / 1e9

        def pct(ms):
            return 100 * rate(ms) / ceiling_gbs if m <= 4 else None

        w8, rr = med["w8a8"], med["w8a8_rr"]
        rows.append(Row(f"{n}x{k}", m, med["fp32"], med["fbgemm"], w8, rr, med["w8a32"],
                        med["fbgemm"] / w8, med["fp32"] / w8, med["fbgemm"] / rr, med["fp32"] / rr,
                        rate(w8), rate(rr), unit, pct(w8), pct(rr)))
    return rows


def run(shapes=((4096, 4096),), ms=(1, 16, 128), repeats: int = 15) -> dict:
    ceiling = read_bandwidth_gbs()
    rows = [r for n, k in shapes for r in bench_shape(n, k, list(ms), repeats, ceiling)]
    return {"read_bandwidth_gbs": ceiling, "rows": [asdict(r) for r in rows]}
