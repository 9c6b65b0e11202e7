"""The int8 ops: reference semantics, CPU kernels through the op layer, fakes, autograd, compile."""
import pytest
import torch

from pycomp.ops import int8 as ops
from pycomp.quantize.int8 import quantize_weight_int8


def _weights(n, k, seed=0):
    g = torch.Generator().manual_seed(seed)
    q, s = quantize_weight_int8(torch.randn(n, k, generator=g))
    return q, s, torch.randn(n, generator=g)


def test_reference_quantizer_by_hand():
    x = torch.tensor([[1.0, -2.0, 0.5, 254.0 / 127], [0.0, 0.0, 0.0, 0.0]])
    q, s = ops.quantize_per_token_int8_ref(x)
    # amax = 2: inv = 63.5; 1*63.5 = 63.5 -> 64 (half to even), 0.5*63.5 = 31.75 -> 32, 2*63.5 = 127
    assert q.tolist() == [[64, -127, 32, 127], [0, 0, 0, 0]]
    assert s.tolist() == pytest.approx([2 / 127, 0.0])


def test_reference_linear_by_hand():
    x = torch.tensor([[127.0, -127.0]])  # amax 127: scale 1, q = x
    qw = torch.tensor([[1, 2], [-3, 4]], dtype=torch.int8)
    ws = torch.tensor([0.5, 2.0])
    out = ops.int8_linear_dynamic_ref(x, qw, ws, torch.tensor([1.0, 0.0]))
    assert out.tolist() == [[(127 - 254) * 0.5 + 1.0, (-381 - 508) * 2.0]]
    assert ops.int8_linear_weight_only_ref(x, qw, ws).tolist() == [[(127 - 254) * 0.5, (-381 - 508) * 2.0]]


