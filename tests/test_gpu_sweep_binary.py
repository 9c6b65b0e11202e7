"""benchmarks/gpu_sweep_binary.py runs once, on the lead's GPU run: here it must import, render its table
with no rows and with failed rows, and turn any failure into text instead of raising."""
import types

import torch

from bench_modules import load_benchmark


def test_table_renders_empty_and_failed_rows():
    mod = load_benchmark("gpu_sweep_binary")
    assert mod._table([]).splitlines()[1].startswith("op ")
    rows = [{"op": "w1a16", "m": 1, "impl": "bf16", "ms": 0.0306, "err": None, "note": ""},
            {"op": "w1a16", "m": 1, "impl": "v1", "ms": 0.005, "err": 1e-3, "note": ""},
            {"op": "xnor", "m": 4096, "impl": "v0", "ms": None, "err": 0.5, "note": "WRONG"},
            {"op": "xnor", "m": 4096, "impl": "v1:bin", "ms": 0.01, "err": 1e-6, "note": ""},
            {"op": "xnor", "m": 4096, "impl": "popc", "ms": 0.004, "err": 0.0, "note": ""},
            {"op": "xnor", "m": 4096, "impl": "v1:gemm", "ms": 0.2, "err": 1e-3, "note": ""}]
    text = mod._table(rows)
    assert "6.12x" in text and "GB/s" in text and "WRONG" in text
    lines = text.splitlines()
    assert "3355 GB/s" in lines[-3]  # 4096 x 4096 bf16 read in 10 us
    assert "1835 GB/s" in lines[-2]  # 14336 x 128 words in 4 us
    assert "2405 TOP/s" in lines[-1]  # 2 * 4096 * 14336 * 4096 in 200 us


def test_time_reports_wrong_and_failing_variants_without_timing_them():
    mod = load_benchmark("gpu_sweep_binary")
    timed = []
    h = types.SimpleNamespace(torch=torch, rel_err=lambda got, want: float((got - want).norm() / want.norm()),
                              time_graph=lambda t, fn, calls: timed.append(fn) or 0.001)
    assert mod._time(h, lambda i: torch.ones(3), torch.full((3,), 5.0), 4)["note"] == "WRONG"
    assert mod._time(h, lambda i: 1 / 0, torch.ones(3), 4)["note"].startswith("FAILED ZeroDivisionError")
    assert not timed
    assert mod._time(h, lambda i: torch.ones(3), torch.ones(3), 4) == {"ms": 0.001, "err": 0.0, "note": ""}
    # view picks what is checked from a call that returns several tensors (the binarization's tuple)
    got = mod._time(h, lambda i: (torch.zeros(2), torch.ones(3)), torch.ones(3), 4, view=lambda r: r[1])
    assert got == {"ms": 0.001, "err": 0.0, "note": ""}


def test_sweep_and_bench_never_raise():
    mod = load_benchmark("gpu_sweep_binary")
    h = types.SimpleNamespace(torch=None, log=print)  # no CUDA here: _rows fails at once
    assert mod.sweep(h).startswith("sweep_binary FAILED")
    rows, text = mod.bench(h)
    assert rows == [] and text.startswith("sweep_binary FAILED")
