"""benchmarks/gpu_check.py runs once, on a lent GPU: its family modules must at least import and expose bench(h)."""
import glob
import os

import pytest

from bench_modules import BENCHMARKS, load_benchmark

BENCH = str(BENCHMARKS)
FAMILIES = sorted(p for p in glob.glob(os.path.join(BENCH, "gpu_*.py"))
                  if not p.endswith("gpu_check.py") and not os.path.basename(p).startswith("gpu_sweep_"))
SWEEPS = sorted(glob.glob(os.path.join(BENCH, "gpu_sweep_*.py")))


def test_families_exist():
    assert any(p.endswith("gpu_int8.py") for p in FAMILIES)


@pytest.mark.parametrize("path", FAMILIES, ids=os.path.basename)
def test_family_module_imports_and_has_bench(path):
    mod = load_benchmark(path)
    assert callable(getattr(mod, "bench", None)), f"{path} must define bench(h) -> (rows, table)"


@pytest.mark.parametrize("path", SWEEPS, ids=os.path.basename)
def test_sweep_module_imports_and_has_sweep(path):
    assert callable(getattr(load_benchmark(path), "sweep", None)), f"{path} must define sweep(h) -> table"


def test_gpu_check_imports():
    mod = load_benchmark("gpu_check")
    assert callable(mod.main) and callable(mod.time_graph)


def test_measure_reports_wrong_and_failing_paths_without_timing_them():
    import torch

    mod = load_benchmark("gpu_check")
    impls = {"wrong": (lambda i: torch.ones(3), torch.full((3,), 5.0)), "boom": (lambda i: 1 / 0, None)}
    row = mod.measure(torch, {}, impls, 4, "test")
    assert row["wrong_ms"] is None and row["wrong_err"] > 0.5 and row["boom_ms"] is None
    assert mod.us(None).strip() == "-" and mod.ratio(2.0, 1.0).strip() == "2.00x"


@pytest.mark.parametrize("path", [p for p in FAMILIES if not p.endswith("gpu_binary.py")], ids=os.path.basename)
def test_family_tables_render_with_no_rows(path):
    import types

    mod = load_benchmark("gpu_check")
    h = types.SimpleNamespace(us=mod.us, ratio=mod.ratio, ceilings={"copy_tb_s": 4.0, "bf16_tflops": 600.0})
    assert isinstance(load_benchmark(path)._table([], h), str)


def test_a_sweep_runs_in_its_own_process_and_returns_its_table():
    mod = load_benchmark("gpu_check")
    table = mod.run_sweep_isolated("gpu_sweep_stream", {"copy_tb_s": 4.0, "bf16_tflops": 600.0})
    import torch

    if not torch.cuda.is_available():
        assert table == "stream sweep: skipped (no GPU)"
    assert not table.startswith("FAILED"), table
