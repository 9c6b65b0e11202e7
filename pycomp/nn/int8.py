"""int8 drop-in layers: Int8Linear and Int8Conv2d (W8A8 "dynamic" or W8A16/W8A32 "weight_only").

reduce_range=True (mode "dynamic" only) quantizes activations to 7 bits with a zero point, fbgemm's
numerics, and keeps a `wsum` buffer (int32 row sums of qweight) that the kernels need.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from pycomp.formats.int8 import FORMAT_VERSION, LAYOUT, check_int8, dequantize_int8
from pycomp.nn.base import ALL_ROWS, CompressedLayer, take_rows
from pycomp.nn.conv import Im2ColConv2d, conv_settings
from pycomp.ops import int8 as int8_ops
from pycomp.quantize.int8 import MODES, check_reduce_range, quantize_weight_int8


class _Int8Weights(CompressedLayer):
    """Buffers and behaviour shared by the int8 layers: qweight (N, K) int8, wscale (N,) float32, bias."""

    def _init_weights(self, n: int, k: int, bias: bool, mode: str, reduce_range: bool, device, dtype) -> None:
        if mode not in MODES:
            raise ValueError(f"{self.label}: mode must be one of {MODES}, got {mode!r}")
        check_reduce_range(mode, reduce_range, self.label)
        self.mode, self.reduce_range = mode, bool(reduce_range)
        self.register_buffer("qweight", torch.zeros(n, k, dtype=torch.int8, device=device))
        self.register_buffer("wscale", torch.ones(n, dtype=torch.float32, device=device))
        self.register_buffer("bias", torch.zeros(n, dtype=dtype, device=device) if bias else None)
        if self.reduce_range:
            self.register_buffer("wsum", torch.zeros(n, dtype=torch.int32, device=device))

    def _load_float(self, weight: Tensor, bias: Tensor | None) -> None:
        q, s = quantize_weight_int8(weight, where=self.label)
        check_int8(q, s, where=self.label)
        self.qweight.copy_(q)
        self.wscale.copy_(s)
        if self.reduce_range:
            self.wsum.copy_(int8_ops.weight_row_sums(q))
        if bias is not None:
            self.bias.copy_(bias.detach())

    def check_buffers(self) -> None:
        check_int8(self.qweight, self.wscale, where=self.label)
        if self.reduce_range and not torch.equal(self.wsum, int8_ops.weight_row_sums(self.qweight)):
            raise ValueError(f"{self.label}: wsum must hold the int32 row sums of qweight (reduce_range=True)")

    @property
    def _op_mode(self) -> str:
        return "dynamic_reduce_range" if self.reduce_range else self.mode

    def format_info(self) -> dict:
        """What a file manifest records to read the buffers back."""
        return {"format": "int8", "layout": LAYOUT, "version": FORMAT_VERSION, "scale_dtype": "float32"}

    def _apply(self, fn, recurse=True):
        # .half() / .to(dtype) must not round the scales: the kernels read float32 scales.
        super()._apply(fn, recurse)
        if self.wscale.dtype != torch.float32:
            self.wscale = self.wscale.float()
        return self

    def _linear(self, x: Tensor, rows: slice = ALL_ROWS) -> Tensor:
        """x (..., K) -> (..., N'), using the weight rows `rows` (a conv group's output channels)."""
        qweight, wscale, bias = take_rows(self.qweight, rows), take_rows(self.wscale, rows), take_rows(self.bias, rows)
        if self.reduce_range:
            return int8_ops.int8_linear_dynamic_reduce_range(x, qweight, wscale, take_rows(self.wsum, rows), bias)
        op = int8_ops.int8_linear_dynamic if self.mode == "dynamic" else int8_ops.int8_linear_weight_only
        return op(x, qweight, wscale, bias)

    @property
    def backend(self) -> str:
        """The backend that runs this layer's forward on its current device (large batches)."""
        return int8_ops.plan(self._op_mode, self.qweight.device)

    def backend_for(self, m: int) -> str:
        """The backend for a batch of `m` rows (M-dependent dispatch on CUDA)."""
        return int8_ops.plan(self._op_mode, self.qweight.device, m, self.qweight.shape[1])


