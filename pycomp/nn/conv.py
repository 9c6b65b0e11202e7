"""Conv2d as a GEMM over im2col patches: the geometry every compressed Conv2d layer shares.

A layer mixes in `Im2ColConv2d`, calls `_init_conv(...)` in its constructor and
runs `_conv_gemm(x, linear)`, where `linear(rows, i)` maps (B, L, K) patches of
conv group i to (B, L, out_channels // groups). Weights are (O, C/groups * kh * kw),
unfold's patch order; `patch_rows` gives the same patches to calibration code.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pycomp.ops.conv import im2col


def _pair(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)


def conv_settings(conv: nn.Conv2d, label: str) -> dict:
    """The constructor arguments of a compressed conv copying `conv`; only padding_mode='zeros' is supported."""
    if not isinstance(conv, nn.Conv2d):
        raise TypeError(f"{label}: expected nn.Conv2d, got {type(conv).__name__}")
    if conv.padding_mode != "zeros":
        raise ValueError(f"{label}: padding_mode={conv.padding_mode!r} is not supported (only 'zeros')")
    return dict(in_channels=conv.in_channels, out_channels=conv.out_channels, kernel_size=conv.kernel_size,
                stride=conv.stride, padding=conv.padding, dilation=conv.dilation, groups=conv.groups,
                bias=conv.bias is not None)


class Im2ColConv2d:
    """Mixin for a CompressedLayer: stride, padding (ints or "same"/"valid"), dilation and groups."""

    def _init_conv(self, in_channels: int, out_channels: int, kernel_size, stride, padding, dilation,
                   groups: int) -> int:
        """Checks and stores the geometry; returns K = in_channels // groups * kh * kw."""
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"{self.label}: channels ({in_channels}, {out_channels}) must divide by groups={groups}")
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.kernel_size, self.stride, self.dilation = _pair(kernel_size), _pair(stride), _pair(dilation)
        self.padding = padding if isinstance(padding, str) else _pair(padding)
        if isinstance(self.padding, str) and self.padding not in ("same", "valid"):
            raise ValueError(f"{self.label}: padding must be an int, a pair, 'same' or 'valid', got {padding!r}")
        if self.padding == "same" and self.stride != (1, 1):
            raise ValueError(f"{self.label}: padding='same' needs stride 1 (as in nn.Conv2d)")
        return in_channels // groups * self.kernel_size[0] * self.kernel_size[1]

    def _pad(self, x: Tensor) -> Tensor:
        if self.padding == "valid":
            return x
        if self.padding == "same":
            pads = []
            for k, d in zip(reversed(self.kernel_size), reversed(self.dilation)):
                total = d * (k - 1)
                pads += [total // 2, total - total // 2]
            return F.pad(x, pads)
        ph, pw = self.padding
        return F.pad(x, (pw, pw, ph, ph)) if ph or pw else x

    def patches(self, x: Tensor) -> tuple[Tensor, int, int]:
        """x (B, C, H, W) -> (patches (B, L, C * kh * kw), H', W'), L = H' * W'."""
        if x.dim() != 4:
            raise ValueError(f"{self.label}: expected a 4-D input (B, C, H, W), got shape {tuple(x.shape)}")
        self._check_input(x, self.in_channels, 1)
        x = self._pad(x)
        B, C, H, W = x.shape
        (kh, kw), (sh, sw), (dh, dw) = self.kernel_size, self.stride, self.dilation
        Ho, Wo = (H - dh * (kh - 1) - 1) // sh + 1, (W - dw * (kw - 1) - 1) // sw + 1
        if Ho <= 0 or Wo <= 0:
            raise ValueError(f"{self.label}: input {tuple(x.shape)} (after padding) is smaller than the kernel")
        if (kh, kw, sh, sw) == (1, 1, 1, 1):
            return x.permute(0, 2, 3, 1).reshape(B, H * W, C), Ho, Wo  # a 1x1 conv is a linear over channels
        return im2col(x, (kh, kw), (sh, sw), (dh, dw)).view(B, Ho * Wo, C * kh * kw), Ho, Wo

    def patch_rows(self, x: Tensor) -> list[Tensor]:
        """x (B, C, H, W) -> one (B * L, K) matrix of patches per conv group (what each group's GEMM sees)."""
        rows, _, _ = self.patches(x)
        rows = rows.reshape(-1, rows.shape[-1])
        kg = rows.shape[1] // self.groups
        return [rows[:, i * kg:(i + 1) * kg] for i in range(self.groups)]

    def _conv_gemm(self, x: Tensor, linear: Callable[[Tensor, int], Tensor]) -> Tensor:
        """x (B, C, H, W) -> (B, O, H', W'), channels-last strided (no copy after the GEMM)."""
        rows, Ho, Wo = self.patches(x)
        if self.groups == 1:
            out = linear(rows, 0)
        else:
            kg = rows.shape[-1] // self.groups
            out = torch.cat([linear(rows[..., i * kg:(i + 1) * kg], i) for i in range(self.groups)], dim=-1)
        return out.reshape(x.shape[0], Ho, Wo, self.out_channels).permute(0, 3, 1, 2)

    def _conv_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, dilation={self.dilation}, groups={self.groups}")
