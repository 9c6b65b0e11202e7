"""Triton GEMM sweep for benchmarks/gpu_check.py: every autotuned Triton GEMM beside cuBLAS bf16, and
each of its configs timed alone with cold weights.

    sweep(h) -> str                 the table (never raises; a failing row says why)
    bench(h) -> (rows, table)       the same, in the form gpu_check's family discovery calls

`h` is gpu_check's helper namespace (h.torch, h.time_graph(torch, fn, calls), h.rel_err, h.log).
Rows, in this order: W8A8 first (issue 2's M = 1024 target; 4096x4096 and 14336x4096 at M = 1024,
14336x4096 at M = 16 and 128): per-token quantization + int8 GEMM, with "gemm" the GEMM alone and
"quant" the quantization alone (variants 3-6 quantize with quantize_per_token_int8's variant 1,
timed in the W8A8glu and W8A8pdl rows), one row per W8A8 variant of triton_kernels/int8.py:
W8A8 variant 0, the pointer GEMM; W8A8tma 1, the persistent TMA GEMM; W8A8glu 5, the Gluon GEMM
that keeps a wgmma in flight, its tiles in the configs line; W8A8glp 6, the same launched with
PDL behind a quantization kernel that releases it early; W8A8fus 2, the quantization fused into
the TMA GEMM, one launch; W8A8v4 4, TMA over the list with two programs per SM; W8A8pdl 3,
variant 4 with PDL as 6 is to 5; at M = 16 and 128 only variants 0 and 2. Then W4A16
(14336x4096, M = 16, 128, 1024; asymmetric, group 128; W4A16dq at M = 128, 1024: the weight
dequantized to bf16 by a Triton kernel, then cuBLAS, with the dequantization alone in the
"quant" column), W8A16 (4096x4096 and 14336x4096, M = 128, 1024) and W1A16 (14336x4096,
M = 16, 128; per-channel alpha); bf16 activations. Each output is checked against a float32
reference (relative error < 2e-2, else WRONG and not timed) before CUDA-graph timing with cold
weights (copies rotated beyond 4x the L2). "best" is the autotuner's choice for the row's key,
read from kernel.best_config after the first call; the autotuner times with the weights hot in
L2, so the cold per-config times that follow each row may rank the configs differently.
Per-config times come second, while the time budget lasts (BUDGET_S: gpu_check gives the sweep
25 s; configs already compiled by an earlier family in the same process cost no compile). The
table ends with the sweep's wall time.
"""
from __future__ import annotations

import math
import time

NAME = "triton sweep"
BUDGET_S = 60.0  # runs in a process of its own (gpu_check.SWEEP_TIMEOUT_S = 90); the W8A8 block compiles ~15 kernels
DEVICE = "cuda"  # the tests run the sweep on tiny shapes on CPU tensors under TRITON_INTERPRET=1
GROUP_SIZE = 128
W4A16 = ((14336, 4096), (16, 128, 1024))
W4A16_DEQUANT_M = (128, 1024)
W8A16 = (((4096, 4096), (14336, 4096)), (128, 1024))
W8A8 = (((4096, 4096), (14336, 4096)), (1024,))
W8A8_SMALL = ((14336, 4096), (16, 128))  # beside the current dispatch (variant 0), so nothing regresses there
W1A16 = ((14336, 4096), (16, 128))
# Speed-up over bf16 each row should reach, where an issue sets one (W8A8 includes the quantization).
TARGETS = {("W4A16", 16): 2.5, ("W4A16", 128): 1.3, ("W4A16", 1024): 0.95,
           **{(k, 1024): 1.4 for k in ("W8A8", "W8A8tma", "W8A8glu", "W8A8glp", "W8A8fus", "W8A8v4",
                                        "W8A8pdl")},
           ("W4A16dq", 128): 1.3, ("W4A16dq", 1024): 0.95}


def cfg_str(c) -> str:
    """A triton.Config (or its kwargs dict plus warps/stages) as 'MxNxK sS wW [swap] [C/SM]', M the token tile."""
    kw = dict(c.kwargs) if hasattr(c, "kwargs") else dict(c)
    warps = getattr(c, "num_warps", kw.pop("num_warps", "?"))
    stages = getattr(c, "num_stages", kw.pop("num_stages", "?"))
    swap = " swap" if kw.get("SWAP_AB") else ""
    per_sm = f" {kw['CTAS_PER_SM']}/SM" if kw.get("CTAS_PER_SM", 1) > 1 else ""
    return f"{kw.get('BLOCK_M')}x{kw.get('BLOCK_N')}x{kw.get('BLOCK_K')} s{stages} w{warps}{swap}{per_sm}"


