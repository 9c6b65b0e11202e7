"""int8 drop-in layers: Int8Linear and Int8Conv2d (W8A8 "dynamic" or W8A16/W8A32 "weight_only")."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pycomp.formats.int8 import check_int8, dequantize_int8
from pycomp.nn.base import CompressedLayer
from pycomp.ops import int8 as int8_ops
from pycomp.quantize.int8 import MODES, quantize_weight_int8


class _Int8Weights(CompressedLayer):
    """Buffers and behaviour shared by the int8 layers: qweight (N, K) int8, wscale (N,) float32, bias."""

    def _init_weights(self, n: int, k: int, bias: bool, mode: str, device, dtype) -> None:
        if mode not in MODES:
            raise ValueError(f"{self.label}: mode must be one of {MODES}, got {mode!r}")
        self.mode = mode
        self.register_buffer("qweight", torch.zeros(n, k, dtype=torch.int8, device=device))
        self.register_buffer("wscale", torch.ones(n, dtype=torch.float32, device=device))
        self.register_buffer("bias", torch.zeros(n, dtype=dtype, device=device) if bias else None)

    def _load_float(self, weight: Tensor, bias: Tensor | None) -> None:
        q, s = quantize_weight_int8(weight, where=self.label)
        check_int8(q, s, where=self.label)
        self.qweight.copy_(q)
        self.wscale.copy_(s)
        if bias is not None:
            self.bias.copy_(bias.detach())

    def _apply(self, fn, recurse=True):
        # .half() / .to(dtype) must not round the scales: the kernels read float32 scales.
        super()._apply(fn, recurse)
        if self.wscale.dtype != torch.float32:
            self.wscale = self.wscale.float()
        return self

    def _linear(self, x: Tensor) -> Tensor:
        op = int8_ops.int8_linear_dynamic if self.mode == "dynamic" else int8_ops.int8_linear_weight_only
        return op(x, self.qweight, self.wscale, self.bias)

    @property
    def backend(self) -> str:
        """The backend that runs this layer's forward on its current device (large batches)."""
        return int8_ops.plan(self.mode, self.qweight.device)

    def backend_for(self, m: int) -> str:
        """The backend for a batch of `m` rows (M-dependent dispatch on CUDA)."""
        return int8_ops.plan(self.mode, self.qweight.device, m, self.qweight.shape[1])


