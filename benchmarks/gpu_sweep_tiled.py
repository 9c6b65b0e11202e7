"""The experimental int4 decode GEMV on the tile16x64 layout (csrc/cuda/int4/w4a16_tiled.cu) beside the dispatched
k-nibble GEMV and cuBLAS bf16, for benchmarks/gpu_check.py.

The question it answers: does reading whole 512-byte tiles (one 16-byte load per lane, a block's warps on
consecutive tiles, a per-warp cp.async ring) stream the weights faster than the k-nibble GEMV's 64-byte row pieces?
On session 6's first H200 run a plain Triton read of the same bytes took 9.2 / 29.8 us (14336x4096 / 28672x8192)
where the k-nibble GEMV took 14.4 / 40.2. `sweep(h) -> str` checks every config against the dequantized reference
(relative error < 2e-2, else WRONG and not timed), also on odd shapes, and never raises.
"""
from __future__ import annotations

import math
import time

GROUP = 128
SHAPES = [(14336, 4096), (28672, 8192)]
MS = [1, 4, 8, 16]
BUDGET_S = 20.0
# (N, K, M, group, symmetric, dtype, bias): correctness only
ODD = [(48, 1024, 3, 64, True, "float16", False), (4112, 2048, 8, 128, False, "bfloat16", True),
       (16, 4096, 1, 128, False, "bfloat16", True), (528, 2048, 13, 128, False, "bfloat16", True),
       (32, 4096, 16, 64, True, "float16", False)]


def _weights(torch, n, k, group, symmetric, gen):
    from pycomp.formats.int4 import pack_nibbles, pack_tile16x64

    codes = torch.randint(0, 16, (n, k), generator=gen, device="cuda", dtype=torch.uint8)
    g = k // group
    zeros = None if symmetric else torch.randint(0, 16, (n, g), generator=gen, device="cuda", dtype=torch.uint8)
    scales = ((torch.rand(n, g, generator=gen, device="cuda") + 0.5) * 0.35 / math.sqrt(k)).half()
    return pack_nibbles(codes, 0), pack_tile16x64(codes), scales, zeros


def _run(h) -> str:
    torch = h.torch
    import torch.nn.functional as F

    from pycomp import _ext
    from pycomp.formats.int4 import dequantize_int4
    from pycomp.ops.int4_cuda import gemv_variant

    C = _ext._C
    if not _ext.has_c("w4a16_tiled_linear_cuda") or not torch.cuda.is_available():
        return "tiled sweep: skipped (no CUDA build with the tiled GEMV, or no GPU)"
    t0, notes, lines = time.time(), [], []
    configs = list(range(C.w4a16_tiled_cuda_configs()))
    bad = []
    for n, k, m, group, sym, dt, with_bias in ODD:
        gen = torch.Generator(device="cuda").manual_seed(n + k + m)
        packed, tiles, scales, zeros = _weights(torch, n, k, group, sym, gen)
        x = torch.randn(m, k, device="cuda", dtype=getattr(torch, dt), generator=gen)
        bias = torch.randn(n, device="cuda", dtype=x.dtype, generator=gen) if with_bias else None
        want = x.float() @ dequantize_int4(packed, scales, zeros, group, k).t() + (0 if bias is None else bias.float())
        for c in configs:
            try:
                err = h.rel_err(C.w4a16_tiled_linear_cuda(x, tiles, scales, zeros, bias, group, c), want)
                if not err < 2e-2:
                    bad.append(f"c{c} {n}x{k} M={m} g{group}: err {err:.1e}")
            except Exception as exc:
                bad.append(f"c{c} {n}x{k} M={m}: {type(exc).__name__}: {str(exc)[:120]}")
    notes.append("odd-shape check: " + ("all configs ok" if not bad else "WRONG " + "; ".join(bad)))
    head = "shape         M  bf16us | gemv us ratio | " + " | ".join(f"c{c} us  ratio  TB/s" for c in configs)
    lines.append("int4 W4A16 g128 asym bf16 decode: tile16x64 GEMV configs (warps x ring stages: c0 8x8, c1 4x8, c2 8x4, "
                 "c3 4x4, c4 8x2, c5 16x3; register batches of 8 steps: c6 8 warps, c7 4 warps) beside the dispatched k-nibble GEMV; cold weights, us")
    lines.append(head)
    for n, k in SHAPES:
        if time.time() - t0 > BUDGET_S:
            notes.append(f"{n}x{k}: skipped, past the budget")
            continue
        gen = torch.Generator(device="cuda").manual_seed(0)
        packed, tiles, scales, zeros = _weights(torch, n, k, GROUP, False, gen)
        w = dequantize_int4(packed, scales, zeros, GROUP, k)
        qbytes = tiles.numel() + scales.numel() * 2 + zeros.numel()
        cb, cq = h.cold_copies(n * k * 2), h.cold_copies(qbytes)
        wbs = [w.bfloat16() for _ in range(cb)]
        ks = [(packed.clone(), scales.clone(), zeros.clone()) for _ in range(cq)]
        ts = [(tiles.clone(), scales.clone(), zeros.clone()) for _ in range(cq)]
        calls = 2 * max(cb, cq)
        for m in MS:
            x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16, generator=gen)
            ref = x.float() @ w.t()
            cells = {}

            def timed(name, fn, check=True):
                try:
                    if check:
                        err = h.rel_err(fn(0), ref)
                        if not err < 2e-2:
                            cells[name] = f"WRONG {err:.0e}"
                            return
                    cells[name] = h.time_graph(torch, fn, calls)
                except Exception as exc:
                    cells[name] = f"FAILED {type(exc).__name__}"
                    notes.append(f"{name} {n}x{k} M={m}: {type(exc).__name__}: {str(exc)[:160]}")

            timed("bf16", lambda i: F.linear(x, wbs[i % cb]), check=False)
            v = gemv_variant(m)
            timed("gemv", lambda i: C.w4a16_linear_cuda(x, *ks[i % cq], None, GROUP, v))
            for c in configs:
                timed(f"c{c}", lambda i, c=c: C.w4a16_tiled_linear_cuda(x, *ts[i % cq], None, GROUP, c))
            base = cells.get("bf16") if isinstance(cells.get("bf16"), float) else None

            def cell(name, tb=False):
                v = cells.get(name)
                if not isinstance(v, float):
                    return f"{str(v)[:18]:>18s}"
                r = f"{base / v:5.2f}x" if base else "    -"
                return f"{v * 1e3:6.1f} {r}" + (f" {qbytes / v / 1e9:5.2f}" if tb else "")

            lines.append(f"{n}x{k:<6d} {m:2d} {base * 1e3 if base else float('nan'):7.1f} | {cell('gemv')} | "
                         + " | ".join(cell(f"c{c}", True) for c in configs))
        del wbs, ks, ts, w
        torch.cuda.empty_cache()
    notes.append(f"sweep took {time.time() - t0:.1f} s")
    return "\n".join(lines + notes)


def sweep(h) -> str:
    try:
        return _run(h)
    except Exception as exc:
        return f"tiled sweep: FAILED {type(exc).__name__}: {str(exc)[:300]}"
