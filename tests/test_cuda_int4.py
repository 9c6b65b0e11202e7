"""The CUDA W4A16 path: the decode GEMV (csrc/cuda/int4) and the dispatcher (pycomp/ops/int4_cuda.py).

The dispatcher's Triton and reference branches also run on CPU tensors (Triton under
TRITON_INTERPRET=1); the GEMV tests run only where pycomp._C was built with CUDA and a GPU
is present, and skip cleanly elsewhere.
Reference: x @ dequantize_int4(...).T + bias in float64. Tolerance for the GEMV and the
Triton kernel on a GPU: max |out - ref| / max |ref| below 1e-2 (bf16) and 4e-3 (fp16):
the weights are rounded to x's dtype before the MMA (twice in bf16, whose scale is first
rounded from float16), the sums are fp32, the output is rounded once more.
"""
import pytest
import torch

from pycomp import _ext
from pycomp.formats.int4 import dequantize_int4, pack_nibbles
from pycomp.ops import int4_cuda

C = _ext._C
HAS_GEMV = torch.cuda.is_available() and _ext.has_c("w4a16_linear_cuda")
needs_gemv = pytest.mark.skipif(not HAS_GEMV, reason="needs a GPU and pycomp._C built with CUDA")

TOL = {torch.bfloat16: 1e-2, torch.float16: 4e-3, torch.float32: 1e-4}