class Int8Linear(_Int8Weights):
    """Drop-in nn.Linear with int8 weights.

    x: (..., in_features) float32/bfloat16/float16 -> (..., out_features) in x's dtype.
    mode="dynamic": activations quantized per token at run time (W8A8);
    mode="weight_only": activations stay in float (W8A16 on CUDA, W8A32 on the CPU).
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, mode: str = "dynamic",
                 device=None, dtype=torch.float32, name: str = ""):
        super().__init__()
        self.name = name
        self.in_features, self.out_features = in_features, out_features
        self._init_weights(out_features, in_features, bias, mode, device, dtype)

    @classmethod
    def from_float(cls, linear: nn.Linear, mode: str = "dynamic", name: str = "") -> "Int8Linear":
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"Int8Linear.from_float '{name}': expected nn.Linear, got {type(linear).__name__}")
        w = linear.weight
        layer = cls(linear.in_features, linear.out_features, linear.bias is not None, mode,
                    device=w.device, dtype=w.dtype, name=name)
        layer._load_float(w, linear.bias)
        return layer

    def forward(self, x: Tensor) -> Tensor:
        self._check_input(x, self.in_features, -1)
        return self._linear(x)

    def dequantize(self) -> Tensor:
        return dequantize_int8(self.qweight, self.wscale)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, mode={self.mode}"


def _pair(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)


class Int8Conv2d(_Int8Weights):
    """Drop-in nn.Conv2d with int8 weights, run as a GEMM over im2col patches.

    x: (B, C, H, W) float -> (B, O, H', W'); stride, padding (ints or "same"/"valid"),
    dilation and groups are honoured; padding_mode must be "zeros".
    The weight is stored as (O, C/groups * kh * kw), unfold's patch order.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, dilation=1,
                 groups: int = 1, bias: bool = True, mode: str = "dynamic", device=None, dtype=torch.float32,
                 name: str = ""):
        super().__init__()
        self.name = name
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"{self.label}: channels ({in_channels}, {out_channels}) must divide by groups={groups}")
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.kernel_size, self.stride, self.dilation = _pair(kernel_size), _pair(stride), _pair(dilation)
        self.padding = padding if isinstance(padding, str) else _pair(padding)
        if isinstance(self.padding, str) and self.padding not in ("same", "valid"):
            raise ValueError(f"{self.label}: padding must be an int, a pair, 'same' or 'valid', got {padding!r}")
        if self.padding == "same" and self.stride != (1, 1):
            raise ValueError(f"{self.label}: padding='same' needs stride 1 (as in nn.Conv2d)")
        k = in_channels // groups * self.kernel_size[0] * self.kernel_size[1]
        self._init_weights(out_channels, k, bias, mode, device, dtype)

    @classmethod
    def from_float(cls, conv: nn.Conv2d, mode: str = "dynamic", name: str = "") -> "Int8Conv2d":
        if not isinstance(conv, nn.Conv2d):
            raise TypeError(f"Int8Conv2d.from_float '{name}': expected nn.Conv2d, got {type(conv).__name__}")
        if conv.padding_mode != "zeros":
            raise ValueError(f"Int8Conv2d '{name}': padding_mode={conv.padding_mode!r} is not supported (only 'zeros')")
        w = conv.weight
        layer = cls(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation,
                    conv.groups, conv.bias is not None, mode, device=w.device, dtype=w.dtype, name=name)
        layer._load_float(w, conv.bias)
        return layer

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

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4:
            raise ValueError(f"{self.label}: expected a 4-D input (B, C, H, W), got shape {tuple(x.shape)}")
        self._check_input(x, self.in_channels, 1)
        x = self._pad(x)
        B, _, H, W = x.shape
        (kh, kw), (sh, sw), (dh, dw) = self.kernel_size, self.stride, self.dilation
        Ho, Wo = (H - dh * (kh - 1) - 1) // sh + 1, (W - dw * (kw - 1) - 1) // sw + 1
        if Ho <= 0 or Wo <= 0:
            raise ValueError(f"{self.label}: input {tuple(x.shape)} (after padding) is smaller than the kernel")
        g, O = self.groups, self.out_channels
        if (kh, kw, sh, sw) == (1, 1, 1, 1) and g == 1:
            rows = x.permute(0, 2, 3, 1)  # (B, H, W, C): a 1x1 conv is a linear over channels
            return self._linear(rows).permute(0, 3, 1, 2)
        cols = F.unfold(x, (kh, kw), dilation=(dh, dw), stride=(sh, sw))  # (B, C*kh*kw, L)
        if g == 1:
            out = self._linear(cols.transpose(1, 2))  # (B, L, O)
        else:
            out = torch.cat([self._group_linear(cols, i) for i in range(g)], dim=-1)
        return out.transpose(1, 2).reshape(B, O, Ho, Wo)

    def _group_linear(self, cols: Tensor, i: int) -> Tensor:
        kg, og = self.qweight.shape[1], self.out_channels // self.groups
        rows = slice(i * og, (i + 1) * og)
        bias = None if self.bias is None else self.bias[rows]
        op = int8_ops.int8_linear_dynamic if self.mode == "dynamic" else int8_ops.int8_linear_weight_only
        return op(cols[:, i * kg:(i + 1) * kg].transpose(1, 2), self.qweight[rows], self.wscale[rows], bias)

    def dequantize(self) -> Tensor:
        kh, kw = self.kernel_size
        w = dequantize_int8(self.qweight, self.wscale)
        return w.reshape(self.out_channels, self.in_channels // self.groups, kh, kw)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, dilation={self.dilation}, groups={self.groups}, mode={self.mode}")
