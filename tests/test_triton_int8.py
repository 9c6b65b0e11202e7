"""Triton int8 kernels against plain-PyTorch references.

Without a GPU the kernels run on CPU tensors under TRITON_INTERPRET=1 (set below,
before triton is imported), so shapes stay tiny. Two interpreter limits shape the
tolerances: its float32 -> bfloat16 cast truncates instead of rounding to nearest
(so bf16 outputs are allowed one bf16 ulp), and its tl.dot cannot multiply bf16
(the W8A16 kernel widens to fp32 there; on a GPU it runs the bf16 MMA).
"""
import os
import subprocess
import sys

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

pytest.importorskip("triton")
tk = pytest.importorskip("pycomp.triton_kernels.int8")

from pycomp.ops.int8 import quantize_per_token_int8_ref  # noqa: E402  (after the interpreter switch)

DEVICE = "cpu" if tk._INTERPRET else "cuda"
if DEVICE == "cuda" and not torch.cuda.is_available():
    # The module (and @triton.jit) read TRITON_INTERPRET when first imported, e.g. by an
    # earlier `import pycomp`; set it in conftest.py to test on a machine without CUDA.
    pytest.skip("pycomp.triton_kernels.int8 was imported without TRITON_INTERPRET=1 and no CUDA "
                "device is present", allow_module_level=True)

# Largest relative error of one rounding (or, for bf16 in the interpreter, truncation) per dtype.
ROUNDING = {torch.float32: 2.0**-23, torch.float16: 2.0**-10, torch.bfloat16: 2.0**-7}


def ref_quantize(x):
    return quantize_per_token_int8_ref(x)


def rand_weight(N, K, gen):
    q = torch.randint(-127, 128, (N, K), dtype=torch.int8, generator=gen)
    return q.to(DEVICE), (torch.rand(N, generator=gen) * 0.02 + 1e-3).to(DEVICE)


def assert_close_scaled(out, ref, mag, out_dtype, fp32_rtol=1e-5):
    """|out - ref| <= (one rounding of the output dtype) * |ref| + fp32_rtol * mag.

    mag is the sum of magnitudes of the terms, so cancellation does not make the
    check stricter than fp32 arithmetic can meet.
    """
    out, ref, mag = out.double().cpu(), ref.cpu(), mag.cpu()
    tol = ROUNDING[out_dtype] * ref.abs() + fp32_rtol * mag + 1e-30
    err = (out - ref).abs()
    worst = (err / tol).max().item()
    assert worst <= 1.0, f"max error {err.max().item():.3g} is {worst:.3g}x the tolerance"


