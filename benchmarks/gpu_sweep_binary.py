"""Variant sweep of the binary CUDA kernels on 14336x4096, for the lead's GPU run: every `variant` of
w1a16_gemv_cuda (M = 1, 4, 16) and xnor_gemm_cuda (M = 1024, 4096) is checked against its reference
(relative error < 2e-2, else WRONG and not timed), then timed beside cuBLAS bf16 F.linear with cold
weights (copies rotated beyond 4x the L2), as CUDA-graph replays.

Targets (issue 4): W1A16 at M=1 >= 8x bf16; XNOR at M=4096 >= 5x the bf16 GEMM. Variants
(csrc/cuda/binary/binary_cuda.h): W1A16 0 = fp32 sign-flip FMAs, 1 = bits expanded to +-1 pairs for
mma.sync m16n8k16, 3 = as 1 with x staged once per block in shared memory as B-fragment pairs,
alpha/bias loaded up front (4 warps split K), 4 = as 3 with 8 warps (twice the warps per SM); XNOR 0 =
64x32 warp tiles, 2 stages, 1 = 64x64 warp tiles, 4-stage ldmatrix ring, vectorized binarization,
3 = persistent blocks holding a 128-row A block and whole-K 128-row W tiles in shared memory, two warp
groups of 64x64 warp tiles taking the tiles in turn (one's epilogue under the other's mmas), 4 = as 3
with the outputs staged and stored as whole 16-byte chunks, 5 = as 4 with the weight popcounts counted
in the kernel (no popc launch), 6 / 7 = 4 / 5 with 256-row A blocks and 64-row W tiles (half the W
copies from L2), their whole call binarizing by binarization variant 2 (8 loads per lane in flight;
0-1 by their own number, 3-5 by 1). W1A16 2 and XNOR 2 lost on both session-5 runs and are gone.
The XNOR rows "vN" time the whole binding call; "vN:bin" (binarization variant N = 0, 1, 2), "popc" (the
weights' row popcounts, recomputed every call but by variants 5 and 7) and "vN:gemm" (the GEMM alone on
precomputed bits) split it.

`sweep(h) -> str` (h: gpu_check's helper namespace: torch, time_graph, rel_err, log) never raises; as
a file named gpu_*.py it is also a gpu_check family: `bench(h) -> (rows, table)`. It took 1 s on the H200
in run 2, before the round-2 rows (W1A16 3, 4 and the XNOR split) were added.
"""
from __future__ import annotations

import math

NAME = "sweep_binary"
SHAPE = (14336, 4096)
W1A16_MS = (1, 4, 16)
XNOR_MS = (1024, 4096)
W1A16_VARIANTS = (0, 1, 3, 4)
XNOR_VARIANTS = (0, 1, 3, 4, 5, 6, 7)
BINARIZE_VARIANTS = (0, 1, 2)


def binarize_variant(v: int) -> int:
    """The binarization XNOR variant v's whole call runs (xnor_binarize_variant in binary_bindings.h)."""
    return 0 if v == 0 else (2 if v >= 6 else 1)


def _time(h, fn, want, calls, view=None) -> dict:
    """{"ms", "err", "note"}: view(fn(0)) (fn(0) without view) checked against want (when given), then timed;
    never raises."""
    try:
        err = None
        if want is not None:
            got = fn(0)
            err = h.rel_err(view(got) if view else got, want)
            if not err < 2e-2:
                return {"ms": None, "err": err, "note": "WRONG"}
        return {"ms": h.time_graph(h.torch, fn, calls), "err": err, "note": ""}
    except Exception as exc:  # one broken variant must not hide the others
        return {"ms": None, "err": None, "note": f"FAILED {type(exc).__name__}: {str(exc)[:120]}"}


