"""Sparse weight storage: 2:4 compressed, CSR and block-CSR, each with one reference densify.

All three store a weight W (N, K) (out_features x in_features; a conv's (O, C/groups*kh*kw)).

2:4 ("sparse24", version 1), the layout sparse tensor cores read (mma.sp; CUTLASS's, and what
torch's `sparse_semi_structured_from_dense_cutlass` produces for 16-bit types):
- K is zero-padded to Kp = ceil(K / 32) * 32 (a metadata word spans 16 columns, and words go in pairs) and N to
  Np = ceil(N / 32) * 32 for the metadata (the reordering works on 32-row tiles).
- values (N, Kp/2): per group of 4 columns, the two kept entries in column order.
- meta (Np, Kp/16) int16: word (n, c) covers columns 16c..16c+15 of row n, 4 bits per group g (bits
  4g..4g+3, group g = columns 16c+4g..16c+4g+3): bits 0-1 the index of the first kept column, bits
  2-3 of the second. A group with fewer than two non-zeros keeps zeros at torch's indices (all-zero
  -> (2, 3)). Words are then stored in CUTLASS's ColumnMajorInterleaved<2> order with its row
  permutation and 2x2 swizzle: see `meta_offsets`; a 32-bit load at an even offset gives rows r, r+1
  (permuted) of one 16-column chunk, what one thread hands to mma.sp.
- int8 form ("sparse24_int8", version 1): the same meta; values (N, Kp/2) int8 in [-127, 127] and scale (N,)
  float32, W = values * scale[:, None] (symmetric per output row, pycomp.quantize.int8's rule applied to the
  kept values). Values plus metadata cost 5 bits per weight: 6.4x fewer bytes than float32 before scales.
CSR ("csr", version 1): crow (N+1,) int32, col (nnz,) int16 when K <= 32768 else int32 (half the
  index bytes: a CPU SpMV at 90% sparsity streams values and indices, nothing else), values (nnz,).
Block-CSR ("bsr", version 1), blocks (bn, bk): N, K zero-padded to multiples of bn, bk;
  crow (Np/bn + 1,) int32, col (nblocks,) int32 (block column), values (nblocks, bn, bk), a block
  stored when any entry is non-zero. Within a block row, block columns ascend.
"""
from __future__ import annotations

import torch
from torch import Tensor

FORMAT_VERSION = 1
K_ALIGN_24 = 32  # two metadata words (interleave 2): one k32 step of mma.sp
N_ALIGN_24 = 32  # rows per metadata reordering tile
MAX_K_INT16 = 32768


