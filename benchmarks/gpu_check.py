#!/usr/bin/env python3
"""Build, check and time every GPU kernel in one run (under 8 minutes on an H100/H200).

    python3 benchmarks/gpu_check.py            # build in place, run the GPU tests, time, print the table last
    python3 benchmarks/gpu_check.py --no-build --no-tests

Steps:
  1. build pycomp._C in place with the CUDA kernels (`setup.py build_ext --inplace`,
     PYCOMP_CUDA=1): pip's build isolation cannot reach a registry on the GPU machine;
  2. time each kernel family (benchmarks/gpu_<family>.py, each exposing `bench(h) ->
     (rows, table)`) against cuBLAS bf16 F.linear and the peers of BENCHMARKING.md, cold
     weights (copies rotated beyond 4x the L2), CUDA-graph replays timed with events,
     median of >= 5; every row checks its output against the reference op first;
     then each sweep module (benchmarks/gpu_sweep_<name>.py, `sweep(h) -> table`), which
     checks and times kernel variants and tuning choices beside the same baselines, each in
     a process of its own (a new kernel that faults poisons its CUDA context; the rest of the
     run must not lose the card);
  3. run the GPU tests (tests/test_cuda_*.py, tests/test_triton_*.py, and the ops and
     layer tests) on the card in the time left (timing first: the targets are what a
     lent card is rare for, and every timed row is checked anyway).
Writes gpu_check.json (rewritten after each step, so a run stopped at its limit still
reports what it did) and the tests' junit XML under $OUT when that is set.
"""
from __future__ import annotations

import argparse
import glob
import importlib
import importlib.util
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
import types

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHAPES = [(4096, 4096), (14336, 4096)]
MS = [1, 16, 128, 1024]
# The whole run must fit 8 minutes: the GPU tests get TESTS_TIMEOUT_S, and no family starts after
# BUDGET_S seconds (the ones left are reported as skipped). Families run in this order, then any other.
# DEADLINE_S bounds the whole run: measure() times nothing after it, so a slow family cannot eat the tests.
TESTS_TIMEOUT_S = 120
BUDGET_S = 330
DEADLINE_S = 370
T0 = time.time()
FAMILY_ORDER = ("gpu_int4", "gpu_int8", "gpu_sparse", "gpu_binary")
SWEEP_TIMEOUT_S = 90  # one sweep's process, import and Triton compiles included


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
    for path in sorted(glob.glob(os.path.join(ROOT, "triton_kernels", "[a-z]*.py"))):
        mod = os.path.basename(path)[:-3]
        sys.modules[f"pycomp.triton_kernels.{mod}"] = importlib.import_module(f"triton_kernels.{mod}")
    import pycomp  # noqa: F401

    return pycomp


def run_tests(timeout_s: float, only: list[str] | None = None, workers: int = 4) -> int:
    """The GPU tests in two pytest runs, each with its junit XML under $OUT: first the files no card has run
    before, alone and in order (so their verdict survives a crash or a timeout later); then the other files
    with CUDA cases (the rest of the suite is CPU-only and runs in CI), on 4 xdist workers where xdist exists.
    `only` replaces that second list. Returns the worst return code, -1 when a run hit its time limit."""
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("TRITON_INTERPRET", None)
    first = ["tests/test_int4_tile_layout.py"]
    rest = sorted({os.path.relpath(p, ROOT) for pat in ("test_cuda_*.py", "test_triton_*.py", "test_ops_int8.py",
                                                        "test_int4.py", "test_binary.py", "test_retention_energy.py")
                   for p in glob.glob(os.path.join(ROOT, "tests", pat))
                   if not os.path.basename(p).startswith("test_cuda_emu_")}  # CPU emulators: CI runs them
                  - set(first)) if only is None else only
    deadline = time.time() + timeout_s
    rc = 0
    for name, files, workers in (("first", first, 0), ("rest", rest, workers)):
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rfE", "--tb=short", *files]
        if importlib.util.find_spec("pytest_timeout"):
            cmd += ["--timeout=60"]
        if workers and importlib.util.find_spec("xdist"):
            cmd += ["-n", str(workers)]
        out = os.environ.get("OUT")
        if out:
            cmd += [f"--junitxml={os.path.join(out, f'gpu_tests_{name}.xml')}"]
        try:
            got = subprocess.run(cmd, cwd=ROOT, env=env, timeout=max(10.0, deadline - time.time())).returncode
        except subprocess.TimeoutExpired:  # report and go on
            log(f"GPU tests ({name}): stopped at the {timeout_s:.0f} s limit")
            got = -1
        rc = got if rc == 0 else rc
    return rc


