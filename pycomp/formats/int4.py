"""int4 storage: group-wise 4-bit weights, two per byte along K, with float16 scales per group.

Layout "k-nibble", version 1 (the canonical form every backend starts from):

- packed (N, ceil(K/2)) uint8: row n holds the 4-bit codes of weight row n; byte j
  holds column 2j in its low nibble and column 2j+1 in its high nibble. For odd K
  the last high nibble holds the code of 0 (a zero weight), so a kernel may read
  one padded column.
- groups run along K: group g covers columns [g*group_size, (g+1)*group_size);
  when K is not a multiple of group_size the last group is shorter, which is the
  same as padding it with zero weights (zero is exact in both variants below).
- scales (N, ceil(K/group_size)) float16.
- asymmetric: zeros (N, ceil(K/group_size)) uint8 in [0, 15], w = (code - zero) * scale.
  symmetric: zeros is None and the zero point is 8, w = (code - 8) * scale,
  i.e. values in [-8, 7] times the scale.

Bytes per weight at group_size 128: 0.5 + 3/128 = 0.523 (asymmetric, 4.19 bits),
0.5 + 2/128 = 0.516 (symmetric, 4.13 bits). Kernels that want another arrangement
(a Marlin-style tile shuffle) get a new LAYOUTS entry and repack from this one.

Layout "tile16x64" (read by the experimental CUDA GEMV csrc/cuda/int4/w4a16_tiled.cu; no layer stores it yet):
N % 16 == 0 and K % 64 == 0; tile (tn, tk) = rows 16tn.., columns 64tk.. is 512 bytes at (tn * K/64 + tk) * 512,
in the order of the tensor-core mma's fragments: lane l = 4g + t owns bytes 16l..16l+15, and nibble i (bits 4i) of
its 32-bit word j is row g + 8 (i & 1), column 16t + 4j + 2 ((i >> 1) & 1) + (i >> 2) of the tile.
"""
from __future__ import annotations

import torch
from torch import Tensor

LAYOUTS = ("k-nibble", "tile16x64")
FORMAT_VERSION = 1
GROUP_SIZES = (32, 64, 128)
QMAX = 15
SYMMETRIC_ZERO = 8
SCALE_DTYPE = torch.float16
# Scales live in float16: the smallest positive subnormal and the largest finite value.
SCALE_MIN = 2.0**-24
SCALE_MAX = 65504.0


