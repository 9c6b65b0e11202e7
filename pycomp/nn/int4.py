"""int4 weight-only drop-in layers (W4A16): Int4Linear and Int4Conv2d, quantized by RTN or GPTQ."""
from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor, nn

from pycomp.formats.int4 import (
    FORMAT_VERSION, LAYOUTS, SCALE_DTYPE, check_group_size, check_int4, dequantize_int4, int4_nbytes, n_groups,
)
from pycomp.nn.base import ALL_ROWS, CompressedLayer, take_rows
from pycomp.nn.conv import Im2ColConv2d, conv_settings
from pycomp.ops import int4 as int4_ops
from pycomp.quantize.gptq import Hessian, gptq_int4
from pycomp.quantize.int4 import METHODS, rtn_int4


class _Int4Weights(CompressedLayer):
    """Buffers and behaviour shared by the int4 layers (k-nibble layout, see pycomp.formats.int4):
    packed (N, ceil(K/2)) uint8, scales (N, G) float16, zeros (N, G) uint8 or None (symmetric), bias.
    """

    layout = LAYOUTS[0]

    def _init_weights(self, n: int, k: int, bias: bool, group_size: int, symmetric: bool, round_x: bool, device,
                      dtype) -> None:
        check_group_size(group_size, self.label)
        self.group_size, self.symmetric, self.k, self.round_x = group_size, symmetric, k, bool(round_x)
        g = n_groups(k, group_size)
        self.register_buffer("packed", torch.zeros(n, (k + 1) // 2, dtype=torch.uint8, device=device))
        self.register_buffer("scales", torch.ones(n, g, dtype=SCALE_DTYPE, device=device))
        self.register_buffer("zeros", None if symmetric else torch.full((n, g), 8, dtype=torch.uint8, device=device))
        self.register_buffer("bias", torch.zeros(n, dtype=dtype, device=device) if bias else None)

    def _quantize(self, weight: Tensor, bias: Tensor | None, method: str, calib, act_order: bool) -> None:
        """Quantizes the float weight (N, ...) with `method` and loads the buffers."""
        if method not in METHODS:
            raise ValueError(f"{self.label}: method must be one of {METHODS}, got {method!r}")
        if act_order and method != "gptq":
            raise ValueError(f"{self.label}: act_order applies to method='gptq' only")
        w = weight.detach().reshape(weight.shape[0], -1)
        if method == "rtn":
            packed, scales, zeros = rtn_int4(w, self.group_size, self.symmetric, where=self.label)
        else:
            hessians = self._hessians(calib, w.device)
            og = w.shape[0] // len(hessians)
            parts = [gptq_int4(w[i * og:(i + 1) * og], h, self.group_size, self.symmetric, act_order,
                               where=self.label + (f" (conv group {i})" if len(hessians) > 1 else ""))
                     for i, h in enumerate(hessians)]
            packed, scales = torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
            zeros = None if self.symmetric else torch.cat([p[2] for p in parts])
        check_int4(packed, scales, zeros, self.group_size, self.k, where=self.label)
        self.packed.copy_(packed)
        self.scales.copy_(scales)
        if zeros is not None:
            self.zeros.copy_(zeros)
        if bias is not None:
            self.bias.copy_(bias.detach())

    def _hessians(self, calib, device) -> list[Hessian]:
        """One Hessian per conv group (one for a linear) from the layer's input activations."""
        if calib is None:
            raise ValueError(f"{self.label}: method='gptq' needs calib=, the layer's input activations "
                             "(a tensor, or a list of batches in the layer's input shape)")
        batches = [calib] if isinstance(calib, Tensor) else list(calib) if isinstance(calib, Iterable) else None
        if batches is None or not all(isinstance(b, Tensor) for b in batches):
            raise TypeError(f"{self.label}: calib must be a tensor or a list of tensors, got {type(calib).__name__}")
        hessians = None
        for x in batches:
            rows = self._calib_rows(x.to(device))
            hessians = hessians or [Hessian(r.shape[1]) for r in rows]
            for h, r in zip(hessians, rows):
                h.add(r)
        if hessians is None:
            raise ValueError(f"{self.label}: calib holds no batch; GPTQ needs the layer's input activations")
        return hessians

    def _apply(self, fn, recurse=True):
        # .half() / .to(bfloat16) must not round the float16 scales (fp16 -> bf16 loses bits): move their bits only.
        self._buffers["scales"] = self.scales.view(torch.int16)
        try:
            super()._apply(fn, recurse)
        finally:
            self._buffers["scales"] = self._buffers["scales"].view(SCALE_DTYPE)
        return self

    def _linear(self, x: Tensor, rows: slice = ALL_ROWS) -> Tensor:
        packed, scales, zeros = take_rows(self.packed, rows), take_rows(self.scales, rows), take_rows(self.zeros, rows)
        return int4_ops.w4a16_linear(x, packed, scales, zeros, take_rows(self.bias, rows), self.group_size, self.k,
                                     self.round_x)

    def _dequantize(self) -> Tensor:
        return dequantize_int4(self.packed, self.scales, self.zeros, self.group_size, self.k)

    @property
    def backend(self) -> str:
        """The backend that runs this layer's forward on its current device, for float32 inputs
        (or the bias dtype when the layer was moved to one)."""
        return self.backend_for(None)

    def backend_for(self, m: int | None, dtype: torch.dtype | None = None) -> str:
        """The backend for a batch of `m` rows of `dtype` (default: the bias dtype, else float32)."""
        if dtype is None:
            dtype = self.bias.dtype if self.bias is not None else torch.float32
        return int4_ops.plan(self.packed.device, m, self.k, dtype, self.round_x)

    def check_buffers(self) -> None:
        check_int4(self.packed, self.scales, self.zeros, self.group_size, self.k, where=self.label)

    def nbytes(self) -> int:
        """Bytes of the packed weight, scales and zero points (bias excluded)."""
        return int4_nbytes(self.packed, self.scales, self.zeros)

    def format_info(self) -> dict:
        """What a file manifest records to read the buffers back."""
        return {"format": "int4", "layout": self.layout, "version": FORMAT_VERSION, "group_size": self.group_size,
                "symmetric": self.symmetric, "in_features": self.k, "scale_dtype": "float16",
                "zero_dtype": None if self.symmetric else "uint8"}

    def _int4_repr(self) -> str:
        return (f"group_size={self.group_size}, symmetric={self.symmetric}, layout={self.layout}, "
                f"round_x={self.round_x}")


class Int4Linear(_Int4Weights):
    """Drop-in nn.Linear with group-wise int4 weights (W4A16).

    x: (..., in_features) float32/bfloat16/float16 -> (..., out_features) in x's dtype.
    round_x (default True): the CPU kernels may round x to int16 per weight group and multiply in
    integers (see pycomp.ops.int4; at most 2^-16 of the group's largest |x| per input, faster);
    round_x=False keeps the exact float32 product.
    """

    float_type = nn.Linear

    def __init__(self, in_features: int, out_features: int, bias: bool = True, group_size: int = 128,
                 symmetric: bool = False, round_x: bool = True, device=None, dtype=torch.float32, name: str = ""):
        super().__init__()
        self.name = name
        self.in_features, self.out_features = in_features, out_features
        self._init_weights(out_features, in_features, bias, group_size, symmetric, round_x, device, dtype)

    @classmethod
    def from_float(cls, linear: nn.Linear, group_size: int = 128, method: str = "rtn", calib=None,
                   symmetric: bool = False, act_order: bool = False, round_x: bool = True,
                   name: str = "") -> "Int4Linear":
        """Quantize `linear`. method="gptq" needs calib: its input activations, a (..., in_features)
        tensor or a list of them (at least in_features rows in all); method="rtn" ignores calib.
        """
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"Int4Linear.from_float '{name}': expected nn.Linear, got {type(linear).__name__}")
        w = linear.weight
        layer = cls(linear.in_features, linear.out_features, linear.bias is not None, group_size, symmetric,
                    round_x, device=w.device, dtype=w.dtype, name=name)
        layer._quantize(w, linear.bias, method, calib, act_order)
        return layer

    def _calib_rows(self, x: Tensor) -> list[Tensor]:
        self._check_input(x, self.in_features, -1)
        return [x.reshape(-1, self.in_features)]

    def forward(self, x: Tensor) -> Tensor:
        self._check_input(x, self.in_features, -1)
        return self._linear(x)

    def dequantize(self) -> Tensor:
        """(out_features, in_features) float32."""
        return self._dequantize()

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
                + self._int4_repr())