def _rows(h) -> list[dict]:
    torch = h.torch
    import torch.nn.functional as F

    from pycomp import _ext
    from pycomp.formats.binary import binarize_weight, dequantize_binary, unpack_signs

    C = _ext._C
    n, k = SHAPE
    l2 = torch.cuda.get_device_properties(0).L2_cache_size
    torch.manual_seed(0)
    w = torch.randn(n, k, device="cuda") / math.sqrt(k)
    packed, alpha = binarize_weight(w)
    copies_b = max(2, math.ceil(4 * l2 / (n * k * 2)) + 1)
    copies_p = max(2, math.ceil(4 * l2 / packed.nbytes) + 1)
    wbs = [w.bfloat16() for _ in range(copies_b)]
    ps = [(packed.clone(), alpha.clone()) for _ in range(copies_p)]
    calls = 2 * max(copies_b, copies_p)
    w_deq = dequantize_binary(packed, alpha, k)  # fp32 (N, K)
    sign_w = unpack_signs(packed, k)
    popc_ref = sign_w.lt(0).sum(1).float()
    rows = []

    def add(op, m, impl, fn, want, view=None):
        r = {"op": op, "m": m, "impl": impl, **_time(h, fn, want, calls, view)}
        rows.append(r)
        ms = f"{r['ms'] * 1e3:.1f}us" if r["ms"] else r["note"]
        h.log(f"  sweep_binary {op} {n}x{k} M={m} {impl}: {ms}")

    for m in W1A16_MS:
        x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
        ref = x.float() @ w_deq.t()
        add("w1a16", m, "bf16", lambda i, x=x: F.linear(x, wbs[i % copies_b]), None)
        for v in W1A16_VARIANTS:
            add("w1a16", m, f"v{v}", lambda i, x=x, v=v: C.w1a16_gemv_cuda(x, *ps[i % copies_p], 0, None, v), ref)
    for m in XNOR_MS:
        x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
        xf = x.float()
        dots = torch.where(xf < 0, -1.0, 1.0) @ sign_w.t()  # exact in fp32: |dot| <= K < 2^24
        ref = dots * xf.abs().mean(1, keepdim=True) * alpha.t()
        del xf, dots
        add("xnor", m, "bf16", lambda i, x=x: F.linear(x, wbs[i % copies_b]), None)
        beta_ref = x.float().abs().mean(1)
        for v in XNOR_VARIANTS:
            add("xnor", m, f"v{v}", lambda i, x=x, v=v: C.xnor_gemm_cuda(x, *ps[i % copies_p], 0, None, v), ref)
        for vb in BINARIZE_VARIANTS:
            add("xnor", m, f"v{vb}:bin", lambda i, x=x, vb=vb: C.binarize_per_token_cuda(x, vb), beta_ref,
                view=lambda r: r[1])
        for v in XNOR_VARIANTS:
            vb = binarize_variant(v)
            try:  # the GEMM alone needs the parts; a failure here is already on the rows above
                bits, beta, popc_a = C.binarize_per_token_cuda(x, vb)
                pws = [C.popc_rows_cuda(p) for p, _ in ps]
            except Exception:
                continue
            if v in (5, 7):  # they count the popcounts themselves: their GEMM rows include that work
                pws = [None] * len(ps)
            add("xnor", m, f"v{v}:gemm", lambda i, x=x, v=v, bits=bits, beta=beta, popc_a=popc_a, pws=pws:
                C.xnor_gemm_bits_cuda(bits, beta, popc_a, *ps[i % copies_p], pws[i % copies_p], k, x, None, v), ref)
            del bits, beta, popc_a, pws
        add("xnor", m, "popc", lambda i: C.popc_rows_cuda(ps[i % copies_p][0]), popc_ref, view=lambda r: r.float())
        del ref, beta_ref
    del wbs, ps
    torch.cuda.empty_cache()
    return rows


def _table(rows: list[dict], h=None) -> str:
    n, k = SHAPE
    lines = [f"binary variants {n}x{k} (bf16 x, cold weights)",
             "op     M     impl           us   vs bf16   throughput   rel err   note"]
    base = {(r["op"], r["m"]): r["ms"] for r in rows if r["impl"] == "bf16"}
    for r in rows:
        ms, b = r["ms"], base.get((r["op"], r["m"]))
        if not ms:
            thr = ""
        elif r["impl"].endswith(":bin"):  # reads x, writes bits
            thr = f"{r['m'] * k * 2 / ms / 1e6:7.0f} GB/s"
        elif r["impl"] == "popc":
            thr = f"{n * math.ceil(k / 32) * 4 / ms / 1e6:7.0f} GB/s"
        elif r["op"] == "xnor":
            thr = f"{2 * r['m'] * n * k / ms / 1e9:7.0f} TOP/s"
        else:
            wbytes = n * k * 2 if r["impl"] == "bf16" else n * math.ceil(k / 32) * 4 + n * 4
            thr = f"{(wbytes + r['m'] * (k + n) * 2) / ms / 1e6:7.0f} GB/s"
        us = f"{ms * 1e3:9.1f}" if ms else "        -"
        ratio = f"{b / ms:7.2f}x" if ms and b else "       -"
        err = f"{r['err']:.1e}" if r.get("err") is not None else "-"
        lines.append(f"{r['op']:6s} {r['m']:5d} {r['impl']:8s} {us} {ratio}  {thr:13s} {err:>8s}   {r['note']}")
    return "\n".join(lines)


def sweep(h) -> str:
    try:
        return _table(_rows(h))
    except Exception as exc:  # the lead's run must go on
        return f"sweep_binary FAILED: {type(exc).__name__}: {str(exc)[:300]}"


def bench(h) -> tuple[list[dict], str]:
    try:
        rows = _rows(h)
    except Exception as exc:
        return [], f"sweep_binary FAILED: {type(exc).__name__}: {str(exc)[:300]}"
    return rows, _table(rows)
