"""The CUDA int8 kernels (csrc/cuda/int8) against plain-PyTorch float64 references.

Runs only where pycomp._C was built with CUDA and a GPU is present; skips cleanly elsewhere.
Tolerances: quantization is exact (up to rounding ties: |dq| <= 1 on < 0.1% of elements);
W8A8 matches the float64 result of the same integers up to the output dtype's rounding;
W8A16 matches x @ (w * wscale).T + bias in float64 to 1e-2 relative (bf16), 5e-3 (fp16), 1e-4 (fp32).
"""
import pytest
import torch

from pycomp import _ext
from pycomp.ops.int8 import quantize_per_token_int8_ref

C = _ext._C
pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available() or not _ext.has_c("w8a8_gemm_cuda"),
    reason="needs a GPU and pycomp._C built with CUDA",
)

DTYPES = [torch.bfloat16, torch.float16, torch.float32]
MS = [1, 2, 3, 16, 17, 100, 256]
NS = [1, 7, 64, 300, 4096]
KS = [16, 48, 4096]
# max |out - ref| / max |ref| allowed for W8A16, per activation dtype
W8A16_TOL = {torch.bfloat16: 1e-2, torch.float16: 5e-3, torch.float32: 1e-4}
# element-wise rtol for W8A8 (the output's rounding), per output dtype
W8A8_RTOL = {torch.bfloat16: 1e-2, torch.float16: 2e-3, torch.float32: 1e-5}


def quantize_ref(x):
    """The op's definition (IEEE divisions on every device; see pycomp.ops.int8)."""
    return quantize_per_token_int8_ref(x)

def random_weight(N, K, gen):
    w = torch.randn(N, K, generator=gen, device="cuda")
    scale = w.abs().amax(dim=1) / 127.0
    return torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8), scale.float()


def rows_with_stride(M, K, pad, dtype, gen):
    """(M, K) view of a (M, K + pad) tensor: row stride K + pad."""
    big = torch.randn(M, K + pad, generator=gen, device="cuda").to(dtype)
    return big[:, :K]


def assert_quantized_close(q, s, x):
    q_ref, s_ref = quantize_ref(x)
    torch.testing.assert_close(s, s_ref, rtol=0, atol=0)
    dq = (q.int() - q_ref.int()).abs()
    assert dq.max().item() <= 1, "quantized values differ by more than a rounding tie"
    assert (dq > 0).float().mean().item() < 1e-3, "too many rounding differences"


@pytest.fixture
def gen():
    return torch.Generator(device="cuda").manual_seed(0)


# ----------------------------------------------------------------------------- quantize


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("M", MS)
@pytest.mark.parametrize("K", [16, 48, 100, 1000, 1030, 4096])
def test_quantize_matches_reference(dtype, M, K, gen):
    x = (torch.randn(M, K, generator=gen, device="cuda") * 3).to(dtype)
    if M > 1:
        x[-1] = 0  # an all-zero row: scale 0, q 0
    q, s = C.quantize_per_token_int8_cuda(x)
    assert q.dtype == torch.int8 and q.shape == (M, K) and q.is_contiguous()
    assert s.dtype == torch.float32 and s.shape == (M,)
    assert_quantized_close(q, s, x)
    if M > 1:
        assert s[-1].item() == 0 and q[-1].abs().sum().item() == 0


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("pad", [16, 3])  # aligned rows (vector loads) and misaligned rows (scalar path)
@pytest.mark.parametrize("K", [64, 2048])
def test_quantize_strided_rows(dtype, pad, K, gen):
    x = rows_with_stride(37, K, pad, dtype, gen)
    q, s = C.quantize_per_token_int8_cuda(x)
    assert_quantized_close(q, s, x)


def test_quantize_ties_round_to_even():
    # amax 127 makes inv exactly 1, so x * inv keeps the .5 ties.
    x = torch.tensor([[127.0, 0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 3.0]], device="cuda")
    q, s = C.quantize_per_token_int8_cuda(x)
    assert q.tolist() == [[127, 0, 2, 2, 0, -2, -2, 3]]
    assert s.item() == 1.0


