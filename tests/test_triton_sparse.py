"""The Triton block-sparse GEMM (interpreter on CPU tensors, small shapes) against float64, and the op's
CUDA dispatcher path through it."""
import pytest
import torch

from pycomp.formats import sparse as fmt

tk = pytest.importorskip("pycomp.triton_kernels.sparse")
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def _case(m, n, k, block, seed=0):
    g = torch.Generator().manual_seed(seed)
    bn, bk = block
    keep = torch.rand(-(-n // bn), -(-k // bk), generator=g) > 0.6
    keep[0] = False  # an empty block row
    w = torch.randn(n, k, generator=g) * keep.repeat_interleave(bn, 0).repeat_interleave(bk, 1)[:n, :k]
    x, b = torch.randn(m, k, generator=g), torch.randn(n, generator=g)
    crow, col, values = fmt.pack_bsr(w, block)
    xp = torch.nn.functional.pad(x, (0, -(-k // bk) * bk - k))
    want = x.double() @ w.double().t() + b.double()
    return [t.to(DEVICE) for t in (xp, crow, col, values, b)], want


@pytest.mark.parametrize("m,n,k,block", [(1, 40, 50, (16, 16)), (5, 33, 64, (16, 32)), (20, 64, 40, (32, 16))])
def test_bsr_matches_float64(m, n, k, block):
    (xp, crow, col, values, b), want = _case(m, n, k, block, seed=m)
    got = tk.bsr_linear(xp, crow, col, values, n, b)
    torch.testing.assert_close(got.double().cpu(), want, rtol=1e-5, atol=1e-5 * float(want.abs().max()))


# The interpreter mis-computes bf16 tl.dot (fp16 through the same kernel body is exact to rounding),
# so bf16 is checked on a GPU only.
HALF = [torch.float16] + ([torch.bfloat16] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("dtype", HALF)
def test_bsr_half_and_all_empty(dtype):
    (xp, crow, col, values, b), want = _case(3, 32, 32, (16, 16), seed=7)
    got = tk.bsr_linear(xp.to(dtype), crow, col, values.to(dtype), 32, b.to(dtype))
    assert got.dtype == dtype
    torch.testing.assert_close(got.double().cpu(), want, rtol=3e-2, atol=3e-2 * float(want.abs().max()))
    crow, col, values = (t.to(DEVICE) for t in fmt.pack_bsr(torch.zeros(32, 32), (16, 16)))
    out = tk.bsr_linear(torch.randn(2, 32, device=DEVICE), crow, col, values, 32)
    assert torch.equal(out.cpu(), torch.zeros(2, 32))


def test_bsr_refuses_small_blocks():
    assert not tk.supports((4, 8)) and tk.supports((16, 64))
    crow, col, values = fmt.pack_bsr(torch.ones(8, 8), (4, 8))
    with pytest.raises(ValueError, match="powers of two >= 16"):
        tk.bsr_linear(torch.randn(1, 8), crow, col, values, 8)


def test_op_cuda_dispatcher_runs_triton_on_cpu_tensors(monkeypatch):
    from pycomp.ops import sparse as ops

    (xp, crow, col, values, b), want = _case(4, 40, 50, (16, 16), seed=3)
    monkeypatch.setattr(ops, "plan", lambda *a, **k: "triton")
    got = ops._bsr_impl(xp[:, :50].cpu(), crow.cpu(), col.cpu(), values.cpu(), 40, 50, b.cpu())
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5 * float(want.abs().max()))
