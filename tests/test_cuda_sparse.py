"""The 2:4 CUDA kernels (mma.sp GEMV and GEMM) against float64, on odd shapes; skipped without a GPU."""
import pytest
import torch

from pycomp import _ext
from pycomp.formats import sparse as fmt
from pycomp.ops import sparse as ops
from pycomp.prune import nm_mask

pytestmark = pytest.mark.skipif(not torch.cuda.is_available() or not _ext.has_c("sparse24_gemm_cuda"),
                                reason="needs a GPU and pycomp._C built with the CUDA kernels")


def _case(m, n, k, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(n, k, generator=g)
    w = (w * nm_mask(w, pad=True)).to(dtype)
    if n > 3:
        w[2] = 0  # an all-zero row
    values, meta = fmt.pack_24(w)
    x, b = torch.randn(m, k, generator=g).to(dtype), torch.randn(n, generator=g).to(dtype)
    want = x.double() @ w.double().t() + b.double()
    return [t.cuda() for t in (x, values, meta, b)], want, values.shape[1] * 2


def _check(got, want):
    # bf16/fp16 inputs are exact in the fp32 accumulator; the output rounding dominates (2^-8 relative)
    torch.testing.assert_close(got.double().cpu(), want, rtol=1e-2, atol=1e-2 * float(want.abs().max()))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("m,n,k", [(1, 64, 64), (1, 37, 21), (3, 100, 96), (16, 33, 200), (16, 4096, 4096)])
def test_gemv(m, n, k, dtype):
    (x, values, meta, b), want, kp = _case(m, n, k, dtype, seed=m + n)
    xp = torch.nn.functional.pad(x, (0, kp - k))
    _check(_ext._C.sparse24_gemv_cuda(xp, values, meta, b), want)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("m,n,k", [(1, 64, 64), (17, 37, 21), (100, 100, 96), (257, 130, 200), (1024, 512, 1024)])
def test_gemm(m, n, k, dtype):
    (x, values, meta, b), want, kp = _case(m, n, k, dtype, seed=m + k)
    xp = torch.nn.functional.pad(x, (0, kp - k))
    _check(_ext._C.sparse24_gemm_cuda(xp, values, meta, b), want)


# The candidates beside variant 0 (csrc/cuda/sparse/sparse_cuda.h; GEMV 3 and GEMM 2, 3, 6 were removed, their
# numbers stay unused).
GEMV_VARIANTS = (1, 2, 4, 5)
GEMM_VARIANTS = (1, 4, 5)
REMOVED = {"gemv": (3,), "gemm": (2, 3, 6)}


def test_variant_lists_match_the_binding():
    assert _ext._C.sparse24_gemv_cuda_variants() == [0, *GEMV_VARIANTS]
    assert _ext._C.sparse24_gemm_cuda_variants() == [0, *GEMM_VARIANTS]


@pytest.mark.parametrize("variant", GEMV_VARIANTS)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("m,n,k", [(1, 64, 64), (1, 37, 21), (3, 100, 96), (9, 48, 160), (16, 33, 200),
                                   (16, 4096, 4096)])
def test_gemv_variants(m, n, k, dtype, variant):
    """The 16-byte-load GEMVs (relabelled k32 steps): odd N, half 64-column windows (Kp % 64 == 32), M <= 8
    (one token tile) and M > 8 (two)."""
    (x, values, meta, b), want, kp = _case(m, n, k, dtype, seed=m + n + k)
    xp = torch.nn.functional.pad(x, (0, kp - k))
    _check(_ext._C.sparse24_gemv_cuda(xp, values, meta, b, variant), want)


@pytest.mark.parametrize("variant", GEMM_VARIANTS)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("m,n,k", [(1, 64, 64), (17, 37, 21), (100, 100, 96), (257, 130, 200), (130, 200, 544),
                                   (1024, 512, 1024)])
def test_gemm_variants(m, n, k, dtype, variant):
    """The tiled GEMMs: partial 128/256-row and 128-token tiles, rows past Np (metadata read from a valid row),
    a half last k-tile (Kp % 64 == 32), N % 8 != 0 (scalar stores)."""
    (x, values, meta, b), want, kp = _case(m, n, k, dtype, seed=m + k)
    xp = torch.nn.functional.pad(x, (0, kp - k))
    _check(_ext._C.sparse24_gemm_cuda(xp, values, meta, b, variant), want)


def test_variants_take_misaligned_views():
    """Views whose data is not 16-byte aligned are copied by the wrapper, not refused by the launcher."""
    (x, values, meta, b), want, kp = _case(20, 64, 64, torch.bfloat16, seed=3)
    xp = torch.nn.functional.pad(x, (0, kp - 64))
    xs = torch.empty(20 * kp + 1, device="cuda", dtype=x.dtype)[1:].view(20, kp)
    xs.copy_(xp)
    vs = torch.empty(values.numel() + 1, device="cuda", dtype=values.dtype)[1:].view_as(values)
    vs.copy_(values)
    for variant in GEMM_VARIANTS:
        _check(_ext._C.sparse24_gemm_cuda(xs, vs, meta, b, variant), want)
    for variant in GEMV_VARIANTS:
        _check(_ext._C.sparse24_gemv_cuda(xs[:5], vs, meta, b, variant), want[:5])


@pytest.mark.parametrize("m", [1, 16, 17, 300])
def test_op_dispatch_on_cuda(m):
    (x, values, meta, b), want, _ = _case(m, 70, 45, torch.bfloat16, seed=m)
    assert ops.plan("2:4", "cuda", m, torch.bfloat16) == "cuda"
    _check(ops.sparse24_linear(x, values, meta, 45, b), want)


def test_wrapper_refuses_bad_input():
    (x, values, meta, b), _, kp = _case(4, 64, 64, torch.bfloat16)
    with pytest.raises(RuntimeError, match="sparse24_gemv_cuda: x has 64 columns|the GEMV serves M <= 16"):
        _ext._C.sparse24_gemv_cuda(torch.randn(20, kp, device="cuda", dtype=torch.bfloat16), values, meta, b)
    with pytest.raises(RuntimeError, match="sparse24_gemm_cuda: values must be float16 or bfloat16"):
        _ext._C.sparse24_gemm_cuda(x.float(), values.float(), meta, None)
    for bad in (-1, *REMOVED["gemm"], 7):
        with pytest.raises(RuntimeError, match=rf"sparse24_gemm_cuda: there is no kernel variant {bad}; the variants "
                                               r"are 0, 1, 4, 5 \(0 is the default kernel\)"):
            _ext._C.sparse24_gemm_cuda(x, values, meta, b, bad)
    for bad in (-1, *REMOVED["gemv"], 6):
        with pytest.raises(RuntimeError, match=rf"sparse24_gemv_cuda: there is no kernel variant {bad}; the variants "
                                               r"are 0, 1, 2, 4, 5 \(0 is the default kernel\)"):
            _ext._C.sparse24_gemv_cuda(x, values, meta, b, bad)


@pytest.mark.parametrize("m", [1, 16, 17, 300])
def test_int8_values_run_the_kernels_widened_and_match_float64(m):
    """int8 2:4 values with a per-row scale: the CUDA path widens them to bf16 (exact) and scales the output."""
    from torch import nn

    from pycomp.nn import SparseLinear

    torch.manual_seed(m)
    layer = SparseLinear.from_float(nn.Linear(45, 70), pattern="2:4").quantized().cuda()
    assert ops.plan("2:4", "cuda", m, torch.int8) == "cuda"
    x = torch.randn(m, 45, device="cuda", dtype=torch.bfloat16)
    want = x.double() @ layer.to_dense().double().t() + layer.bias.double()
    _check(layer(x), want.cpu())
