"""binary rows of benchmarks/gpu_check.py: W1A16 (CUDA GEMV, Triton) and the XNOR b1 tensor-core GEMM
against cuBLAS bf16, on 14336x4096 (about 30 s on an H100).

Targets (issue 4): W1A16 at M=1 >= 8x bf16 (ideal about 15x by bytes); XNOR at M=4096 >= 5x the bf16
GEMM. A family module of gpu_check exposes `bench(h) -> (rows, table)`; `h` is gpu_check's helper
namespace (torch, pycomp, time_graph, rel_err, log, ceilings, SHAPES, MS).
"""
from __future__ import annotations

import math

NAME = "binary"
SHAPE = (14336, 4096)
W1A16_MS = (1, 16, 128)
XNOR_MS = (1024, 4096)


def _rows(h) -> list[dict]:
    torch, time_graph, rel_err, log = h.torch, h.time_graph, h.rel_err, h.log
    import torch.nn.functional as F

    from pycomp import _ext
    from pycomp.formats.binary import binarize_weight, dequantize_binary, unpack_signs
    from pycomp.ops import binary as ops

    C, tk = _ext._C, ops.triton_binary()
    n, k = SHAPE
    torch.manual_seed(0)
    w = torch.randn(n, k, device="cuda") / math.sqrt(k)
    packed, alpha = binarize_weight(w)
    wb = w.bfloat16()
    copies_b = h.cold_copies(n * k * 2)
    copies_p = h.cold_copies(n * k / 8)
    wbs = [wb.clone() for _ in range(copies_b)]
    ps = [(packed.clone(), alpha.clone()) for _ in range(copies_p)]
    calls = 2 * max(copies_b, copies_p)
    w_deq = dequantize_binary(packed, alpha, k)  # fp32 (N, K)
    sign_w = unpack_signs(packed, k)
    rows = []
    for m in sorted(set(W1A16_MS) | set(XNOR_MS)):
        x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
        row = {"shape": f"{n}x{k}", "m": m, "copies": [copies_b, copies_p],
               "w1a16_backend": ops.plan("w1a16", "cuda", m, torch.bfloat16, k),
               "xnor_backend": ops.plan("xnor", "cuda", m, torch.bfloat16, k)}
        impls = {"bf16": (lambda i: F.linear(x, wbs[i % copies_b]), None)}
        if m in W1A16_MS:
            ref16 = x.float() @ w_deq.t()  # fp32 on the card: rel. error ~1e-6, far below the 2e-2 bar
            impls["w1a16"] = (lambda i: ops.w1a16_linear(x, *ps[i % copies_p]), ref16)
            if C is not None and hasattr(C, "w1a16_gemv_cuda") and m <= 16:
                impls["w1a16_cuda"] = (lambda i: C.w1a16_gemv_cuda(x, *ps[i % copies_p], 0, None, 1), ref16)
            if tk is not None:
                impls["w1a16_triton"] = (lambda i: tk.w1a16_linear(x, *ps[i % copies_p], 0), ref16)
        if m in XNOR_MS:
            xf = x.float()
            sx = torch.where(xf < 0, -1.0, 1.0)
            dots = sx @ sign_w.t()  # exact in fp32: |dot| <= K < 2^24
            ref1 = dots * xf.abs().mean(1, keepdim=True) * alpha.t()
            impls["xnor"] = (lambda i: ops.xnor_linear(x, *ps[i % copies_p]), ref1)
        rows.append(h.measure(row, impls, calls, f"binary {n}x{k} M={m}"))
    del wbs, ps
    torch.cuda.empty_cache()
    return rows


def _table(rows: list[dict], ceil: dict) -> str:
    def us(v):
        return f"{v * 1e3:9.1f}" if v else "        -"

    def x(base, v):
        return f"{base / v:6.2f}x" if v and base else "      -"

    lines = ["shape          M    bf16us  W1A16us   ratio  cuda_us  trit_us |  XNORus   ratio  XNOR TOP/s  (bf16 "
             f"ceiling {ceil['bf16_tflops']:.0f} TFLOP/s)   backends"]
    for r in rows:
        b = r.get("bf16_ms")
        n, k = (int(v) for v in r["shape"].split("x"))
        tops = 2 * r["m"] * n * k / r["xnor_ms"] / 1e9 if r.get("xnor_ms") else 0
        lines.append(
            f"{r['shape']:12s} {r['m']:5d} {us(b)} {us(r.get('w1a16_ms'))} {x(b, r.get('w1a16_ms'))} "
            f"{us(r.get('w1a16_cuda_ms'))} {us(r.get('w1a16_triton_ms'))} | {us(r.get('xnor_ms'))} "
            f"{x(b, r.get('xnor_ms'))} {tops:10.0f}   {r['w1a16_backend']}, {r['xnor_backend']}")
    return "\n".join(lines)


def bench(h) -> tuple[list[dict], str]:
    rows = _rows(h)
    return rows, _table(rows, h.ceilings)
