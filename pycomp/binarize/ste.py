"""Binarization-aware training: latent float weights, a straight-through estimator, prepare -> train -> convert.

    student = pycomp.binarize.prepare(model)           # a copy; Linear/Conv2d -> BinarizedLinear/Conv2d
    ... the user's training loop on `student` (any optimizer, loss, or a distillation trainer with
        `model` as the teacher: both are plain nn.Modules) ...
    small = pycomp.binarize.convert(student)           # a copy with packed BinaryLinear/BinaryConv2d

The latent modules keep float weights W; the forward uses α · sign(W) (α = mean|W| per output channel or
group) and, with activations="binary", β · sign(x) (β = mean|x| per token / per conv patch; with
centre=True, μ + β · sign(x − μ) around the token's mean μ), exactly what the packed layers compute. sign's gradient is the clipped identity (Hubara et al., BinaryNet): 1 where
|input| <= 1, else 0, so latent weights that wander far from zero stop moving.
"""
from __future__ import annotations

import copy
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pycomp.binarize.config import ACTIVATIONS, first_and_last
from pycomp.formats.binary import check_group_size, num_groups
from pycomp.nn.base import put_layer, replaceable
from pycomp.nn.conv import Im2ColConv2d


class _SignSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return torch.where(x < 0, -1.0, 1.0).to(x.dtype)  # zero maps to +1, as in the packed format

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * (x.abs() <= 1).to(grad.dtype)


def sign_ste(x: Tensor) -> Tensor:
    """±1 (zero -> +1) forward; clipped identity backward."""
    return _SignSTE.apply(x)


def binarize_weight_ste(weight: Tensor, group_size: int = 0) -> Tensor:
    """(N, ...) -> same shape, α · sign(W) with α = mean|W| per row or per group of the flattened row."""
    w = weight.reshape(weight.shape[0], -1)
    n, k = w.shape
    if group_size == 0:
        alpha = w.abs().mean(1, keepdim=True)
    else:
        g = num_groups(k, group_size)
        sums = F.pad(w.abs(), (0, g * group_size - k)).reshape(n, g, group_size).sum(-1)
        counts = torch.full((g,), float(group_size), device=w.device, dtype=w.dtype)
        counts[-1] = k - (g - 1) * group_size
        alpha = (sums / counts).repeat_interleave(group_size, dim=1)[:, :k]
    return (alpha * sign_ste(w)).reshape(weight.shape)


def binarize_tokens_ste(x: Tensor) -> Tensor:
    """(..., K) -> β · sign(x), β = mean|x| over the last dimension."""
    return x.abs().mean(-1, keepdim=True) * sign_ste(x)


class _Latent:
    def _init_binary(self, activations: str, group_size: int, centre: bool) -> None:
        if activations not in ACTIVATIONS:
            raise ValueError(f"{type(self).__name__}: activations must be one of {ACTIVATIONS}, got {activations!r}")
        if centre and activations != "binary":
            raise ValueError(f"{type(self).__name__}: centre=True applies to activations='binary' only")
        check_group_size(group_size, where=type(self).__name__)
        self.activations, self.group_size, self.centre = activations, group_size, centre

    def _binary_linear(self, x: Tensor, w: Tensor, bias: Tensor | None) -> Tensor:
        """x (..., K), w (N, K): the XNOR layer's product, centred around each token's mean when asked."""
        if not self.centre:
            return F.linear(binarize_tokens_ste(x), w, bias)
        mu = x.mean(-1, keepdim=True)
        return F.linear(binarize_tokens_ste(x - mu), w, bias) + mu * w.sum(1)

    def _packed_settings(self) -> dict:
        return dict(activations=self.activations, group_size=self.group_size, centre=self.centre)


