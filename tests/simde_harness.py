"""Running an AVX-512 kernel file where the CPU hides AVX-512 (this project's machines): the file is compiled
with its intrinsics emulated by SIMDe, linked with a family's C++ check program on one thread, and run.

A family test passes the kernel file, the intrinsic renames its SIMDe release needs, the extra shim lines
and the check program's body, which prints "<n> cases, <bad> mismatching".
"""
from __future__ import annotations

import os
import pathlib
import platform
import shutil
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]

needs_simde = pytest.mark.skipif(
    not os.path.exists("/usr/include/simde/x86/avx512.h") or shutil.which("g++") is None
    or platform.machine() != "x86_64", reason="needs g++ and SIMDe (libsimde-dev) to emulate AVX-512")

SHIM_HEAD = r"""
#define SIMDE_ENABLE_NATIVE_ALIASES
#include <simde/x86/avx512.h>
#include <cstdint>
// What some SIMDe releases lack, lane by lane.
static inline float pyc_reduce_add_ps(simde__m512 v) {
  float a[16]; simde_mm512_storeu_ps(a, v); float s = 0; for (float f : a) s += f; return s;
}
static inline simde__m512 pyc_cvtepi32_ps(simde__m512i v) {
  int32_t i[16]; float f[16]; simde_mm512_storeu_si512(i, v);
  for (int l = 0; l < 16; ++l) f[l] = float(i[l]);
  return simde_mm512_loadu_ps(f);
}
"""

MAIN_HEAD = r"""
#include <cstdio>
#include <functional>
#include <random>
#include <vector>
#include "cpu/parallel.h"
namespace pycomp {  // the drivers' threads, run on the calling one
void parallel_for(int64_t n, int64_t, const std::function<void(int64_t, int64_t)>& fn) { if (n > 0) fn(0, n); }
int num_threads() { return 1; }
}
"""


def run_emulated(tmp_path: pathlib.Path, kernel: str, renames: list[tuple[str, str]], shim: str, main: str,
                 sources: tuple[str, ...] = (), no_inline: bool = False) -> str:
    """Compile `kernel` (a path under the repo) with SIMDe in place of <immintrin.h> and `renames` applied,
    with the check program MAIN_HEAD + `main` and `sources`; run it and assert it found no mismatch.

    no_inline: SIMDe's functions stay calls (SIMDE_NO_INLINE) instead of being forced inline into every
    unrolled tile instantiation: int8_avx512.cpp took GCC 4 min 46 s at -O1 without it, 51 s with it.
    (The sparse check program crashed inside a non-inlined SIMDe load, so it is not the default.)"""
    src = (ROOT / kernel).read_text()
    for old, new in [("#include <immintrin.h>", '#include "shim.h"'), *renames]:
        assert old in src, old
        src = src.replace(old, new)
    (tmp_path / "shim.h").write_text(("#define SIMDE_NO_INLINE\n" if no_inline else "") + SHIM_HEAD + shim)
    (tmp_path / "avx512_emulated.cpp").write_text(src)
    (tmp_path / "main.cpp").write_text(MAIN_HEAD + main)
    exe = tmp_path / "check"
    subprocess.run(["g++", "-O1", "-std=c++17", "-w", f"-I{ROOT / 'csrc'}", f"-I{tmp_path}", str(tmp_path / "main.cpp"),
                    str(tmp_path / "avx512_emulated.cpp"), *(str(ROOT / s) for s in sources), "-o", str(exe)],
                   check=True, capture_output=True, timeout=300)
    run = subprocess.run([str(exe)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0 and " 0 mismatching" in run.stdout, run.stdout[-2000:]
    return run.stdout