@pytest.mark.parametrize("shape", [(1, 64), (3, 7, 33), (17, 4096 // 8), (5, 1)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_quantize_op_matches_reference(shape, dtype):
    x = torch.randn(shape).to(dtype) * 3
    q, s = ops.quantize_per_token_int8(x)
    qr, sr = ops.quantize_per_token_int8_ref(x)
    assert q.shape == x.shape and s.shape == x.shape[:-1]
    assert torch.equal(q, qr)
    torch.testing.assert_close(s, sr, rtol=0, atol=0)


@pytest.mark.parametrize("op,ref", [(ops.int8_linear_dynamic, ops.int8_linear_dynamic_ref),
                                    (ops.int8_linear_weight_only, ops.int8_linear_weight_only_ref)])
@pytest.mark.parametrize("lead,n,k", [((1,), 7, 33), ((4,), 16, 64), ((2, 9), 33, 100), ((130,), 5, 257)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("with_bias", [True, False])
def test_linear_ops_match_reference(op, ref, lead, n, k, dtype, with_bias):
    q, s, b = _weights(n, k)
    b = b if with_bias else None
    x = torch.randn(*lead, k).to(dtype)
    got = op(x, q, s, b)
    want = ref(x, q, s, b)
    assert got.shape == (*lead, n) and got.dtype == dtype
    tol = {torch.float32: 1e-4, torch.bfloat16: 2e-2}[dtype]
    torch.testing.assert_close(got, want, rtol=tol, atol=tol)


def test_linear_op_non_contiguous_input_and_empty_batch():
    q, s, b = _weights(8, 40)
    wide = torch.randn(6, 90)
    x = wide[:, 5:45]  # row stride 90 > K
    torch.testing.assert_close(ops.int8_linear_dynamic(x, q, s, b), ops.int8_linear_dynamic_ref(x, q, s, b))
    xt = torch.randn(40, 6).t()  # column stride != 1
    torch.testing.assert_close(ops.int8_linear_dynamic(xt, q, s, b), ops.int8_linear_dynamic_ref(xt, q, s, b))
    empty = torch.randn(0, 40)
    assert ops.int8_linear_dynamic(empty, q, s, b).shape == (0, 8)
    assert ops.int8_linear_weight_only(torch.randn(2, 0, 40), q, s, b).shape == (2, 0, 8)


def test_linear_op_bad_input_raises_clearly():
    q, s, b = _weights(8, 40)
    with pytest.raises(RuntimeError, match="40"):
        ops.int8_linear_dynamic(torch.randn(2, 41), q, s, b)
    with pytest.raises(RuntimeError, match="int8"):
        ops.int8_linear_dynamic(torch.randn(2, 40), q.float(), s, b)
    with pytest.raises(RuntimeError, match="wscale"):
        ops.int8_linear_dynamic(torch.randn(2, 40), q, s[:4], b)
    with pytest.raises(RuntimeError, match="float"):
        ops.int8_linear_dynamic(torch.ones(2, 40, dtype=torch.int32), q, s, b)
    with pytest.raises(RuntimeError, match="bias"):
        ops.int8_linear_weight_only(torch.randn(2, 40), q, s, b[:3])


@pytest.mark.parametrize("name", ["int8_linear_dynamic", "int8_linear_weight_only"])
def test_opcheck(name):
    q, s, b = _weights(6, 24)
    op = getattr(torch.ops.pycomp, name)
    torch.library.opcheck(op, (torch.randn(3, 24), q, s, b))
    torch.library.opcheck(op, (torch.randn(2, 3, 24), q, s, None))


def test_opcheck_quantize():
    torch.library.opcheck(torch.ops.pycomp.quantize_per_token_int8, (torch.randn(5, 24),))


def test_straight_through_gradient():
    q, s, b = _weights(6, 24)
    x = torch.randn(3, 24, requires_grad=True)
    ops.int8_linear_dynamic(x, q, s, b).sum().backward()
    torch.testing.assert_close(x.grad, (q.float() * s[:, None]).sum(0).expand(3, 24))


def test_plan_names_cpu_backend():
    from pycomp import _ext

    assert ops.plan("dynamic", "cpu") == f"cpu-{_ext._C.cpu_isa()}"
    assert ops.plan("weight_only", "meta") == "reference"
    for mode in ("dynamic", "weight_only"):  # int8 takes no dense route: its small-N tiles beat it
        assert ops.plan(mode, "cpu", 8192, 9) == ops.plan(mode, "cpu", 8192, 288) == f"cpu-{_ext._C.cpu_isa()}"


@pytest.mark.parametrize("m,k,n", [(1024, 9, 32), (1500, 64, 7), (2048, 1, 1), (8192, 288, 64)])
def test_weight_only_on_many_rows_of_few_features(m, k, n):
    """A conv through im2col: the small-N tiles."""
    q, s, b = _weights(n, k)
    x = torch.randn(m, k) * 3
    tol = 2e-5 * k ** 0.5  # float32 sums of k products against the float64 reference
    torch.testing.assert_close(ops.int8_linear_weight_only(x, q, s, b), ops.int8_linear_weight_only_ref(x, q, s, b),
                               rtol=1e-5, atol=tol)


def test_cuda_routing_by_m_and_k(monkeypatch):
    """Dispatch on CUDA: W8A16 GEMV for small M, else Triton; W8A8 on Triton, the CUDA GEMM only without Triton."""
    from pycomp import _ext

    class FakeC:
        w8a16_linear_cuda = w8a8_gemm_cuda = object()

    monkeypatch.setattr(_ext, "_C", FakeC)
    monkeypatch.setattr(_ext, "triton_int8", lambda: object())
    assert ops.plan("weight_only", "cuda", 1, 4096) == "cuda"
    assert ops.plan("weight_only", "cuda", ops.CUDA_GEMV_MAX_M + 1, 4096) == "triton"
    assert ops.plan("weight_only", "cuda", 1, 4095) == "triton"
    assert ops.plan("dynamic", "cuda", 1024, 4096) == "triton"
    assert ops.plan("dynamic", "cuda", 1, 4096) == "triton"
    assert ops.plan("dynamic", "cuda", 1024, 100) == "triton"
    monkeypatch.setattr(_ext, "triton_int8", lambda: None)
    assert ops.plan("dynamic", "cuda", 1024, 4096) == "cuda"
    assert ops.plan("dynamic", "cuda", 1024, 100) == "reference"
    assert ops.plan("dynamic", "cuda", 1, 4096) == "reference"
    assert ops.plan("weight_only", "cuda", 1, 4096) == "cuda"
    assert ops.plan("weight_only", "cuda", 64, 4096) == "reference"


@pytest.mark.parametrize("backend", ["triton", "reference"])
@pytest.mark.parametrize("mode", ["dynamic", "weight_only"])
def test_cuda_dispatcher_paths_on_cpu_tensors(monkeypatch, mode, backend):
    """The CUDA impl's dispatch (reshape, bias cast, empty batch) through the paths that run without a GPU."""
    from pycomp import _ext

    if backend == "triton" and (_ext.triton_int8() is None or not _ext.triton_interpreting()):
        pytest.skip("needs Triton's interpreter")
    monkeypatch.setattr(ops, "plan", lambda *a, **k: backend)
    q, s, b = _weights(5, 33)
    x = torch.randn(2, 3, 33)
    ref = ops.int8_linear_dynamic_ref if mode == "dynamic" else ops.int8_linear_weight_only_ref
    impl = ops._linear_cuda(mode)
    torch.testing.assert_close(impl(x, q, s, b), ref(x, q, s, b), rtol=1e-4, atol=1e-4)
    assert impl(torch.randn(0, 33), q, s, None).shape == (0, 5)


# ----------------------------------------------------------------------------- reduce-range W8A8


def test_reference_uint7_quantizer_by_hand():
    # row 0: lo = -1, hi = 3: r = 4, inv = 31.75, zp = rint(31.75) = 32;
    #   3 -> rint(95.25) + 32 = 127, -1 -> -32 + 32 = 0, 0.5 -> rint(15.875) + 32 = 48
    # row 1: all positive, so lo = 0 and zp = 0; row 2: zeros (scale 0, zp 0)
    x = torch.tensor([[3.0, -1.0, 0.5, 0.0], [1.0, 2.0, 0.25, 4.0], [0.0, 0.0, 0.0, 0.0]])
    q, s, zp = ops.quantize_per_token_uint7_ref(x)
    assert q.dtype == torch.uint8 and zp.dtype == torch.int32
    assert q.tolist() == [[127, 0, 48, 32], [32, 64, 8, 127], [0, 0, 0, 0]]
    assert zp.tolist() == [32, 0, 0]
    assert s.tolist() == pytest.approx([4 / 127, 4 / 127, 0.0])


def test_reference_reduce_range_linear_by_hand():
    # lo = -63.5, hi = 63.5: inv = scale = 1, zp = 64 (half to even); q = [64 + 64 -> 127 (clamped), 0, 66],
    # so q - zp = [63, -64, 2]: the top of the range loses a step to the zero point's rounding
    x = torch.tensor([[63.5, -63.5, 2.4]])
    qw = torch.tensor([[1, 2, 3], [-3, 4, 0]], dtype=torch.int8)
    out = ops.int8_linear_dynamic_reduce_range_ref(x, qw, torch.tensor([0.5, 2.0]), ops.weight_row_sums(qw),
                                                   torch.tensor([1.0, 0.0]))
    assert out.tolist() == [[(63 - 128 + 6) * 0.5 + 1.0, (-189 - 256) * 2.0]]


@pytest.mark.parametrize("shape", [(1, 64), (3, 7, 33), (5, 1)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_quantize_uint7_op_matches_reference(shape, dtype):
    x = torch.randn(shape).to(dtype) * 3
    got, want = ops.quantize_per_token_uint7(x), ops.quantize_per_token_uint7_ref(x)
    assert got[0].shape == x.shape and got[1].shape == got[2].shape == x.shape[:-1]
    for g, w in zip(got, want):
        assert torch.equal(g, w)


@pytest.mark.parametrize("lead,n,k", [((1,), 7, 33), ((2, 9), 33, 100), ((130,), 5, 257), ((3,), 4, 4096)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("with_bias", [True, False])
def test_reduce_range_op_matches_reference(lead, n, k, dtype, with_bias):
    q, s, b = _weights(n, k)
    b = b if with_bias else None
    x = torch.randn(*lead, k).to(dtype)
    got = ops.int8_linear_dynamic_reduce_range(x, q, s, ops.weight_row_sums(q), b)
    assert got.shape == (*lead, n) and got.dtype == dtype
    assert torch.equal(got, ops.int8_linear_dynamic_reduce_range_ref(x, q, s, ops.weight_row_sums(q), b))
    # 7-bit activations: close to the exact W8A8 path, within what one bit less of resolution costs
    exact = ops.int8_linear_dynamic_ref(x, q, s, b).float()
    assert (got.float() - exact).norm() / exact.norm() < 0.05


def test_reduce_range_op_edges_and_bad_input():
    q, s, b = _weights(8, 40)
    wsum = ops.weight_row_sums(q)
    xt = torch.randn(40, 6).t()  # column stride != 1
    assert torch.equal(ops.int8_linear_dynamic_reduce_range(xt, q, s, wsum, b),
                       ops.int8_linear_dynamic_reduce_range_ref(xt, q, s, wsum, b))
    assert ops.int8_linear_dynamic_reduce_range(torch.randn(0, 40), q, s, wsum, b).shape == (0, 8)
    with pytest.raises(RuntimeError, match="int8_linear_dynamic_reduce_range.*wsum"):
        ops.int8_linear_dynamic_reduce_range(torch.randn(2, 40), q, s, wsum.float(), b)
    with pytest.raises(RuntimeError, match="int8_linear_dynamic_reduce_range.*wsum"):
        ops.int8_linear_dynamic_reduce_range(torch.randn(2, 40), q, s, wsum[:5], b)
    with pytest.raises(RuntimeError, match="40"):
        ops.int8_linear_dynamic_reduce_range(torch.randn(2, 41), q, s, wsum, b)


def test_opcheck_reduce_range():
    q, s, b = _weights(6, 24)
    wsum = ops.weight_row_sums(q)
    op = torch.ops.pycomp.int8_linear_dynamic_reduce_range
    torch.library.opcheck(op, (torch.randn(3, 24), q, s, wsum, b))
    torch.library.opcheck(op, (torch.randn(2, 3, 24), q, s, wsum, None))
    torch.library.opcheck(torch.ops.pycomp.quantize_per_token_uint7, (torch.randn(5, 24),))


def test_reduce_range_straight_through_gradient_and_plan():
    from pycomp import _ext

    q, s, b = _weights(6, 24)
    x = torch.randn(3, 24, requires_grad=True)
    ops.int8_linear_dynamic_reduce_range(x, q, s, ops.weight_row_sums(q), b).sum().backward()
    torch.testing.assert_close(x.grad, (q.float() * s[:, None]).sum(0).expand(3, 24))
    want = "cpu-portable" if _ext._C.cpu_isa() == "portable" else "cpu-avx2"
    assert ops.plan("dynamic_reduce_range", "cpu") == want
    assert ops.plan("dynamic_reduce_range", "cuda") == "reference"
