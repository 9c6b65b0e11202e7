"""CPU int4 weight-only linear benchmark: ours (W4A16 on the C++ kernels) against fp32 F.linear and
torch's own int4 CPU kernel, `torch._weight_int4pack_mm_for_cpu`.

"ours" is what Int4Linear runs by default: round_x=True, x rounded to int16 per weight group
(pycomp.ops.int4), checked against round_x_ref and within round_x_bound of the exact product;
"ours fp32 x" (round_x=False) is the exact-float32 kernel, timed in the same turns.

Cold weights: each timed call uses the next of several weight copies whose total
exceeds 4x the last-level cache, so memory traffic is real (BENCHMARKING.md).
fp32 and ours take turns (timing.time_interleaved, in turns of timing.BLOCK calls), so a drift in the machine's
speed lands on both alike; torch's peer (seconds per call at M >= 16) is timed on its own.
Every row checks both int4 outputs against the reference op before timing them.

torch's peer takes the same codes and group parameters in its own packing:
`torch._convert_weight_to_int4pack_for_cpu(codes (N, K) int32, inner_k_tiles)`
and a (G, N, 2) float tensor of [scale, zero] per group and row, where it computes
w = (code - 8) * scale + zero. Our (code - z) * s is that with zero = (8 - z) * s
(exact in float32). It needs K a multiple of the group size.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from pycomp.benchmark.timing import cold_copies, median_ms, read_bandwidth_gbs, time_calls, time_interleaved
from pycomp.formats.int4 import SYMMETRIC_ZERO, unpack_nibbles
from pycomp.ops import int4 as int4_ops
from pycomp.quantize.int4 import rtn_int4

INNER_K_TILES = 2  # torch's packing parameter (2, 4 or 8); its CPU kernel ignores the tiling


@dataclass
class Row:
    shape: str
    m: int
    group_size: int
    backend: str
    fp32_ms: float
    int4pack_ms: float | None  # torch._weight_int4pack_mm_for_cpu; None where it cannot run the shape
    ours_ms: float  # round_x=True, the layers' default
    vs_fp32: float  # fp32_ms / ours_ms: > 1 means we are faster
    ours_f32x_ms: float  # round_x=False: x kept in float32
    f32x_vs_fp32: float
    vs_int4pack: float | None
    rate: float  # GB/s of weight traffic (memory-bound rows) or TFLOP/s
    rate_unit: str
    pct_ceiling: float | None


def torch_int4pack(packed: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor | None, group_size: int,
                   k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Our k-nibble weight in torch's CPU int4 packing: (packed weight, scales_and_zeros (G, N, 2) float32)."""
    codes = unpack_nibbles(packed, k).int()
    wp = torch._convert_weight_to_int4pack_for_cpu(codes, INNER_K_TILES)
    s = scales.float()
    z = SYMMETRIC_ZERO - (zeros.float() if zeros is not None else torch.full_like(s, SYMMETRIC_ZERO))
    return wp, torch.stack([s.t(), (z * s).t()], dim=-1).contiguous()


def bench_shape(n: int, k: int, ms: list[int], repeats: int, ceiling_gbs: float, group_size: int = 128,
                symmetric: bool = False) -> list[Row]:
    torch.manual_seed(0)
    w = torch.randn(n, k) / math.sqrt(k)
    b = torch.randn(n) * 0.1
    packed, scales, zeros = rtn_int4(w, group_size, symmetric)
    nbytes = packed.numel() + scales.numel() * 2 + (0 if zeros is None else zeros.numel())
    n_q, n_f32 = cold_copies(nbytes), cold_copies(w.numel() * 4)
    q_sets = [(packed.clone(), scales.clone(), None if zeros is None else zeros.clone()) for _ in range(n_q)]
    w_sets = [w.clone() for _ in range(n_f32)]
    peer = k % group_size == 0
    p_sets = [torch_int4pack(*q, group_size, k) for q in q_sets] if peer else []
    rows = []
    for m in ms:
        x = torch.randn(m, k)
        with torch.no_grad():
            want = int4_ops.w4a16_linear_ref(x, packed, scales, zeros, b, group_size, k)
            ours = lambda i: int4_ops.w4a16_linear(x, *q_sets[i % n_q], b, group_size, k, True)  # noqa: E731
            f32x = lambda i: int4_ops.w4a16_linear(x, *q_sets[i % n_q], b, group_size, k)  # noqa: E731
            torch.testing.assert_close(f32x(0), want, rtol=1e-4, atol=1e-4)
            got = ours(0)
            torch.testing.assert_close(got, int4_ops.w4a16_linear_ref(x, packed, scales, zeros, b, group_size, k, True),
                                       rtol=1e-4, atol=1e-4)
            got = got.double()
            assert ((got - want.double()).abs()
                    <= int4_ops.round_x_bound(x, packed, scales, zeros, group_size, k) + 1e-4).all()
            t = time_interleaved({"fp32": lambda i: F.linear(x, w_sets[i % n_f32], b), "ours": ours, "f32x": f32x},
                                 repeats=repeats)
            if peer:
                theirs = lambda i: torch._weight_int4pack_mm_for_cpu(x, *p_sets[i % n_q][:1], group_size,  # noqa: E731
                                                                     p_sets[i % n_q][1]) + b
                torch.testing.assert_close(theirs(0), want, rtol=1e-4, atol=1e-4)
                # It takes seconds per call at M >= 16 on the machines here: a few calls tell.
                t["int4pack"] = time_calls(theirs, repeats=repeats if m <= 4 else 3, warmup=1)
        med = {name: median_ms(v) for name, v in t.items()}
        if m <= 4:
            rate, unit = nbytes / med["ours"] / 1e6, "GB/s"
            pct = 100 * rate / ceiling_gbs
        else:
            rate, unit, pct = 2 * m * n * k / med["ours"] / 1e9, "TFLOP/s", None
        ip = med.get("int4pack")
        rows.append(Row(f"{n}x{k}", m, group_size, int4_ops.plan("cpu", m, k, x.dtype, True), med["fp32"], ip,
                        med["ours"], med["fp32"] / med["ours"], med["f32x"], med["fp32"] / med["f32x"],
                        None if ip is None else ip / med["ours"], rate, unit, pct))
    return rows


def run(shapes=((4096, 4096),), ms=(1, 16, 128), repeats: int = 15, group_size: int = 128) -> dict:
    ceiling = read_bandwidth_gbs()
    rows = [r for n, k in shapes for r in bench_shape(n, k, list(ms), repeats, ceiling, group_size)]
    return {"read_bandwidth_gbs": ceiling, "rows": [asdict(r) for r in rows]}
