"""Kernel variants of the decode GEMVs (w4a16_linear_cuda, w8a16_linear_cuda: `variant`, 0 = the default
kernel) and their sweep module benchmarks/gpu_sweep_gemv.py.

The variant range check needs only a CUDA build of pycomp._C (it runs before any device work);
the correctness tests need a GPU too and skip cleanly elsewhere. Reference: float64 x @ W.T + bias
with W dequantized exactly; tolerance max |out - ref| / max |ref| as in test_cuda_int4.py and
test_cuda_int8.py (bf16 1e-2, fp16 4e-3 / 5e-3): the int4 variants round no weight at all
((code - zero) is exact, the fp32 scale multiplies the chunk's fp32 sum), so they sit inside it.
"""
import os
import types

import pytest
import torch

from pycomp import _ext
from pycomp.formats.int4 import dequantize_int4, pack_nibbles
from pycomp.ops import int4_cuda

from bench_modules import load_benchmark

C = _ext._C
HAS_VARIANTS = _ext.has_c("w4a16_gemv_cuda_variants") and _ext.has_c("w8a16_gemv_cuda_variants")
needs_build = pytest.mark.skipif(not HAS_VARIANTS, reason="needs pycomp._C built with CUDA")
needs_gpu = pytest.mark.skipif(not (HAS_VARIANTS and torch.cuda.is_available()), reason="needs a GPU and a CUDA build")
TOL4 = {torch.bfloat16: 1e-2, torch.float16: 4e-3}
TOL8 = {torch.bfloat16: 1e-2, torch.float16: 5e-3, torch.float32: 1e-4}


def rel_err(out, ref):
    return (out.double() - ref).abs().max().item() / max(ref.abs().max().item(), 1e-30)