# ----------------------------------------------------------------------------- quantization


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("M", [1, 3, 17, 64])
@pytest.mark.parametrize("K", [1, 7, 32, 33, 64, 100])  # 64: one tile exactly in the interpreter
def test_quantize_matches_reference(M, K, dtype):
    gen = torch.Generator().manual_seed(M * 1000 + K)
    x = (torch.randn(M, K, generator=gen) * 3).to(dtype).to(DEVICE)
    q, scale = tk.quantize_per_token_int8(x)
    q_ref, scale_ref = ref_quantize(x)
    assert q.dtype == torch.int8 and scale.dtype == torch.float32
    assert torch.equal(q.cpu(), q_ref.cpu())
    assert torch.equal(scale.cpu(), scale_ref.cpu())


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("M", [1, 17])
@pytest.mark.parametrize("K", [7, 33, 100])
def test_quantize_variant_1_matches_reference(M, K, dtype):
    # Several whole rows a program (two under the interpreter: M = 17 leaves a masked last program).
    gen = torch.Generator().manual_seed(M * 1000 + K + 7)
    x = (torch.randn(M, K + 5, generator=gen) * 3).to(dtype).to(DEVICE)[:, :K]  # strided rows
    x[M // 2].zero_()
    q, scale = tk.quantize_per_token_int8(x, variant=1)
    q_ref, scale_ref = ref_quantize(x)
    assert torch.equal(q.cpu(), q_ref.cpu()) and torch.equal(scale.cpu(), scale_ref.cpu())


def test_quantize_ties_round_half_to_even():
    # amax 127 -> inv exactly 1; amax 254 -> inv exactly 0.5: x * inv lands on .5 exactly.
    halves = [0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 125.5, -126.5, 3.5, 127.0]
    doubles = [1.0, 3.0, 5.0, -1.0, -3.0, -5.0, 7.0, 9.0, -11.0, 254.0]
    x = torch.tensor([halves, doubles], dtype=torch.float32, device=DEVICE)
    q, scale = tk.quantize_per_token_int8(x)
    expected = torch.tensor([[0, 2, 2, 0, -2, -2, 126, -126, 4, 127],
                             [0, 2, 2, 0, -2, -2, 4, 4, -6, 127]], dtype=torch.int8)
    assert torch.equal(q.cpu(), expected)
    assert scale.cpu().tolist() == [1.0, 2.0]


def test_quantize_zero_rows_and_strided_input():
    gen = torch.Generator().manual_seed(7)
    base = torch.randn(6, 57, generator=gen).to(DEVICE)
    base[1].zero_()
    base[4, 3:43].zero_()
    x = base[:, 3:43]  # row stride 57 > K = 40; row 4 is all zero inside the view
    assert x.stride() == (57, 1)
    q, scale = tk.quantize_per_token_int8(x)
    q_ref, scale_ref = ref_quantize(x)
    assert torch.equal(q.cpu(), q_ref.cpu())
    assert torch.equal(scale.cpu(), scale_ref.cpu())
    assert scale[1].item() == 0.0 and scale[4].item() == 0.0
    assert not q[1].any() and not q[4].any()


def test_quantize_many_k_blocks_bf16():
    gen = torch.Generator().manual_seed(11)
    x = (torch.randn(2, 1000, generator=gen) * 50).bfloat16().to(DEVICE)
    q, scale = tk.quantize_per_token_int8(x)
    q_ref, scale_ref = ref_quantize(x)
    assert torch.equal(q.cpu(), q_ref.cpu()) and torch.equal(scale.cpu(), scale_ref.cpu())


# ----------------------------------------------------------------------------- W8A8 GEMM


def ref_gemm(xq, xscale, qweight, wscale, bias):
    acc = xq.double() @ qweight.double().T  # exact integers
    prod = acc * xscale.double()[:, None] * wscale.double()[None, :]
    b = bias.double()[None, :] if bias is not None else torch.zeros_like(prod[:1])
    return prod + b, prod.abs() + b.abs()


@pytest.mark.parametrize("M", [1, 3, 17, 64])
@pytest.mark.parametrize("N", [1, 5, 33])
@pytest.mark.parametrize("K", [1, 7, 32, 33, 64, 100])  # 64: one tile exactly in the interpreter
def test_int8_gemm_fp32_out(M, N, K):
    gen = torch.Generator().manual_seed(M * 10000 + N * 100 + K)
    xq = torch.randint(-127, 128, (M, K), dtype=torch.int8, generator=gen).to(DEVICE)
    xscale = (torch.rand(M, generator=gen) + 0.01).to(DEVICE)
    qweight, wscale = rand_weight(N, K, gen)
    bias = torch.randn(N, generator=gen).to(DEVICE) if (M + N + K) % 2 else None
    out = tk.int8_gemm_dequant(xq, xscale, qweight, wscale, bias, out_dtype=torch.float32)
    assert out.shape == (M, N) and out.dtype == torch.float32
    ref, mag = ref_gemm(xq, xscale, qweight, wscale, bias)
    assert_close_scaled(out, ref, mag, torch.float32)


@pytest.mark.parametrize("out_dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("has_bias", [False, True])
@pytest.mark.parametrize("M,N,K", [(1, 33, 100), (17, 5, 33), (64, 33, 64)])
def test_int8_gemm_half_out(M, N, K, has_bias, out_dtype):
    gen = torch.Generator().manual_seed(M + N + K)
    xq = torch.randint(-127, 128, (M, K), dtype=torch.int8, generator=gen).to(DEVICE)
    xscale = (torch.rand(M, generator=gen) + 0.01).to(DEVICE)
    qweight, wscale = rand_weight(N, K, gen)
    bias = torch.randn(N, generator=gen).to(out_dtype).to(DEVICE) if has_bias else None
    out = tk.int8_gemm_dequant(xq, xscale, qweight, wscale, bias, out_dtype=out_dtype)
    assert out.dtype == out_dtype
    ref, mag = ref_gemm(xq, xscale, qweight, wscale, bias)
    assert_close_scaled(out, ref, mag, out_dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("has_bias", [False, True])
@pytest.mark.parametrize("M,N,K", [(1, 5, 7), (3, 33, 100), (17, 1, 33), (64, 33, 32)])
def test_int8_linear_dynamic(M, N, K, has_bias, dtype):
    gen = torch.Generator().manual_seed(3 * M + 5 * N + K)
    x = torch.randn(M, K + 3, generator=gen).to(dtype).to(DEVICE)[:, :K]  # strided rows
    x[M // 2].zero_()
    qweight, wscale = rand_weight(N, K, gen)
    bias = torch.randn(N, generator=gen).to(dtype).to(DEVICE) if has_bias else None
    out = tk.int8_linear_dynamic(x, qweight, wscale, bias)
    assert out.shape == (M, N) and out.dtype == dtype
    xq, xscale = ref_quantize(x)
    ref, mag = ref_gemm(xq, xscale, qweight, wscale, bias)
    assert_close_scaled(out, ref, mag, dtype)



# Variant 1 (persistent, TMA descriptors). Under the interpreter: 16x16x32 tiles and two
# programs, so these shapes cross M and N tile edges, leave a zero-filled K tail (K = 48)
# and make each program walk several tiles.
@pytest.mark.parametrize("out_dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("M,N,K", [(1, 16, 32), (17, 40, 48), (33, 24, 96)])
def test_int8_gemm_tma_variant(M, N, K, out_dtype):
    gen = torch.Generator().manual_seed(7 * M + N + K)
    xq = torch.randint(-127, 128, (M, K), dtype=torch.int8, generator=gen).to(DEVICE)
    xscale = (torch.rand(M, generator=gen) + 0.01).to(DEVICE)
    qweight, wscale = rand_weight(N, K, gen)
    bias = torch.randn(N, generator=gen).to(out_dtype).to(DEVICE) if M % 2 else None
    assert tk.tma_eligible(xq, qweight, torch.empty(M, N, dtype=out_dtype, device=DEVICE))
    out = tk.int8_gemm_dequant(xq, xscale, qweight, wscale, bias, out_dtype=out_dtype, variant=1)
    assert out.shape == (M, N) and out.dtype == out_dtype
    ref, mag = ref_gemm(xq, xscale, qweight, wscale, bias)
    assert_close_scaled(out, ref, mag, out_dtype)


def test_int8_tma_variant_falls_back_when_unaligned():
    # K = 33: int8 rows of 33 bytes cannot be TMA boxes, so variant 1 runs the pointer kernel.
    gen = torch.Generator().manual_seed(11)
    xq = torch.randint(-127, 128, (5, 33), dtype=torch.int8, generator=gen).to(DEVICE)
    xscale = (torch.rand(5, generator=gen) + 0.01).to(DEVICE)
    qweight, wscale = rand_weight(9, 33, gen)
    assert not tk.tma_eligible(xq, qweight, torch.empty(5, 9, device=DEVICE))
    out = tk.int8_gemm_dequant(xq, xscale, qweight, wscale, out_dtype=torch.float32, variant=1)
    ref, mag = ref_gemm(xq, xscale, qweight, wscale, None)
    assert_close_scaled(out, ref, mag, torch.float32)
    x = torch.randn(3, 32, generator=gen).to(DEVICE)
    qweight, wscale = rand_weight(16, 32, gen)
    assert torch.equal(tk.int8_linear_dynamic(x, qweight, wscale, variant=1),
                       tk.int8_linear_dynamic(x, qweight, wscale, variant=0))


# Variant 2 (quantization fused into the TMA GEMM), 4 (the TMA GEMM's second config list) and 3
# (4 with PDL, plain 4 under the interpreter). The interpreter runs variant 2's two phases as two
# launches of two programs (so rows are split between programs, QROWS at a time, with a masked
# tail); a one-program launch crosses the grid barrier itself. CTAS_PER_SM = 2 doubles the
# programs (four here), which then take half the rows and every fourth tile.
@pytest.mark.parametrize("M,N,K,dtype,ctas_per_sm", [
    (1, 16, 32, torch.float32, 1), (1, 16, 32, torch.bfloat16, 2), (17, 40, 48, torch.float32, 2),
    (17, 40, 48, torch.bfloat16, 1), (33, 24, 96, torch.float32, 1), (33, 24, 96, torch.bfloat16, 2)])
def test_int8_linear_fused_and_pdl_variants(M, N, K, dtype, ctas_per_sm, monkeypatch):
    if DEVICE == "cuda" and ctas_per_sm != 1:
        pytest.skip("on a GPU the autotuner picks the programs per SM: this case repeats another's compiles")
    monkeypatch.setitem(tk._INTERP_TMA_META, "CTAS_PER_SM", ctas_per_sm)
    gen = torch.Generator().manual_seed(5 * M + N + K)
    x = (torch.randn(M, K + 3, generator=gen) * 2).to(dtype).to(DEVICE)[:, :K]  # strided rows
    x[M // 2].zero_()
    qweight, wscale = rand_weight(N, K, gen)
    bias = torch.randn(N, generator=gen).to(dtype).to(DEVICE) if M % 2 else None
    assert tk.fused_eligible(x, qweight, torch.empty(M, N, dtype=dtype, device=DEVICE))
    xq, xscale = ref_quantize(x)
    ref, mag = ref_gemm(xq, xscale, qweight, wscale, bias)
    for variant in (2, 3, 4, 5, 6):  # 5 and 6 (Gluon) run variant 1 under the interpreter
        out = tk.int8_linear_dynamic(x, qweight, wscale, bias, variant=variant)
        assert out.shape == (M, N) and out.dtype == dtype
        assert_close_scaled(out, ref, mag, dtype)
    xq_got, xscale_got = tk.quantize_per_token_int8(x, pdl=True)
    assert torch.equal(xq_got, xq) and torch.equal(xscale_got, xscale)
    for variant in (3, 4, 5, 6):
        out = tk.int8_gemm_dequant(xq, xscale, qweight, wscale, bias, out_dtype=dtype, variant=variant)
        assert_close_scaled(out, ref, mag, dtype)


def test_int8_fused_one_program_crosses_the_grid_barrier():
    gen = torch.Generator().manual_seed(13)
    M, N, K = 19, 24, 64
    x = torch.randn(M, K, generator=gen).bfloat16().to(DEVICE)
    qweight, wscale = rand_weight(N, K, gen)
    counter = tk._barrier_counter(torch.device(DEVICE), 1)
    before = int(counter[0].item())
    out = torch.empty(M, N, dtype=torch.bfloat16, device=DEVICE)
    # A fixed tile on a GPU (the autotuner would launch more than once); ignored by the interpreter.
    config = {"BLOCK_M": 64, "BLOCK_N": 64, "BLOCK_K": 128, "GROUP_M": 8, "num_warps": 4, "num_stages": 3}
    q, scale = tk._int8_linear_fused_launch(x, qweight, wscale, None, out, config, programs=1)
    assert int(counter[0].item()) == before + 1  # one arrival: the counter stays a multiple of the grid size
    xq, xscale = ref_quantize(x)
    assert torch.equal(q, xq) and torch.equal(scale, xscale)  # the fused quantization is bit-exact
    ref, mag = ref_gemm(xq, xscale, qweight, wscale, None)
    assert_close_scaled(out, ref, mag, torch.bfloat16)


def test_grid_barrier_counts_and_gives_up(monkeypatch):
    # The interpreter runs programs in turn: with two arrivals expected, the first program can only
    # give up (after _SPIN_LIMIT polls, made small here); the second finds the count complete.
    if not tk._INTERPRET:
        pytest.skip("runs the barrier's arithmetic in the interpreter")
    import triton
    import triton.language as tl

    monkeypatch.setattr(tk, "_SPIN_LIMIT", tl.constexpr(8))

    @triton.jit
    def barrier_kernel(counter_ptr, ok_ptr, NUM_PROGS):
        tl.store(ok_ptr + tl.program_id(0), tk._grid_barrier(counter_ptr, NUM_PROGS, True).to(tl.int32))

    counter = torch.zeros(1, dtype=torch.int64)
    ok = torch.full((2,), -1, dtype=torch.int32)
    barrier_kernel[(2,)](counter, ok, 2)
    assert ok.tolist() == [0, 1] and counter.item() == 2
    barrier_kernel[(1,)](counter, ok, 1)  # 2 -> 3: one arrival completes a one-program grid
    assert ok[0].item() == 1 and counter.item() == 3


_GLUON_COMPILE = """
import importlib.util, sys
import triton
from triton.backends.compiler import GPUTarget
from triton.experimental.gluon import language as gl
from triton.experimental.gluon._runtime import GluonASTSource

spec = importlib.util.spec_from_file_location("int8_gluon", sys.argv[1])
int8_gluon = importlib.util.module_from_spec(spec)
spec.loader.exec_module(int8_gluon)
bm, bn, bk, stages, warps = int8_gluon.CONFIGS["128x128"]


def desc(dtype, name, block):
    return f"tensordesc<{name}[{block[0]}, {block[1]}],{gl.NVMMASharedLayout.get_default_for(block, dtype)!r}>"


sig = {"a_desc": desc(gl.int8, "i8", [bm, bk]), "w_desc": desc(gl.int8, "i8", [bn, bk]),
       "out_desc": desc(gl.bfloat16, "bf16", [bm, bn]), "ascale_ptr": "*fp32", "wscale_ptr": "*fp32",
       "bias_ptr": "*fp32", "M": "i32", "N": "i32", "K": "i32"}
const = {"HAS_BIAS": True, "GROUP_M": 8, "STAGES": stages, "INSTR_N": 128, "PDL": True, "num_warps": warps}
sig.update({name: "constexpr" for name in const})
kernel = triton.compile(GluonASTSource(int8_gluon._int8_gemm_gluon_kernel, sig, const, {}),
                        target=GPUTarget("cuda", 90, 32), options={"num_warps": warps})
print(kernel.asm["ptx"])
"""


def test_int8_gluon_kernel_compiles_for_sm90():
    # Gluon has no interpreter: compile variant 5's kernel for sm_90a without a GPU, so that a Triton
    # whose experimental API moved fails here rather than on the card, and check in its PTX that the
    # int8 wgmma stays in flight across K steps (the reason variant 5 exists). In a subprocess: the
    # interpreter, once it has run a kernel in this process, leaves tensor methods patched.
    pytest.importorskip("triton.experimental.gluon")
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "triton_kernels",
                        "int8_gluon.py")
    done = subprocess.run([sys.executable, "-c", _GLUON_COMPILE, path], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "wgmma.mma_async.sync.aligned.m64n128k32.s32.s8.s8" in done.stdout
    assert "wgmma.wait_group.sync.aligned 1;" in done.stdout
    assert "griddepcontrol.wait;" in done.stdout  # variant 6's wait for the kernel before it


@pytest.mark.skipif(DEVICE != "cuda", reason="Gluon has no interpreter: variant 5 itself runs on a GPU only")
@pytest.mark.parametrize("config,variant", [("128x256", 5), ("128x128", 6)])
def test_int8_gemm_gluon_on_gpu(config, variant):
    gen = torch.Generator().manual_seed(23)
    M, N, K = 200, 264, 320  # M and N tails, K = 2.5 K tiles
    xq = torch.randint(-127, 128, (M, K), dtype=torch.int8, generator=gen).to(DEVICE)
    xscale = (torch.rand(M, generator=gen) + 0.01).to(DEVICE)
    qweight, wscale = rand_weight(N, K, gen)
    bias = torch.randn(N, generator=gen).bfloat16().to(DEVICE)
    out = tk.int8_gemm_dequant(xq, xscale, qweight, wscale, bias, out_dtype=torch.bfloat16, config=config,
                               variant=variant)
    ref, mag = ref_gemm(xq, xscale, qweight, wscale, bias)
    assert_close_scaled(out, ref, mag, torch.bfloat16)


def test_int8_fused_variant_falls_back_when_not_eligible():
    # K = 40: the int8 copy's 40-byte rows cannot be TMA boxes, so variant 2 runs variant 3, and
    # that (not TMA-eligible either) the pointer kernel: the result equals variant 0's.
    gen = torch.Generator().manual_seed(17)
    x = torch.randn(5, 40, generator=gen).to(DEVICE)
    qweight, wscale = rand_weight(7, 40, gen)
    assert not tk.fused_eligible(x, qweight, torch.empty(5, 7, device=DEVICE))
    assert torch.equal(tk.int8_linear_dynamic(x, qweight, wscale, variant=2),
                       tk.int8_linear_dynamic(x, qweight, wscale, variant=0))
    # N = 7 with a float32 output: 28-byte output rows, same fallback.
    x = torch.randn(5, 32, generator=gen).to(DEVICE)
    qweight, wscale = rand_weight(7, 32, gen)
    assert not tk.fused_eligible(x, qweight, torch.empty(5, 7, device=DEVICE))
    assert torch.equal(tk.int8_linear_dynamic(x, qweight, wscale, variant=2),
                       tk.int8_linear_dynamic(x, qweight, wscale, variant=0))


# ----------------------------------------------------------------------------- W8A16


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize("has_bias", [False, True])
@pytest.mark.parametrize("M,N,K", [(1, 33, 100), (3, 5, 7), (16, 33, 64), (17, 33, 33), (64, 5, 100), (64, 1, 1)])
def test_w8a16_linear(M, N, K, has_bias, dtype):
    gen = torch.Generator().manual_seed(7 * M + 11 * N + K)
    x = torch.randn(M, K, generator=gen).to(dtype).to(DEVICE)
    qweight, wscale = rand_weight(N, K, gen)
    bias = torch.randn(N, generator=gen).to(dtype).to(DEVICE) if has_bias else None
    out = tk.w8a16_linear(x, qweight, wscale, bias)
    assert out.shape == (M, N) and out.dtype == dtype
    w = qweight.double() * wscale.double()[:, None]
    b = bias.double() if bias is not None else torch.zeros(N, dtype=torch.float64, device=DEVICE)
    ref = x.double() @ w.T + b
    mag = x.double().abs() @ w.abs().T + b.abs()
    # fp32 (W8A32) runs 3xTF32 on a GPU: about 2**-22 per product, inside the fp32 slack.
    assert_close_scaled(out, ref, mag, dtype)


def test_w8a16_strided_x():
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(20, 50, generator=gen).bfloat16().to(DEVICE)[:, 4:44]
    qweight, wscale = rand_weight(9, 40, gen)
    out = tk.w8a16_linear(x, qweight, wscale)
    w = qweight.double() * wscale.double()[:, None]
    assert_close_scaled(out, x.double() @ w.T, x.double().abs() @ w.abs().T, torch.bfloat16)


# ----------------------------------------------------------------------------- errors


def test_bad_inputs_raise():
    x = torch.randn(4, 8, device=DEVICE)
    qweight = torch.zeros(3, 8, dtype=torch.int8, device=DEVICE)
    wscale = torch.ones(3, device=DEVICE)
    with pytest.raises(ValueError, match="K=9"):
        tk.int8_linear_dynamic(torch.randn(4, 9, device=DEVICE), qweight, wscale)
    with pytest.raises(TypeError, match="qweight"):
        tk.int8_linear_dynamic(x, qweight.float(), wscale)
    with pytest.raises(TypeError, match="wscale"):
        tk.int8_linear_dynamic(x, qweight, wscale.half())
    with pytest.raises(TypeError, match="bias"):
        tk.int8_linear_dynamic(x, qweight, wscale, torch.ones(4, device=DEVICE))
    with pytest.raises(TypeError, match="x must be one of"):
        tk.w8a16_linear(x.double(), qweight, wscale)
    with pytest.raises(ValueError, match="2-D"):
        tk.quantize_per_token_int8(torch.randn(2, 3, 4, device=DEVICE))
    with pytest.raises(ValueError, match="quantize_per_token_int8: variant must be 0 or 1"):
        tk.quantize_per_token_int8(x, variant=2)
    with pytest.raises(TypeError, match="xscale"):
        tk.int8_gemm_dequant(qweight, torch.ones(2, device=DEVICE), qweight, wscale)
    with pytest.raises(ValueError, match="variant must be 0, 1, 3, 4, 5 or 6"):
        tk.int8_gemm_dequant(qweight, torch.ones(3, device=DEVICE), qweight, wscale, variant=2)
    with pytest.raises(ValueError, match="int8_linear_dynamic: variant must be 0 to 6"):
        tk.int8_linear_dynamic(x, qweight, wscale, variant=7)
    with pytest.raises(ValueError, match="K=9"):
        tk.int8_linear_dynamic(torch.randn(4, 9, device=DEVICE), qweight, wscale, variant=2)


def test_is_available():
    assert tk.is_available()