def n_groups(k: int, group_size: int) -> int:
    return -(-k // group_size)


def check_group_size(group_size: int, where: str = "int4") -> None:
    if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size not in GROUP_SIZES:
        raise ValueError(f"{where}: group_size must be one of {GROUP_SIZES}, got {group_size!r}")


def check_finite(weight: Tensor, where: str) -> None:
    """Raises ValueError on NaN or infinite weights, which have no int4 value."""
    bad = ~torch.isfinite(weight)
    if bad.any():
        first = bad.nonzero()[0].tolist()
        raise ValueError(f"{where}: weight has a NaN or infinite value (first at {first}); cannot quantize to int4")


def _per_column(t: Tensor, group_size: int, k: int) -> Tensor:
    """(N, G) per-group values -> (N, K) per-column values."""
    return t.repeat_interleave(group_size, dim=1)[:, :k]


def round_to_codes(w: Tensor, scale: Tensor, zero: Tensor | float) -> Tensor:
    """The one quantization rule, elementwise and broadcasting, in float32:
    code = clamp(round_half_even(w / scale) + zero, 0, 15), with scale the float16 value read as float32.
    """
    return (torch.round(w.float() / scale.float()) + zero).clamp_(0, QMAX)


def quantize_codes(weight: Tensor, scales: Tensor, zeros: Tensor | None, group_size: int) -> Tensor:
    """(N, K) float -> (N, K) uint8 codes in [0, 15] under the (N, G) scales and zeros."""
    k = weight.shape[1]
    z = SYMMETRIC_ZERO if zeros is None else _per_column(zeros.float(), group_size, k)
    return round_to_codes(weight, _per_column(scales, group_size, k), z).to(torch.uint8)


def pack_nibbles(codes: Tensor, pad_code: Tensor | int) -> Tensor:
    """(N, K) uint8 codes in [0, 15] -> (N, ceil(K/2)) uint8; odd K is padded with `pad_code` (per row or one value)."""
    n, k = codes.shape
    if k % 2:
        pad = torch.as_tensor(pad_code, dtype=torch.uint8, device=codes.device).expand(n).reshape(n, 1)
        codes = torch.cat([codes, pad], dim=1)
    codes = codes.to(torch.uint8)
    return (codes[:, 0::2] | (codes[:, 1::2] << 4)).contiguous()


def unpack_nibbles(packed: Tensor, k: int) -> Tensor:
    """(N, ceil(K/2)) uint8 -> (N, K) uint8 codes."""
    codes = torch.stack([packed & 0xF, packed >> 4], dim=-1).reshape(packed.shape[0], -1)
    return codes[:, :k]


def pack_int4(weight: Tensor, scales: Tensor, zeros: Tensor | None, group_size: int, *,
              where: str = "int4 weight") -> Tensor:
    """Quantize `weight` (N, K) float with the given (N, G) scales and zeros and pack it: -> (N, ceil(K/2)) uint8."""
    check_finite(weight, where)
    codes = quantize_codes(weight, scales, zeros, group_size)
    pad = SYMMETRIC_ZERO if zeros is None else zeros[:, -1]
    return pack_nibbles(codes, pad)


def dequantize_int4(packed: Tensor, scales: Tensor, zeros: Tensor | None, group_size: int, in_features: int,
                    dtype: torch.dtype = torch.float32) -> Tensor:
    """The one reference dequantizer: packed (N, ceil(K/2)) uint8, scales/zeros (N, G) -> (N, K) `dtype`.

    Exact in float32: (code - zero) is a small integer and the scale a float16.
    """
    codes = unpack_nibbles(packed, in_features).float()
    z = SYMMETRIC_ZERO if zeros is None else _per_column(zeros.float(), group_size, in_features)
    return ((codes - z) * _per_column(scales.float(), group_size, in_features)).to(dtype)


def check_int4(packed: Tensor, scales: Tensor, zeros: Tensor | None, group_size: int, in_features: int, *,
               where: str = "int4 weight") -> None:
    """Raises ValueError unless the tensors form a valid k-nibble int4 weight of `in_features` columns."""
    check_group_size(group_size, where)
    n, g = packed.shape[0], n_groups(in_features, group_size)
    if packed.dtype != torch.uint8 or packed.shape != (n, (in_features + 1) // 2):
        raise ValueError(f"{where}: packed must be uint8 of shape ({n}, {(in_features + 1) // 2}) for K={in_features}, "
                         f"got {packed.dtype} {tuple(packed.shape)}")
    if scales.dtype != SCALE_DTYPE or scales.shape != (n, g):
        raise ValueError(f"{where}: scales must be float16 of shape ({n}, {g}), got {scales.dtype} {tuple(scales.shape)}")
    if zeros is not None:
        if zeros.dtype != torch.uint8 or zeros.shape != (n, g):
            raise ValueError(f"{where}: zeros must be uint8 of shape ({n}, {g}), got {zeros.dtype} {tuple(zeros.shape)}")
        if zeros.numel() and int(zeros.max()) > QMAX:
            raise ValueError(f"{where}: zeros hold {int(zeros.max())}; zero points lie in [0, {QMAX}]")


def int4_nbytes(packed: Tensor, scales: Tensor, zeros: Tensor | None) -> int:
    return sum(t.numel() * t.element_size() for t in (packed, scales, zeros) if t is not None)


def _tile16x64_index(device=None) -> tuple[Tensor, Tensor]:
    """For byte b of a tile and nibble h (0 low, 1 high): the (row, column) of the tile it holds, as (512, 2) each."""
    b = torch.arange(512, device=device)[:, None]
    h = torch.arange(2, device=device)[None, :]
    lane, j, i = b // 16, (b % 16) // 4, 2 * (b % 4) + h
    g, t, p = lane // 4, lane % 4, i & 3
    return g + 8 * (p & 1), 16 * t + 4 * j + 2 * (p >> 1) + (i >> 2)


def pack_tile16x64(codes: Tensor) -> Tensor:
    """(N, K) uint8 codes in [0, 15], N % 16 == 0, K % 64 == 0 -> (N * K / 2,) uint8 in the tile16x64 layout."""
    n, k = codes.shape
    if n % 16 or k % 64:
        raise ValueError(f"tile16x64: N={n} must be a multiple of 16 and K={k} of 64")
    tiles = codes.reshape(n // 16, 16, k // 64, 64).permute(0, 2, 1, 3)  # (tn, tk, 16, 64)
    row, col = _tile16x64_index(codes.device)
    nib = tiles[:, :, row, col]  # (tn, tk, 512, 2)
    return (nib[..., 0] | (nib[..., 1] << 4)).to(torch.uint8).reshape(-1).contiguous()


def unpack_tile16x64(tiles: Tensor, n: int, k: int) -> Tensor:
    """The inverse of pack_tile16x64: -> (N, K) uint8 codes."""
    row, col = _tile16x64_index(tiles.device)
    b = tiles.reshape(n // 16, k // 64, 512)
    out = torch.empty(n // 16, k // 64, 16, 64, dtype=torch.uint8, device=tiles.device)
    out[:, :, row[:, 0], col[:, 0]] = b & 0xF
    out[:, :, row[:, 1], col[:, 1]] = b >> 4
    return out.permute(0, 2, 1, 3).reshape(n, k)