def _fixed(c) -> dict:
    return {**c.kwargs, "num_warps": c.num_warps, "num_stages": c.num_stages}


def _copies(nbytes: int, l2: int) -> int:
    return max(2, math.ceil(4 * l2 / nbytes) + 1)


class _Sweep:
    def __init__(self, h):
        self.h, self.torch = h, h.torch
        self.t0 = time.time()
        self.rows: list[dict] = []
        self.later: list = []  # (row, [(label, fn)], want, calls): per-config timings, after every main row
        props = self.torch.cuda.get_device_properties(0) if DEVICE == "cuda" else None
        self.l2 = props.L2_cache_size if props else 0
        self.sms = props.multi_processor_count if props else 2  # the interpreter's persistent programs

    def left(self) -> float:
        return BUDGET_S - (time.time() - self.t0)

    def time_checked(self, fn, want, calls):
        """(ms, err, note): fn(0) checked against want, then timed; None ms when wrong, failed or out of time."""
        if self.left() <= 0:
            return None, None, "no time"
        try:
            err = self.h.rel_err(fn(0), want) if want is not None else None
            if err is not None and not err < 2e-2:
                return None, err, f"WRONG (rel err {err:.1e})"
            return self.h.time_graph(self.torch, fn, calls), err, ""
        except Exception as exc:  # one broken kernel must not hide the other rows
            return None, None, f"FAILED {type(exc).__name__}: {str(exc)[:120]}"

    def row(self, kernel, shape, m, bf16, ours, want, calls, tuner=None, extra=(), configs=()):
        """bf16 and ours (label, fn) timed now; extra (label, fn) too; configs (label, fn) later."""
        row = {"kernel": kernel, "shape": f"{shape[0]}x{shape[1]}", "m": m, "notes": [], "configs": []}
        row["bf16_ms"], _, note = self.time_checked(bf16, want, calls)
        row["ours_ms"], row["err"], note2 = self.time_checked(ours, want, calls)
        row["notes"] += [n for n in (note and f"bf16 {note}", note2) if n]
        if tuner is not None and getattr(tuner, "best_config", None) is not None and row["err"] is not None:
            row["best"] = cfg_str(tuner.best_config)
        for label, fn in extra:
            row[f"{label}_ms"], _, note = self.time_checked(fn, want if label != "quant" else None, calls)
            if note:
                row["notes"].append(f"{label} {note}")
        self.rows.append(row)
        self.h.log(f"  triton sweep {kernel} {row['shape']} M={m}: bf16 {_us(row['bf16_ms'])} "
                   f"ours {_us(row['ours_ms'])} best {row.get('best', '-')} {' '.join(row['notes'])}")
        if configs:
            self.later.append((row, list(configs), want, calls))

    def per_config(self):
        for row, configs, want, calls in self.later:
            for label, fn in configs:
                if self.left() <= 0:
                    row["configs"].append((label, None, "no time"))
                    continue
                ms, _, note = self.time_checked(fn, want, calls)
                row["configs"].append((label, ms, note))


def _us(ms) -> str:
    return f"{ms * 1e3:.1f}" if ms else "-"


def _w4a16_rows(s: _Sweep):
    torch = s.torch
    import torch.nn.functional as F

    from pycomp.formats.int4 import dequantize_int4
    from pycomp.triton_kernels import int4 as tk

    (n, k), ms = W4A16
    gen = torch.Generator(device=DEVICE).manual_seed(0)
    g = k // GROUP_SIZE
    codes = torch.randint(0, 16, (n, k), generator=gen, device=DEVICE, dtype=torch.uint8)
    zeros = torch.randint(4, 12, (n, g), generator=gen, device=DEVICE, dtype=torch.uint8)
    scales = ((torch.rand(n, g, generator=gen, device=DEVICE) + 0.5) * 0.35 / math.sqrt(k)).half()
    packed = (codes[:, 0::2] | (codes[:, 1::2] << 4)).contiguous()
    del codes
    w = dequantize_int4(packed, scales, zeros, GROUP_SIZE, k)
    cb, cq = _copies(n * k * 2, s.l2), _copies(packed.numel() + scales.numel() * 3, s.l2)
    wbs = [w.bfloat16() for _ in range(cb)]
    qs = [(packed.clone(), scales.clone(), zeros.clone()) for _ in range(cq)]
    calls = 2 * max(cb, cq)
    for m in ms:
        x = torch.randn(m, k, device=DEVICE, dtype=torch.bfloat16)
        want = x.float() @ w.t()
        configs = [(cfg_str(c), lambda i, c=c, x=x, qs=qs, cq=cq: tk.w4a16_linear(x, *qs[i % cq], None, GROUP_SIZE,
                                                                                  k, config=_fixed(c)))
                   for c in tk._CONFIGS_BY_BUCKET[tk._m_bucket(m)]]
        s.row("W4A16", (n, k), m, lambda i, x=x, wbs=wbs, cb=cb: F.linear(x, wbs[i % cb]),
              lambda i, x=x, qs=qs, cq=cq: tk.w4a16_linear(x, *qs[i % cq], None, GROUP_SIZE, k), want, calls,
              tk._w4a16, configs=configs)
        if m in W4A16_DEQUANT_M:
            # Dequantize to bf16, then cuBLAS: the "quant" column is the dequantization alone.
            extra = [("quant", lambda i, qs=qs, cq=cq: tk.dequantize_int4(*qs[i % cq], GROUP_SIZE, k))]
            s.row("W4A16dq", (n, k), m, lambda i, x=x, wbs=wbs, cb=cb: F.linear(x, wbs[i % cb]),
                  lambda i, x=x, qs=qs, cq=cq: tk.w4a16_linear_dequant(x, *qs[i % cq], None, GROUP_SIZE, k),
                  want, calls, extra=extra)


