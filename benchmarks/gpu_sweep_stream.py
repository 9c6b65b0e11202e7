"""How fast can any one kernel read a layer's weights on this card? The ceiling under each decode target.

Every decode (M <= 16) target of issues 2-5 is a ratio against cuBLAS bf16 at M=1, which reads the bf16
weight once; a quantized kernel reads fewer bytes, but in the same harness (cold weights, CUDA-graph
replays of many calls) each call also pays a fixed cost: the launch gap in the graph, the first
requests' latency, the tail. This sweep measures, for the byte count of each target's weight:

- the fastest plain read of those bytes by Triton kernels (16-byte loads, persistent grid-stride,
  contiguous per program, one tile per program, and TMA tile loads), which do nothing with the bytes
  but sum them, and the per-call floor of an empty kernel;
- cuBLAS bf16 F.linear at M=1 on the layer, as in the families;

and prints `bf16 / read`: the most any single-launch kernel that reads the weight once could reach in
this harness. A target above it cannot be met by a faster kernel alone, only by fewer bytes or by
overlapping calls. `sweep(h) -> str` never raises: each failure is a cell.
"""
from __future__ import annotations

import time

NAME = "stream"
BUDGET_S = 20.0
BLOCK = 4096  # int32 words per load step of the pointer kernels: 16 KB
# (what, N, K, quantized weight bytes, target ratio): the decode targets, their layers and weight bytes
# (scales, zero points, metadata included).
TARGETS = [
    ("int8 W8A16 M=1", 4096, 4096, 4096 * 4096 + 4 * 4096, 1.8),
    ("int8 W8A16 M=1", 14336, 4096, 14336 * 4096 + 4 * 14336, 1.8),
    ("int4 W4A16 M=1", 14336, 4096, 14336 * 2048 + 3 * 14336 * 32, 3.0),
    ("int4 W4A16 M=1", 28672, 8192, 28672 * 4096 + 3 * 28672 * 64, 3.0),
    ("2:4 M=1", 14336, 4096, 14336 * 2048 * 2 + 14336 * 512, 1.5),
    ("2:4 M=1", 28672, 8192, 28672 * 4096 * 2 + 28672 * 1024, 1.5),
    ("W1A16 M=1", 14336, 4096, 14336 * 512 + 4 * 14336, 8.0),
]


