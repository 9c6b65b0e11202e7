"""int4 rows of benchmarks/gpu_check.py: W4A16 against cuBLAS bf16 F.linear, with tinygemm beside it.

A family module of gpu_check exposes `bench(h) -> (rows, table)`; `h` is gpu_check's
helper namespace (torch, pycomp, time_graph, rel_err, log, ceilings, SHAPES, MS).

Rows: the CUDA dispatcher pycomp.ops.int4_cuda.cuda_impl (GEMV for M <= 16, Triton
above), the CUDA GEMV and the Triton GEMM called directly, and torch's tinygemm
(torch._weight_int4pack_mm on torch._convert_weight_to_int4pack) on the same codes,
scales and zero points. Asymmetric int4, group size 128, bf16 activations. Weights
are cold: copies rotated beyond 4x the L2; every kernel's output is checked against
x @ dequantize_int4(...).T in float32 before it is timed.
"""
from __future__ import annotations

import math

NAME = "int4"
SHAPES = [(14336, 4096), (28672, 8192)]  # (N, K)
MS = [1, 4, 8, 16, 128, 1024]
GROUP_SIZE = 128
# Speed-up over bf16 the W4A16 path should reach, per M.
TARGETS = {1: 3.0, 16: 2.5, 128: 1.3, 1024: 0.95}


def _random_int4(torch, n, k, gen):
    """Random codes and zero points, scales ~ 1/sqrt(K): a unit-variance-output layer in the k-nibble format."""
    g = k // GROUP_SIZE
    codes = torch.randint(0, 16, (n, k), generator=gen, device="cuda", dtype=torch.uint8)
    zeros = torch.randint(4, 12, (n, g), generator=gen, device="cuda", dtype=torch.uint8)
    scales = ((torch.rand(n, g, generator=gen, device="cuda") + 0.5) * 0.35 / math.sqrt(k)).half()
    packed = (codes[:, 0::2] | (codes[:, 1::2] << 4)).contiguous()
    return codes, packed, scales, zeros


def _tinygemm_weights(torch, codes, scales, zeros):
    """tinygemm's form of the same weight: even column in the high nibble, w = (q - 8) * s + (8 - z) * s."""
    hi_first = (codes[:, 0::2] << 4 | codes[:, 1::2]).contiguous()
    wpack = torch._convert_weight_to_int4pack(hi_first, 8)
    s = scales.float()
    szs = torch.stack([s, (8.0 - zeros.float()) * s], dim=2).transpose(0, 1).contiguous().bfloat16()  # (G, N, 2)
    return wpack, szs


def _rows(h) -> list[dict]:
    torch, time_graph, rel_err, log = h.torch, h.time_graph, h.rel_err, h.log
    import torch.nn.functional as F

    from pycomp import _ext
    from pycomp.formats.int4 import dequantize_int4
    from pycomp.ops import int4_cuda

    C, tk = _ext._C, int4_cuda.triton_int4()
    has_gemv = C is not None and hasattr(C, "w4a16_linear_cuda")
    rows = []
    for n, k in SHAPES:
        gen = torch.Generator(device="cuda").manual_seed(0)
        codes, packed, scales, zeros = _random_int4(torch, n, k, gen)
        w = dequantize_int4(packed, scales, zeros, GROUP_SIZE, k)  # float32, exact
        wb = w.bfloat16()
        q_bytes = packed.numel() + scales.numel() * 2 + zeros.numel()
        copies_b = h.cold_copies(n * k * 2)
        copies_q = h.cold_copies(q_bytes)
        wbs = [wb.clone() for _ in range(copies_b)]
        qs = [(packed.clone(), scales.clone(), zeros.clone()) for _ in range(copies_q)]
        tiny = None
        try:
            tiny = [_tinygemm_weights(torch, codes, scales, zeros) for _ in range(copies_q)]
        except Exception as exc:  # an API change must not hide the other rows
            log(f"  tinygemm unavailable: {type(exc).__name__}: {exc}")
        del codes, wb
        calls = 2 * max(copies_b, copies_q)
        for m in MS:
            x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
            ref = x.float() @ w.t()
            row = {"shape": f"{n}x{k}", "m": m, "copies": [copies_b, copies_q], "q_bytes": q_bytes,
                   "backend": int4_cuda.plan_cuda(m, k, torch.bfloat16)}
            impls = {
                "bf16": (lambda i: F.linear(x, wbs[i % copies_b]), None),
                "w4a16": (lambda i: int4_cuda.cuda_impl(x, *qs[i % copies_q], None, GROUP_SIZE, k), ref),
            }
            if has_gemv and m <= 16:
                impls["cuda"] = (lambda i: C.w4a16_linear_cuda(x, *qs[i % copies_q], None, GROUP_SIZE,
                                                                     int4_cuda.gemv_variant(m)), ref)
            if tk is not None and m >= 16:
                impls["triton"] = (lambda i: tk.w4a16_linear(x, *qs[i % copies_q], None, GROUP_SIZE, k), ref)
            if tiny is not None:
                impls["tinygemm"] = (lambda i: torch._weight_int4pack_mm(x, tiny[i % copies_q][0], GROUP_SIZE,
                                                                         tiny[i % copies_q][1]), ref)
            rows.append(h.measure(row, impls, calls, f"{n}x{k} M={m}"))
        del wbs, qs, tiny, w
        torch.cuda.empty_cache()
    return rows


def _table(rows: list[dict], h) -> str:
    us, x, ceil = h.us, h.ratio, h.ceilings
    lines = [f"W4A16, asymmetric, group {GROUP_SIZE}, bf16 activations; ratio = bf16 time / int4 time",
             "shape        M     bf16us  W4A16us  ratio target ok backend | cuda_us  triton_us | tinygemm_us ratio"
             " | W4A16 GB/s"]
    for r in rows:
        b, v = r.get("bf16_ms"), r.get("w4a16_ms")
        target = TARGETS.get(r["m"])
        ok = "-" if not (b and v and target) else ("yes" if b / v >= target else "NO")
        gbs = r["q_bytes"] / v / 1e6 if v else 0
        lines.append(
            f"{r['shape']:11s} {r['m']:5d} {us(b)} {us(v)} {x(b, v)} {target or 0:5.2f}x {ok:3s} {r['backend']:7s} | "
            f"{us(r.get('cuda_ms'))} {us(r.get('triton_ms'))}   | {us(r.get('tinygemm_ms'))}    "
            f"{x(b, r.get('tinygemm_ms'))} | {gbs:7.0f} ({100 * gbs / 1e3 / ceil['copy_tb_s']:3.0f}%)")
    return "\n".join(lines)


def bench(h) -> tuple[list[dict], str]:
    rows = _rows(h)
    return rows, _table(rows, h)