class BinarizedLinear(nn.Linear, _Latent):
    """nn.Linear with a latent float weight, trained through α · sign(W) (and β · sign(x) when binary)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, activations: str = "float",
                 group_size: int = 0, centre: bool = False, device=None, dtype=None):
        super().__init__(in_features, out_features, bias, device=device, dtype=dtype)
        self._init_binary(activations, group_size, centre)

    @classmethod
    def from_float(cls, linear: nn.Linear, activations: str = "float", group_size: int = 0,
                   centre: bool = False) -> "BinarizedLinear":
        w = linear.weight
        out = cls(linear.in_features, linear.out_features, linear.bias is not None, activations, group_size, centre,
                  device=w.device, dtype=w.dtype)
        out.load_state_dict(linear.state_dict())
        return out

    def forward(self, x: Tensor) -> Tensor:
        w = binarize_weight_ste(self.weight, self.group_size)
        if self.activations == "binary":
            return self._binary_linear(x, w, self.bias)
        return F.linear(x, w, self.bias)

    def to_binary(self, name: str = ""):
        from pycomp.nn.binary import BinaryLinear

        return BinaryLinear.from_float(self, **self._packed_settings(), name=name)


class BinarizedConv2d(Im2ColConv2d, nn.Conv2d, _Latent):
    """nn.Conv2d with a latent float weight; with binary activations each im2col patch gets its own β,
    and zero padding binarizes to +1, as BinaryConv2d computes them."""

    def __init__(self, *args, activations: str = "float", group_size: int = 0, centre: bool = False, **kwargs):
        nn.Conv2d.__init__(self, *args, **kwargs)
        self._init_binary(activations, group_size, centre)

    @classmethod
    def from_float(cls, conv: nn.Conv2d, activations: str = "float", group_size: int = 0,
                   centre: bool = False) -> "BinarizedConv2d":
        if conv.padding_mode != "zeros":
            raise ValueError(f"BinarizedConv2d: padding_mode={conv.padding_mode!r} is not supported (only 'zeros')")
        w = conv.weight
        out = cls(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation,
                  conv.groups, conv.bias is not None, activations=activations, group_size=group_size,
                  centre=centre, device=w.device, dtype=w.dtype)
        out.load_state_dict(conv.state_dict())
        return out

    @property
    def label(self) -> str:
        return type(self).__name__

    def _check_input(self, x: Tensor, features: int, dim: int) -> None:
        if x.shape[dim] != features:
            raise ValueError(f"{self.label}: expected {features} input channels, got shape {tuple(x.shape)}")

    def forward(self, x: Tensor) -> Tensor:
        w = binarize_weight_ste(self.weight, self.group_size)
        if self.activations == "float":
            return F.conv2d(x, w, self.bias, self.stride, self.padding, self.dilation, self.groups)
        og = self.out_channels // self.groups
        w2 = w.reshape(self.out_channels, -1)

        def linear(rows: Tensor, i: int) -> Tensor:
            b = None if self.bias is None else self.bias[i * og:(i + 1) * og]
            return self._binary_linear(rows, w2[i * og:(i + 1) * og], b)

        return self._conv_gemm(x, linear)

    def to_binary(self, name: str = ""):
        from pycomp.nn.binary import BinaryConv2d

        return BinaryConv2d.from_float(self, **self._packed_settings(), name=name)


LATENT = (BinarizedLinear, BinarizedConv2d)


def _swap(model: nn.Module, make) -> nn.Module:
    """Replaces each submodule m (by qualified name) with make(name, m) when that is not None."""
    for name, module in list(model.named_modules()):
        if not name:
            continue
        new = make(name, module)
        if new is not None:
            put_layer(model, name, new)
    return model


def prepare(model: nn.Module, activations: str = "float", group_size: int = 0, keep_first_last: bool = True,
            skip: Iterable[str] = (), centre: bool = False) -> nn.Module:
    """A copy of `model` for binarization-aware training: each nn.Linear / nn.Conv2d (but the first and
    the last, the modules matched by the fnmatch patterns in `skip`, and an nn.MultiheadAttention's out_proj)
    becomes a BinarizedLinear / BinarizedConv2d with the same weights.
    `model` itself is untouched (it can serve as the teacher of a distillation loss)."""
    out = copy.deepcopy(model)
    keep = first_and_last(out) if keep_first_last else frozenset()
    allowed = {n for n, _ in replaceable(out, skip)} - keep

    def make(name, m):
        if (name and name not in allowed) or isinstance(m, LATENT):
            return None
        if isinstance(m, nn.Linear):
            return BinarizedLinear.from_float(m, activations, group_size, centre)
        if isinstance(m, nn.Conv2d):
            return BinarizedConv2d.from_float(m, activations, group_size, centre)
        return None

    if isinstance(out, (nn.Linear, nn.Conv2d)) and not isinstance(out, LATENT):
        return make("", out)
    return _swap(out, make)


def convert(model: nn.Module) -> nn.Module:
    """A copy of a prepared (and trained) model with every latent module packed into BinaryLinear /
    BinaryConv2d; the other modules are copied as they are."""
    out = copy.deepcopy(model)
    if isinstance(out, LATENT):
        return out.to_binary()
    if not any(isinstance(m, LATENT) for m in out.modules()):
        raise ValueError("binarize.convert: the model has no BinarizedLinear/BinarizedConv2d; call prepare() first")
    return _swap(out, lambda name, m: m.to_binary(name) if isinstance(m, LATENT) else None)
