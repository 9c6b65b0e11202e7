"""The binary CUDA kernels (W1A16 GEMV, XNOR b1 tensor-core GEMM) against the float64 references.

Skipped without a CUDA device or without the CUDA part of pycomp._C.
"""
import pytest
import torch

from pycomp import _ext
from pycomp.formats.binary import binarize_weight, dequantize_binary
from pycomp.ops import binary as ops

pytestmark = pytest.mark.skipif(not torch.cuda.is_available() or not _ext.has_c("xnor_gemm_cuda"),
                                reason="needs a CUDA device and pycomp._C built with CUDA")

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
ROUNDING = {torch.float32: 2.0**-23, torch.float16: 2.0**-10, torch.bfloat16: 2.0**-7}


def _case(m, n, k, group_size=0, dtype=torch.bfloat16, seed=0):
    g = torch.Generator().manual_seed(seed)
    packed, alpha = binarize_weight(torch.randn(n, k, generator=g), group_size)
    x = torch.randn(m, k, generator=g).to(dtype)
    b = torch.randn(n, generator=g).to(dtype)
    return x.cuda(), packed.cuda(), alpha.cuda(), b.cuda()


def _bound(x, packed, alpha, k, group_size, want, dtype):
    mag = x.double().abs() @ dequantize_binary(packed, alpha, k, group_size, torch.float64).abs().t()
    return ROUNDING[dtype] * want.abs() + 1e-5 * mag + 1e-4


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("m,n,k", [(1, 7, 33), (1, 256, 4096), (2, 33, 1000), (5, 64, 2080), (16, 130, 3000),
                                   (3, 40, 9000)])
@pytest.mark.parametrize("group_size", [0, 64])
def test_w1a16_gemv(dtype, m, n, k, group_size):
    x, packed, alpha, b = _case(m, n, k, group_size, dtype)
    got = _ext._C.w1a16_gemv_cuda(x, packed, alpha, group_size, b)
    want = ops.w1a16_linear_ref(x.double(), packed, alpha, group_size, b)
    assert got.dtype == dtype and got.shape == (m, n)
    assert ((got.double() - want).abs() <= _bound(x, packed, alpha, k, group_size, want, dtype)).all()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("m,n,k", [(1, 7, 33), (1, 256, 4096), (1, 100, 4000), (2, 33, 1000), (5, 64, 2080),
                                   (8, 48, 512), (9, 130, 3000), (12, 50, 1000), (16, 130, 3000), (2, 40, 9000),
                                   (3, 40, 9000), (20, 70, 4096)])
@pytest.mark.parametrize("variant", [1, 3, 4])
def test_w1a16_gemv_tensor_core_variants(dtype, m, n, k, variant):
    # Variant 1: bits become exact +-1 values, products of x by them are exact, the sums are fp32.
    # Variants 3 and 4 (x staged in shared memory) fall back to variant 1 where min(M, 8) staged rows pass 48 KB
    # ((9, 130, 3000), (3, 40, 9000), (20, 70, 4096)); (2, 40, 9000) gives each warp several K units.
    x, packed, alpha, b = _case(m, n, k, 0, dtype, seed=m + k)
    for bias in (b, None):
        got = _ext._C.w1a16_gemv_cuda(x, packed, alpha, 0, bias, variant)
        want = ops.w1a16_linear_ref(x.double(), packed, alpha, 0, bias)
        assert got.dtype == dtype and got.shape == (m, n)
        assert ((got.double() - want).abs() <= _bound(x, packed, alpha, k, 0, want, dtype)).all()


XNOR_VARIANTS = [0, 1, 3, 4, 5, 6, 7]


