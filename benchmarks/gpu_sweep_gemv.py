"""Sweep of the decode GEMV kernel variants (int4 W4A16 and int8 W8A16) for benchmarks/gpu_check.py.

`sweep(h) -> str` checks every variant of `w4a16_linear_cuda` and `w8a16_linear_cuda` (the
`variant` argument; 0 is the default kernel) against x.float() @ W.T with W dequantized in
float32 (relative error < 2e-2, else WRONG and not timed), then times it beside cuBLAS bf16
F.linear with cold weights (copies rotated beyond 4x the L2), CUDA-graph replays, and returns
a compact table: microseconds, speed-up over bf16, and GB/s of the quantized weight bytes
(scales and zero points included). Before timing, each variant is also checked on small odd
shapes (rows past a block, split-K, symmetric zeros, float16) so a wrong variant shows up
even where the timed shapes happen to hide it. `bench(h)` returns (rows, table), so
gpu_check's family loop runs it too. Never raises: each failure is a table cell.
"""
from __future__ import annotations

import math
import time

NAME = "gemv"
GROUP = 128
INT4_SHAPES = [(14336, 4096), (28672, 8192)]  # (N, K)
INT4_MS = [1, 4, 8, 16]
INT8_SHAPES = [(4096, 4096), (14336, 4096)]
INT8_MS = [1, 16]
BUDGET_S = 22.0  # past it nothing more is timed (the whole sweep must stay under 25 s)
# (N, K, M, symmetric, dtype name): odd shapes for the correctness-only pass
ODD_INT4 = [(200, 1536, 3, False, "bfloat16"), (1000, 2048, 12, True, "float16"), (4104, 4096, 16, False, "bfloat16"),
            (264, 512, 1, False, "float16"), (28680, 1024, 1, False, "bfloat16")]  # last: 2 tiles per persistent block
ODD_INT8 = [(200, 1552, 3, "bfloat16"), (1000, 2048, 12, "float16"), (4104, 4096, 16, "bfloat16"),
            (28680, 1024, 1, "bfloat16")]  # the last: many row blocks, a partial last one


def _cold_copies(l2: int, nbytes: int) -> int:
    return max(2, math.ceil(4 * l2 / nbytes) + 1)