def save(result: dict) -> None:
    """gpu_check.json under $OUT, rewritten after each step."""
    out = os.environ.get("OUT")
    if out:
        with open(os.path.join(out, "gpu_check.json"), "w") as f:
            json.dump(result, f, indent=1, default=str)


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


def cold_copies(torch, nbytes: int) -> int:
    """How many copies of an nbytes operand to rotate through so that each call reads it cold: beyond 4x the L2."""
    return max(2, math.ceil(4 * torch.cuda.get_device_properties(0).L2_cache_size / nbytes) + 1)


def rel_err(got, want) -> float:
    return float((got.double() - want.double()).norm() / want.double().norm().clamp_min(1e-30))


def measure(torch, row: dict, impls: dict, calls: int, where: str) -> dict:
    """For each name: (fn(i), reference or None) in impls: check fn(0) against the reference (relative
    error < 2e-2), then time it; row gets name_err and name_ms (None when wrong or failed). Logs the row."""
    for name, (fn, want) in impls.items():
        if time.time() - T0 > DEADLINE_S:
            row[f"{name}_ms"] = None
            log(f"  SKIPPED {name} {where}: past the {DEADLINE_S} s deadline")
            continue
        try:
            if want is not None:
                err = rel_err(fn(0), want)
                row[f"{name}_err"] = err
                if not err < 2e-2:
                    row[f"{name}_ms"] = None
                    log(f"  WRONG {name} {where}: rel err {err:.2e}")
                    continue
            row[f"{name}_ms"] = time_graph(torch, fn, calls)
        except Exception as exc:  # one broken kernel must not hide the others' numbers
            row[f"{name}_ms"] = None
            log(f"  FAILED {name} {where}: {type(exc).__name__}: {str(exc)[:200]}")
    log(f"  {where}: " + ", ".join(f"{k[:-3]} {v * 1e3:.1f}us" for k, v in row.items() if k.endswith("_ms") and v))
    return row


def us(ms) -> str:
    """A table cell: milliseconds as microseconds, or '-'."""
    return f"{ms * 1e3:8.1f}" if ms else "       -"


def ratio(base, ms) -> str:
    """A table cell: base / ms as a speed-up, or '-'."""
    return f"{base / ms:5.2f}x" if ms and base else "     -"


def helpers(torch, pycomp, ceil: dict) -> types.SimpleNamespace:
    """The namespace every family and sweep module gets as h."""
    return types.SimpleNamespace(torch=torch, pycomp=pycomp, time_graph=time_graph, rel_err=rel_err, log=log,
                                 measure=lambda *a: measure(torch, *a), us=us, ratio=ratio, ceilings=ceil,
                                 cold_copies=lambda nbytes: cold_copies(torch, nbytes), SHAPES=SHAPES, MS=MS)


def run_sweep_isolated(name: str, ceil: dict) -> str:
    """One sweep module in a child process (`--one-sweep NAME`); its table, or why there is none."""
    fd, path = tempfile.mkstemp(suffix=".txt")
    os.close(fd)
    cmd = [sys.executable, os.path.abspath(__file__), "--one-sweep", name, "--sweep-out", path,
           "--ceilings", json.dumps(ceil)]
    try:
        rc = subprocess.run(cmd, cwd=ROOT, timeout=SWEEP_TIMEOUT_S).returncode
        with open(path) as f:
            table = f.read()
        return table if table else f"FAILED: the sweep's process exited with {rc} before writing its table"
    except subprocess.TimeoutExpired:
        return f"FAILED: the sweep's process ran past {SWEEP_TIMEOUT_S} s"
    finally:
        os.unlink(path)