@pytest.mark.parametrize("K", [64, 45])  # vector and scalar paths
def test_quantize_nan_and_inf_follow_the_reference(K):
    # NaN left out of max|x| and quantized to -127; an infinite max|x| makes inv 0, so the inf itself is -127
    x = torch.randn(4, K, generator=torch.Generator().manual_seed(2))
    x[0, 3] = x[0, K - 2] = float("nan")
    x[1, 5] = float("inf")
    x[2] = float("nan")
    q, s = C.quantize_per_token_int8_cuda(x.cuda())
    q_ref, s_ref = quantize_per_token_int8_ref(x)
    assert torch.equal(q.cpu(), q_ref) and torch.equal(s.cpu(), s_ref)
    assert q[0, 3].item() == -127 and q[1, 5].item() == -127


def test_quantize_errors():
    with pytest.raises(RuntimeError, match="CUDA tensor"):
        C.quantize_per_token_int8_cuda(torch.randn(2, 16))
    with pytest.raises(RuntimeError, match="float32, float16 or bfloat16"):
        C.quantize_per_token_int8_cuda(torch.ones(2, 16, dtype=torch.int32, device="cuda"))
    with pytest.raises(RuntimeError, match="2-D"):
        C.quantize_per_token_int8_cuda(torch.randn(2, 3, 16, device="cuda"))


# ----------------------------------------------------------------------------- W8A16 (weight-only)


def w8a16_ref(x, w, ws, bias):
    out = x.double() @ (w.double() * ws.double()[:, None]).t()
    return out if bias is None else out + bias.double()


def check_w8a16(x, w, ws, bias):
    out = C.w8a16_linear_cuda(x, w, ws, bias)
    assert out.dtype == x.dtype and out.shape == (x.shape[0], w.shape[0])
    ref = w8a16_ref(x, w, ws, bias)
    err = (out.double() - ref).abs().max().item() / max(ref.abs().max().item(), 1e-30)
    assert err < W8A16_TOL[x.dtype], f"relative error {err:.2e}"


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("M", MS)
@pytest.mark.parametrize("N", NS)
@pytest.mark.parametrize("K", KS)
def test_w8a16_matches_reference(dtype, M, N, K, gen):
    x = torch.randn(M, K, generator=gen, device="cuda").to(dtype)
    w, ws = random_weight(N, K, gen)
    bias = torch.randn(N, generator=gen, device="cuda").to(dtype)
    check_w8a16(x, w, ws, None)
    check_w8a16(x, w, ws, bias)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("pad", [16, 4, 3])  # 16-byte aligned rows; aligned for fp32 only; odd
def test_w8a16_strided_rows(dtype, pad, gen):
    x = rows_with_stride(5, 4096, pad, dtype, gen)
    w, ws = random_weight(300, 4096, gen)
    check_w8a16(x, w, ws, torch.randn(300, generator=gen, device="cuda").to(dtype))


def test_w8a16_model_shape(gen):
    x = torch.randn(1, 4096, generator=gen, device="cuda").bfloat16()
    w, ws = random_weight(14336, 4096, gen)
    check_w8a16(x, w, ws, None)


def test_w8a16_errors(gen):
    x = torch.randn(2, 64, device="cuda").bfloat16()
    w, ws = random_weight(8, 64, gen)
    with pytest.raises(RuntimeError, match="multiple of 16"):
        C.w8a16_linear_cuda(x[:, :40], w[:, :40].contiguous(), ws, None)
    with pytest.raises(RuntimeError, match="float32, float16 or bfloat16"):
        C.w8a16_linear_cuda(x.int(), w, ws, None)
    with pytest.raises(RuntimeError, match="qweight must be a 2-D int8"):
        C.w8a16_linear_cuda(x, w.float(), ws, None)
    with pytest.raises(RuntimeError, match="wscale"):
        C.w8a16_linear_cuda(x, w, ws.half(), None)
    with pytest.raises(RuntimeError, match="bias"):
        C.w8a16_linear_cuda(x, w, ws, torch.zeros(8, device="cuda"))  # float32 bias for bf16 x
    with pytest.raises(RuntimeError, match="K=32"):
        C.w8a16_linear_cuda(x, w[:, :32].contiguous(), ws, None)
    with pytest.raises(RuntimeError, match="contiguous"):
        C.w8a16_linear_cuda(x, w.t().contiguous().t(), ws, None)
    misaligned = torch.empty(8 * 64 + 1, dtype=torch.int8, device="cuda")[1:].view(8, 64)
    with pytest.raises(RuntimeError, match="16-byte aligned"):
        C.w8a16_linear_cuda(x, misaligned, ws, None)
    with pytest.raises(RuntimeError, match="CUDA tensor"):
        C.w8a16_linear_cuda(x.cpu(), w, ws, None)


