"""benchmarks/gpu_sweep_binary.py runs once, on the lead's GPU run: here it must import, render its table
with no rows and with failed rows, and turn any failure into text instead of raising."""
import importlib.util
import os
import types

import torch

PATH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks", "gpu_sweep_binary.py")


def _load():
    spec = importlib.util.spec_from_file_location("gpu_sweep_binary", PATH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_table_renders_empty_and_failed_rows():
    mod = _load()
    assert mod._table([]).splitlines()[1].startswith("op ")
    rows = [{"op": "w1a16", "m": 1, "impl": "bf16", "ms": 0.0306, "err": None, "note": ""},
            {"op": "w1a16", "m": 1, "impl": "v1", "ms": 0.005, "err": 1e-3, "note": ""},
            {"op": "xnor", "m": 4096, "impl": "v0", "ms": None, "err": 0.5, "note": "WRONG"}]
    text = mod._table(rows)
    assert "6.12x" in text and "GB/s" in text and "WRONG" in text


def test_time_reports_wrong_and_failing_variants_without_timing_them():
    mod = _load()
    timed = []
    h = types.SimpleNamespace(torch=torch, rel_err=lambda got, want: float((got - want).norm() / want.norm()),
                              time_graph=lambda t, fn, calls: timed.append(fn) or 0.001)
    assert mod._time(h, lambda i: torch.ones(3), torch.full((3,), 5.0), 4)["note"] == "WRONG"
    assert mod._time(h, lambda i: 1 / 0, torch.ones(3), 4)["note"].startswith("FAILED ZeroDivisionError")
    assert not timed
    assert mod._time(h, lambda i: torch.ones(3), torch.ones(3), 4) == {"ms": 0.001, "err": 0.0, "note": ""}


def test_sweep_and_bench_never_raise():
    mod = _load()
    h = types.SimpleNamespace(torch=None, log=print)  # no CUDA here: _rows fails at once
    assert mod.sweep(h).startswith("sweep_binary FAILED")
    rows, text = mod.bench(h)
    assert rows == [] and text.startswith("sweep_binary FAILED")