# Variants 3-7 give each block a run of 128-column (6, 7: 64-column) tiles, two warp groups taking them in turn;
# runs get long only when the A blocks (M / 128, 6 and 7: M / 256) outnumber the SMs or nearly do: on 132 SMs
# (4001, 1101, 1000) gives blocks of 2-3 tiles (odd N: element stores), (4096, 2048, 4096) of 4, (20000, 300,
# 512) one block per A block and several waves (4 chunks per row: most lanes idle in the copies). K = 8192 does
# not fit their shared memory: they run variant 1 there.
@pytest.mark.parametrize("variant", XNOR_VARIANTS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("m,n,k", [(1, 8, 128), (17, 9, 384), (130, 140, 1024), (300, 257, 4096), (64, 64, 640),
                                   (129, 300, 8192), (5, 33, 1020), (4001, 1101, 1000), (20000, 300, 512),
                                   (4096, 2048, 4096)])
def test_xnor_gemm(dtype, m, n, k, variant):
    x, packed, alpha, b = _case(m, n, k, 0, dtype)
    got = _ext._C.xnor_gemm_cuda(x, packed, alpha, 0, b, variant)
    want = ops.xnor_linear_ref(x.double(), packed, alpha, 0, b)
    scale = x.double().abs().mean(1, keepdim=True) * alpha.double().t() * k
    assert got.dtype == dtype and got.shape == (m, n)
    assert ((got.double() - want).abs() <= ROUNDING[dtype] * want.abs() + 1e-5 * scale + 1e-4).all()


@pytest.mark.parametrize("variant", XNOR_VARIANTS)
def test_xnor_parts_match_the_whole_call(variant):
    # The sweep times the three launches one by one: each part against its reference, and their composition
    # bit for bit against xnor_gemm_cuda (same kernels, same order of operations).
    x, packed, alpha, b = _case(37, 70, 1000, 0, torch.bfloat16, seed=3)
    bin_variant = 0 if variant == 0 else (2 if variant >= 6 else 1)  # as xnor_gemm_cuda binarizes for it
    bits, beta, popc_a = _ext._C.binarize_per_token_cuda(x, bin_variant)
    xf = x.float()
    torch.testing.assert_close(beta, xf.abs().mean(1), rtol=1e-5, atol=0)
    assert torch.equal(popc_a.long().cpu(), (xf < 0).sum(1).cpu())
    popc_w = _ext._C.popc_rows_cuda(packed)
    assert torch.equal(popc_w.long().cpu(), ops.unpack_signs(packed.cpu(), 1000).lt(0).sum(1))
    got = _ext._C.xnor_gemm_bits_cuda(bits, beta, popc_a, packed, alpha, popc_w, 1000, x, b, variant)
    assert torch.equal(got, _ext._C.xnor_gemm_cuda(x, packed, alpha, 0, b, variant))
    if variant in (5, 7):  # they count the weight popcounts themselves: popc_w may be left out (unused if given)
        no_popc = _ext._C.xnor_gemm_bits_cuda(bits, beta, popc_a, packed, alpha, None, 1000, x, b, variant)
        assert torch.equal(no_popc, got)
        wrong = _ext._C.xnor_gemm_bits_cuda(bits, beta, popc_a, packed, alpha, popc_w + 1, 1000, x, b, variant)
        assert torch.equal(wrong, got)
    else:
        with pytest.raises(RuntimeError, match="popc_w"):
            _ext._C.xnor_gemm_bits_cuda(bits, beta, popc_a, packed, alpha, None, 1000, x, b, variant)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("m,k", [(1, 8), (37, 1000), (5, 4096), (3, 4100), (2, 1001)])
def test_binarize_variants_agree(dtype, m, k):
    # Variant 2 batches variant 1's loads; both fall back to variant 0 where K % 8 != 0 (1001) or rows are
    # not 16-byte aligned (the slice from column 1). Rows: contiguous, then 8 elements apart (aligned when
    # K % 8 == 0). Bits and popcounts exactly, beta to the order of fp32 sums.
    x = torch.randn(m, k + 8, generator=torch.Generator().manual_seed(k)).to(dtype).cuda()
    for xx in (x[:, :k].contiguous(), x[:, :k], x[:, 1:k + 1]):
        want = _ext._C.binarize_per_token_cuda(xx, 0)
        for v in (1, 2):
            got = _ext._C.binarize_per_token_cuda(xx, v)
            assert torch.equal(got[0], want[0]) and torch.equal(got[2], want[2])
            torch.testing.assert_close(got[1], want[1], rtol=1e-5, atol=0)


def test_ops_route_to_the_kernels_and_fall_back():
    x, packed, alpha, b = _case(1, 32, 4096)
    assert ops.plan("w1a16", "cuda", 1, torch.bfloat16, 4096) == "cuda"
    torch.testing.assert_close(ops.w1a16_linear(x, packed, alpha, 0, b),
                               ops.w1a16_linear_ref(x, packed, alpha, 0, b), rtol=2e-2, atol=5e-2)
    xb, pb, ab, bb = _case(40, 32, 4000)  # ceil(K/32) = 125: not a multiple of 4, the XNOR op runs the reference
    assert ops.plan("xnor", "cuda", 40, torch.bfloat16, 4000) == "reference"
    torch.testing.assert_close(ops.xnor_linear(xb, pb, ab, 0, bb), ops.xnor_linear_ref(xb, pb, ab, 0, bb))


def test_bad_arguments_raise():
    x, packed, alpha, b = _case(4, 32, 1000)
    with pytest.raises(RuntimeError, match="multiple of 4"):
        _ext._C.xnor_gemm_cuda(x, packed, alpha, 0, b)
    with pytest.raises(RuntimeError, match="uint32"):
        _ext._C.w1a16_gemv_cuda(x, packed.view(torch.int32), alpha, 0, b)
    with pytest.raises(RuntimeError, match="bias"):
        _ext._C.w1a16_gemv_cuda(x, packed, alpha, 0, b.float())
    with pytest.raises(RuntimeError, match="variant must be 0"):
        _ext._C.w1a16_gemv_cuda(x, packed, alpha, 0, b, 5)
    with pytest.raises(RuntimeError, match="variant must be 0"):
        _ext._C.xnor_gemm_cuda(x, packed, alpha, 0, b, -1)
    xa, pa, aa, ba = _case(4, 32, 1024)
    for removed_or_unknown in (2, 8):
        with pytest.raises(RuntimeError, match="variant must be 0"):
            _ext._C.xnor_gemm_cuda(xa, pa, aa, 0, ba, removed_or_unknown)
    with pytest.raises(RuntimeError, match="variant 2 was removed"):
        _ext._C.w1a16_gemv_cuda(x, packed, alpha, 0, b, 2)
    with pytest.raises(RuntimeError, match="variants 1, 3 and 4"):
        _ext._C.w1a16_gemv_cuda(x.float(), packed, alpha, 0, b.float(), 1)
    xg, pg, ag, bg = _case(4, 32, 1024, group_size=64)
    with pytest.raises(RuntimeError, match="group_size=0"):
        _ext._C.w1a16_gemv_cuda(xg, pg, ag, 64, bg, 1)