def random_int4(N, K, gs, symmetric, gen):
    G = -(-K // gs)
    codes = torch.randint(0, 16, (N, K), generator=gen, dtype=torch.uint8)
    zeros = None if symmetric else torch.randint(0, 16, (N, G), generator=gen, dtype=torch.uint8)
    scales = (torch.rand(N, G, generator=gen) * 0.02 + 1e-3).half()
    return pack_nibbles(codes, 8 if symmetric else zeros[:, -1]), scales, zeros


# ----------------------------------------------------------------------------- range checks (no GPU needed)


REMOVED_INT4 = (3, 4, 8, 9, 13)  # lost at every shape on the H200 runs of 2026-11-28; their numbers stay unused


@needs_build
def test_variant_lists():
    v4 = C.w4a16_gemv_cuda_variants()
    assert v4 == sorted(set(v4)) and v4[0] == 0 and len(v4) >= 2 and not set(v4) & set(REMOVED_INT4)
    assert {int4_cuda.gemv_variant(m) for m in range(1, 17)} <= set(v4)  # dispatch asks only for existing ones
    assert C.w8a16_gemv_cuda_variants() >= 2


@needs_build
def test_int4_binding_rejects_a_removed_or_unknown_variant():
    packed, scales, zeros = random_int4(8, 128, 128, False, torch.Generator().manual_seed(0))
    x = torch.zeros(1, 128, dtype=torch.bfloat16)
    listed = ", ".join(map(str, C.w4a16_gemv_cuda_variants()))
    for v in (-1, *REMOVED_INT4, max(C.w4a16_gemv_cuda_variants()) + 1):
        with pytest.raises(RuntimeError, match=rf"w4a16_linear_cuda: there is no kernel variant {v}; "
                                               rf"the variants are {listed} \(0 is the default kernel\)"):
            C.w4a16_linear_cuda(x, packed, scales, zeros, None, 128, v)
        assert C.w4a16_gemv_cuda_workspace(1, 8, 128, v) == 0  # the launcher's own check
        assert not C.w4a16_gemv_cuda_launch(1, 8, 512, 128, v)["variant_runs"]


@needs_build
def test_int8_binding_rejects_a_bad_variant():
    x = torch.zeros(1, 64, dtype=torch.bfloat16)
    w, s = torch.zeros(8, 64, dtype=torch.int8), torch.ones(8)
    for v in (-1, C.w8a16_gemv_cuda_variants()):
        with pytest.raises(RuntimeError, match=r"w8a16_linear_cuda: variant must be in \[0, "):
            C.w8a16_linear_cuda(x, w, s, None, v)


# ----------------------------------------------------------------------------- correctness on a GPU

# (M, N, K, symmetric, dtype): rows past a block, split-K (small N), K = 512 (one chunk),
# K = 8192 (one unsplit slice), K % 512 != 0 (falls back to variant 0), ring x (M > 8)
INT4_CASES = [(1, 4104, 4096, False, torch.bfloat16), (4, 300, 1536, True, torch.float16),
              (9, 1000, 2048, False, torch.bfloat16), (16, 4104, 4096, False, torch.float16),
              (16, 64, 8192, True, torch.bfloat16), (3, 264, 512, False, torch.bfloat16),
              (12, 100, 1056, False, torch.bfloat16),
              # persistent variants: blocks with 2 row tiles and with 1, a partial last tile, one chunk per warp
              (1, 28680, 1024, False, torch.bfloat16), (8, 28680, 512, True, torch.float16)]


@needs_gpu
@pytest.mark.parametrize("case", INT4_CASES, ids=lambda c: f"M{c[0]}-{c[1]}x{c[2]}{'-sym' if c[3] else ''}")
def test_int4_variants_match_reference(case):
    M, N, K, symmetric, dtype = case
    gen = torch.Generator().manual_seed(M + N + K)
    packed, scales, zeros = random_int4(N, K, 128, symmetric, gen)
    x = torch.randn(M, K, generator=gen).to(dtype)
    bias = torch.randn(N, generator=gen).to(dtype)
    ref = (x.double() @ dequantize_int4(packed, scales, zeros, 128, K, torch.float64).T + bias.double()).cuda()
    args = [t.cuda() if t is not None else None for t in (x, packed, scales, zeros, bias)]
    for v in C.w4a16_gemv_cuda_variants():
        out = C.w4a16_linear_cuda(*args, 128, v)
        assert out.shape == (M, N) and out.dtype == dtype
        err = rel_err(out, ref)
        assert err < TOL4[dtype], f"variant {v}: relative error {err:.2e}"


@needs_gpu
def test_int4_variants_replay_in_cuda_graph():
    gen = torch.Generator().manual_seed(1)
    packed, scales, zeros = random_int4(256, 4096, 128, False, gen)  # small N: split-K, two kernels
    packed, scales, zeros = packed.cuda(), scales.cuda(), zeros.cuda()
    x = torch.randn(16, 4096, generator=gen).bfloat16().cuda()
    for v in C.w4a16_gemv_cuda_variants()[1:]:
        eager = C.w4a16_linear_cuda(x, packed, scales, zeros, None, 128, v)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            captured = C.w4a16_linear_cuda(x, packed, scales, zeros, None, 128, v)
        graph.replay()
        torch.cuda.synchronize()
        assert torch.equal(eager, captured), f"variant {v}"


@needs_gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize("M,N,K", [(1, 4104, 4096), (5, 300, 1552), (9, 77, 64), (16, 1000, 2048), (20, 520, 1024)])
def test_int8_variants_match_reference(M, N, K, dtype):
    gen = torch.Generator(device="cuda").manual_seed(M + N + K)
    w = torch.randint(-127, 128, (N, K), generator=gen, device="cuda", dtype=torch.int8)
    s = torch.rand(N, generator=gen, device="cuda") + 0.5
    x = torch.randn(M, K, generator=gen, device="cuda").to(dtype)
    bias = torch.randn(N, generator=gen, device="cuda").to(dtype)
    ref = x.double() @ (w.double() * s.double()[:, None]).T + bias.double()
    for v in range(C.w8a16_gemv_cuda_variants()):
        err = rel_err(C.w8a16_linear_cuda(x, w, s, bias, v), ref)
        assert err < TOL8[dtype], f"variant {v}: relative error {err:.2e}"


# ----------------------------------------------------------------------------- the sweep module


def test_sweep_table_renders_with_no_rows_and_with_failures():
    mod = load_benchmark("gpu_sweep_gemv")
    assert mod._table([]).startswith("decode GEMV variants")
    row = {"family": "int4", "shape": "14336x4096", "m": 1, "bytes": 30_000_000, "variants": [0, 1, 2],
           "bf16": 0.032, "v0": 0.018, "v1": None, "v1_why": "WRONG 3.1e-01", "v2": 0.010}
    text = mod._table([row], None, ["int4 odd-shape check: all variants ok"])
    line = text.splitlines()[2]
    assert "1.78x" in line and "WRONG 3.1e-01" in line and "3.20x" in line and line.endswith("| v2")
    assert text.endswith("all variants ok")


def test_sweep_table_columns_are_variant_numbers():
    """int4's variants skip removed numbers and int8's do not: a column per number, '-' where a family lacks it."""
    mod = load_benchmark("gpu_sweep_gemv")
    rows = [{"family": "int4", "shape": "14336x4096", "m": 1, "bytes": 30_000_000, "variants": [0, 1, 5],
             "bf16": 0.032, "v0": 0.018, "v1": 0.016, "v5": 0.010},
            {"family": "int8", "shape": "4096x4096", "m": 1, "bytes": 16_000_000, "variants": [0, 1, 2],
             "bf16": 0.013, "v0": 0.008, "v1": 0.009, "v2": 0.0075}]
    lines = mod._table(rows).splitlines()
    header = lines[1].split(" | ")
    assert [c.split()[0] for c in header[1:-1]] == ["v0", "v1", "v2", "v5"]
    int4, int8 = (line.split(" | ") for line in lines[2:4])
    assert int4[3].strip() == "-" and "3.20x" in int4[4] and int4[-1] == "v5"
    assert int8[4].strip() == "-" and "1.73x" in int8[3] and int8[-1] == "v2"


def test_sweep_never_raises():
    mod = load_benchmark("gpu_sweep_gemv")

    def boom(*a, **k):
        raise RuntimeError("no device")

    h = types.SimpleNamespace(torch=torch, time_graph=boom, rel_err=boom, log=lambda m: None)
    text = mod.sweep(h)
    if HAS_VARIANTS and torch.cuda.is_available():  # every check and timing failed, and says so
        assert "FAILED" in text and "WRONG" in text
    else:
        assert text.startswith("gemv sweep: skipped")


def test_sweep_launch_legends_from_a_fake_extension():
    mod = load_benchmark("gpu_sweep_gemv")

    def launch(m, n, k, gs, v):
        if v == 2:
            raise RuntimeError("boom")
        d = {"variant_runs": v != 3, "rows": 32, "warps": 4, "stages": 4, "fold": v == 1, "x_ring": m > 8 or v == 4,
             "blocks": 448 if v != 4 else 224, "splits": 1, "smem": 45 * 1024}
        if v == 4:
            d["persistent"] = True  # older builds' dicts have no such key
        return d

    C = types.SimpleNamespace(w4a16_gemv_cuda_launch=launch,
                              w8a16_gemv_cuda_shape=lambda m, v: {"unroll": 4, "warps": 8, "min_blocks": 2 + v})
    text = mod._int4_launches(C, 16, 14336, 4096, [0, 1, 2, 3, 4])
    assert text == "v0 32r4w4sX 448x1 45K | v1 32r4w4sFX 448x1 45K | v2 ? RuntimeError | v3=v0 | v4 32r4w4sXP 224x1 45K"
    assert mod._int8_launches(C, 1, [0, 1]) == "v0 u4w8b2 | v1 u4w8b3"


@needs_build
def test_int4_launch_info():
    K = 4096
    for v in C.w4a16_gemv_cuda_variants()[1:]:
        d = C.w4a16_gemv_cuda_launch(1, 14336, K, 128, v)
        if d["persistent"]:  # test_int4_persistent_launch_info (its grid needs the device's SMs)
            continue
        assert d["variant_runs"] and d["rows"] % 16 == 0 and d["blocks"] == -(-14336 // d["rows"])
        assert d["x_ring"] is False and C.w4a16_gemv_cuda_launch(16, 14336, K, 128, v)["x_ring"] is True
        assert not C.w4a16_gemv_cuda_launch(1, 14336, 1056, 128, v)["variant_runs"]  # K % 512 != 0
        assert not C.w4a16_gemv_cuda_launch(1, 14336, K, 64, v)["variant_runs"]  # group 64
    assert C.w4a16_gemv_cuda_launch(1, 14336, K, 128, 0)["variant_runs"]
    assert C.w8a16_gemv_cuda_shape(1, 0) == {"unroll": 4, "warps": 8, "min_blocks": 2}


@needs_gpu
def test_int4_persistent_launch_info():
    """The persistent variants: x through the ring at any M, no split-K, and a grid that fits the SMs at
    once and gives every block the same number of row tiles, +-1."""
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    persistent = [v for v in C.w4a16_gemv_cuda_variants()[1:]
                  if C.w4a16_gemv_cuda_launch(1, 14336, 4096, 128, v)["persistent"]]
    assert persistent
    for v in persistent:
        for M, N in [(1, 14336), (16, 14336), (4, 28672), (1, 100)]:
            d = C.w4a16_gemv_cuda_launch(M, N, 4096, 128, v)
            tiles = -(-N // d["rows"])
            per = -(-tiles // d["blocks"])
            assert d["variant_runs"] and d["x_ring"] and d["splits"] == 1 and d["rows"] in (16, 32)
            assert (d["blocks"] - 1) * per < tiles <= d["blocks"] * per and d["blocks"] <= max(tiles, 1)
            assert d["blocks"] <= 8 * sms  # at most what fits at once (a block holds >= 16 KiB)
        assert not C.w4a16_gemv_cuda_launch(1, 14336, 1056, 128, v)["variant_runs"]  # K % 512 != 0
        assert C.w4a16_gemv_cuda_workspace(16, 256, 4096, v) == C.w4a16_gemv_cuda_workspace(16, 256, 4096, 0)
