"""pycomp.formats.sparse: 2:4 (against torch's CUTLASS packer), CSR and block-CSR round trips and checks."""
import pytest
import torch
from torch.sparse._semi_structured_conversions import (_calculate_meta_reordering_scatter_offsets,
                                                       sparse_semi_structured_from_dense_cutlass)

from pycomp.formats import sparse as fmt
from pycomp.prune import nm_mask


def _24(n, k, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(n, k, generator=g).to(dtype)
    return w * nm_mask(w, pad=True)


@pytest.mark.parametrize("n,k", [(32, 32), (64, 96), (96, 64), (128, 256)])
def test_meta_offsets_are_torchs_cutlass_reordering(n, k):
    want = _calculate_meta_reordering_scatter_offsets(n, k // 16, torch.int16, "cpu")
    assert torch.equal(fmt.meta_offsets(n, k // 16).reshape(-1), want)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("n,k", [(32, 32), (64, 128), (96, 64)])
def test_pack_24_is_bit_identical_to_torch(n, k, dtype):
    w = _24(n, k, dtype)
    w[3] = 0                                              # all-zero row
    w[5, :8] = torch.tensor([0, 1.0, 0, 0, 0, 0, 0, 2.0])  # groups with one non-zero
    values, meta = fmt.pack_24(w)
    want_v, want_m = sparse_semi_structured_from_dense_cutlass(w)
    assert torch.equal(values, want_v) and torch.equal(meta, want_m)
    assert torch.equal(fmt.densify_24(values, meta, k), w)


@pytest.mark.parametrize("n,k", [(1, 1), (37, 21), (33, 40), (5, 4)])
def test_24_odd_shapes_pad_and_round_trip(n, k):
    w = _24(n, k)
    values, meta = fmt.pack_24(w)
    kp, np_ = -(-k // 32) * 32, -(-n // 32) * 32
    assert values.shape == (n, kp // 2) and meta.shape == (np_, kp // 16) and meta.dtype == torch.int16
    assert torch.equal(fmt.densify_24(values, meta, k), w)
    fmt.check_24(values, meta, n, k)


def test_24_refuses_three_non_zeros_in_a_group():
    w = torch.zeros(4, 8)
    w[2, 4:7] = 1.0
    with pytest.raises(ValueError, match=r"row 2, columns 4..7 hold 3 non-zeros"):
        fmt.pack_24(w)


def test_24_check_catches_corrupt_meta():
    values, meta = fmt.pack_24(_24(32, 32))
    bad = meta.clone()
    bad[0, 0] = 0  # every group claims index (0, 0)
    with pytest.raises(ValueError, match="corrupt metadata"):
        fmt.check_24(values, bad, 32, 32)


@pytest.mark.parametrize("n,k", [(1, 7), (37, 50), (64, 40000)])
def test_csr_round_trip_and_index_dtype(n, k):
    g = torch.Generator().manual_seed(1)
    w = torch.randn(n, k, generator=g) * (torch.rand(n, k, generator=g) > 0.9)
    if n > 1:
        w[n // 2] = 0
    crow, col, values = fmt.pack_csr(w)
    assert col.dtype == (torch.int16 if k <= 32768 else torch.int32)
    assert values.numel() == int((w != 0).sum())
    assert torch.equal(fmt.densify_csr(crow, col, values, k), w)
    fmt.check_csr(crow, col, values, n, k)
    with pytest.raises(ValueError, match="outside"):
        fmt.check_csr(crow, col, values, n, int(col.max()))  # the largest index is now out of range


@pytest.mark.parametrize("block", [(4, 8), (16, 16), (3, 5)])
def test_bsr_round_trip(block):
    g = torch.Generator().manual_seed(2)
    w = torch.randn(37, 50, generator=g)
    w[:16] = 0
    crow, col, values = fmt.pack_bsr(w, block)
    assert values.shape[1:] == block
    assert bool((values.flatten(1) != 0).any(1).all())  # only non-empty blocks are stored
    assert torch.equal(fmt.densify_bsr(crow, col, values, 37, 50), w)
    fmt.check_bsr(crow, col, values, 37, 50, block)
    with pytest.raises(ValueError, match="crow"):
        fmt.check_bsr(crow[:-1], col, values, 37, 50, block)
