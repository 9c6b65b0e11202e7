"""benchmarks/gpu_sweep_triton.py runs only on a lent GPU: here, that it imports, renders its table
(empty, and with a row of each kind of cell) and returns a table without CUDA instead of raising."""
import types

import pytest

from bench_modules import load_benchmark


def test_entry_points_and_empty_table():
    mod = load_benchmark("gpu_sweep_triton")
    assert callable(mod.sweep) and callable(mod.bench)
    table = mod._table([], None)
    assert "bf16" in table and len(table.splitlines()) == 2


def test_table_renders_rows_configs_and_notes():
    mod = load_benchmark("gpu_sweep_triton")
    row = {"kernel": "W4A16", "shape": "14336x4096", "m": 128, "bf16_ms": 0.0341, "ours_ms": 0.0262, "err": 1e-3,
           "best": "128x128x128 s3 w8 swap", "notes": ["bf16 FAILED x"],
           "configs": [("64x128x64 s4 w4", 0.05, ""), ("128x128x128 s3 w8 swap", None, "WRONG (rel err 1.0e+00)")]}
    lines = mod._table([row], None).splitlines()
    assert "1.30x" in lines[2] and "128x128x128 s3 w8 swap" in lines[2] and "bf16 FAILED x" in lines[2]
    assert "64x128x64 s4 w4 50.0" in lines[3] and "WRONG" in lines[3]


def test_cfg_str():
    triton = pytest.importorskip("triton")
    mod = load_benchmark("gpu_sweep_triton")
    c = triton.Config({"BLOCK_M": 16, "BLOCK_N": 64, "BLOCK_K": 128, "SWAP_AB": True}, num_warps=4, num_stages=3)
    assert mod.cfg_str(c) == "16x64x128 s3 w4 swap"
    assert mod.cfg_str({"BLOCK_M": 64, "BLOCK_N": 128, "BLOCK_K": 64, "num_warps": 8, "num_stages": 4}) == \
        "64x128x64 s4 w8"
    assert mod.cfg_str({"BLOCK_M": 128, "BLOCK_N": 128, "BLOCK_K": 128, "CTAS_PER_SM": 2, "num_warps": 4,
                        "num_stages": 3}) == "128x128x128 s3 w4 2/SM"


def test_sweep_without_cuda_returns_a_table():
    mod = load_benchmark("gpu_sweep_triton")
    fake_torch = types.SimpleNamespace(cuda=types.SimpleNamespace(is_available=lambda: False))
    h = types.SimpleNamespace(torch=fake_torch, log=print)
    assert mod.sweep(h) == mod._table([], h)
    assert mod.bench(h) == ([], mod._table([], h))


def test_sweep_runs_end_to_end_in_the_interpreter(monkeypatch):
    # Every row and config of the sweep on tiny shapes, CPU tensors, TRITON_INTERPRET=1: each output is checked
    # against the sweep's own reference, so a wrong reference, launcher call or closure shows as WRONG/FAILED.
    torch = pytest.importorskip("torch")
    pytest.importorskip("triton")
    if torch.cuda.is_available():
        pytest.skip("on a GPU the sweep runs for real in gpu_check")
    pytest.importorskip("pycomp.triton_kernels.int4")
    mod = load_benchmark("gpu_sweep_triton")
    monkeypatch.setattr(mod, "DEVICE", "cpu")
    monkeypatch.setattr(mod, "W4A16", ((24, 256), (3, 17)))
    monkeypatch.setattr(mod, "W4A16_DEQUANT_M", (17,))
    monkeypatch.setattr(mod, "W8A16", (((24, 64),), (3, 17)))
    monkeypatch.setattr(mod, "W8A8", (((24, 64), (8, 96)), (17,)))
    monkeypatch.setattr(mod, "W8A8_SMALL", ((24, 64), (3,)))
    monkeypatch.setattr(mod, "W1A16", ((20, 96), (2, 17)))
    monkeypatch.setattr(mod, "BUDGET_S", 600.0)

    def rel_err(got, want):
        return float((got.double() - want.double()).norm() / want.double().norm().clamp_min(1e-30))

    h = types.SimpleNamespace(torch=torch, time_graph=lambda torch_, fn, calls: fn(1) is not None and 1e-3,
                              rel_err=rel_err, log=lambda msg: None)
    rows, table = mod.bench(h)
    assert table.splitlines()[-1].startswith("sweep took ")
    kinds = [(r["kernel"], r["m"]) for r in rows]
    large = [("W8A8", 17), ("W8A8tma", 17), ("W8A8glu", 17), ("W8A8glp", 17), ("W8A8fus", 17), ("W8A8v4", 17),
             ("W8A8pdl", 17)]
    assert kinds == large + large + [("W8A8", 3), ("W8A8fus", 3)] + [
        ("W4A16", 3), ("W4A16", 17), ("W4A16dq", 17), ("W8A16", 3), ("W8A16", 17),
        ("W1A16", 2), ("W1A16", 17)], kinds
    no_configs = {("W4A16dq", 17), ("W8A8pdl", 17), ("W8A8glp", 17), ("W8A8fus", 3)}
    for r in rows:
        assert r["notes"] == [] and r["bf16_ms"] and r["ours_ms"], (r, table)
        assert (r["kernel"], r["m"]) in no_configs or r["configs"] and all(ms for _, ms, _ in r["configs"]), \
            (r["configs"], table)
    assert all(r["gemm_ms"] and r["quant_ms"] for r in rows if r["kernel"] in ("W8A8", "W8A8pdl"))
    assert all(r["gemm_ms"] for r in rows if r["kernel"] in ("W8A8tma", "W8A8v4", "W8A8glu", "W8A8glp"))
    assert all(r["quant_ms"] for r in rows if r["kernel"] == "W4A16dq")
