"""int8 rows of benchmarks/gpu_check.py: W8A16 and W8A8 against cuBLAS bf16 and torch._int_mm.

A family module of gpu_check exposes `bench(h) -> (rows, table)`; `h` is gpu_check's
helper namespace (torch, pycomp, time_graph, rel_err, log, ceilings, SHAPES, MS).
"""
from __future__ import annotations

import math

NAME = "int8"


def _rows(h) -> list[dict]:
    torch, time_graph, rel_err, log = h.torch, h.time_graph, h.rel_err, h.log
    import torch.nn.functional as F

    from pycomp import _ext
    from pycomp.ops import int8 as ops
    from pycomp.quantize.int8 import quantize_weight_int8

    C, tk = _ext._C, _ext.triton_int8()
    rows = []
    for n, k in h.SHAPES:
        torch.manual_seed(0)
        w = torch.randn(n, k, device="cuda") / math.sqrt(k)
        q, s = quantize_weight_int8(w)
        wb = w.bfloat16()
        copies_b = h.cold_copies(n * k * 2)
        copies_q = h.cold_copies(n * k)
        wbs = [wb.clone() for _ in range(copies_b)]
        qs = [(q.clone(), s.clone()) for _ in range(copies_q)]
        qts = [qq.t() for qq, _ in qs]
        calls = 2 * max(copies_b, copies_q)
        for m in h.MS:
            x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
            xq, xs = ops.quantize_per_token_int8(x)
            row = {"shape": f"{n}x{k}", "m": m, "copies": [copies_b, copies_q],
                   "w8a16_backend": ops.plan("weight_only", "cuda", m, k), "w8a8_backend": ops.plan("dynamic", "cuda", m, k)}
            # float32 on the card (float64 would take seconds here): rel. error ~1e-6, far below the 2e-2 bar
            ref16 = x.float() @ (q.float() * s[:, None]).t()
            ref8 = (xq.float() @ q.float().t()) * xs[:, None] * s
            impls = {
                "bf16": (lambda i: F.linear(x, wbs[i % copies_b]), None),
                "w8a16": (lambda i: ops.int8_linear_weight_only(x, *qs[i % copies_q]), ref16),
                "w8a8": (lambda i: ops.int8_linear_dynamic(x, *qs[i % copies_q]), ref8),
            }
            if C is not None and hasattr(C, "w8a16_linear_cuda") and m <= 16:
                impls["w8a16_cuda"] = (lambda i: C.w8a16_linear_cuda(x, *qs[i % copies_q]), ref16)
            if C is not None and hasattr(C, "w8a8_gemm_cuda"):
                impls["w8a8_cuda_gemm"] = (
                    lambda i: C.w8a8_gemm_cuda(xq, xs, *qs[i % copies_q], None, torch.bfloat16), ref8)
            if tk is not None:
                impls["w8a16_triton"] = (lambda i: tk.w8a16_linear(x, *qs[i % copies_q]), ref16)
                impls["w8a8_triton_gemm"] = (
                    lambda i: tk.int8_gemm_dequant(xq, xs, *qs[i % copies_q], None, torch.bfloat16), ref8)
            if m > 16:
                impls["int_mm"] = (lambda i: torch._int_mm(xq, qts[i % copies_q]), None)
            rows.append(h.measure(row, impls, calls, f"{n}x{k} M={m}"))
        del wbs, qs, qts
        torch.cuda.empty_cache()
    return rows


def _table(rows: list[dict], h) -> str:
    us, x, ceil = h.us, h.ratio, h.ceilings
    lines = ["shape       M     bf16us  W8A16us  ratio  W8A8us  ratio  intmm_us ratio  | cuda16  trit16  cuda8  trit8"
             "  | W8A16 GB/s   W8A8 TOP/s"]
    for r in rows:
        b = r.get("bf16_ms")
        n, k = (int(v) for v in r["shape"].split("x"))
        gbs = n * k / r["w8a16_ms"] / 1e6 if r.get("w8a16_ms") else 0
        tops = 2 * r["m"] * n * k / r["w8a8_ms"] / 1e9 if r.get("w8a8_ms") else 0
        lines.append(
            f"{r['shape']:10s} {r['m']:5d} {us(b)} {us(r.get('w8a16_ms'))} {x(b, r.get('w8a16_ms'))} "
            f"{us(r.get('w8a8_ms'))} {x(b, r.get('w8a8_ms'))} {us(r.get('int_mm_ms'))} {x(b, r.get('int_mm_ms'))} | "
            f"{us(r.get('w8a16_cuda_ms'))} {us(r.get('w8a16_triton_ms'))} {us(r.get('w8a8_cuda_gemm_ms'))} "
            f"{us(r.get('w8a8_triton_gemm_ms'))} | {gbs:7.0f} ({100 * gbs / 1e3 / ceil['copy_tb_s']:3.0f}%) "
            f"{tops:7.0f}")
    return "\n".join(lines)



def bench(h) -> tuple[list[dict], str]:
    rows = _rows(h)
    return rows, _table(rows, h)
