"""Binary (1-bit) storage: sign bits packed 32 per uint32 word along K, plus float32 scales α.

Layout, read by every backend (CPU, CUDA, Triton) as it is:
- `packed` (N, ceil(K / 32)) torch.uint32, row-major: bit j of word w of row n is 1 when
  W[n, 32 * w + j] < 0 (the float sign bit's meaning; zero counts as +1). Bits past K are 0.
- `alpha` (N, G) float32: the scale of each output channel (G = 1, XNOR-Net's α = mean|W[n]|), or of
  each group of `group_size` consecutive inputs (G = ceil(K / group_size), group_size a multiple of 32
  so a group is whole words), α = mean|W| over the group's real (unpadded) entries.
- W ≈ α · sign(W): the reference dequantizer below is the definition.

Padding is harmless by construction: the float paths only read the first K inputs, and the XNOR paths
count disagreements with popc(a xor w), where zero padding on both sides never disagrees, and use each
group's real length (not its padded one) in dot = len − 2 · popc(a xor w).
"""
from __future__ import annotations

import torch
from torch import Tensor

LAYOUT = "signbits-u32-k"
FORMAT_VERSION = 1
WORD_BITS = 32


def words(k: int) -> int:
    """Packed words per row for K inputs."""
    return -(-k // WORD_BITS)


def num_groups(k: int, group_size: int) -> int:
    """Scales per row: 1 for per-channel α (group_size=0), else ceil(K / group_size)."""
    return 1 if group_size == 0 else -(-k // group_size)


def check_group_size(group_size: int, *, where: str) -> None:
    if not isinstance(group_size, int) or group_size < 0 or group_size % WORD_BITS:
        raise ValueError(f"{where}: group_size must be 0 (one α per output channel) or a positive multiple of "
                         f"{WORD_BITS} (whole packed words), got {group_size!r}")


def pack_signs(t: Tensor) -> Tensor:
    """t (..., K) float -> (..., ceil(K / 32)) uint32; bit j of word w is 1 when t[..., 32w + j] < 0."""
    k = t.shape[-1]
    neg = (t < 0).to(torch.int64)
    pad = words(k) * WORD_BITS - k
    if pad:
        neg = torch.nn.functional.pad(neg, (0, pad))
    neg = neg.reshape(*t.shape[:-1], -1, WORD_BITS)
    word = (neg << torch.arange(WORD_BITS, device=t.device)).sum(-1)
    return word.to(torch.uint32)


def _byte_signs(device) -> Tensor:
    """(256, 8) float32: row b holds the ±1 of bits 0..7 of byte value b."""
    bits = (torch.arange(256, device=device).unsqueeze(1) >> torch.arange(8, device=device)) & 1
    return 1.0 - 2.0 * bits.to(torch.float32)


def unpack_signs(packed: Tensor, k: int) -> Tensor:
    """(..., W) uint32 -> (..., K) float32 of ±1 (the inverse of pack_signs for the first K entries).

    Byte by byte through a 256-entry table: a word's bytes are its bits 0-7, 8-15, ... in memory order,
    as torch's CPU and CUDA tensors are little-endian.
    """
    by = packed.contiguous().view(torch.uint8).to(torch.int64)  # (..., 4W)
    signs = _byte_signs(packed.device)[by]  # (..., 4W, 8)
    return signs.reshape(*packed.shape[:-1], -1)[..., :k]


def group_mean_abs(t: Tensor, group_size: int) -> Tensor:
    """t (N, K) float -> (N, G) float32: mean |t| per row (group_size=0) or per group of real entries."""
    a = t.detach().float().abs()
    if group_size == 0:
        return a.mean(-1, keepdim=True)
    n, k = a.shape
    g = num_groups(k, group_size)
    sums = torch.nn.functional.pad(a, (0, g * group_size - k)).reshape(n, g, group_size).sum(-1)
    counts = torch.full((g,), float(group_size), device=a.device)
    counts[-1] = k - (g - 1) * group_size
    return sums / counts


def binarize_weight(weight: Tensor, group_size: int = 0, *, where: str = "weight") -> tuple[Tensor, Tensor]:
    """weight (N, ...) float -> (packed (N, ceil(K / 32)) uint32, alpha (N, G) float32); K = prod(trailing dims)."""
    check_group_size(group_size, where=where)
    w = weight.detach().reshape(weight.shape[0], -1).float()
    if not torch.isfinite(w).all():
        bad = (~torch.isfinite(w)).nonzero()[0].tolist()
        raise ValueError(f"{where}: weight has a NaN or infinite value (first at {bad}); cannot binarize it")
    return pack_signs(w).contiguous(), group_mean_abs(w, group_size).contiguous()


def expand_alpha(alpha: Tensor, k: int, group_size: int) -> Tensor:
    """(N, G) -> (N, K): the scale each input position gets."""
    if group_size == 0:
        return alpha.expand(alpha.shape[0], k)
    return alpha.repeat_interleave(group_size, dim=1)[:, :k]


def dequantize_binary(packed: Tensor, alpha: Tensor, k: int, group_size: int = 0,
                      dtype: torch.dtype = torch.float32) -> Tensor:
    """The one reference dequantizer: (N, W) uint32, (N, G) float32 -> (N, K) `dtype` = α · (±1)."""
    return (unpack_signs(packed, k) * expand_alpha(alpha.float(), k, group_size)).to(dtype)


def check_binary(packed: Tensor, alpha: Tensor, k: int, group_size: int, *, where: str = "binary weight") -> None:
    """Raises ValueError unless (packed, alpha) is a valid binary weight of K inputs."""
    check_group_size(group_size, where=where)
    if packed.dtype != torch.uint32 or packed.dim() != 2 or packed.shape[1] != words(k):
        raise ValueError(f"{where}: packed must be a 2-D uint32 tensor (N, ceil(K/32)) = (N, {words(k)}) for "
                         f"K={k}, got {packed.dim()}-D {packed.dtype} {tuple(packed.shape)}")
    want = (packed.shape[0], num_groups(k, group_size))
    if alpha.dtype != torch.float32 or tuple(alpha.shape) != want:
        raise ValueError(f"{where}: alpha must be float32 of shape {want} (group_size={group_size}), "
                         f"got {alpha.dtype} {tuple(alpha.shape)}")
    pad = words(k) * WORD_BITS - k
    if pad and packed.numel():
        tail = packed[:, -1].view(torch.int32).to(torch.int64) & 0xFFFFFFFF
        if bool((tail >> (WORD_BITS - pad)).any()):
            raise ValueError(f"{where}: padding bits past K={k} must be 0 (they would change XNOR results)")


def binary_nbytes(packed: Tensor, alpha: Tensor) -> int:
    return packed.numel() * packed.element_size() + alpha.numel() * alpha.element_size()