def _int8_weight(s: _Sweep, n: int, k: int):
    """(q, ws, w, cb, cq, wbs, qs, calls): an int8 weight, its float form, and cold copies of both."""
    torch = s.torch
    gen = torch.Generator(device=DEVICE).manual_seed(1)
    q = torch.randint(-127, 128, (n, k), generator=gen, device=DEVICE, dtype=torch.int8)
    ws = (torch.rand(n, generator=gen, device=DEVICE) + 0.5) / (127 * math.sqrt(k))
    w = q.float() * ws[:, None]
    cb, cq = _copies(n * k * 2, s.l2), _copies(n * k, s.l2)
    return q, ws, w, cb, cq, [w.bfloat16() for _ in range(cb)], [(q.clone(), ws.clone()) for _ in range(cq)], \
        2 * max(cb, cq)


def _w8a8_rows(s: _Sweep):
    torch = s.torch
    import torch.nn.functional as F

    from pycomp.ops.int8 import quantize_per_token_int8_ref
    from pycomp.triton_kernels import int8 as tk

    small_shape, small_ms = W8A8_SMALL
    shapes = sorted(set(W8A8[0]) | {small_shape})
    bf16_out = torch.bfloat16
    for n, k in shapes:
        q, ws, w, cb, cq, wbs, qs, calls = _int8_weight(s, n, k)
        # The target's M first, while the time budget is fresh.
        ms = sorted((set(W8A8[1]) if (n, k) in W8A8[0] else set())
                    | (set(small_ms) if (n, k) == small_shape else set()), key=lambda m: (m not in W8A8[1], m))
        for m in ms:
            bucket = tk._m_bucket(m)
            x = torch.randn(m, k, device=DEVICE, dtype=torch.bfloat16)
            xq, xs = quantize_per_token_int8_ref(x)
            want = (xq.float() @ q.float().t()) * xs[:, None] * ws[None, :]
            bf16 = lambda i, x=x, wbs=wbs, cb=cb: F.linear(x, wbs[i % cb])  # noqa: E731

            def linear(variant, config=None, x=x, qs=qs, cq=cq):
                return lambda i: tk.int8_linear_dynamic(x, *qs[i % cq], variant=variant, config=config)

            def gemm(variant, config=None, xq=xq, xs=xs, qs=qs, cq=cq):
                return lambda i: tk.int8_gemm_dequant(xq, xs, *qs[i % cq], out_dtype=bf16_out, config=config,
                                                      variant=variant)

            def gemm_configs(variant, by_bucket):
                return [(cfg_str(c), gemm(variant, _fixed(c))) for c in by_bucket[bucket]]

            large = m in W8A8[1] and (n, k) in W8A8[0]
            s.row("W8A8", (n, k), m, bf16, linear(0), want, calls, tk._int8_gemm,
                  extra=[("gemm", gemm(0)), ("quant", lambda i, x=x: tk.quantize_per_token_int8(x))],
                  configs=gemm_configs(0, tk._INT8_GEMM_BY_BUCKET))
            # The quantization kernel must match the reference exactly (the GEMM checks use their own).
            got_q, got_s = tk.quantize_per_token_int8(x)
            if not (torch.equal(got_q, xq) and torch.equal(got_s, xs)):
                s.rows[-1]["notes"].append("quant WRONG (not bit-exact)")
            if large:
                s.row("W8A8tma", (n, k), m, bf16, linear(1), want, calls, tk._int8_gemm_tma, extra=[("gemm", gemm(1))],
                      configs=gemm_configs(1, tk._INT8_TMA_BY_BUCKET))
                _gluon_row(s, (n, k), m, bf16, linear, gemm, want, calls,
                           lambda i, x=x: tk.quantize_per_token_int8(x, variant=1))
            s.row("W8A8fus", (n, k), m, bf16, linear(2), want, calls, tk._int8_linear_fused,
                  configs=[(cfg_str(c), linear(2, _fixed(c))) for c in tk._FUSED_BY_BUCKET[bucket]] if large else ())
            out = torch.empty_like(want, dtype=bf16_out)
            if s.rows[-1]["err"] is not None and tk.fused_eligible(x, q, out):
                # The fused kernel's own quantization, read back from one more call, must be bit-exact too.
                try:
                    got_q, got_s = tk._int8_linear_fused_launch(x, q, ws, None, out, None)
                    if not (torch.equal(got_q, xq) and torch.equal(got_s, xs)):
                        s.rows[-1]["notes"].append("fused quant WRONG (not bit-exact)")
                except Exception as exc:  # the rows after this one still run
                    s.rows[-1]["notes"].append(f"fused quant check FAILED {type(exc).__name__}: {str(exc)[:80]}")
            if large:
                s.row("W8A8v4", (n, k), m, bf16, linear(4), want, calls, tk._int8_gemm_tma2, extra=[("gemm", gemm(4))],
                      configs=gemm_configs(4, tk._INT8_TMA2_BY_BUCKET))
                # "gemm": variant 3 behind the previous call's GEMM; "quant": the quantization that releases it early.
                s.row("W8A8pdl", (n, k), m, bf16, linear(3), want, calls, tk._int8_gemm_tma2,
                      extra=[("gemm", gemm(3)),
                             ("quant", lambda i, x=x: tk.quantize_per_token_int8(x, pdl=True, variant=1))])
        del wbs, qs


