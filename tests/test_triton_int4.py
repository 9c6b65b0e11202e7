"""Triton W4A16 kernel (triton_kernels/int4.py) against the k-nibble reference dequantizer.

Without a GPU the kernel runs on CPU tensors under TRITON_INTERPRET=1 (set by conftest),
on tiny shapes. The reference is x @ dequantize_int4(...).T + bias in float64.
Tolerance per output: one rounding of the output dtype (bf16: the interpreter truncates)
times |ref|, plus, over the sum of the terms' magnitudes, 1e-5 (fp32 accumulation) and
the weights' rounding to x's 16-bit dtype (ROUNDING bounds two roundings: bf16 rounds the
float16 scale, then the product; the interpreter dequantizes bf16 in fp32, fp16 in fp16).
"""
import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

pytest.importorskip("triton")
tk = pytest.importorskip("pycomp.triton_kernels.int4")

from pycomp.formats.int4 import dequantize_int4, pack_nibbles  # noqa: E402

DEVICE = "cpu" if tk._INTERPRET else "cuda"
if DEVICE == "cuda" and not torch.cuda.is_available():
    pytest.skip("pycomp.triton_kernels.int4 was imported without TRITON_INTERPRET=1 and no CUDA device is present",
                allow_module_level=True)

# On a GPU: one fixed tile, not an autotuning run per small shape.
CFG = {"config": tk.SMALL_CONFIG}
ROUNDING = {torch.float32: 2.0**-23, torch.float16: 2.0**-10, torch.bfloat16: 2.0**-7}