def _ceil(a: int, b: int) -> int:
    return -(-a // b)


def _kernels():
    import triton
    import triton.language as tl

    @triton.jit
    def read_stride(src, out, n, BLOCK: tl.constexpr):
        # Program p reads blocks p, p + G, p + 2G, ...: neighbours read neighbouring 16 KB.
        pid, G = tl.program_id(0), tl.num_programs(0)
        acc = tl.zeros([BLOCK], dtype=tl.int32)
        for start in range(pid * BLOCK, n, G * BLOCK):
            o = start + tl.arange(0, BLOCK)
            acc += tl.load(src + o, mask=o < n, other=0, cache_modifier=".cg")
        tl.store(out + pid, tl.sum(acc, 0))

    @triton.jit
    def read_contig(src, out, n, per_prog, BLOCK: tl.constexpr):
        # Program p reads one contiguous range [p * per_prog, (p + 1) * per_prog), like a GEMV block's rows.
        pid = tl.program_id(0)
        lo = pid * per_prog
        hi = tl.minimum(lo + per_prog, n)
        acc = tl.zeros([BLOCK], dtype=tl.int32)
        for start in range(lo, hi, BLOCK):
            o = start + tl.arange(0, BLOCK)
            acc += tl.load(src + o, mask=o < hi, other=0, cache_modifier=".cg")
        tl.store(out + pid, tl.sum(acc, 0))

    @triton.jit
    def read_tma(desc, out, rows, cols, BR: tl.constexpr, BC: tl.constexpr):
        pid, G = tl.program_id(0), tl.num_programs(0)
        tc = tl.cdiv(cols, BC)
        acc = tl.zeros([BR], dtype=tl.int32)
        for t in range(pid, tl.cdiv(rows, BR) * tc, G):
            acc += tl.sum(desc.load([(t // tc) * BR, (t % tc) * BC]).to(tl.int32), 1)
        tl.store(out + pid, tl.sum(acc, 0))

    @triton.jit
    def read_rows(src, out, rows, cols, R: tl.constexpr, CW: tl.constexpr):
        # The decode GEMVs' pattern: a program owns R rows of a row-major matrix (rows x cols words) and
        # walks along them CW words (4 * CW bytes per row) at a time.
        pid, G = tl.program_id(0), tl.num_programs(0)
        acc = tl.zeros([R, CW], dtype=tl.int32)
        r = tl.arange(0, R)[:, None]
        c = tl.arange(0, CW)[None, :]
        for rb in range(pid * R, rows, G * R):
            for cb in range(0, cols, CW):
                ok = (rb + r < rows) & (cb + c < cols)
                acc += tl.load(src + (rb + r) * cols + cb + c, mask=ok, other=0, cache_modifier=".cg")
        tl.store(out + pid, tl.sum(tl.sum(acc, 1), 0))

    @triton.jit
    def noop(out):
        tl.store(out + tl.program_id(0), 1)

    return triton, read_stride, read_contig, read_tma, read_rows, noop


class _Sweep:
    def __init__(self, h, device="cuda", targets=TARGETS):
        self.h, self.torch, self.t0 = h, h.torch, time.time()
        self.device, self.targets = device, targets
        self.notes: list[str] = []

    def time(self, fn, calls):
        try:
            return self.h.time_graph(self.torch, fn, calls)
        except Exception as exc:
            self.notes.append(f"FAILED {type(exc).__name__}: {str(exc)[:160]}")
            return None

    def run(self) -> list[dict]:
        torch = self.torch
        import torch.nn.functional as F

        triton, read_stride, read_contig, read_tma, read_rows, noop = _kernels()
        dev = self.device
        sms = torch.cuda.get_device_properties(0).multi_processor_count if dev == "cuda" else 2
        # One int32 per program: the one-block-each reads of the largest weight launch the most programs.
        most = max(_ceil(_ceil(t[3], 4), BLOCK) for t in self.targets)
        out = torch.zeros(max(64 * sms, most), dtype=torch.int32, device=dev)
        floor = self.time(lambda i: noop[(sms,)](out), 64)
        self.notes.append(f"empty kernel ({sms} programs): {floor * 1e3:.2f} us per call in the graph" if floor
                          else "empty kernel: not timed")
        rows = []
        for what, n, k, nbytes, target in self.targets:
            if time.time() - self.t0 > BUDGET_S:
                self.notes.append(f"{what} {n}x{k}: skipped, past the {BUDGET_S:.0f} s budget")
                continue
            words = _ceil(nbytes, 4)
            copies = self.h.cold_copies(4 * words)
            srcs = [torch.randint(-8, 9, (words,), dtype=torch.int32, device=dev) for _ in range(copies)]
            row = {"what": what, "shape": f"{n}x{k}", "bytes": 4 * words, "target": target}
            wb = [torch.randn(n, k, device=dev, dtype=torch.bfloat16) for _ in range(self.h.cold_copies(2 * n * k))]
            x = torch.randn(1, k, device=dev, dtype=torch.bfloat16)
            row["bf16"] = self.time(lambda i: F.linear(x, wb[i % len(wb)]), 2 * len(wb))
            del wb
            cands = {}
            for mult, warps in ((2, 4), (4, 4), (8, 4), (4, 8)):
                g = mult * sms
                cands[f"stride {mult}x{warps}w"] = (g, lambda i, g=g, w=warps: read_stride[(g,)](
                    srcs[i % copies], out, words, BLOCK=BLOCK, num_warps=w))
            for mult in (2, 4, 8):
                g = mult * sms
                per = -(-words // g)
                cands[f"contig {mult}x"] = (g, lambda i, g=g, per=per: read_contig[(g,)](
                    srcs[i % copies], out, words, per, BLOCK=BLOCK, num_warps=4))
            # The layer's own rows (its quantized bytes spread over N rows, whole words), as a GEMV block reads them.
            rw = max(1, (4 * words // n) // 4)
            for rr, cw, mult in ((32, 16, 4), (16, 64, 4), (16, 256, 2)):
                gr = min(mult * sms, -(-n // rr))
                cands[f"rows {rr}x{4 * cw}B"] = (gr, lambda i, gr=gr, rr=rr, cw=cw: read_rows[(gr,)](
                    srcs[i % copies], out, n, rw, R=rr, CW=cw, num_warps=4))
            g = -(-words // BLOCK)
            cands["one block each"] = (g, lambda i, g=g: read_stride[(g,)](srcs[i % copies], out, words, BLOCK=BLOCK,
                                                                           num_warps=4))
            try:
                from triton.tools.tensor_descriptor import TensorDescriptor

                cols = 1024  # int32 words per row of a 2-D view: 4 KB rows
                r = words // cols
                descs = [TensorDescriptor(s[: r * cols].view(r, cols), [r, cols], [cols, 1], [16, 256]) for s in srcs]
                for mult in (1, 2):
                    gg = mult * sms
                    cands[f"tma {mult}x"] = (gg, lambda i, gg=gg: read_tma[(gg,)](descs[i % copies], out, r, cols,
                                                                                BR=16, BC=256, num_warps=4,
                                                                                num_stages=4))
                tma_words = r * cols
            except Exception as exc:  # no host-side descriptors in this Triton
                self.notes.append(f"tma: {type(exc).__name__}: {str(exc)[:120]}")
                tma_words = None
            for name, (g, fn) in cands.items():
                try:
                    fn(0)
                    # Sums modulo 2^32, as the kernels' int32 accumulators wrap.
                    got = int(out[:g].sum()) % 2**32
                    part = tma_words if name.startswith("tma") else n * rw if name.startswith("rows") else words
                    expect = int(srcs[0][:part].sum()) % 2**32
                    if got != expect:
                        row[name] = None
                        self.notes.append(f"{what} {n}x{k} {name}: WRONG sum {got} != {expect}")
                        continue
                except Exception as exc:
                    self.notes.append(f"{what} {n}x{k} {name}: FAILED {type(exc).__name__}: {str(exc)[:160]}")
                    continue
                ms = self.time(fn, 2 * copies)
                if ms and name.startswith(("tma", "rows")):
                    ms *= words / part  # the 2-D views drop a partial row or word: scale to the full bytes
                row[name] = ms
            rows.append(row)
            self.log(row)
            del srcs
            torch.cuda.empty_cache()
        return rows

    def log(self, row):
        try:
            cells = ", ".join(f"{k} {v * 1e3:.1f}" for k, v in row.items() if isinstance(v, float) and k != "target")
            self.h.log(f"  stream {row['what']} {row['shape']}: {cells} us")
        except Exception:
            pass


def _table(rows: list[dict], notes: list[str] | None = None) -> str:
    lines = ["weight-read ceilings (cold, CUDA graphs; us per call): the fastest plain read of the target's weight "
             "bytes, and bf16 / that = the most a one-launch kernel reading them once can reach here",
             f"{'target':16s} {'shape':11s} {'MB':>6s} {'bf16us':>7s} {'readus':>7s} {'TB/s':>5s} {'max':>6s} "
             f"{'target':>6s}  best read | every read (us)"]
    for r in rows:
        reads = {k: v for k, v in r.items() if isinstance(v, float) and k not in ("bf16", "target")}
        best = min(reads, key=reads.get) if reads else None
        ms = reads.get(best)
        bf = r.get("bf16")
        lines.append(
            f"{r['what']:16s} {r['shape']:11s} {r['bytes'] / 1e6:6.1f} {bf * 1e3 if bf else float('nan'):7.1f} "
            f"{ms * 1e3 if ms else float('nan'):7.1f} {r['bytes'] / ms / 1e9 if ms else float('nan'):5.2f} "
            f"{(bf / ms) if bf and ms else float('nan'):5.2f}x {r['target']:5.2f}x  {best or '-'} | "
            + ", ".join(f"{k} {v * 1e3:.1f}" for k, v in reads.items()))
    lines.extend(notes or [])
    return "\n".join(lines)


def sweep(h) -> str:
    try:
        if not h.torch.cuda.is_available():
            return "stream sweep: skipped (no GPU)"
        s = _Sweep(h)
        try:
            rows = s.run()
        except Exception as exc:
            return f"stream sweep: FAILED {type(exc).__name__}: {str(exc)[:300]}"
        s.notes.append(f"sweep took {time.time() - s.t0:.1f} s")
        return _table(rows, s.notes)
    except Exception as exc:
        return f"stream sweep: FAILED {type(exc).__name__}: {str(exc)[:300]}"