class Int8Linear(_Int8Weights):
    """Drop-in nn.Linear with int8 weights.

    x: (..., in_features) float32/bfloat16/float16 -> (..., out_features) in x's dtype.
    mode="dynamic": activations quantized per token at run time (W8A8);
    mode="weight_only": activations stay in float (W8A16 on CUDA, W8A32 on the CPU).
    reduce_range=True (dynamic only): 7-bit activations with a zero point, torch.ao's fbgemm numerics.
    """

    float_type = nn.Linear

    def __init__(self, in_features: int, out_features: int, bias: bool = True, mode: str = "dynamic",
                 reduce_range: bool = False, device=None, dtype=torch.float32, name: str = ""):
        super().__init__()
        self.name = name
        self.in_features, self.out_features = in_features, out_features
        self._init_weights(out_features, in_features, bias, mode, reduce_range, device, dtype)

    @classmethod
    def from_float(cls, linear: nn.Linear, mode: str = "dynamic", name: str = "",
                   reduce_range: bool = False) -> "Int8Linear":
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"Int8Linear.from_float '{name}': expected nn.Linear, got {type(linear).__name__}")
        w = linear.weight
        layer = cls(linear.in_features, linear.out_features, linear.bias is not None, mode, reduce_range,
                    device=w.device, dtype=w.dtype, name=name)
        layer._load_float(w, linear.bias)
        return layer

    def forward(self, x: Tensor) -> Tensor:
        self._check_input(x, self.in_features, -1)
        return self._linear(x)

    def dequantize(self) -> Tensor:
        return dequantize_int8(self.qweight, self.wscale)

    def extra_repr(self) -> str:
        rr = ", reduce_range=True" if self.reduce_range else ""
        return (f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
                f"mode={self.mode}{rr}")


class Int8Conv2d(_Int8Weights, Im2ColConv2d):
    """Drop-in nn.Conv2d with int8 weights, run as a GEMM over im2col patches.

    x: (B, C, H, W) float -> (B, O, H', W'); stride, padding (ints or "same"/"valid"),
    dilation and groups are honoured; padding_mode must be "zeros".
    The weight is stored as (O, C/groups * kh * kw), unfold's patch order.
    """

    float_type = nn.Conv2d

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, dilation=1,
                 groups: int = 1, bias: bool = True, mode: str = "dynamic", reduce_range: bool = False, device=None,
                 dtype=torch.float32, name: str = ""):
        super().__init__()
        self.name = name
        k = self._init_conv(in_channels, out_channels, kernel_size, stride, padding, dilation, groups)
        self._init_weights(out_channels, k, bias, mode, reduce_range, device, dtype)

    @classmethod
    def from_float(cls, conv: nn.Conv2d, mode: str = "dynamic", name: str = "",
                   reduce_range: bool = False) -> "Int8Conv2d":
        settings = conv_settings(conv, f"Int8Conv2d '{name}'")
        w = conv.weight
        layer = cls(**settings, mode=mode, reduce_range=reduce_range, device=w.device, dtype=w.dtype, name=name)
        layer._load_float(w, conv.bias)
        return layer

    def forward(self, x: Tensor) -> Tensor:
        og = self.out_channels // self.groups
        return self._conv_gemm(x, lambda rows, i: self._linear(rows, slice(i * og, (i + 1) * og)))

    def dequantize(self) -> Tensor:
        w = dequantize_int8(self.qweight, self.wscale)
        return w.reshape(self.out_channels, self.in_channels // self.groups, *self.kernel_size)

    def extra_repr(self) -> str:
        rr = ", reduce_range=True" if self.reduce_range else ""
        return f"{self._conv_repr()}, mode={self.mode}{rr}"