def _gluon_row(s: _Sweep, shape, m, bf16, linear, gemm, want, calls, quant):
    """Variants 5 and 6 (the Gluon GEMM, without and with PDL): the default tile in the rows, each
    tile of variant 5 in its configs line; "quant" is the quantization variant 1 they use."""
    try:
        from pycomp.triton_kernels import int8_gluon
    except Exception as exc:  # the experimental API may be missing: say so in the table
        s.rows.append({"kernel": "W8A8glu", "shape": f"{shape[0]}x{shape[1]}", "m": m, "configs": [],
                       "notes": [f"FAILED import: {type(exc).__name__}: {str(exc)[:120]}"]})
        return
    default = f"gluon {int8_gluon.default_config(m, shape[0], s.sms)} (default)"
    s.row("W8A8glu", shape, m, bf16, linear(5), want, calls, extra=[("gemm", gemm(5)), ("quant", quant)],
          configs=[(f"gluon {name}", gemm(5, name)) for name in int8_gluon.CONFIGS])
    s.rows[-1]["best"] = default
    # Variant 6: the same launched with PDL behind the quantization kernel that releases it early.
    s.row("W8A8glp", shape, m, bf16, linear(6), want, calls, extra=[("gemm", gemm(6))])
    s.rows[-1]["best"] = default


def _int8_rows(s: _Sweep):
    torch = s.torch
    import torch.nn.functional as F

    from pycomp.triton_kernels import int8 as tk

    for n, k in W8A16[0]:
        q, ws, w, cb, cq, wbs, qs, calls = _int8_weight(s, n, k)
        for m in W8A16[1]:
            x = torch.randn(m, k, device=DEVICE, dtype=torch.bfloat16)
            want = (x.float() @ q.float().t()) * ws[None, :]
            configs = [(cfg_str(c), lambda i, c=c, x=x, qs=qs, cq=cq: tk.w8a16_linear(x, *qs[i % cq], config=_fixed(c)))
                       for c in tk._W8A16_BY_BUCKET[tk._m_bucket(m)]]
            s.row("W8A16", (n, k), m, lambda i, x=x, wbs=wbs, cb=cb: F.linear(x, wbs[i % cb]),
                  lambda i, x=x, qs=qs, cq=cq: tk.w8a16_linear(x, *qs[i % cq]), want, calls, tk._w8a16, configs=configs)
        del wbs, qs


