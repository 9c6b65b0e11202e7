"""Binary drop-in layers: BinaryLinear and BinaryConv2d, 1-bit weights with float ("BWN") or binary ("XNOR") inputs."""
from __future__ import annotations

import warnings

import torch
from torch import Tensor, nn

from pycomp.formats.binary import (FORMAT_VERSION, LAYOUT, binarize_weight, check_binary, check_group_size,
                                   dequantize_binary, num_groups, words)
from pycomp.nn.base import ALL_ROWS, CompressedLayer, take_rows
from pycomp.nn.conv import Im2ColConv2d, conv_settings
from pycomp.ops import binary as binary_ops

ACTIVATIONS = ("float", "binary")


class NotCentredWarning(UserWarning):
    """An XNOR layer saw an input with no negative entry: sign() maps it to all +1, which loses it."""


class _BinaryWeights(CompressedLayer):
    """Buffers and behaviour shared by the binary layers: packed (N, ceil(K/32)) uint32, alpha (N, G) float32, bias."""

    def _init_weights(self, n: int, k: int, bias: bool, activations: str, group_size: int, centre: bool, device,
                      dtype) -> None:
        if activations not in ACTIVATIONS:
            raise ValueError(f"{self.label}: activations must be one of {ACTIVATIONS}, got {activations!r}")
        if centre and activations != "binary":
            raise ValueError(f"{self.label}: centre=True applies to activations='binary' only")
        check_group_size(group_size, where=self.label)
        self.activations, self.group_size, self.centre, self._k = activations, group_size, centre, k
        self._centred_checked = False
        self.register_buffer("packed", torch.zeros(n, words(k), dtype=torch.uint32, device=device))
        self.register_buffer("alpha", torch.ones(n, num_groups(k, group_size), dtype=torch.float32, device=device))
        self.register_buffer("bias", torch.zeros(n, dtype=dtype, device=device) if bias else None)
        # Σ_k W[n, k] of the binary weight, for centre=True; derived from packed and alpha, so not saved.
        self.register_buffer("w_rowsum", torch.zeros(n, dtype=torch.float32, device=device) if centre else None,
                             persistent=False)

    def _update_rowsum(self) -> None:
        if self.w_rowsum is not None:  # assigned, not copied: a skeleton built on "meta" gets a real tensor
            self.w_rowsum = self._dequantized().sum(1)

    def _load_float(self, weight: Tensor, bias: Tensor | None) -> None:
        packed, alpha = binarize_weight(weight, self.group_size, where=self.label)
        self.packed.copy_(packed)
        self.alpha.copy_(alpha)
        self._update_rowsum()
        if bias is not None:
            self.bias.copy_(bias.detach())

    def check_buffers(self) -> None:
        check_binary(self.packed, self.alpha, self._k, self.group_size, where=self.label)

    def format_info(self) -> dict:
        return {"format": "binary", "layout": LAYOUT, "version": FORMAT_VERSION, "scale_dtype": "float32",
                "group_size": self.group_size}

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        # torch's own message ("size mismatch for packed") names neither the layer nor the packing rule.
        for key in ("packed", "alpha"):
            t = state_dict.get(prefix + key)
            mine = getattr(self, key)
            if t is not None and tuple(t.shape) != tuple(mine.shape):
                raise ValueError(
                    f"{self.label}: cannot load {key} of shape {tuple(t.shape)} into a layer with K={self._k} inputs "
                    f"and N={mine.shape[0]} outputs (group_size={self.group_size}), which needs {tuple(mine.shape)}: "
                    f"the packed bits come from a layer of another shape")
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)
        if prefix + "packed" in state_dict and prefix + "alpha" in state_dict:
            with torch.no_grad():
                self._update_rowsum()

    def _apply(self, fn, recurse=True):
        # .half() / .to(dtype) must not round the scales: the kernels read float32 scales.
        super()._apply(fn, recurse)
        if self.alpha.dtype != torch.float32:
            self.alpha = self.alpha.float()
        return self

    def _warn_if_not_centred(self, x: Tensor) -> None:
        """XNOR keeps only the sign of each input: warn (once per layer) when the first input has none negative."""
        if self._centred_checked or self.centre or torch.compiler.is_compiling():
            return
        self._centred_checked = True
        if x.numel() and bool((x >= 0).all()):
            warnings.warn(
                f"{self.label}: activations='binary' got an input with no negative entry (e.g. after a ReLU); "
                "sign() turns it into all +1, so the output no longer depends on the input pattern. XNOR needs "
                "centred inputs (a BatchNorm or a shift before the layer), or use activations='float'",
                NotCentredWarning, stacklevel=3)

    def _linear(self, x: Tensor, rows: slice = ALL_ROWS) -> Tensor:
        """x (..., K) -> (..., N'), using the weight rows `rows` (a conv group's output channels)."""
        packed, alpha, bias = take_rows(self.packed, rows), take_rows(self.alpha, rows), take_rows(self.bias, rows)
        if self.activations == "binary":
            self._warn_if_not_centred(x)
            if not self.centre:
                return binary_ops.xnor_linear(x, packed, alpha, self.group_size, bias)
            # x = mu + (x - mu): XNOR on the centred part, the mean through the exact row sums of W.
            mu = x.mean(-1, keepdim=True)
            out = binary_ops.xnor_linear(x - mu, packed, alpha, self.group_size, bias)
            return out + mu * take_rows(self.w_rowsum, rows).to(out.dtype)
        return binary_ops.w1a16_linear(x, packed, alpha, self.group_size, bias)

    def _dequantized(self) -> Tensor:
        return dequantize_binary(self.packed, self.alpha, self._k, self.group_size)

    @property
    def _op(self) -> str:
        return "xnor" if self.activations == "binary" else "w1a16"

    @property
    def backend(self) -> str:
        """The backend that runs this layer's forward on its current device, for one token."""
        return binary_ops.plan(self._op, self.packed.device)

    def backend_for(self, m: int) -> str:
        """The backend for a batch of `m` rows (M-dependent dispatch)."""
        return binary_ops.plan(self._op, self.packed.device, m)