class Int4Conv2d(_Int4Weights, Im2ColConv2d):
    """Drop-in nn.Conv2d with group-wise int4 weights, run as a GEMM over im2col patches.

    x: (B, C, H, W) float -> (B, O, H', W'); stride, padding (ints or "same"/"valid"),
    dilation and groups are honoured; padding_mode must be "zeros". The weight is
    stored as (O, C/groups * kh * kw), unfold's patch order; quantization groups run along that K.
    """

    float_type = nn.Conv2d

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, dilation=1,
                 groups: int = 1, bias: bool = True, group_size: int = 128, symmetric: bool = False,
                 round_x: bool = True, device=None, dtype=torch.float32, name: str = ""):
        super().__init__()
        self.name = name
        k = self._init_conv(in_channels, out_channels, kernel_size, stride, padding, dilation, groups)
        self._init_weights(out_channels, k, bias, group_size, symmetric, round_x, device, dtype)

    @classmethod
    def from_float(cls, conv: nn.Conv2d, group_size: int = 128, method: str = "rtn", calib=None,
                   symmetric: bool = False, act_order: bool = False, round_x: bool = True,
                   name: str = "") -> "Int4Conv2d":
        """Quantize `conv`. method="gptq" needs calib: its input activations, (B, C, H, W) batches;
        GPTQ sees their im2col patches (one row per output position) and needs at least K of them.
        """
        settings = conv_settings(conv, f"Int4Conv2d.from_float '{name}'")
        w = conv.weight
        layer = cls(**settings, group_size=group_size, symmetric=symmetric, round_x=round_x, device=w.device,
                    dtype=w.dtype, name=name)
        layer._quantize(w, conv.bias, method, calib, act_order)
        return layer

    def _calib_rows(self, x: Tensor) -> list[Tensor]:
        return self.patch_rows(x)

    def forward(self, x: Tensor) -> Tensor:
        og = self.out_channels // self.groups
        return self._conv_gemm(x, lambda rows, i: self._linear(rows, slice(i * og, (i + 1) * og)))

    def dequantize(self) -> Tensor:
        """(out_channels, in_channels // groups, kh, kw) float32."""
        return self._dequantize().reshape(self.out_channels, self.in_channels // self.groups, *self.kernel_size)

    def extra_repr(self) -> str:
        return f"{self._conv_repr()}, " + self._int4_repr()