class _Sweep:
    def __init__(self, h):
        self.h, self.torch, self.t0 = h, h.torch, time.time()
        self.notes: list[str] = []

    def log(self, msg: str) -> None:
        try:
            self.h.log(msg)
        except Exception:
            pass

    def check_and_time(self, row: dict, name: str, fn, want, calls: int) -> None:
        """row[name] = ms, or None with row[name + '_why'] = 'WRONG err' / 'FAILED ...' / 'skipped'."""
        row[name] = None
        if time.time() - self.t0 > BUDGET_S:
            row[name + "_why"] = "skipped"
            return
        try:
            if want is not None:
                err = self.h.rel_err(fn(0), want)
                row[name + "_err"] = err
                if not err < 2e-2:
                    row[name + "_why"] = f"WRONG {err:.1e}"
                    self.log(f"  WRONG {name} {row['family']} {row['shape']} M={row['m']}: rel err {err:.2e}")
                    return
            row[name] = self.h.time_graph(self.torch, fn, calls)
        except Exception as exc:  # one broken variant must not hide the others
            row[name + "_why"] = f"FAILED {type(exc).__name__}"
            self.log(f"  FAILED {name} {row['family']} {row['shape']} M={row['m']}: {type(exc).__name__}: "
                     f"{str(exc)[:200]}")

    # ------------------------------------------------------------------ int4
    def int4_weights(self, n, k, symmetric, gen):
        torch = self.torch
        g = k // GROUP
        codes = torch.randint(0, 16, (n, k), generator=gen, device="cuda", dtype=torch.uint8)
        zeros = None if symmetric else torch.randint(0, 16, (n, g), generator=gen, device="cuda", dtype=torch.uint8)
        scales = ((torch.rand(n, g, generator=gen, device="cuda") + 0.5) * 0.35 / math.sqrt(k)).half()
        packed = (codes[:, 0::2] | (codes[:, 1::2] << 4)).contiguous()
        return packed, scales, zeros

    def int4_odd(self, C, variants) -> None:
        torch = self.torch
        from pycomp.formats.int4 import dequantize_int4

        bad = []
        for n, k, m, sym, dt in ODD_INT4:
            gen = torch.Generator(device="cuda").manual_seed(n + k + m)
            packed, scales, zeros = self.int4_weights(n, k, sym, gen)
            w = dequantize_int4(packed, scales, zeros, GROUP, k)
            x = torch.randn(m, k, device="cuda", dtype=getattr(torch, dt), generator=gen)
            bias = torch.randn(n, device="cuda", dtype=x.dtype, generator=gen)
            want = x.float() @ w.t() + bias.float()
            for v in variants:
                try:
                    err = self.h.rel_err(C.w4a16_linear_cuda(x, packed, scales, zeros, bias, GROUP, v), want)
                    if not err < 2e-2:
                        bad.append(f"v{v} {n}x{k} M={m} {dt}{' sym' if sym else ''}: err {err:.1e}")
                except Exception as exc:
                    bad.append(f"v{v} {n}x{k} M={m}: {type(exc).__name__}: {str(exc)[:120]}")
        self.notes.append("int4 odd-shape check: " + ("all variants ok" if not bad else "WRONG " + "; ".join(bad)))

    def int4_rows(self, C) -> list[dict]:
        torch = self.torch
        import torch.nn.functional as F

        from pycomp.formats.int4 import dequantize_int4

        variants = list(C.w4a16_gemv_cuda_variants())  # numbers of removed variants are skipped
        self.int4_odd(C, variants)
        l2 = torch.cuda.get_device_properties(0).L2_cache_size
        rows = []
        for n, k in INT4_SHAPES:
            if time.time() - self.t0 > BUDGET_S:
                break
            gen = torch.Generator(device="cuda").manual_seed(0)
            packed, scales, zeros = self.int4_weights(n, k, False, gen)
            w = dequantize_int4(packed, scales, zeros, GROUP, k)
            q_bytes = packed.numel() + scales.numel() * 2 + zeros.numel()
            copies_b, copies_q = _cold_copies(l2, n * k * 2), _cold_copies(l2, q_bytes)
            wb = w.bfloat16()
            wbs = [wb.clone() for _ in range(copies_b)]
            qs = [(packed.clone(), scales.clone(), zeros.clone()) for _ in range(copies_q)]
            del wb
            calls = 2 * max(copies_b, copies_q)
            for m in INT4_MS:
                self.notes.append(f"int4 launches {n}x{k} M={m}: " + _int4_launches(C, m, n, k, variants))
                x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16, generator=gen)
                ref = x.float() @ w.t()
                row = {"family": "int4", "shape": f"{n}x{k}", "m": m, "bytes": q_bytes, "variants": variants}
                self.check_and_time(row, "bf16", lambda i: F.linear(x, wbs[i % copies_b]), None, calls)
                for v in variants:
                    self.check_and_time(
                        row, f"v{v}", lambda i, v=v: C.w4a16_linear_cuda(x, *qs[i % copies_q], None, GROUP, v), ref,
                        calls)
                rows.append(row)
                self.log_row(row)
            del wbs, qs, w
            torch.cuda.empty_cache()
        return rows

    # ------------------------------------------------------------------ int8
    def int8_weights(self, n, k, gen):
        torch = self.torch
        q = torch.randint(-127, 128, (n, k), generator=gen, device="cuda", dtype=torch.int8)
        s = (torch.rand(n, generator=gen, device="cuda") + 0.5) / (127 * math.sqrt(k))
        return q, s

    def int8_odd(self, C, variants) -> None:
        torch = self.torch
        bad = []
        for n, k, m, dt in ODD_INT8:
            gen = torch.Generator(device="cuda").manual_seed(n + k + m)
            q, s = self.int8_weights(n, k, gen)
            x = torch.randn(m, k, device="cuda", dtype=getattr(torch, dt), generator=gen)
            bias = torch.randn(n, device="cuda", dtype=x.dtype, generator=gen)
            want = x.float() @ (q.float() * s[:, None]).t() + bias.float()
            for v in variants:
                try:
                    err = self.h.rel_err(C.w8a16_linear_cuda(x, q, s, bias, v), want)
                    if not err < 2e-2:
                        bad.append(f"v{v} {n}x{k} M={m} {dt}: err {err:.1e}")
                except Exception as exc:
                    bad.append(f"v{v} {n}x{k} M={m}: {type(exc).__name__}: {str(exc)[:120]}")
        self.notes.append("int8 odd-shape check: " + ("all variants ok" if not bad else "WRONG " + "; ".join(bad)))

    def int8_rows(self, C) -> list[dict]:
        torch = self.torch
        import torch.nn.functional as F

        variants = list(range(C.w8a16_gemv_cuda_variants()))
        for m in INT8_MS:
            self.notes.append(f"int8 launches M={m}: " + _int8_launches(C, m, variants))
        self.int8_odd(C, variants)
        l2 = torch.cuda.get_device_properties(0).L2_cache_size
        rows = []
        for n, k in INT8_SHAPES:
            if time.time() - self.t0 > BUDGET_S:
                break
            gen = torch.Generator(device="cuda").manual_seed(1)
            q, s = self.int8_weights(n, k, gen)
            w = q.float() * s[:, None]
            copies_b, copies_q = _cold_copies(l2, n * k * 2), _cold_copies(l2, n * k)
            wbs = [w.bfloat16() for _ in range(copies_b)]
            qs = [(q.clone(), s.clone()) for _ in range(copies_q)]
            calls = 2 * max(copies_b, copies_q)
            # float16 x at M=1 beside bfloat16: its int8 -> f16 conversion takes 4 instructions per 4 weights
            # where bf16 takes 10, so the difference shows what the conversion costs the stream.
            for m, dt in [(m, "bfloat16") for m in INT8_MS] + [(1, "float16")]:
                x = torch.randn(m, k, device="cuda", dtype=getattr(torch, dt), generator=gen)
                ref = x.float() @ w.t()
                fam = "int8" if dt == "bfloat16" else "i8h"
                row = {"family": fam, "shape": f"{n}x{k}", "m": m, "bytes": n * k + 4 * n, "variants": variants}
                xb = x.bfloat16()  # the baseline stays cuBLAS bf16
                self.check_and_time(row, "bf16", lambda i: F.linear(xb, wbs[i % copies_b]), None, calls)
                for v in variants:
                    self.check_and_time(row, f"v{v}", lambda i, v=v: C.w8a16_linear_cuda(x, *qs[i % copies_q], None, v),
                                        ref, calls)
                rows.append(row)
                self.log_row(row)
            del wbs, qs, w
            torch.cuda.empty_cache()
        return rows

    def log_row(self, row: dict) -> None:
        cells = [f"{k} {row[k] * 1e3:.1f}us" for k in ["bf16"] + [f"v{v}" for v in row["variants"]] if row.get(k)]
        self.log(f"  gemv {row['family']} {row['shape']} M={row['m']}: " + ", ".join(cells))


