"""2:4 kernel variants side by side, for a lent GPU: `sweep(h) -> str` (and `bench(h)`, the family interface).

Each `variant` of pycomp._C.sparse24_gemv_cuda (M = 1, 16) and sparse24_gemm_cuda (M = 128, 1024) is
checked against x.float() @ W.float().T (relative error < 2e-2, else WRONG and not timed) and timed
beside cuBLAS bf16 F.linear on the dense weight, both with cold weights (copies rotated beyond 4x the
L2). Variants (csrc/cuda/sparse/sparse_cuda.h): GEMV 0 = the default, 1 and 2 = 16-byte loads with 2 or 4
64-column windows in flight per warp (4 warps split K), 4, 5 = K split over 2, 8 warps with 4, 2 windows;
GEMM 0 = the default, 1 = 128x128 tiles (weight rows x tokens; 64x32 warps, 3 cp.async stages), 4 = 128x128
(four 64x64 warps, 3 stages) with fragments loaded a k32 step ahead, 5 = 256x128 (eight 64x64 warps, 4
stages) that way. GEMV 3 and GEMM 2, 3, 6 were removed after the H200 runs of 2026-11-28 (they lost at
every shape); the columns keep the variant numbers. Rates: the GEMV's read bandwidth (values + metadata
+ x), the GEMM's dense-equivalent TFLOP/s (2 M N K / t). Issue 5's targets: M=1 >= 1.5x bf16, M=1024 >=
1.4x. Budget: about 20 s on an H200; a variant that fails or is wrong is reported in its cell and never
raises.

`h` is benchmarks/gpu_check.py's helper namespace; this module uses h.torch, h.time_graph(torch, fn,
calls), h.rel_err and h.log.
"""
from __future__ import annotations

import math
import time

NAME = "sparse_sweep"
SHAPES = ((14336, 4096), (28672, 8192))  # (N, K)
GEMV_MS = (1, 16)
GEMM_MS = (128, 1024)
VARIANTS = {"gemv": (0, 1, 2, 4, 5), "gemm": (0, 1, 4, 5)}  # = sparse24_gemv/gemm_cuda_variants()
COLUMNS = sorted(set().union(*VARIANTS.values()))  # a column per variant number
TOLERANCE = 2e-2
BUDGET_S = 22.0  # stop starting new timings past this (the lead's run allows 25 s)


def _variant_cells(h, C, x, ref, packs, kernel, copies, calls, row, t0):
    for v in VARIANTS[kernel]:
        key = f"{kernel}{v}"
        if time.time() - t0 > BUDGET_S:
            row[key] = "skipped"
            continue
        op = getattr(C, f"sparse24_{kernel}_cuda")
        fn = (lambda i, v=v: op(x, *packs[i % copies], None, v))
        try:
            err = h.rel_err(fn(0), ref)
            if not err < TOLERANCE:
                row[key] = f"WRONG {err:.1e}"
                h.log(f"  WRONG {key} {row['shape']} M={row['m']}: rel err {err:.2e}")
                continue
            row[key] = h.time_graph(h.torch, fn, calls)
        except Exception as exc:  # one broken variant must not hide the others
            row[key] = "FAILED"
            h.log(f"  FAILED {key} {row['shape']} M={row['m']}: {type(exc).__name__}: {str(exc)[:200]}")