# ----------------------------------------------------------------------------- W8A8 GEMM


def w8a8_ref(xq, xs, w, ws, bias):
    out = (xq.double() @ w.double().t()) * xs.double()[:, None] * ws.double()[None, :]
    return out if bias is None else out + bias.double()


def random_w8a8_inputs(M, N, K, gen):
    xq = torch.randint(-127, 128, (M, K), generator=gen, device="cuda", dtype=torch.int8)
    w = torch.randint(-127, 128, (N, K), generator=gen, device="cuda", dtype=torch.int8)
    # scales that keep outputs near 1 (and inside float16's range)
    norm = 1.0 / (127.0 * K**0.25)
    xs = (torch.rand(M, generator=gen, device="cuda") + 0.5) * norm
    ws = (torch.rand(N, generator=gen, device="cuda") + 0.5) * norm
    return xq, xs, w, ws


def check_w8a8(xq, xs, w, ws, bias, out_dtype, tile):
    out = C.w8a8_gemm_cuda(xq, xs, w, ws, bias, out_dtype, tile=tile)
    assert out.dtype == out_dtype and out.shape == (xq.shape[0], w.shape[0])
    ref = w8a8_ref(xq, xs, w, ws, bias)
    atol = 1e-5 * max(ref.abs().max().item(), 1e-30)
    torch.testing.assert_close(out.double(), ref, rtol=W8A8_RTOL[out_dtype], atol=atol)


@pytest.mark.parametrize("out_dtype", DTYPES)
@pytest.mark.parametrize("M", MS)
@pytest.mark.parametrize("N", NS)
@pytest.mark.parametrize("K", KS)
def test_w8a8_matches_reference(out_dtype, M, N, K, gen):
    xq, xs, w, ws = random_w8a8_inputs(M, N, K, gen)
    bias = torch.randn(N, generator=gen, device="cuda").to(out_dtype)
    for tile in ("auto", "128x256", "64x128"):
        check_w8a8(xq, xs, w, ws, None, out_dtype, tile)
        check_w8a8(xq, xs, w, ws, bias, out_dtype, tile)


@pytest.mark.parametrize("pad", [16, 5])  # aligned row stride, and one the wrapper must copy
def test_w8a8_strided_rows(pad, gen):
    M, N, K = 70, 300, 272
    big = torch.randint(-127, 128, (M, K + pad), generator=gen, device="cuda", dtype=torch.int8)
    _, xs, w, ws = random_w8a8_inputs(M, N, K, gen)
    for tile in ("128x256", "64x128"):
        check_w8a8(big[:, :K], xs, w, ws, None, torch.bfloat16, tile)


@pytest.mark.parametrize("tile", ["128x256", "64x128"])
@pytest.mark.parametrize("K", [64, 128, 192, 208, 256, 320, 336])
def test_w8a8_pipeline_depths(tile, K, gen):
    """k tiles of 64 fewer than, equal to and more than the 3 the prologue fills, with and without a K tail."""
    xq, xs, w, ws = random_w8a8_inputs(130, 260, K, gen)
    check_w8a8(xq, xs, w, ws, None, torch.float32, tile)


@pytest.mark.parametrize("tile,M", [("128x256", 9 * 128 + 5), ("64x128", 17 * 64 + 3)])
def test_w8a8_raster_partial_group(tile, M, gen):
    """Row tiles not a multiple of the raster group (8): the last group is short, every tile still runs once."""
    xq, xs, w, ws = random_w8a8_inputs(M, 300, 64, gen)
    bias = torch.randn(300, generator=gen, device="cuda").half()
    check_w8a8(xq, xs, w, ws, bias, torch.float16, tile)