class BinaryLinear(_BinaryWeights):
    """Drop-in nn.Linear with 1-bit weights W ≈ α · sign(W).

    x: (..., in_features) float32/bfloat16/float16 -> (..., out_features) in x's dtype.
    activations="float": inputs stay in float (W1A32 on the CPU, W1A16 on CUDA);
    activations="binary": inputs binarized per token, β · sign(x) with β = mean|x| (XNOR, W1A1);
    they must be centred (a warning says when the first input has no negative entry), or pass
    centre=True: each token is binarized around its mean μ (β · sign(x − μ)) and μ · Σ_k W is added
    exactly, which keeps the pattern of inputs that are all positive (after a ReLU).
    group_size=0: one α per output channel; a multiple of 32: one α per group of inputs.
    """

    float_type = nn.Linear

    def __init__(self, in_features: int, out_features: int, bias: bool = True, activations: str = "float",
                 group_size: int = 0, centre: bool = False, device=None, dtype=torch.float32, name: str = ""):
        super().__init__()
        self.name = name
        self.in_features, self.out_features = in_features, out_features
        self._init_weights(out_features, in_features, bias, activations, group_size, centre, device, dtype)

    @classmethod
    def from_float(cls, linear: nn.Linear, activations: str = "float", group_size: int = 0, centre: bool = False,
                   name: str = "") -> "BinaryLinear":
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"BinaryLinear.from_float '{name}': expected nn.Linear, got {type(linear).__name__}")
        w = linear.weight
        layer = cls(linear.in_features, linear.out_features, linear.bias is not None, activations, group_size,
                    centre, device=w.device, dtype=w.dtype, name=name)
        layer._load_float(w, linear.bias)
        return layer

    def forward(self, x: Tensor) -> Tensor:
        self._check_input(x, self.in_features, -1)
        return self._linear(x)

    def dequantize(self) -> Tensor:
        return self._dequantized()

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
                f"activations={self.activations}, group_size={self.group_size}, centre={self.centre}")


class BinaryConv2d(_BinaryWeights, Im2ColConv2d):
    """Drop-in nn.Conv2d with 1-bit weights, run as a GEMM over im2col patches.

    x: (B, C, H, W) float -> (B, O, H', W'); the weight is (O, C/groups * kh * kw) in unfold's patch
    order, packed along that K. With activations="binary" each patch is binarized on its own
    (β, and μ with centre=True, per output position), XNOR-Net's scheme; zero padding is an input of 0 there.
    """

    float_type = nn.Conv2d

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, dilation=1,
                 groups: int = 1, bias: bool = True, activations: str = "float", group_size: int = 0,
                 centre: bool = False, device=None, dtype=torch.float32, name: str = ""):
        super().__init__()
        self.name = name
        k = self._init_conv(in_channels, out_channels, kernel_size, stride, padding, dilation, groups)
        self._init_weights(out_channels, k, bias, activations, group_size, centre, device, dtype)

    @classmethod
    def from_float(cls, conv: nn.Conv2d, activations: str = "float", group_size: int = 0, centre: bool = False,
                   name: str = "") -> "BinaryConv2d":
        settings = conv_settings(conv, f"BinaryConv2d '{name}'")
        w = conv.weight
        layer = cls(**settings, activations=activations, group_size=group_size, centre=centre, device=w.device,
                    dtype=w.dtype, name=name)
        layer._load_float(w, conv.bias)
        return layer

    def forward(self, x: Tensor) -> Tensor:
        og = self.out_channels // self.groups
        return self._conv_gemm(x, lambda rows, i: self._linear(rows, slice(i * og, (i + 1) * og)))

    def dequantize(self) -> Tensor:
        return self._dequantized().reshape(self.out_channels, self.in_channels // self.groups, *self.kernel_size)

    def extra_repr(self) -> str:
        return (f"{self._conv_repr()}, activations={self.activations}, group_size={self.group_size}, "
                f"centre={self.centre}")
