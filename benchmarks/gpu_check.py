#!/usr/bin/env python3
"""Build, check and time every GPU kernel in one run (under 8 minutes on an H100/H200).

    python3 benchmarks/gpu_check.py            # build in place, run the GPU tests, time, print the table last
    python3 benchmarks/gpu_check.py --no-build --no-tests

Steps:
  1. build pycomp._C in place with the CUDA kernels (`setup.py build_ext --inplace`,
     PYCOMP_CUDA=1): pip's build isolation cannot reach a registry on the GPU machine;
  2. run the GPU tests (tests/test_cuda_int8.py, tests/test_triton_int8.py) on the card;
  3. time each kernel against cuBLAS bf16 F.linear and torch._int_mm, cold weights
     (copies rotated beyond 4x the L2), CUDA-graph replays timed with events, median
     of >= 5; every row checks its output against the reference op first.
Writes gpu_check.json (and the log) under $OUT when that is set.
"""
from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHAPES = [(4096, 4096), (14336, 4096)]
MS = [1, 16, 128, 1024]


def log(msg: str) -> None:
    print(msg, flush=True)


def build() -> float:
    t0 = time.time()
    env = dict(os.environ, PYCOMP_CUDA="1", MAX_JOBS=os.environ.get("MAX_JOBS", "16"))
    subprocess.run([sys.executable, "setup.py", "-q", "build_ext", "--inplace"], cwd=ROOT, env=env, check=True)
    return time.time() - t0


def import_from_tree():
    """Import pycomp from this source tree, with triton_kernels where the installed layout puts it."""
    sys.path.insert(0, ROOT)
    tk = importlib.import_module("triton_kernels")
    sys.modules["pycomp.triton_kernels"] = tk
    sys.modules["pycomp.triton_kernels.int8"] = importlib.import_module("triton_kernels.int8")
    import pycomp  # noqa: F401

    return pycomp


def run_tests() -> int:
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cmd = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "tests/test_cuda_int8.py",
           "tests/test_triton_int8.py", "tests/test_ops_int8.py", "tests/test_nn_int8.py"]
    try:
        return subprocess.run(cmd, cwd=ROOT, env=env, timeout=200).returncode
    except subprocess.TimeoutExpired:  # keep the timing budget: report and go on
        log("GPU tests: stopped after 200 s")
        return -1


def ceilings(torch) -> dict:
    """Measured on this card: device copy bandwidth and a large bf16 matmul."""
    n = 1 << 30
    a = torch.empty(n, dtype=torch.uint8, device="cuda")
    b = torch.empty_like(a)
    copy_ms = time_graph(torch, lambda i: b.copy_(a), calls=10)
    x = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    mm_ms = time_graph(torch, lambda i: x @ x, calls=10)
    del a, b, x
    return {"copy_tb_s": 2 * n / copy_ms / 1e9, "bf16_tflops": 2 * 8192**3 / mm_ms / 1e9}


