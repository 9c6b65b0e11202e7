"""The pytest-benchmark suites (benchmarks/test_cpu_*.py) still run: every case once, untimed, on the small odd
shape that PYCOMP_BENCH_SMOKE=1 swaps in (pycomp.benchmark.timing.suite_sizes). Each case checks its output
against the reference op before it would be timed, so this also runs those checks."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pycomp import _ext

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(_ext._C is None, reason="pycomp._C not built")
@pytest.mark.parametrize("suite", ["int8", "int4", "binary", "sparse"])
def test_benchmark_suite_runs(suite):
    pytest.importorskip("pytest_benchmark")
    env = {**os.environ, "PYCOMP_BENCH_SMOKE": "1"}
    run = subprocess.run([sys.executable, "-m", "pytest", f"benchmarks/test_cpu_{suite}.py", "--benchmark-disable",
                          "-q", "-p", "no:cacheprovider"], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0 and " passed" in run.stdout, run.stdout[-3000:]
