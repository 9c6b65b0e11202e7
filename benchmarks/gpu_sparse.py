"""2:4 rows of benchmarks/gpu_check.py: pycomp's mma.sp kernels against cuBLAS bf16, with torch's
`to_sparse_semi_structured` (CUTLASS / cuSPARSELt) beside them.

A family module of gpu_check exposes `bench(h) -> (rows, table)`; `h` is gpu_check's helper namespace
(torch, pycomp, time_graph, rel_err, log, ceilings, SHAPES, MS). This family uses its own shapes
(14336x4096, 28672x8192) and M = 1, 16, 128, 1024; cold weights rotate beyond 4x the L2 cache.
Targets (issue 5): 2:4 at M=1 >= 1.5x cuBLAS bf16, at M=1024 >= 1.4x.
"""
from __future__ import annotations

import math

NAME = "sparse"
SHAPES = ((14336, 4096), (28672, 8192))
MS = (1, 16, 128, 1024)


def _rows(h) -> list[dict]:
    torch, time_graph, rel_err, log = h.torch, h.time_graph, h.rel_err, h.log
    import torch.nn.functional as F

    from pycomp import _ext
    from pycomp.formats import sparse as fmt
    from pycomp.ops import sparse as ops
    from pycomp.prune.nm import nm_mask

    C = _ext._C
    rows = []
    for n, k in SHAPES:
        torch.manual_seed(0)
        w = (torch.randn(n, k, device="cuda") / math.sqrt(k)).bfloat16()
        w = w * nm_mask(w)
        values, meta = fmt.pack_24(w)
        dense_copies = h.cold_copies(w.nbytes)
        sparse_copies = h.cold_copies(values.nbytes + meta.nbytes)
        ws = [w.clone() for _ in range(dense_copies)]
        packs = [(values.clone(), meta.clone()) for _ in range(sparse_copies)]
        try:
            from torch.sparse import to_sparse_semi_structured

            semis = [to_sparse_semi_structured(w.clone()) for _ in range(sparse_copies)]
        except Exception as exc:  # the peer is optional: print what stopped it
            semis = None
            log(f"  to_sparse_semi_structured unavailable: {type(exc).__name__}: {exc}")
        calls = 2 * max(dense_copies, sparse_copies)
        for m in MS:
            x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
            ref = x.float() @ w.float().t()  # float32 on the card: ~1e-6, far below the 2e-2 bar
            row = {"shape": f"{n}x{k}", "m": m, "copies": [dense_copies, sparse_copies],
                   "backend": ops.plan("2:4", "cuda", m, torch.bfloat16)}
            impls = {
                "bf16": (lambda i: F.linear(x, ws[i % dense_copies]), None),
                "ours": (lambda i: ops.sparse24_linear(x, *packs[i % sparse_copies], k), ref),
            }
            if C is not None and hasattr(C, "sparse24_gemm_cuda"):
                v = ops.CUDA_GEMV_VARIANT
                vm = ops.CUDA_GEMM_WIDE_VARIANT if m >= ops.CUDA_GEMM_WIDE_MIN_M else ops.CUDA_GEMM_VARIANT
                impls["ours_gemm"] = (lambda i: C.sparse24_gemm_cuda(x, *packs[i % sparse_copies], None, vm), ref)
                if m <= 16:
                    impls["ours_gemv"] = (lambda i: C.sparse24_gemv_cuda(x, *packs[i % sparse_copies], None, v), ref)
            if semis is not None:
                impls["semi"] = (lambda i: F.linear(x, semis[i % sparse_copies]), ref)
            rows.append(h.measure(row, impls, calls, f"{n}x{k} M={m}"))
        del ws, packs, semis
        torch.cuda.empty_cache()
    return rows


def _table(rows: list[dict], h) -> str:
    us, x, ceil = h.us, h.ratio, h.ceilings
    lines = ["2:4 (bf16): shape  M   bf16us   ours_us  ratio   semi_us  ratio | gemv_us  gemm_us | ours GB/s",
             "targets: ours M=1 >= 1.50x, M=1024 >= 1.40x; semi = torch.sparse.to_sparse_semi_structured"]
    for r in rows:
        b, o = r.get("bf16_ms"), r.get("ours_ms")
        n, k = (int(v) for v in r["shape"].split("x"))
        gbs = (n * k + n * k // 8) / o / 1e6 if o else 0  # kept bf16 values + int16 metadata
        lines.append(f"{r['shape']:>15s} {r['m']:5d} {us(b)} {us(o)} {x(b, o)} {us(r.get('semi_ms'))} "
                     f"{x(b, r.get('semi_ms'))} | {us(r.get('ours_gemv_ms'))} {us(r.get('ours_gemm_ms'))} | "
                     f"{gbs:7.0f} ({100 * gbs / 1e3 / ceil['copy_tb_s']:3.0f}%)")
    return "\n".join(lines)


def bench(h) -> tuple[list[dict], str]:
    rows = _rows(h)
    return rows, _table(rows, h)