def random_int4(N, K, group_size, symmetric, gen):
    """Random codes, zero points and float16 scales in the k-nibble layout (odd K padded with the zero point)."""
    G = -(-K // group_size)
    codes = torch.randint(0, 16, (N, K), generator=gen, dtype=torch.uint8)
    zeros = None if symmetric else torch.randint(0, 16, (N, G), generator=gen, dtype=torch.uint8)
    scales = (torch.rand(N, G, generator=gen) * 0.02 + 1e-3).half()
    packed = pack_nibbles(codes, 8 if symmetric else zeros[:, -1])
    return packed, scales, zeros


def reference(x, packed, scales, zeros, bias, group_size, K):
    w = dequantize_int4(packed.cpu(), scales.cpu(), None if zeros is None else zeros.cpu(), group_size, K,
                        torch.float64)
    xd = x.cpu().double()
    b = torch.zeros(w.shape[0], dtype=torch.float64) if bias is None else bias.cpu().double()
    return xd @ w.T + b, xd.abs() @ w.abs().T + b.abs()


def assert_close(out, x, packed, scales, zeros, bias, group_size, K):
    ref, mag = reference(x, packed, scales, zeros, bias, group_size, K)
    assert out.dtype == x.dtype and out.shape == ref.shape
    # The weights round to x's dtype, except fp32 and, in the interpreter, bf16 (dequantized in fp32 there).
    w_round = 0.0 if x.dtype == torch.float32 or (tk._INTERPRET and x.dtype == torch.bfloat16) else ROUNDING[x.dtype]
    tol = ROUNDING[x.dtype] * ref.abs() + (1e-5 + w_round) * mag + 1e-30
    err = (out.cpu().double() - ref).abs()
    worst = (err / tol).max().item()
    assert worst <= 1.0, f"max error {err.max().item():.3g} is {worst:.3g}x the tolerance"


def run(M, N, K, group_size, symmetric, dtype, with_bias, seed, swap_ab=None):
    gen = torch.Generator().manual_seed(seed)
    packed, scales, zeros = random_int4(N, K, group_size, symmetric, gen)
    x = torch.randn(M, K, generator=gen).to(dtype)
    bias = torch.randn(N, generator=gen).to(dtype) if with_bias else None
    dev = [t.to(DEVICE) if t is not None else None for t in (x, packed, scales, zeros, bias)]
    cfg = CFG if swap_ab is None else {"config": {**CFG["config"], "SWAP_AB": swap_ab}}
    out = tk.w4a16_linear(*dev, group_size, K, **cfg)
    assert_close(out, x, packed, scales, zeros, bias, group_size, K)


DTYPES = [torch.float32, torch.bfloat16, torch.float16]
# Every group size, sym/asym and dtype; on a GPU, where each combination compiles a kernel
# (and gpu_check's test budget is shared), sym/asym alternate instead of multiplying.
CASES = [(gs, sym, dt) for gs in (32, 64, 128) for sym in (False, True) for dt in DTYPES
         if tk._INTERPRET or sym == ((gs // 32 + DTYPES.index(dt)) % 2 == 1)]


@pytest.mark.parametrize("group_size,symmetric,dtype", CASES)
@pytest.mark.parametrize("M,N,K", [(1, 5, 33), (17, 9, 200)])  # tails in M, N and K; K past 3 tiles
def test_matches_reference(M, N, K, group_size, symmetric, dtype):
    run(M, N, K, group_size, symmetric, dtype, with_bias=(M + N) % 2 == 0, seed=M * 1000 + N * 10 + K)


@pytest.mark.parametrize("swap_ab", [False, True])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("M,N,K,group_size", [(3, 20, 130, 64), (33, 17, 97, 32), (18, 5, 256, 128)])
def test_both_orientations(M, N, K, group_size, dtype, swap_ab):
    # out = x W^T and out^T = W x^T (SWAP_AB) on tails in M, N and K, with and without zero points
    run(M, N, K, group_size, symmetric=M % 2 == 0, dtype=dtype, with_bias=N % 2 == 1, seed=M + N + K,
        swap_ab=swap_ab)


def test_magic_constants():
    # The dequantizer reads `bits | code` as value + code: exact for every nibble in each dtype.
    codes = torch.arange(16, dtype=torch.int32)
    for bits, value, dtype, view in ((tk.BF16_MAGIC, tk.BF16_OFF, torch.bfloat16, torch.int16),
                                     (tk.FP16_MAGIC, tk.FP16_OFF, torch.float16, torch.int16),
                                     (tk.FP32_MAGIC, tk.FP32_OFF, torch.float32, torch.int32)):
        bits, value = bits.value, value.value
        got = (codes | bits).to(view).view(dtype).double()
        assert torch.equal(got, value + codes.double()), dtype


@pytest.mark.parametrize("K", [1, 2, 31, 64, 65, 192])
def test_k_edges(K):
    # K below one group, one byte, odd, exactly one tile, one past a tile, several tiles with a short last group
    run(2, 17, K, 128 if K != 65 else 32, symmetric=False, dtype=torch.float32, with_bias=True, seed=K)


def test_strided_inputs():
    gen = torch.Generator().manual_seed(5)
    N, K, gs = 9, 70, 32
    packed, scales, zeros = random_int4(N, K, gs, False, gen)
    wide = torch.zeros(N, 40, dtype=torch.uint8)
    wide[:, 2:2 + packed.shape[1]] = packed
    packed_view = wide[:, 2:2 + packed.shape[1]]  # row stride 40 bytes
    x_big = torch.randn(4, K + 6, generator=gen)
    x = x_big[:, 3:3 + K]  # row stride K + 6
    out = tk.w4a16_linear(x.to(DEVICE), packed_view.to(DEVICE), scales.to(DEVICE), zeros.to(DEVICE), None, gs, K,
                          **CFG)
    assert_close(out, x, packed, scales, zeros, None, gs, K)


def test_exact_small_case():
    # codes and scales that make every product exact: the kernel must give the reference bit for bit in fp32
    K, gs = 40, 32
    codes = torch.arange(2 * K, dtype=torch.uint8).reshape(2, K) % 16
    zeros = torch.tensor([[3, 12], [8, 0]], dtype=torch.uint8)
    scales = torch.tensor([[0.5, 2.0], [0.25, 1.0]], dtype=torch.float16)
    packed = pack_nibbles(codes, zeros[:, -1])
    x = torch.arange(K, dtype=torch.float32)[None, :] % 5 - 2
    out = tk.w4a16_linear(x.to(DEVICE), packed.to(DEVICE), scales.to(DEVICE), zeros.to(DEVICE), None, gs, K, **CFG)
    w = (codes.float() - zeros.float().repeat_interleave(gs, 1)[:, :K]) * scales.float().repeat_interleave(gs, 1)[:, :K]
    assert torch.equal(out.cpu(), x @ w.T)


def test_empty_rows():
    gen = torch.Generator().manual_seed(1)
    packed, scales, zeros = random_int4(4, 32, 32, True, gen)
    out = tk.w4a16_linear(torch.empty(0, 32, device=DEVICE), packed.to(DEVICE), scales.to(DEVICE), None, None, 32, 32,
                          **CFG)
    assert out.shape == (0, 4)


def test_bad_inputs_raise():
    gen = torch.Generator().manual_seed(2)
    K, gs = 64, 32
    packed, scales, zeros = (t.to(DEVICE) for t in random_int4(4, K, gs, False, gen))
    x = torch.randn(2, K, device=DEVICE)
    with pytest.raises(ValueError, match="group_size"):
        tk.w4a16_linear(x, packed, scales, zeros, None, 16, K)
    with pytest.raises(ValueError, match="in_features"):
        tk.w4a16_linear(x[:, :32], packed, scales, zeros, None, gs, K)
    with pytest.raises(TypeError, match="x must be"):
        tk.w4a16_linear(x.double(), packed, scales, zeros, None, gs, K)
    with pytest.raises(TypeError, match="packed must be uint8"):
        tk.w4a16_linear(x, packed.to(torch.int8), scales, zeros, None, gs, K)
    with pytest.raises(TypeError, match="scales must be float16"):
        tk.w4a16_linear(x, packed, scales.float(), zeros, None, gs, K)
    with pytest.raises(TypeError, match="zeros must be None or uint8"):
        tk.w4a16_linear(x, packed, scales, zeros[:, :1], None, gs, K)
    with pytest.raises(TypeError, match="bias"):
        tk.w4a16_linear(x, packed, scales, zeros, torch.zeros(3, device=DEVICE), gs, K)
    with pytest.raises(ValueError, match="2-D"):
        tk.w4a16_linear(x[None], packed, scales, zeros, None, gs, K)


# ----------------------------------------------------------------------------- dequantize + dense linear


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("N,K,group_size,symmetric", [(5, 64, 32, False), (17, 200, 64, True), (3, 33, 32, False),
                                                      (40, 256, 128, False)])
def test_dequantize_matches_reference(N, K, group_size, symmetric, dtype):
    gen = torch.Generator().manual_seed(N * K + group_size)
    packed, scales, zeros = random_int4(N, K, group_size, symmetric, gen)
    exact = dequantize_int4(packed, scales, zeros, group_size, K, torch.float32)
    out = tk.dequantize_int4(packed.to(DEVICE), scales.to(DEVICE), None if zeros is None else zeros.to(DEVICE),
                             group_size, K, dtype).cpu()
    assert out.dtype == dtype and out.shape == (N, K)
    if tk._INTERPRET and dtype == torch.bfloat16:  # the interpreter truncates fp32 -> bf16
        assert ((out.float() - exact).abs() <= exact.abs() * 2.0**-7).all()
    else:
        assert torch.equal(out, exact.to(dtype))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_dequant_linear(dtype):
    gen = torch.Generator().manual_seed(9)
    M, N, K, gs = 6, 20, 96, 32
    packed, scales, zeros = (t.to(DEVICE) for t in random_int4(N, K, gs, False, gen))
    x = torch.randn(M, K, generator=gen).to(dtype).to(DEVICE)
    bias = torch.randn(N, generator=gen).to(DEVICE)
    out = tk.w4a16_linear_dequant(x, packed, scales, zeros, bias, gs, K)
    assert out.dtype == dtype and out.shape == (M, N)
    if dtype == torch.float32:
        assert_close(out, x, packed, scales, zeros, bias, gs, K)
    w = tk.dequantize_int4(packed, scales, zeros, gs, K, dtype)
    assert torch.equal(out, torch.nn.functional.linear(x, w, bias.to(dtype)))


def test_dequant_bad_inputs_raise():
    gen = torch.Generator().manual_seed(3)
    packed, scales, zeros = (t.to(DEVICE) for t in random_int4(4, 64, 32, False, gen))
    with pytest.raises(TypeError, match="dtype must be"):
        tk.dequantize_int4(packed, scales, zeros, 32, 64, torch.int32)
    with pytest.raises(ValueError, match="group_size"):
        tk.dequantize_int4(packed, scales, zeros, 16, 64)
    with pytest.raises(TypeError, match="packed must be uint8"):
        tk.dequantize_int4(packed, scales, zeros, 32, 50)
    with pytest.raises(ValueError, match="in_features"):
        tk.w4a16_linear_dequant(torch.randn(2, 32, device=DEVICE), packed, scales, zeros, None, 32, 64)
    with pytest.raises(ValueError, match="2-D"):
        tk.w4a16_linear_dequant(torch.randn(1, 2, 64, device=DEVICE), packed, scales, zeros, None, 32, 64)


def test_gpu_autotuners_keep_their_results_on_disk():
    # Outside the interpreter (a GPU run) the int4, int8 and W1A16 kernels are triton.autotune objects; where
    # Triton has cache_results they keep each key's winner in Triton's cache, so a new process does not
    # time every configuration again. Checked in a process without TRITON_INTERPRET (conftest sets it here).
    import inspect
    import subprocess
    import sys

    import triton

    if "cache_results" not in inspect.signature(triton.autotune).parameters:
        pytest.skip("this Triton has no autotune cache_results")
    code = ("import pycomp.triton_kernels.int4 as a, pycomp.triton_kernels.int8 as b, pycomp.triton_kernels.binary "
            "as c; print([getattr(k, 'cache_results', None) for k in (a._w4a16, b._w8a16, b._int8_gemm, c._w1a16)])")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0 and run.stdout.strip() == "[True, True, True, True]", run.stdout + run.stderr[-2000:]