def _ceil(a: int, b: int) -> int:
    return -(-a // b) * b


# ----------------------------------------------------------------------------- 2:4


def meta_offsets(np_: int, kc: int, device=None) -> Tensor:
    """(np_, kc) int64: the storage offset of logical metadata word (n, c) in the reordered (Np, Kp/16) tensor.

    CUTLASS's layout, as torch's `_calculate_meta_reordering_scatter_offsets` computes it: rows are permuted
    inside 32-row tiles, r = 32*(n//32) + 4*(n%8) + (n%32)//8; words go in column pairs (interleave 2),
    column-major: (r, c) at (c//2)*2*Np + 2*r + c%2, except that an even r with odd c and an odd r with
    even c swap places (r+-1, c-+1). Read as int32, word (c//2)*Np + r (r = 4*(n%8) + 2*((n%32)//16) in
    its tile) = {low: (n, c even), high: (n+8, c even)} and the next = the same rows for c odd: rows
    g and g+8 of a 16-row mma tile for one 16-column chunk, one thread's mma.sp metadata register.
    """
    n = torch.arange(np_, device=device).unsqueeze(1)
    c = torch.arange(kc, device=device).unsqueeze(0)
    r = n // 32 * 32 + (n % 8) * 4 + (n % 32) // 8
    swap = ((r % 2 == 0) & (c % 2 == 1)).long() - ((r % 2 == 1) & (c % 2 == 0)).long()
    r, c = r + swap, c - swap
    return (c // 2) * 2 * np_ + r * 2 + c % 2


def _group_indices(nz: Tensor) -> tuple[Tensor, Tensor]:
    """nz (..., 4) bool -> (idx0, idx1) int64: the two columns a group keeps (torch's encoding for < 2 non-zeros)."""
    m0, m1, _, m3 = nz.unbind(-1)
    idx0 = (~m0 & m1).long() | ((~m0 & ~m1).long() << 1)
    idx1 = ((m0 & m1) | (~m0 & ~m1) | m3).long() | (((~m0 & m1) | ~m1).long() << 1)
    return idx0, idx1


def pack_24(weight: Tensor, *, where: str = "2:4 weight") -> tuple[Tensor, Tensor]:
    """weight (N, K) float, at most 2 non-zeros per group of 4 columns (K zero-padded to Kp) ->
    (values (N, Kp/2) weight.dtype, meta (Np, Kp/16) int16). Raises ValueError naming a group with more."""
    if weight.dim() != 2 or not weight.dtype.is_floating_point:
        raise ValueError(f"{where}: expected a 2-D float weight (N, K), got {weight.dim()}-D {weight.dtype}")
    N, K = weight.shape
    kp, np_ = _ceil(max(K, 1), K_ALIGN_24), _ceil(max(N, 1), N_ALIGN_24)
    w = torch.nn.functional.pad(weight.detach(), (0, kp - K, 0, np_ - N))
    groups = w.view(np_, kp // 4, 4)
    nz = groups != 0
    counts = nz.sum(-1)
    if bool((counts > 2).any()):
        n, g = (counts > 2).nonzero()[0].tolist()
        raise ValueError(f"{where}: row {n}, columns {4 * g}..{4 * g + 3} hold {int(counts[n, g])} non-zeros; "
                         "2:4 keeps at most 2 of every 4 (prune with pycomp.prune.nm_prune first)")
    idx0, idx1 = _group_indices(nz)
    values = torch.stack((groups.gather(-1, idx0.unsqueeze(-1)), groups.gather(-1, idx1.unsqueeze(-1))), -1)
    values = values.reshape(np_, kp // 2)[:N].contiguous()
    nib = (idx0 | (idx1 << 2)).view(np_, kp // 16, 4)
    words = nib[..., 0] | (nib[..., 1] << 4) | (nib[..., 2] << 8) | (nib[..., 3] << 12)
    words = torch.where(words >= 1 << 15, words - (1 << 16), words).to(torch.int16)  # same bits, signed
    meta = torch.empty(np_ * (kp // 16), dtype=torch.int16, device=w.device)
    meta[meta_offsets(np_, kp // 16, w.device).reshape(-1)] = words.reshape(-1)
    return values, meta.view(np_, kp // 16)


def unpack_meta_24(meta: Tensor) -> Tensor:
    """meta (Np, Kp/16) int16 (reordered) -> (Np, Kp/4, 2) int64: each group's two kept column indices."""
    np_, kc = meta.shape
    words = meta.reshape(-1)[meta_offsets(np_, kc, meta.device)].long() & 0xFFFF
    shifts = torch.arange(0, 16, 2, device=meta.device)
    return ((words.unsqueeze(-1) >> shifts) & 3).view(np_, kc * 4, 2)


def densify_24(values: Tensor, meta: Tensor, k: int) -> Tensor:
    """The reference densify: (values (N, Kp/2), meta (Np, Kp/16)) -> W (N, k) in values.dtype."""
    N, half = values.shape
    idx = unpack_meta_24(meta)[:N]
    dense = torch.zeros(N, half // 2, 4, dtype=values.dtype, device=values.device)
    v = values.view(N, half // 2, 2)
    dense.scatter_(-1, idx, v)  # a group's two indices always differ (check_24), so nothing is overwritten
    return dense.view(N, -1)[:, :k]


def gather_24(dense: Tensor, meta: Tensor) -> Tensor:
    """The inverse of densify_24 on a fixed pattern: dense (N, k) -> (N, Kp/2), the entries at the positions
    `meta` keeps (what a gradient of the dense weight is for the stored values)."""
    N, k = dense.shape
    np_, kc = meta.shape
    idx = unpack_meta_24(meta)[:N]
    groups = torch.nn.functional.pad(dense, (0, kc * 16 - k)).view(N, kc * 4, 4)
    return groups.gather(-1, idx).reshape(N, kc * 8)


def check_24(values: Tensor, meta: Tensor, n: int, k: int, *, scale: Tensor | None = None,
             where: str = "2:4 weight") -> None:
    """Raises ValueError unless (values, meta[, scale]) is a valid 2:4 weight of shape (n, k): float values, or
    int8 values with a float32 (n,) per-row scale (the int8 form, W = values * scale[:, None])."""
    kp, np_ = _ceil(max(k, 1), K_ALIGN_24), _ceil(max(n, 1), N_ALIGN_24)
    int8 = values.dtype == torch.int8
    if not (values.dtype.is_floating_point or int8) or tuple(values.shape) != (n, kp // 2):
        raise ValueError(f"{where}: values must be float or int8 of shape ({n}, {kp // 2}), got {values.dtype} "
                         f"{tuple(values.shape)}")
    if int8 != (scale is not None):
        raise ValueError(f"{where}: int8 values need a per-row scale and float values take none; got "
                         f"{values.dtype} values with {'a' if scale is not None else 'no'} scale")
    if int8:
        if scale.dtype != torch.float32 or tuple(scale.shape) != (n,):
            raise ValueError(f"{where}: scale must be float32 of shape ({n},), got {scale.dtype} {tuple(scale.shape)}")
        if not bool(torch.isfinite(scale).all()) or bool((scale < 0).any()):
            raise ValueError(f"{where}: scale must be finite and >= 0")
    if meta.dtype != torch.int16 or tuple(meta.shape) != (np_, kp // 16):
        raise ValueError(f"{where}: meta must be int16 of shape ({np_}, {kp // 16}), got {meta.dtype} "
                         f"{tuple(meta.shape)}")
    idx = unpack_meta_24(meta)
    if not bool((idx[..., 0] < idx[..., 1]).all()):
        raise ValueError(f"{where}: meta holds a group whose two indices are not increasing; corrupt metadata")


# ----------------------------------------------------------------------------- CSR


def index_dtype(k: int) -> torch.dtype:
    return torch.int16 if k <= MAX_K_INT16 else torch.int32


def pack_csr(weight: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """weight (N, K) -> (crow (N+1,) int32, col (nnz,) int16|int32, values (nnz,) weight.dtype): non-zeros only."""
    w = weight.detach()
    nz = w != 0
    crow = torch.zeros(w.shape[0] + 1, dtype=torch.int32, device=w.device)
    crow[1:] = nz.sum(1).cumsum(0)
    rows, cols = nz.nonzero(as_tuple=True)
    return crow, cols.to(index_dtype(w.shape[1])), w[rows, cols].contiguous()


def _csr_rows(crow: Tensor) -> Tensor:
    n = crow.numel() - 1
    return torch.repeat_interleave(torch.arange(n, device=crow.device), (crow[1:] - crow[:-1]).long())


def gather_csr(dense: Tensor, crow: Tensor, col: Tensor) -> Tensor:
    """dense (N, K) -> (nnz,): the entries at the stored positions (the values' share of a dense gradient)."""
    return dense[_csr_rows(crow), col.long()]


def densify_csr(crow: Tensor, col: Tensor, values: Tensor, k: int) -> Tensor:
    """The reference densify: CSR -> W (N, k) in values.dtype."""
    dense = torch.zeros(crow.numel() - 1, k, dtype=values.dtype, device=values.device)
    dense[_csr_rows(crow), col.long()] = values
    return dense


def check_csr(crow: Tensor, col: Tensor, values: Tensor, n: int, k: int, *, where: str = "CSR weight") -> None:
    if crow.dtype != torch.int32 or crow.shape != (n + 1,):
        raise ValueError(f"{where}: crow must be int32 of shape ({n + 1},), got {crow.dtype} {tuple(crow.shape)}")
    nnz = values.numel()
    if col.dtype != index_dtype(k) or col.shape != (nnz,) or values.dim() != 1:
        raise ValueError(f"{where}: col must be {index_dtype(k)} and values 1-D, both of length nnz={nnz}; got "
                         f"{col.dtype} {tuple(col.shape)}, values {tuple(values.shape)}")
    if int(crow[0]) != 0 or int(crow[-1]) != nnz or bool((crow[1:] < crow[:-1]).any()):
        raise ValueError(f"{where}: crow must rise from 0 to nnz={nnz}")
    if nnz and (int(col.min()) < 0 or int(col.max()) >= k):
        raise ValueError(f"{where}: a column index lies outside [0, {k})")


# ----------------------------------------------------------------------------- block-CSR


def pack_bsr(weight: Tensor, block: tuple[int, int]) -> tuple[Tensor, Tensor, Tensor]:
    """weight (N, K) -> (crow (Np/bn+1,) int32, col (nblocks,) int32, values (nblocks, bn, bk))."""
    bn, bk = block
    N, K = weight.shape
    np_, kp = _ceil(max(N, 1), bn), _ceil(max(K, 1), bk)
    w = torch.nn.functional.pad(weight.detach(), (0, kp - K, 0, np_ - N))
    tiles = w.view(np_ // bn, bn, kp // bk, bk).transpose(1, 2)  # (block rows, block cols, bn, bk)
    keep = (tiles != 0).flatten(2).any(-1)
    crow = torch.zeros(np_ // bn + 1, dtype=torch.int32, device=w.device)
    crow[1:] = keep.sum(1).cumsum(0)
    rows, cols = keep.nonzero(as_tuple=True)
    return crow, cols.to(torch.int32), tiles[rows, cols].contiguous()


def gather_bsr(dense: Tensor, crow: Tensor, col: Tensor, block: tuple[int, int]) -> Tensor:
    """dense (N, K) -> (nblocks, bn, bk): the stored blocks' entries (the values' share of a dense gradient)."""
    bn, bk = block
    N, K = dense.shape
    np_, kp = _ceil(max(N, 1), bn), _ceil(max(K, 1), bk)
    tiles = torch.nn.functional.pad(dense, (0, kp - K, 0, np_ - N)).view(np_ // bn, bn, kp // bk, bk).transpose(1, 2)
    return tiles[_csr_rows(crow), col.long()]


def densify_bsr(crow: Tensor, col: Tensor, values: Tensor, n: int, k: int) -> Tensor:
    """The reference densify: block-CSR -> W (n, k) in values.dtype."""
    nb, bn, bk = values.shape
    brows = crow.numel() - 1
    kp = _ceil(max(k, 1), bk)
    tiles = torch.zeros(brows, kp // bk, bn, bk, dtype=values.dtype, device=values.device)
    tiles[_csr_rows(crow), col.long()] = values
    return tiles.transpose(1, 2).reshape(brows * bn, kp)[:n, :k]


def check_bsr(crow: Tensor, col: Tensor, values: Tensor, n: int, k: int, block: tuple[int, int], *,
              where: str = "block-CSR weight") -> None:
    bn, bk = block
    brows, bcols = _ceil(max(n, 1), bn) // bn, _ceil(max(k, 1), bk) // bk
    if crow.dtype != torch.int32 or crow.shape != (brows + 1,):
        raise ValueError(f"{where}: crow must be int32 of shape ({brows + 1},), got {crow.dtype} {tuple(crow.shape)}")
    nb = values.shape[0] if values.dim() == 3 else -1
    if values.dim() != 3 or tuple(values.shape[1:]) != (bn, bk) or col.dtype != torch.int32 or col.shape != (nb,):
        raise ValueError(f"{where}: values must be (nblocks, {bn}, {bk}) and col int32 (nblocks,); got values "
                         f"{tuple(values.shape)}, col {col.dtype} {tuple(col.shape)}")
    if int(crow[0]) != 0 or int(crow[-1]) != nb or bool((crow[1:] < crow[:-1]).any()):
        raise ValueError(f"{where}: crow must rise from 0 to nblocks={nb}")
    if nb and (int(col.min()) < 0 or int(col.max()) >= bcols):
        raise ValueError(f"{where}: a block column lies outside [0, {bcols})")


def nbytes(*tensors: Tensor | None) -> int:
    return sum(t.numel() * t.element_size() for t in tensors if t is not None)