def test_w8a8_broadcast_rows(gen):
    """An expanded xq (row stride 0) is read in place, every row the same."""
    xq, xs, w, ws = random_w8a8_inputs(1, 300, 256, gen)
    xq = xq.expand(70, 256)
    xs = xs.expand(70).contiguous()
    assert xq.stride(0) == 0
    for tile in ("128x256", "64x128"):
        check_w8a8(xq, xs, w, ws, None, torch.float32, tile)


@pytest.mark.parametrize("M,N,K", [(1024, 4096, 4096), (300, 14336, 4096), (1024, 4096, 14336)])
def test_w8a8_model_shapes(M, N, K, gen):
    xq, xs, w, ws = random_w8a8_inputs(M, N, K, gen)
    check_w8a8(xq, xs, w, ws, None, torch.bfloat16, "auto")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_quantize_then_gemm_is_the_dynamic_op(dtype, gen):
    """The path the ops layer takes: quantize x, then the GEMM, against quantize_ref + float64."""
    M, N, K = 100, 300, 4096
    x = torch.randn(M, K, generator=gen, device="cuda").to(dtype)
    w, ws = random_weight(N, K, gen)
    bias = torch.randn(N, generator=gen, device="cuda").to(dtype)
    q, s = C.quantize_per_token_int8_cuda(x)
    out = C.w8a8_gemm_cuda(q, s, w, ws, bias, dtype)
    q_ref, s_ref = quantize_ref(x)
    ref = w8a8_ref(q_ref, s_ref, w, ws, bias)
    err = (out.double() - ref).abs().max().item() / ref.abs().max().item()
    assert err < 1e-2, f"relative error {err:.2e}"


def test_w8a8_errors(gen):
    xq, xs, w, ws = random_w8a8_inputs(4, 8, 64, gen)
    with pytest.raises(RuntimeError, match="multiple of 16"):
        C.w8a8_gemm_cuda(xq[:, :40], xs, w[:, :40].contiguous(), ws, None, torch.bfloat16)
    with pytest.raises(RuntimeError, match="xq must be a 2-D int8"):
        C.w8a8_gemm_cuda(xq.float(), xs, w, ws, None, torch.bfloat16)
    with pytest.raises(RuntimeError, match="out_dtype"):
        C.w8a8_gemm_cuda(xq, xs, w, ws, None, torch.int32)
    with pytest.raises(RuntimeError, match="xscale"):
        C.w8a8_gemm_cuda(xq, xs[:3], w, ws, None, torch.bfloat16)
    with pytest.raises(RuntimeError, match="bias"):
        C.w8a8_gemm_cuda(xq, xs, w, ws, torch.zeros(8, device="cuda"), torch.bfloat16)
    with pytest.raises(RuntimeError, match="K=32"):
        C.w8a8_gemm_cuda(xq, xs, w[:, :32].contiguous(), ws, None, torch.bfloat16)
    with pytest.raises(RuntimeError, match="tile"):
        C.w8a8_gemm_cuda(xq, xs, w, ws, None, torch.bfloat16, tile="32x32")


# ----------------------------------------------------------------------------- CUDA graphs, info


def test_kernels_replay_in_cuda_graphs(gen):
    """The benchmarks time graph replays: the kernels must capture (warm-up call first)."""
    x = torch.randn(256, 4096, generator=gen, device="cuda").bfloat16()
    w, ws = random_weight(4096, 4096, gen)

    def step():
        q, s = C.quantize_per_token_int8_cuda(x)
        return C.w8a8_gemm_cuda(q, s, w, ws, None, torch.bfloat16), C.w8a16_linear_cuda(x[:4], w, ws, None)

    eager = step()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = step()
    graph.replay()
    torch.cuda.synchronize()
    for a, b in zip(eager, captured):
        assert torch.equal(a, b)


def test_info():
    info = C.cuda_kernels_info()
    assert info["k_multiple"] == 16
    assert set(info["w8a8_gemm"]["tiles"]) == {"128x256", "64x128"}
    assert C.w8a8_gemm_cuda_auto_tile(1024, 4096) in info["w8a8_gemm"]["tiles"]
