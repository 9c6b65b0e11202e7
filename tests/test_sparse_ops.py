"""The sparse ops (2:4, CSR, block-CSR) against their float64 references, opcheck, autograd and bad input."""
import pytest
import torch

from pycomp import _ext
from pycomp.formats import sparse as fmt
from pycomp.ops import sparse as ops
from pycomp.prune import nm_mask


def _weight(pattern, n, k, seed=0, block=(4, 8)):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(n, k, generator=g)
    if pattern == "2:4":
        return w * nm_mask(w, pad=True)
    if pattern == "unstructured":
        w = w * (torch.rand(n, k, generator=g) > 0.85)
    else:
        bn, bk = block
        keep = torch.rand(-(-n // bn), -(-k // bk), generator=g) > 0.7
        w = w * keep.repeat_interleave(bn, 0).repeat_interleave(bk, 1)[:n, :k]
    if n > 2:
        w[1] = 0  # an all-zero row
    return w


def _call(pattern, x, w, bias, block=(4, 8)):
    n, k = w.shape
    if pattern == "2:4":
        return ops.sparse24_linear(x, *fmt.pack_24(w), k, bias)
    if pattern == "unstructured":
        return ops.csr_linear(x, *fmt.pack_csr(w), k, bias)
    return ops.bsr_linear(x, *fmt.pack_bsr(w, block), n, k, bias)


PATTERNS = ["2:4", "unstructured", "block"]
SHAPES = [(1, 64, 96), (1, 37, 21), (3, 33, 50), (5, 128, 64), (17, 40, 130), (200, 65, 96)]


@pytest.mark.parametrize("pattern", PATTERNS)
@pytest.mark.parametrize("m,n,k", SHAPES)
@pytest.mark.parametrize("with_bias", [True, False])
def test_ops_match_dense_float64(pattern, m, n, k, with_bias):
    w = _weight(pattern, n, k, seed=m + n + k)
    x = torch.randn(m, k)
    bias = torch.randn(n) if with_bias else None
    got = _call(pattern, x, w, bias)
    want = torch.nn.functional.linear(x.double(), w.double(), None if bias is None else bias.double())
    # fp32 accumulation in another order than float64: 1e-5 relative to the output's scale
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5 * float(want.abs().max()) + 1e-6)


@pytest.mark.parametrize("pattern", PATTERNS)
def test_ops_keep_leading_dims_dtype_and_empty_batch(pattern):
    w = _weight(pattern, 24, 40)
    x = torch.randn(2, 3, 40, dtype=torch.bfloat16)
    out = _call(pattern, x, w, None)
    assert out.shape == (2, 3, 24) and out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), x.float() @ w.t(), rtol=2e-2, atol=2e-2)
    assert _call(pattern, torch.randn(0, 40), w, None).shape == (0, 24)
    xt = torch.randn(40, 6).t()  # non-contiguous rows
    torch.testing.assert_close(_call(pattern, xt, w, None), xt @ w.t(), rtol=1e-5, atol=1e-5)


def _args(pattern, m=3, n=24, k=40):
    w = _weight(pattern, n, k)
    x, b = torch.randn(m, k), torch.randn(n)
    if pattern == "2:4":
        return torch.ops.pycomp.sparse24_linear, (x, *fmt.pack_24(w), k, b)
    if pattern == "unstructured":
        return torch.ops.pycomp.csr_linear, (x, *fmt.pack_csr(w), k, b)
    return torch.ops.pycomp.bsr_linear, (x, *fmt.pack_bsr(w, (4, 8)), n, k, b)


@pytest.mark.parametrize("pattern", PATTERNS)
def test_opcheck(pattern):
    op, args = _args(pattern)
    torch.library.opcheck(op, args)
    torch.library.opcheck(op, (torch.randn(2, 2, 40), *args[1:-1], None))


@pytest.mark.parametrize("pattern", PATTERNS)
def test_gradient_reaches_x_and_bias_not_the_frozen_weight(pattern):
    op, args = _args(pattern)
    x = args[0].clone().requires_grad_(True)
    bias = args[-1].clone().requires_grad_(True)
    op(x, *args[1:-1], bias).pow(2).sum().backward()
    w = _weight(pattern, 24, 40)
    x2, b2 = args[0].clone().requires_grad_(True), args[-1].clone().requires_grad_(True)
    torch.nn.functional.linear(x2, w, b2).pow(2).sum().backward()
    torch.testing.assert_close(x.grad, x2.grad, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(bias.grad, b2.grad, rtol=1e-4, atol=1e-4)


def test_bad_input_raises_naming_the_op():
    op, args = _args("2:4")
    with pytest.raises(RuntimeError, match="sparse24_linear: x has 41 features"):
        op(torch.randn(2, 41), *args[1:])
    with pytest.raises(RuntimeError, match="sparse24_linear: meta must be int16"):
        op(args[0], args[1], args[2].int(), *args[3:])
    op, args = _args("unstructured")
    with pytest.raises(RuntimeError, match="csr_linear: col must be torch.int16"):
        op(args[0], args[1], args[2].int(), *args[3:])
    with pytest.raises(RuntimeError, match="csr_linear: bias must be a vector of N=24"):
        op(*args[:-1], torch.randn(23))
    op, args = _args("block")
    with pytest.raises(RuntimeError, match="bsr_linear: crow must be int32 with"):
        op(*args[:4], 40, *args[5:])
    with pytest.raises(RuntimeError, match="bsr_linear: x must be a float tensor"):
        op(torch.ones(3, 40, dtype=torch.int32), *args[1:])


def test_plan_names_backends():
    for pattern in PATTERNS:
        want = f"cpu-{_ext._C.cpu_isa()}" if _ext.has_c(ops._CPU_KERNELS[pattern]) else "reference"
        assert ops.plan(pattern, "cpu", 1, torch.float32) == want
        assert ops.plan(pattern, "cpu", 1, torch.bfloat16) == "reference"
    with pytest.raises(ValueError, match="pattern must be one of"):
        ops.plan("3:4", "cpu")
