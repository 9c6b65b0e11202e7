"""The tile16x64 int4 layout (pycomp.formats.int4) against the fragment logic of its CUDA GEMV
(csrc/cuda/int4/w4a16_tiled.cu), emulated here lane by lane: words, shifts, masks and the m16n8k16 mma's
fragment ownership as the PTX ISA defines it. The kernel itself runs only on a GPU (benchmarks/gpu_sweep_tiled.py)."""
import pytest
import torch

from pycomp import _ext
from pycomp.formats.int4 import dequantize_int4, pack_nibbles, pack_tile16x64, unpack_tile16x64


def test_round_trip_and_shape_errors():
    codes = torch.randint(0, 16, (48, 192), dtype=torch.uint8)
    tiles = pack_tile16x64(codes)
    assert tiles.shape == (48 * 192 // 2,) and tiles.dtype == torch.uint8
    assert torch.equal(unpack_tile16x64(tiles, 48, 192), codes)
    with pytest.raises(ValueError, match="multiple of 16"):
        pack_tile16x64(torch.zeros(40, 64, dtype=torch.uint8))
    with pytest.raises(ValueError, match="of 64"):
        pack_tile16x64(torch.zeros(16, 96, dtype=torch.uint8))


def _emulate_kernel(tiles, x, scales, zeros, n, k, group):
    """out (M, N) as w4a16_tiled_kernel computes it: per 16-row tile, per 64-column step, per lane (g, t) and word j,
    pairs p = (word >> 4p) & 0x000F000F as the A fragment regs, x[16t + 4j .. +3] as the B fragment regs."""
    m = x.shape[0]
    words = tiles.view(torch.int32).reshape(n // 16, k // 64, 32, 4)  # little-endian: byte 4w.. = word w
    out = torch.zeros(m, n, dtype=torch.float64)
    for tn in range(n // 16):
        for tk in range(k // 64):
            grp = tk * 64 // group
            a = torch.zeros(16, 16, 4, dtype=torch.float64)  # A[row][slot] per k16 step j
            b = torch.zeros(16, 8, 4, dtype=torch.float64)  # B[slot][col] per j (cols = x rows, 8 of them)
            for lane in range(32):
                g, t = lane // 4, lane % 4
                for j in range(4):
                    w = int(words[tn, tk, lane, j]) & 0xFFFFFFFF
                    for p in range(4):
                        pair = (w >> (4 * p)) & 0x000F000F
                        row = g + 8 * (p & 1)
                        z = 8 if zeros is None else int(zeros[16 * tn + row, grp])
                        slot = 2 * t + 8 * (p >> 1)
                        a[row, slot, j] = (pair & 0xF) - z
                        a[row, slot + 1, j] = (pair >> 16) - z
                    if g < m:
                        xs = x[g, tk * 64 + 16 * t + 4 * j: tk * 64 + 16 * t + 4 * j + 4].double()
                        b[2 * t, g, j], b[2 * t + 1, g, j], b[2 * t + 8, g, j], b[2 * t + 9, g, j] = xs
            d = sum(a[:, :, j] @ b[:, :, j] for j in range(4))  # (16 rows, 8 x rows)
            s = scales[16 * tn: 16 * tn + 16, grp].double()
            out[:, 16 * tn: 16 * tn + 16] += (d * s[:, None]).t()[:m]
    return out


@pytest.mark.parametrize("symmetric", [False, True])
def test_fragment_logic_of_the_kernel_computes_the_layer(symmetric):
    torch.manual_seed(0)
    n, k, group, m = 32, 128, 64, 3
    codes = torch.randint(0, 16, (n, k), dtype=torch.uint8)
    scales = (torch.rand(n, k // group) + 0.5).half()
    zeros = None if symmetric else torch.randint(0, 16, (n, k // group), dtype=torch.uint8)
    x = torch.randn(m, k).bfloat16()
    want = x.double() @ dequantize_int4(pack_nibbles(codes, 0), scales, zeros, group, k, torch.float64).t()
    got = _emulate_kernel(pack_tile16x64(codes), x, scales, zeros, n, k, group)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-9)


def test_sweep_reports_skipped_without_a_gpu():
    import importlib.util
    import os
    import types

    if torch.cuda.is_available():
        pytest.skip("on a GPU the sweep runs for real (benchmarks/gpu_check.py)")
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks",
                        "gpu_sweep_tiled.py")
    spec = importlib.util.spec_from_file_location("gpu_sweep_tiled", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert "skipped" in mod.sweep(types.SimpleNamespace(torch=torch))


HAS_TILED = torch.cuda.is_available() and _ext.has_c("w4a16_tiled_linear_cuda")


@pytest.mark.skipif(not HAS_TILED, reason="needs a GPU and pycomp._C built with CUDA")
@pytest.mark.parametrize("n,k,m,group,symmetric,dtype", [
    (16, 1024, 1, 64, False, torch.bfloat16), (48, 2048, 3, 128, True, torch.float16),
    (4112, 4096, 8, 128, False, torch.bfloat16), (272, 16384, 5, 128, False, torch.float16),
    (528, 2048, 13, 128, False, torch.bfloat16), (32, 4096, 16, 64, True, torch.float16)])
def test_cuda_kernel_every_config_matches_the_reference(n, k, m, group, symmetric, dtype):
    _C = _ext._C
    gen = torch.Generator().manual_seed(n + k)
    codes = torch.randint(0, 16, (n, k), generator=gen, dtype=torch.uint8)
    scales = (torch.rand(n, k // group, generator=gen) * 0.02 + 1e-3).half()
    zeros = None if symmetric else torch.randint(0, 16, (n, k // group), generator=gen, dtype=torch.uint8)
    x = torch.randn(m, k, generator=gen).to(dtype)
    bias = torch.randn(n, generator=gen).to(dtype)
    w = dequantize_int4(pack_nibbles(codes, 0), scales, zeros, group, k, torch.float64)
    want = x.double() @ w.t() + bias.double()
    dev = lambda t: None if t is None else t.cuda()  # noqa: E731
    for c in range(_C.w4a16_tiled_cuda_configs()):
        got = _C.w4a16_tiled_linear_cuda(x.cuda(), pack_tile16x64(codes).cuda(), scales.cuda(), dev(zeros),
                                         bias.cuda(), group, c).double().cpu()
        err = (got - want).abs().max() / want.abs().max()
        assert err < (1e-2 if dtype == torch.bfloat16 else 4e-3), (c, float(err))
