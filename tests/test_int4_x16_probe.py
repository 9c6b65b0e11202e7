"""benchmarks/cpu_int4_x16_probe.cpp, the measurement behind the open question of rounding x to int16 in the CPU
int4 GEMV (benchmarks/RESULTS.md, CPU session 7): it must still build against the kernel sources, and its int16-x
output must stay closer to the shipped fp32-x GEMV than the same GEMV fed bf16-rounded x. Needs g++ and an x86-64
CPU with AVX2 (skipped otherwise)."""
import os
import platform
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CXX = os.environ.get("CXX", "g++")

pytestmark = [
    pytest.mark.skipif(shutil.which(CXX) is None, reason=f"needs a C++ compiler ({CXX})"),
    pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="an AVX2 probe"),
]


def test_int16_x_error_is_below_bf16_x(tmp_path):
    exe = tmp_path / "x16probe"
    sources = [ROOT / "benchmarks" / "cpu_int4_x16_probe.cpp", ROOT / "benchmarks" / "probe_parallel.cpp",
               *sorted((ROOT / "csrc" / "cpu" / "int4").glob("*.cpp")), ROOT / "csrc" / "cpu" / "cpu_features.cpp"]
    subprocess.run([CXX, "-O1", "-std=c++17", "-fopenmp", "-w", f"-I{ROOT / 'csrc'}", "-o", str(exe),
                    *map(str, sources)], check=True)
    r = subprocess.run([str(exe), "--check"], capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "2"})
    if "no AVX2" in r.stdout:
        pytest.skip("this CPU has no AVX2")
    m = re.search(r"int16 x ([0-9.e+-]+), bf16 x ([0-9.e+-]+)", r.stdout)
    assert m, r.stdout + r.stderr
    e16, ebf = float(m.group(1)), float(m.group(2))
    assert r.returncode == 0 and 0 < e16 < ebf / 4, r.stdout