def _rows(h) -> list[dict]:
    torch = h.torch
    import torch.nn.functional as F

    from pycomp import _ext
    from pycomp.formats import sparse as fmt
    from pycomp.prune.nm import nm_mask

    t0 = time.time()
    C = _ext._C
    if C is None or not hasattr(C, "sparse24_gemm_cuda"):
        h.log("  sparse sweep: pycomp._C has no CUDA 2:4 kernels")
        return []
    l2 = torch.cuda.get_device_properties(0).L2_cache_size
    rows = []
    for n, k in SHAPES:
        if time.time() - t0 > BUDGET_S:
            break
        torch.manual_seed(0)
        w = (torch.randn(n, k, device="cuda") / math.sqrt(k)).bfloat16()
        w = w * nm_mask(w)
        values, meta = fmt.pack_24(w)
        dense_copies = max(2, math.ceil(4 * l2 / w.nbytes) + 1)
        sparse_copies = max(2, math.ceil(4 * l2 / (values.nbytes + meta.nbytes)) + 1)
        ws = [w.clone() for _ in range(dense_copies)]
        packs = [(values.clone(), meta.clone()) for _ in range(sparse_copies)]
        calls = 2 * max(dense_copies, sparse_copies)
        for m in GEMV_MS + GEMM_MS:
            row = {"shape": f"{n}x{k}", "m": m, "bytes": values.nbytes + meta.nbytes + m * k * 2}
            rows.append(row)
            if time.time() - t0 > BUDGET_S:
                row["bf16"] = "skipped"
                continue
            x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
            ref = x.float() @ w.float().t()
            try:
                row["bf16"] = h.time_graph(torch, lambda i: F.linear(x, ws[i % dense_copies]), calls)
            except Exception as exc:
                row["bf16"] = "FAILED"
                h.log(f"  FAILED bf16 {n}x{k} M={m}: {type(exc).__name__}: {str(exc)[:200]}")
            kernel = "gemv" if m in GEMV_MS else "gemm"
            _variant_cells(h, C, x, ref, packs, kernel, sparse_copies, calls, row, t0)
            h.log(f"  sparse sweep {n}x{k} M={m}: " + ", ".join(
                f"{key} {val * 1e3:.1f}us" if isinstance(val, float) else f"{key} {val}"
                for key, val in row.items() if key == "bf16" or key[:4] in ("gemv", "gemm")))
        del ws, packs, w, values, meta
        torch.cuda.empty_cache()
    return rows


def _cell(row: dict, key: str) -> str:
    """' us  ratio  rate' for one variant: GB/s for the GEMV, dense-equivalent TFLOP/s for the GEMM."""
    val, base = row.get(key, "-"), row.get("bf16")
    if not isinstance(val, float):
        return f"{str(val)[:22]:>22s}"
    n, k = (int(v) for v in row["shape"].split("x"))
    ratio = f"{base / val:5.2f}x" if isinstance(base, float) else "    -"
    rate = f"{row['bytes'] / val / 1e9:5.2f}TB/s" if key.startswith("gemv") else f"{2 * row['m'] * n * k / val / 1e9:4.0f}TF/s"
    return f"{val * 1e3:7.1f} {ratio} {rate:>8s}"


def _table(rows: list[dict], h=None) -> str:
    lines = ["2:4 sweep (bf16, cold weights; per variant: us, speed-up over cuBLAS bf16, GEMV read TB/s or "
             "GEMM dense-equivalent TFLOP/s)",
             "targets: M=1 >= 1.50x, M=1024 >= 1.40x; variant 0 = the current default kernel",
             f"{'shape':>11s} {'M':>5s} {'bf16us':>8s} | " + " | ".join(f"{f'variant {v}':>22s}" for v in COLUMNS)]
    for r in rows:
        kernel = "gemv" if r["m"] in GEMV_MS else "gemm"
        base = r.get("bf16")
        b = f"{base * 1e3:8.1f}" if isinstance(base, float) else f"{str(base or '-')[:8]:>8s}"
        times = {v: r.get(f"{kernel}{v}") for v in VARIANTS[kernel]}
        timed = [v for v, val in times.items() if isinstance(val, float)]
        best = f" best v{min(timed, key=times.get)}" if timed else ""
        lines.append(f"{r['shape']:>11s} {r['m']:5d} {b} | " + " | ".join(_cell(r, f"{kernel}{v}") for v in COLUMNS)
                     + f"  ({kernel}){best}")
    return "\n".join(lines)


def sweep(h) -> str:
    try:
        return _table(_rows(h), h)
    except Exception as exc:  # never raises: the lead's run goes on
        return f"2:4 sweep FAILED: {type(exc).__name__}: {str(exc)[:300]}"


def bench(h) -> tuple[list[dict], str]:
    """The family interface gpu_check discovers: the sweep's rows and table."""
    try:
        rows = _rows(h)
    except Exception as exc:
        return [], f"2:4 sweep FAILED: {type(exc).__name__}: {str(exc)[:300]}"
    return rows, _table(rows, h)