def _w1a16_rows(s: _Sweep):
    torch = s.torch
    import torch.nn.functional as F

    from pycomp.triton_kernels import binary as tk

    (n, k), ms = W1A16
    gen = torch.Generator(device=DEVICE).manual_seed(2)
    words = torch.randint(-2**31, 2**31, (n, k // 32), generator=gen, device=DEVICE, dtype=torch.int64).to(torch.int32)
    bits = (words.to(torch.int64)[:, :, None] >> torch.arange(32, device=DEVICE)) & 1
    alpha = (torch.rand(n, 1, generator=gen, device=DEVICE) + 0.5) / math.sqrt(k)
    w = (1.0 - 2.0 * bits.reshape(n, k).float()) * alpha
    del bits
    packed = words.view(torch.uint32)
    cb, cq = _copies(n * k * 2, s.l2), _copies(packed.numel() * 4, s.l2)
    wbs = [w.bfloat16() for _ in range(cb)]
    qs = [(packed.clone(), alpha.clone()) for _ in range(cq)]
    calls = 2 * max(cb, cq)
    for m in ms:
        x = torch.randn(m, k, device=DEVICE, dtype=torch.bfloat16)
        want = x.float() @ w.t()
        configs = [(cfg_str(c), lambda i, c=c, x=x, qs=qs, cq=cq: tk.w1a16_linear(x, *qs[i % cq], 0, None,
                                                                                  config=_fixed(c)))
                   for c in tk._CONFIGS_BY_BUCKET[min(max(16, 1 << (m - 1).bit_length()), 512)]]
        s.row("W1A16", (n, k), m, lambda i, x=x, wbs=wbs, cb=cb: F.linear(x, wbs[i % cb]),
              lambda i, x=x, qs=qs, cq=cq: tk.w1a16_linear(x, *qs[i % cq], 0, None), want, calls, tk._w1a16,
              configs=configs)


def _rows(h) -> list[dict]:
    torch = h.torch
    if DEVICE == "cuda" and not torch.cuda.is_available():
        return []
    s = _Sweep(h)
    for part in (_w8a8_rows, _w4a16_rows, _int8_rows, _w1a16_rows):
        if s.left() <= 0:
            s.rows.append({"kernel": part.__name__[1:-5], "shape": "-", "m": 0, "notes": ["skipped: time budget"],
                           "configs": []})
            continue
        try:
            part(s)
        except Exception as exc:  # a setup failure (an import, an API) must not hide the other parts
            s.rows.append({"kernel": part.__name__[1:-5], "shape": "-", "m": 0, "configs": [],
                           "notes": [f"FAILED {type(exc).__name__}: {str(exc)[:160]}"]})
        if DEVICE == "cuda":
            torch.cuda.empty_cache()
    s.per_config()
    s.later.clear()
    return s.rows


def _ratio(base, ms) -> str:
    return f"{base / ms:.2f}x" if base and ms else "-"


def _table(rows: list[dict], h=None) -> str:
    lines = ["Triton GEMMs, bf16 activations, cold weights, us; ratio = bf16 / ours; best = the autotuner's choice "
             "(token tile x weight rows x K, stages, warps)",
             f"{'kernel':7s} {'shape':11s} {'M':>5s} {'bf16':>7s} {'ours':>7s} {'ratio':>6s} {'target':>6s} "
             f"{'gemm':>7s} {'quant':>6s}  best"]
    for r in rows:
        target = TARGETS.get((r["kernel"], r["m"]))
        lines.append(f"{r['kernel']:7s} {r['shape']:11s} {r['m']:5d} {_us(r.get('bf16_ms')):>7s} "
                     f"{_us(r.get('ours_ms')):>7s} {_ratio(r.get('bf16_ms'), r.get('ours_ms')):>6s} "
                     f"{(f'{target:.2f}x' if target else '-'):>6s} {_us(r.get('gemm_ms')):>7s} "
                     f"{_us(r.get('quant_ms')):>6s}  {r.get('best', '-')}" + "".join(f"; {n}" for n in r["notes"]))
        if r["configs"]:
            lines.append("    configs: " + " | ".join(f"{label} {_us(ms) if ms else note}"
                                                    for label, ms, note in r["configs"]))
    return "\n".join(lines)


def _timed_table(h) -> tuple[list[dict], str]:
    t0 = time.time()
    rows = _rows(h)
    # The wall time, compiles and autotuning included, against gpu_check's 25 s for the sweep.
    return rows, _table(rows, h) + (f"\nsweep took {time.time() - t0:.1f} s" if rows else "")


def sweep(h) -> str:
    try:
        return _timed_table(h)[1]
    except Exception as exc:  # never raise into gpu_check
        return f"triton sweep FAILED: {type(exc).__name__}: {exc}"


def bench(h) -> tuple[list[dict], str]:
    try:
        return _timed_table(h)
    except Exception as exc:
        return [], f"triton sweep FAILED: {type(exc).__name__}: {exc}"