def random_int4(N, K, group_size, symmetric, gen, device="cpu"):
    G = -(-K // group_size)
    codes = torch.randint(0, 16, (N, K), generator=gen, dtype=torch.uint8)
    zeros = None if symmetric else torch.randint(0, 16, (N, G), generator=gen, dtype=torch.uint8)
    scales = (torch.rand(N, G, generator=gen) * 0.02 + 1e-3).half()
    packed = pack_nibbles(codes, 8 if symmetric else zeros[:, -1])
    return packed.to(device), scales.to(device), None if zeros is None else zeros.to(device)


def reference(x, packed, scales, zeros, bias, group_size, K):
    """float64, on x's device (the GPU tests' large layers stay fast)."""
    w = dequantize_int4(packed, scales, zeros, group_size, K, torch.float64)
    out = x.double() @ w.T
    return out if bias is None else out + bias.double()


def rel_err(out, ref):
    return (out.double() - ref).abs().max().item() / max(ref.abs().max().item(), 1e-30)


# ----------------------------------------------------------------------------- dispatcher (CPU tensors too)


def test_plan(monkeypatch):
    monkeypatch.setattr(int4_cuda._ext, "has_c", lambda name: name == "w4a16_linear_cuda")
    for M in (1, 7, int4_cuda.CUDA_GEMV_MAX_M):
        assert int4_cuda.plan_cuda(M, 4096, torch.bfloat16) == "cuda"
        assert int4_cuda.plan_cuda(M, 4096, torch.float16) == "cuda"
    triton = "triton" if int4_cuda.triton_int4() is not None else "reference"
    assert int4_cuda.plan_cuda(int4_cuda.CUDA_GEMV_MAX_M + 1, 4096, torch.bfloat16) == triton  # past the GEMV's M
    assert int4_cuda.plan_cuda(1, 4100, torch.bfloat16) == triton  # K % 32 != 0
    assert int4_cuda.plan_cuda(1, 4096, torch.float32) == triton  # the GEMV is 16-bit only
    assert int4_cuda.plan_cuda(1, 4096, torch.float64) == "reference"
    monkeypatch.setattr(int4_cuda._ext, "has_c", lambda name: False)
    assert int4_cuda.plan_cuda(1, 4096, torch.bfloat16) == triton  # an extension built without CUDA


def test_op_plan_and_cuda_registration_use_the_dispatcher(monkeypatch):
    from pycomp.ops import int4 as int4_ops

    monkeypatch.setattr(int4_cuda._ext, "has_c", lambda name: name == "w4a16_linear_cuda")
    assert int4_ops.plan("cuda", 1, 4096, torch.bfloat16) == "cuda"
    assert int4_ops.plan("cuda", 1024, 4096, torch.bfloat16) == int4_cuda.plan_cuda(1024, 4096, torch.bfloat16)
    called = []
    monkeypatch.setattr(int4_cuda, "cuda_impl", lambda *a: called.append(a) or a[0])
    int4_ops._linear_cuda(torch.ones(1), None, None, None, None, 128, 1)
    assert len(called) == 1


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("shape", [(1, 33), (2, 3, 64)])  # x (..., K): a vector and a 3-D batch
def test_dispatcher_on_cpu_tensors(shape, symmetric, dtype):
    if int4_cuda.triton_int4() is None or not (int4_cuda.triton_int4()._INTERPRET):
        pytest.skip("needs the Triton interpreter (TRITON_INTERPRET=1, no GPU)")
    gen = torch.Generator().manual_seed(3)
    K, N, gs = shape[-1], 5, 32
    packed, scales, zeros = random_int4(N, K, gs, symmetric, gen)
    x = torch.randn(*shape, generator=gen).to(dtype)
    bias = torch.randn(N, generator=gen)  # float32 bias for any x: the op allows it
    out = int4_cuda.cuda_impl(x, packed, scales, zeros, bias, gs, K)
    assert out.shape == (*shape[:-1], N) and out.dtype == dtype
    ref = reference(x.reshape(-1, K), packed, scales, zeros, bias, gs, K).reshape(*shape[:-1], N)
    assert rel_err(out, ref) < (2**-7 if dtype == torch.bfloat16 else 1e-6)


def test_dispatcher_reference_branch(monkeypatch):
    monkeypatch.setattr(int4_cuda, "triton_int4", lambda: None)
    gen = torch.Generator().manual_seed(4)
    packed, scales, zeros = random_int4(6, 40, 32, False, gen)
    for dtype in (torch.float64, torch.float32):
        x = torch.randn(3, 40, generator=gen, dtype=dtype)
        assert int4_cuda.plan_cuda(3, 40, dtype) == "reference"
        out = int4_cuda.cuda_impl(x, packed, scales, zeros, None, 32, 40)
        assert out.dtype == dtype and rel_err(out, reference(x, packed, scales, zeros, None, 32, 40)) < 1e-6


def test_dispatcher_checks_inputs():
    gen = torch.Generator().manual_seed(5)
    packed, scales, zeros = random_int4(6, 64, 32, False, gen)
    x = torch.randn(2, 64)
    with pytest.raises(RuntimeError, match="pycomp.w4a16_linear: x has 48 features"):
        int4_cuda.cuda_impl(x[:, :48], packed, scales, zeros, None, 32, 64)
    with pytest.raises(RuntimeError, match="group_size"):
        int4_cuda.cuda_impl(x, packed, scales, zeros, None, 16, 64)
    empty = int4_cuda.cuda_impl(torch.empty(0, 64), packed, scales, zeros, None, 32, 64)
    assert empty.shape == (0, 6)


# ----------------------------------------------------------------------------- the GEMV on a GPU


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(0)


def check_gemv(M, N, K, gs, symmetric, dtype, with_bias, gen, x=None):
    packed, scales, zeros = random_int4(N, K, gs, symmetric, gen, "cuda")
    if x is None:
        x = torch.randn(M, K, generator=gen).to(dtype).cuda()
    bias = torch.randn(N, generator=gen).to(dtype).cuda() if with_bias else None
    out = C.w4a16_linear_cuda(x, packed, scales, zeros, bias, gs)
    assert out.dtype == dtype and out.shape == (M, N) and out.is_contiguous()
    err = rel_err(out, reference(x, packed, scales, zeros, bias, gs, K))
    assert err < TOL[dtype], f"M={M} N={N} K={K} gs={gs} sym={symmetric} {dtype}: relative error {err:.2e}"


@needs_gemv
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("M", [1, 2, 3, 8, 9, 15, 16])
@pytest.mark.parametrize("N,K", [(1, 32), (7, 96), (64, 4096), (300, 1056), (4096, 4096)])
def test_gemv_matches_reference(M, N, K, dtype, gen):
    check_gemv(M, N, K, 128 if K % 128 == 0 else 32, symmetric=False, dtype=dtype, with_bias=M % 2 == 1, gen=gen)


@needs_gemv
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("gs", [32, 64, 128])
@pytest.mark.parametrize("M,N,K", [(1, 4099, 8192), (16, 1000, 14336), (5, 77, 160)])  # splits; K % gs != 0
def test_gemv_groups_and_splits(M, N, K, gs, symmetric, dtype, gen):
    check_gemv(M, N, K, gs, symmetric, dtype, with_bias=True, gen=gen)


@needs_gemv
def test_gemv_workspace_split_happens():
    # a small layer must split K to fill the SMs, a large one must not
    assert C.w4a16_gemv_cuda_workspace(1, 256, 4096) > 0
    assert C.w4a16_gemv_cuda_workspace(1, 28672, 4096) == 0


@needs_gemv
@pytest.mark.parametrize("pad", [8, 3])  # aligned row stride (used as is), unaligned (copied)
def test_gemv_strided_x(pad, gen):
    big = torch.randn(5, 512 + pad, generator=gen).bfloat16().cuda()
    check_gemv(5, 100, 512, 64, False, torch.bfloat16, True, gen, x=big[:, :512])


@needs_gemv
def test_gemv_bad_inputs_raise(gen):
    packed, scales, zeros = random_int4(8, 64, 32, False, gen, "cuda")
    x = torch.randn(2, 64, device="cuda", dtype=torch.bfloat16)
    f = C.w4a16_linear_cuda
    with pytest.raises(RuntimeError, match="CUDA tensor"):
        f(x.cpu(), packed, scales, zeros, None, 32)
    with pytest.raises(RuntimeError, match="float16 or bfloat16"):
        f(x.float(), packed, scales, zeros, None, 32)
    with pytest.raises(RuntimeError, match="at most 16"):
        f(torch.randn(17, 64, device="cuda", dtype=torch.bfloat16), packed, scales, zeros, None, 32)
    with pytest.raises(RuntimeError, match="multiple of 32"):
        p48, s48, z48 = random_int4(8, 48, 32, False, gen, "cuda")
        f(x[:, :48], p48, s48, z48, None, 32)
    with pytest.raises(RuntimeError, match="group_size"):
        f(x, packed, scales, zeros, None, 16)
    with pytest.raises(RuntimeError, match="packed must be a 2-D uint8"):
        f(x, packed.to(torch.int8), scales, zeros, None, 32)
    with pytest.raises(RuntimeError, match="16-byte aligned"):
        buf = torch.empty(8 * 32 + 1, dtype=torch.uint8, device="cuda")
        f(x, buf[1:].view(8, 32), scales, zeros, None, 32)
    with pytest.raises(RuntimeError, match="scales must be"):
        f(x, packed, scales.float(), zeros, None, 32)
    with pytest.raises(RuntimeError, match="zeros must be"):
        f(x, packed, scales, zeros[:, :1].contiguous(), None, 32)
    with pytest.raises(RuntimeError, match="bias must be"):
        f(x, packed, scales, zeros, torch.zeros(8, device="cuda"), 32)  # float32 bias for bf16 x
    with pytest.raises(RuntimeError, match="packed is on"):
        f(x, packed.cpu(), scales, zeros, None, 32)


@needs_gemv
@pytest.mark.parametrize("M,K", [(1, 4096), (4, 4096), (8, 4096), (16, 4096), (1, 4097), (100, 4096), (600, 4096)])
def test_dispatcher_on_gpu(M, K, gen):
    # M <= 16 takes the GEMV (in its variant for M), larger M Triton (the fused GEMM, or from M=512 the weight
    # dequantized for cuBLAS); odd K takes Triton
    packed, scales, zeros = random_int4(1000, K, 128, False, gen, "cuda")
    x = torch.randn(M, K, generator=gen).bfloat16().cuda()
    out = int4_cuda.cuda_impl(x, packed, scales, zeros, None, 128, K)
    gemv = M <= int4_cuda.CUDA_GEMV_MAX_M and K % 32 == 0
    assert int4_cuda.plan_cuda(M, K, torch.bfloat16) == ("cuda" if gemv else "triton")
    assert rel_err(out, reference(x, packed, scales, zeros, None, 128, K)) < TOL[torch.bfloat16]


@needs_gemv
def test_gemv_replays_in_cuda_graph(gen):
    packed, scales, zeros = random_int4(512, 4096, 128, False, gen, "cuda")  # split-K: two kernels per call
    x = torch.randn(4, 4096, generator=gen).half().cuda()
    eager = C.w4a16_linear_cuda(x, packed, scales, zeros, None, 128)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = C.w4a16_linear_cuda(x, packed, scales, zeros, None, 128)
    graph.replay()
    torch.cuda.synchronize()
    assert torch.equal(eager, captured)
