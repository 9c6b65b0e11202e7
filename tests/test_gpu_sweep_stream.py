"""benchmarks/gpu_sweep_stream.py runs only on a lent GPU. Here its read kernels run in the Triton interpreter on
CPU tensors: every kernel's sum must match torch's (else the row would say WRONG and the sweep's ceiling would
be a number for a read that skipped bytes), and the table renders with and without rows."""
import os
import types

import pytest
import torch

from bench_modules import load_benchmark


def test_empty_table_and_no_gpu():
    mod = load_benchmark("gpu_sweep_stream")
    assert len(mod._table([]).splitlines()) == 2
    if not torch.cuda.is_available():
        assert "skipped" in mod.sweep(types.SimpleNamespace(torch=torch))


@pytest.mark.skipif(torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET") != "1",
                    reason="runs the kernels in the Triton interpreter on CPU tensors")
def test_every_read_kernel_sums_all_bytes():
    pytest.importorskip("triton")
    mod = load_benchmark("gpu_sweep_stream")
    calls = []
    h = types.SimpleNamespace(torch=torch, log=lambda msg: None, cold_copies=lambda nbytes: 2,
                              time_graph=lambda t, fn, n: (calls.append(fn(1)), 1e-3)[1])
    # 64 KB + 12 bytes: a partial block for the pointer kernels and a partial 2-D row for TMA
    s = mod._Sweep(h, device="cpu", targets=[("t", 64, 64, 64 * 1024 + 12, 2.0)])
    rows = s.run()
    assert not [n for n in s.notes if "WRONG" in n or "FAILED" in n], s.notes
    reads = [k for k, v in rows[0].items() if isinstance(v, float) and k not in ("bf16", "target")]
    assert {"stride 2x4w", "contig 4x", "one block each"} <= set(reads)
    assert "t " in mod._table(rows, s.notes)