def time_graph(torch, fn, calls: int, replays: int = 7) -> float:
    """Milliseconds per fn(i) call: `calls` calls captured in one CUDA graph, median of `replays` replays."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for i in range(3):  # warm-up outside the graph: autotuning, lazy module loading
            fn(i)
    torch.cuda.current_stream().wait_stream(stream)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for i in range(calls):
            fn(i)
    graph.replay()
    torch.cuda.synchronize()
    times = []
    for _ in range(replays):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / calls)
    del graph
    return statistics.median(times)


def rel_err(got, want) -> float:
    return float((got.double() - want.double()).norm() / want.double().norm().clamp_min(1e-30))


def bench(torch, pycomp) -> list[dict]:
    import torch.nn.functional as F

    from pycomp import _ext
    from pycomp.ops import int8 as ops
    from pycomp.quantize.int8 import quantize_weight_int8

    C, tk = _ext._C, _ext.triton_int8()
    l2 = torch.cuda.get_device_properties(0).L2_cache_size
    rows = []
    for n, k in SHAPES:
        torch.manual_seed(0)
        w = torch.randn(n, k, device="cuda") / math.sqrt(k)
        q, s = quantize_weight_int8(w)
        wb = w.bfloat16()
        copies_b = max(2, math.ceil(4 * l2 / (n * k * 2)) + 1)
        copies_q = max(2, math.ceil(4 * l2 / (n * k)) + 1)
        wbs = [wb.clone() for _ in range(copies_b)]
        qs = [(q.clone(), s.clone()) for _ in range(copies_q)]
        qts = [qq.t() for qq, _ in qs]
        calls = 2 * max(copies_b, copies_q)
        for m in MS:
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
            for name, (fn, ref) in impls.items():
                try:
                    if ref is not None:
                        err = rel_err(fn(0), ref)
                        row[f"{name}_err"] = err
                        if not err < 2e-2:
                            row[f"{name}_ms"] = None
                            log(f"  WRONG {name} {n}x{k} M={m}: rel err {err:.2e}")
                            continue
                    row[f"{name}_ms"] = time_graph(torch, fn, calls)
                except Exception as exc:  # one broken kernel must not hide the others' numbers
                    row[f"{name}_ms"] = None
                    log(f"  FAILED {name} {n}x{k} M={m}: {type(exc).__name__}: {exc}")
            rows.append(row)
            log(f"  {n}x{k} M={m}: " + ", ".join(f"{kk[:-3]} {v * 1e3:.1f}us" for kk, v in row.items()
                                                   if kk.endswith("_ms") and v))
        del wbs, qs, qts
        torch.cuda.empty_cache()
    return rows


def table(rows: list[dict], ceil: dict) -> str:
    def us(v):
        return f"{v * 1e3:8.1f}" if v else "       -"

    def x(base, v):
        return f"{base / v:5.2f}x" if v and base else "     -"

    lines = [f"ceilings: copy {ceil['copy_tb_s']:.2f} TB/s, bf16 matmul {ceil['bf16_tflops']:.0f} TFLOP/s",
             "shape       M     bf16us  W8A16us  ratio  W8A8us  ratio  intmm_us ratio  | cuda16  trit16  cuda8  trit8"
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


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--no-build", action="store_true")
    p.add_argument("--no-tests", action="store_true")
    args = p.parse_args()
    t0 = time.time()
    result: dict = {}
    if not args.no_build:
        result["build_s"] = build()
        log(f"built in {result['build_s']:.0f} s")
    pycomp = import_from_tree()
    import torch

    from pycomp.benchmark.machine import machine_info

    result["machine"] = machine_info()
    result["build_info"] = pycomp._ext._C.build_info() if pycomp._ext._C is not None else pycomp._ext.C_ERROR
    log(f"machine: {result['machine']}\nbuild: {result['build_info']}")
    if not torch.cuda.is_available():
        log("no CUDA device: nothing to time")
        return 1
    if not args.no_tests:
        result["tests_rc"] = run_tests()
        log(f"GPU tests: {'passed' if result['tests_rc'] == 0 else 'FAILED rc=%d' % result['tests_rc']}")
    ceil = ceilings(torch)
    result["ceilings"] = ceil
    result["rows"] = bench(torch, pycomp)
    result["total_s"] = time.time() - t0
    out = os.environ.get("OUT")
    if out:
        with open(os.path.join(out, "gpu_check.json"), "w") as f:
            json.dump(result, f, indent=1)
    log(f"\n== gpu_check ({result['machine'].get('gpu')}, torch {result['machine']['torch']}, "
        f"triton {result['machine']['triton']}, {result['total_s']:.0f} s) ==")
    log(table(result["rows"], ceil))
    return 0 if result.get("tests_rc", 0) == 0 else 2


if __name__ == "__main__":
    sys.exit(main())