def _int4_launches(C, m, n, k, variants) -> str:
    """Per variant: rows/warps/stages per block, F(old) X(-ring) P(ersistent), grid (row blocks, or the
    persistent blocks, x K slices), smem."""
    cells = []
    for v in variants:
        try:
            d = C.w4a16_gemv_cuda_launch(m, n, k, GROUP, v)
            if v and not d["variant_runs"]:
                cells.append(f"v{v}=v0")
                continue
            flags = ("F" if d["fold"] else "") + ("X" if d["x_ring"] else "") + ("P" if d.get("persistent") else "")
            cells.append(f"v{v} {d['rows']}r{d['warps']}w{d['stages']}s{flags} {d['blocks']}x{d['splits']} "
                         f"{d['smem'] // 1024}K")
        except Exception as exc:
            cells.append(f"v{v} ? {type(exc).__name__}")
    return " | ".join(cells)


def _int8_launches(C, m, variants) -> str:
    """Per variant: chunks in flight per warp (u), warps per block (w), blocks per SM at least (b)."""
    cells = []
    for v in variants:
        try:
            d = C.w8a16_gemv_cuda_shape(m, v)
            cells.append(f"v{v} u{d['unroll']}w{d['warps']}b{d['min_blocks']}")
        except Exception as exc:
            cells.append(f"v{v} ? {type(exc).__name__}")
    return " | ".join(cells)


def _cell(row: dict, name: str) -> str:
    ms, base = row.get(name), row.get("bf16")
    if not ms:
        return f"{row.get(name + '_why', '-')[:17]:>17s}"
    ratio = f"{base / ms:5.2f}x" if base else "    -"
    return f"{ms * 1e3:6.1f} {ratio} {row['bytes'] / ms / 1e6:4.0f}"


def _table(rows: list[dict], h=None, notes: list[str] | None = None) -> str:
    """One line per (family, shape, M): bf16 us, then per variant 'us ratio GB/s' (a column per variant number
    of any family; '-' where a family has no such variant); best variant last."""
    lines = ["decode GEMV variants: us per call | ratio = bf16 / variant | GB/s of quantized weights "
             "(cold weights, CUDA graphs); int4 = W4A16 g128 asym bf16, int8 = W8A16 bf16, i8h = W8A16 f16"]
    columns = sorted({v for r in rows for v in r["variants"]})
    lines.append("fam  shape         M  bf16us | " + " | ".join(f"{'v%d us  ratio GB/s' % v:>17s}" for v in columns)
                 + " | best")
    for r in rows:
        timed = [(r[f"v{v}"], v) for v in r["variants"] if r.get(f"v{v}")]
        best = f"v{min(timed)[1]}" if timed else "-"
        base = f"{r['bf16'] * 1e3:7.1f}" if r.get("bf16") else "      -"
        lines.append(f"{r['family']:4s} {r['shape']:11s} {r['m']:3d} {base} | "
                     + " | ".join(_cell(r, f"v{v}") for v in columns) + f" | {best}")
    lines.extend(notes or [])
    return "\n".join(lines)


def _run(h) -> tuple[list[dict], str]:
    s = _Sweep(h)
    rows: list[dict] = []
    try:
        from pycomp import _ext

        C = _ext._C
        if C is None or not hasattr(C, "w4a16_gemv_cuda_variants") or not s.torch.cuda.is_available():
            return rows, "gemv sweep: skipped (no CUDA build with kernel variants, or no GPU)"
        for family in (s.int4_rows, s.int8_rows):
            try:
                rows += family(C)
            except Exception as exc:  # e.g. out of memory: the other family still runs
                s.notes.append(f"{family.__name__}: FAILED {type(exc).__name__}: {str(exc)[:200]}")
        s.notes.append(f"sweep took {time.time() - s.t0:.1f} s")
        return rows, _table(rows, h, s.notes)
    except Exception as exc:
        return rows, f"gemv sweep: FAILED {type(exc).__name__}: {str(exc)[:300]}"


def sweep(h) -> str:
    return _run(h)[1]


def bench(h) -> tuple[list[dict], str]:
    return _run(h)
