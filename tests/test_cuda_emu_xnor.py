"""The XNOR GEMM's CUDA kernels (csrc/cuda/binary/xnor_gemm.cu, variants 1 and 3-7) run on the CPU under the
emulator in tests/cuda_emu/: their own source text, threads as fibers in random order and at random speeds,
ldmatrix / mma.sync b1 by the PTX fragment layouts, cp.async landing early or late. This checks the index
arithmetic, barriers and copy waits of kernels that no GPU here can run; variant 1, correct on the H200 in
session 5, is the emulator's control. Needs g++ (skipped without it)."""
import os
import re
import shutil
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EMU = os.path.join(ROOT, "tests", "cuda_emu")
CXX = os.environ.get("CXX", "g++")

pytestmark = pytest.mark.skipif(shutil.which(CXX) is None, reason=f"needs a C++ compiler ({CXX})")


def assemble() -> str:
    """The emulator's shims, the kernels' source (variant 1 to the launchers), the driver."""
    src = open(os.path.join(ROOT, "csrc", "cuda", "binary", "xnor_gemm.cu")).read()
    consts = src[src.index("constexpr int kBM = 128"):src.index("// One block per row: each warp turns")]
    binarize = src[src.index("// Variant 1 of the binarization"):
                   src.index("__global__ void __launch_bounds__(256) popc_rows")]
    kern = src[src.index("// Variant 1: 128 x 128 block tile"):src.index("template <template <DType> class F")]
    kern = kern.replace("extern __shared__ __align__(128) uint4 smem[];",
                        "uint4* smem = reinterpret_cast<uint4*>(emu::smem.data());")
    kern = re.sub(r'asm volatile\("bar\.(sync|arrive) (\d+), (\d+);\\n" ::: "memory"\);', r"emu::bar_\1(\2, \3);", kern)
    assert "asm" not in re.sub(r"//.*", "", kern), "inline PTX the emulator does not know"
    parts = [open(os.path.join(EMU, "xnor_emu.cpp")).read(), consts, binarize, kern,
             open(os.path.join(EMU, "xnor_emu_main.cpp")).read()]
    return "\n".join(parts)


@pytest.fixture(scope="module")
def emu(tmp_path_factory):
    d = tmp_path_factory.mktemp("xnor_emu")
    (d / "emu.cpp").write_text(assemble())
    exe = d / "xnor_emu"
    subprocess.run([CXX, "-std=c++17", "-O1", "-w", "-o", str(exe), str(d / "emu.cpp")], check=True)
    return str(exe)


# (variant, M, N, K, SMs, out dtype): SMs set how the launcher splits the W tiles into runs; few SMs give long
# runs (both warp groups, several tiles each, the stagger barrier). N = 650 / 33: element stores past the last
# whole 16-byte chunk; K = 256 / 512: 2 / 4 chunks per row (most lanes idle in the copies); K = 4096: 32.
CASES = [(1, 130, 140, 1024, 132, "f32"),
         (3, 100, 700, 256, 2, "f32"), (3, 130, 300, 1000, 132, "bf16"),
         (4, 150, 650, 512, 2, "bf16"), (4, 5, 33, 1020, 132, "bf16"), (4, 64, 100, 4096, 132, "f32"),
         (5, 70, 520, 1000, 1, "bf16"), (5, 129, 256, 512, 1, "f32"),
         (6, 300, 330, 512, 2, "bf16"), (7, 257, 200, 1000, 1, "f32"), (7, 40, 64, 4096, 132, "bf16")]


@pytest.mark.parametrize("variant,m,n,k,sms,dtype", CASES)
def test_xnor_kernel_emulated(emu, variant, m, n, k, sms, dtype):
    r = subprocess.run([emu, str(variant), str(m), str(n), str(k), str(sms), dtype, str(variant * 7 + m)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "0 wrong" in r.stdout


# Binarization (bf16 x): variant 1 (correct on the H200) and 2 (8 loads per lane in flight); K = 4096: two
# batches of 8 loads; K = 1000: lanes past K in the last batch and zero words up to the padded row; ldx > K.
@pytest.mark.parametrize("variant,m,k,ldx", [(1, 19, 1000, 1000), (2, 19, 1000, 1000), (2, 9, 4096, 4104),
                                             (2, 3, 8, 8)])
def test_binarize_emulated(emu, variant, m, k, ldx):
    r = subprocess.run([emu, "bin", str(variant), str(m), str(k), str(ldx), str(m + k)], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert " 0 wrong" in r.stdout


def test_the_emulator_sees_a_missing_barrier(emu, tmp_path):
    # Without the barrier after the mmas, the first warp to finish copies the next W tile over rows that
    # the others still read: the emulator must report wrong outputs, else its passes above mean little.
    src = assemble()
    i = src.index("xnor_gemm_v3_kernel(")
    barrier = "    group_barrier(grp);  // the group is done"
    assert barrier in src[i:]
    (tmp_path / "mut.cpp").write_text(src[:i] + src[i:].replace(barrier, "    //", 1))
    exe = tmp_path / "mut"
    subprocess.run([CXX, "-std=c++17", "-O1", "-w", "-o", str(exe), str(tmp_path / "mut.cpp")], check=True)
    r = subprocess.run([str(exe), "4", "150", "650", "512", "2", "bf16", "1"], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 1 and " 0 wrong" not in r.stdout, r.stdout + r.stderr