def one_sweep(name: str, out_path: str, ceil: dict) -> int:
    """The child side of run_sweep_isolated: run one sweep module, write its table to out_path."""
    pycomp = import_from_tree()
    import torch

    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    try:
        table = importlib.import_module(name).sweep(helpers(torch, pycomp, ceil))
    except Exception as exc:
        table = f"FAILED: {type(exc).__name__}: {exc}"
    with open(out_path, "w") as f:
        f.write(table)
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--one-sweep", help=argparse.SUPPRESS)
    p.add_argument("--sweep-out", help=argparse.SUPPRESS)
    p.add_argument("--ceilings", help=argparse.SUPPRESS)
    p.add_argument("--no-build", action="store_true")
    p.add_argument("--only", help="comma-separated family or sweep modules to run (default: every gpu_*.py)")
    p.add_argument("--no-tests", action="store_true")
    p.add_argument("--tests-s", type=float, default=TESTS_TIMEOUT_S, help="time limit of the GPU tests (seconds)")
    p.add_argument("--tests", help="comma-separated test files to run after the first ones (default: every file "
                                   "with CUDA cases)")
    p.add_argument("--workers", type=int, default=4, help="xdist workers for those tests")
    args = p.parse_args()
    if args.one_sweep:
        return one_sweep(args.one_sweep, args.sweep_out, json.loads(args.ceilings))
    t0 = T0
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
    save(result)
    ceil = ceilings(torch)
    result["ceilings"] = ceil
    h = helpers(torch, pycomp, ceil)
    tables = {}
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    names = {os.path.basename(p)[:-3] for p in glob.glob(os.path.join(ROOT, "benchmarks", "gpu_*.py"))} - {"gpu_check"}
    if args.only:
        names &= set(args.only.split(","))
    sweeps = sorted(n for n in names if n.startswith("gpu_sweep_"))
    found = names - set(sweeps)
    # Families (bench(h) -> (rows, table)) first, then the sweeps (sweep(h) -> table), which time kernel variants
    # and tuning choices that the families' dispatch does not take yet.
    for name in [f for f in FAMILY_ORDER if f in found] + sorted(found - set(FAMILY_ORDER)) + sweeps:
        if time.time() - t0 > BUDGET_S:
            log(f"{name}: skipped, past the {BUDGET_S} s budget")
            tables[name] = "skipped: time budget"
            continue
        t1 = time.time()
        try:  # one family's failure must not hide the others' numbers
            if name in sweeps:
                torch.cuda.empty_cache()  # the child allocates on the same card
                tables[name] = run_sweep_isolated(name, ceil)
            else:
                mod = importlib.import_module(name)
                result[name], tables[name] = mod.bench(h)
        except Exception as exc:
            log(f"{name}: FAILED {type(exc).__name__}: {exc}")
            tables[name] = f"FAILED: {type(exc).__name__}: {exc}"
        log(f"{name}: {time.time() - t1:.0f} s")
        result["tables"] = tables
        save(result)
    if not args.no_tests:
        result["tests_rc"] = run_tests(max(30.0, min(args.tests_s, DEADLINE_S + args.tests_s - (time.time() - t0))),
                                       args.tests.split(",") if args.tests else None, args.workers)
        log(f"GPU tests: {'passed' if result['tests_rc'] == 0 else 'FAILED rc=%d' % result['tests_rc']}")
    result["total_s"] = time.time() - t0
    save(result)
    log(f"\n== gpu_check ({result['machine'].get('gpu')}, torch {result['machine']['torch']}, "
        f"triton {result['machine']['triton']}, {result['total_s']:.0f} s) ==")
    log(f"ceilings: copy {ceil['copy_tb_s']:.2f} TB/s, bf16 matmul {ceil['bf16_tflops']:.0f} TFLOP/s")
    for name, text in tables.items():
        log(f"\n-- {name} --\n{text}")
    return 0 if result.get("tests_rc", 0) == 0 else 2


if __name__ == "__main__":
    sys.exit(main())
