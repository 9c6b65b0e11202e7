"""CPU sparse linear benchmark: ours (CSR at 90%, block-CSR at 90%, 2:4, 2:4 with int8 values) against fp32
F.linear, with torch's CSR matmul (torch.sparse_csr, int64 indices) beside the unstructured rows.

"2:4 int8" is the 2:4 weight with its kept values in int8 and a per-row scale (pycomp.quantize.int8's rule,
what SparseLinear.quantized stores), weight-only. Every row goes through pycomp.ops.

Cold weights: each timed call uses the next of several copies of its weight (dense, ours, torch's), each set
beyond 4x the last-level cache (BENCHMARKING.md). Every row checks our output against the reference op, and
torch's CSR against the dense product, before timing. fp32, ours and torch's take turns (timing.time_interleaved,
in turns of timing.BLOCK calls), so a drift in the machine's speed lands on all of them alike.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from pycomp.benchmark.timing import cold_copies, median_ms, read_bandwidth_gbs, time_interleaved
from pycomp.formats import sparse as fmt
from pycomp.ops import sparse as ops
from pycomp.prune.config import block_magnitude_mask
from pycomp.prune.magnitude import magnitude_mask
from pycomp.prune.nm import nm_mask
from pycomp.quantize.int8 import quantize_weight_int8

CASES = (("unstructured", 0.9), ("block", 0.9), ("2:4", 0.5), ("2:4 int8", 0.5))
BLOCK = (16, 16)


@dataclass
class Row:
    shape: str
    pattern: str
    sparsity: float
    m: int
    fp32_ms: float
    ours_ms: float
    torch_csr_ms: float | None  # torch.sparse_csr matmul, unstructured rows only
    vs_fp32: float  # fp32_ms / ours_ms: > 1 means we are faster
    vs_torch_csr: float | None
    weight_mb: float  # bytes our kernel streams per call
    gbs: float  # of those bytes
    pct_ceiling: float


def copies(nbytes: int) -> int:
    return cold_copies(nbytes, cap=200)


def sparse_weight(w: torch.Tensor, pattern: str, sparsity: float) -> torch.Tensor:
    if pattern.startswith("2:4"):
        return w * nm_mask(w)
    if pattern == "block":
        return w * block_magnitude_mask(w, sparsity, BLOCK)
    return w * magnitude_mask(w, sparsity)


def pack_24_int8(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """2:4 with symmetric per-row int8 values: (values int8 (N, Kp/2), meta, scale (N) float32)."""
    values, meta = fmt.pack_24(w)
    q, scale = quantize_weight_int8(values)
    return q, meta, scale


def packed(w: torch.Tensor, pattern: str) -> tuple:
    if pattern == "2:4":
        return fmt.pack_24(w)
    if pattern == "2:4 int8":
        return pack_24_int8(w)
    if pattern == "unstructured":
        return fmt.pack_csr(w)
    return fmt.pack_bsr(w, BLOCK)


def reference_weight(w: torch.Tensor, pattern: str, bufs: tuple) -> torch.Tensor:
    """The weight the kernel multiplies by, float64: the pruned one, or its int8 dequantization."""
    if pattern == "2:4 int8":
        values, meta, scale = bufs
        return fmt.densify_24(values.double(), meta, w.shape[1]) * scale.double()[:, None]
    return w.double()


def op_call(pattern: str, x: torch.Tensor, bufs: tuple, n: int, k: int, b: torch.Tensor) -> torch.Tensor:
    if pattern == "2:4 int8":
        values, meta, scale = bufs
        return ops.sparse24_linear(x, values, meta, k, b, scale)
    if pattern == "2:4":
        return ops.sparse24_linear(x, *bufs, k, b)
    if pattern == "unstructured":
        return ops.csr_linear(x, *bufs, k, b)
    return ops.bsr_linear(x, *bufs, n, k, b)


def torch_csr_call(x: torch.Tensor, w_csr: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.addmm(b.unsqueeze(1), w_csr, x.t()).t()


def bench_case(n: int, k: int, pattern: str, sparsity: float, ms: list[int], repeats: int, ceiling: float,
               dense_sets: list[torch.Tensor], b: torch.Tensor) -> list[Row]:
    w = sparse_weight(dense_sets[0], pattern, sparsity)
    bufs = packed(w, pattern)
    nbytes = fmt.nbytes(*bufs)
    ours = [tuple(t.clone() for t in bufs) for _ in range(copies(nbytes))]
    peer = None
    if pattern == "unstructured":
        w_csr = w.to_sparse_csr()
        peer = [w_csr.clone() for _ in range(copies(w_csr.values().nbytes * 3))]  # values + int64 indices
    rows = []
    for m in ms:
        x = torch.randn(m, k)
        with torch.no_grad():
            got = op_call(pattern, x, bufs, n, k, b)
            want = F.linear(x.double(), reference_weight(w, pattern, bufs), b.double())
            torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-4 * float(want.abs().max()))
            fns = {"fp32": lambda i: F.linear(x, dense_sets[i % len(dense_sets)], b),
                   "ours": lambda i: op_call(pattern, x, ours[i % len(ours)], n, k, b)}
            if peer is not None:
                torch.testing.assert_close(torch_csr_call(x, peer[0], b).double(), want, rtol=1e-4,
                                           atol=1e-4 * float(want.abs().max()))
                fns["torch"] = lambda i: torch_csr_call(x, peer[i % len(peer)], b)
            t = time_interleaved(fns, repeats=repeats)
        fp32, mine = median_ms(t["fp32"]), median_ms(t["ours"])
        t_peer = median_ms(t["torch"]) if "torch" in t else None
        gbs = nbytes / mine / 1e6
        rows.append(Row(f"{n}x{k}", pattern, sparsity, m, fp32, mine, t_peer, fp32 / mine,
                        None if t_peer is None else t_peer / mine, nbytes / 1e6, gbs, 100 * gbs / ceiling))
    return rows


def run(shapes=((4096, 4096),), ms=(1, 16, 128), cases=CASES, repeats: int = 15) -> dict:
    ceiling = read_bandwidth_gbs()
    rows = []
    for n, k in shapes:
        torch.manual_seed(0)
        w = torch.randn(n, k) / math.sqrt(k)
        b = torch.randn(n) * 0.1
        dense_sets = [w.clone() for _ in range(copies(w.numel() * 4))]
        for pattern, sparsity in cases:
            rows += bench_case(n, k, pattern, sparsity, list(ms), repeats, ceiling, dense_sets, b)
    return {"threads": torch.get_num_threads(), "read_bandwidth_gbs": ceiling, "rows": [asdict(r) for r in rows]}


def table(result: dict) -> str:
    lines = [f"CPU sparse linear, cold weights, {result['threads']} threads, read ceiling "
             f"{result['read_bandwidth_gbs']:.1f} GB/s (noisy on a shared machine)",
             f"{'shape':>10} {'pattern':>13} {'M':>4} {'fp32 ms':>8} {'ours ms':>8} {'x fp32':>7} "
             f"{'torchCSR ms':>11} {'x torchCSR':>10} {'GB/s':>6}"]
    for r in result["rows"]:
        peer = f"{r['torch_csr_ms']:11.3f} {r['vs_torch_csr']:10.2f}" if r["torch_csr_ms"] else f"{'-':>11} {'-':>10}"
        name = r["pattern"] if r["pattern"].startswith("2:4") else f"{r['pattern']}@{r['sparsity']:.0%}"
        lines.append(f"{r['shape']:>10} {name:>13} {r['m']:>4} {r['fp32_ms']:8.3f} {r['ours_ms']:8.3f} "
                     f"{r['vs_fp32']:7.2f} {peer} {r['gbs']:6.1f}")
    return "\n".join(lines)


if __name__ == "__main__":
    torch.set_num_threads(2)
    print(table(run()))
