"""Quantization-aware training: fake quantization with learned step sizes (LSQ), then the real packed layers.

    qat = pycomp.quantize.qat.prepare_qat(model, "int4", group_size=32, symmetric=True)
    ...                                          # the user's training loop on `qat`
    small = pycomp.quantize.qat.convert(qat)     # Int4Linear / Int4Conv2d, the learned steps as their scales

prepare_qat swaps each nn.Linear / nn.Conv2d for a QATLinear / QATConv2d that keeps the float weight
and bias as parameters and runs its forward on fake-quantized values, computed by the very rules the
packed format and the op use, so convert() changes the numbers only by float rounding in the matmul:

- int8 (Int8Linear/Int8Conv2d): per-output-channel weight steps, codes in [-127, 127]; mode="dynamic"
  also quantizes the activations per token (per im2col patch row for a conv), as the op does at run time
  (max|x| / 127, nothing learned: the op computes it from each input); mode="weight_only" leaves them float.
- int4 (Int4Linear/Int4Conv2d, weight-only): one step per group of `group_size` columns along K,
  float16-rounded in the forward (straight-through) because the format stores float16 scales;
  asymmetric groups also learn a zero point (LSQ+, Bhalgat et al. 2020), rounded to [0, 15].

LSQ (Esser et al. 2020): w_hat = round(clamp(w / s, -Qn, Qp)) * s with a straight-through round, so s
gets the gradient -w/s + round(w/s) inside the range and -Qn or Qp outside it; that gradient is scaled
by g = 1 / sqrt(numel * Qp), numel being the number of weights sharing the step (the paper's one step
per layer generalised to one per channel or group). Steps start where RTN puts them (int8: max|w| / 127;
int4: the clipping search of pycomp.quantize.int4), so an untrained QAT model equals RTN.
"""
from __future__ import annotations

import copy
import math
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pycomp.formats.int4 import (
    QMAX, SCALE_MAX, SCALE_MIN, SYMMETRIC_ZERO, check_finite, check_group_size, n_groups, pack_int4,
)
from pycomp.nn.base import check_input, put_layer, replaceable
from pycomp.nn.conv import Im2ColConv2d, conv_settings
from pycomp.ops.int8 import quantize_per_token_int8_ref
from pycomp.quantize.int4 import int4_group_params
from pycomp.quantize.int8 import MODES, quantize_weight_int8

INT8_QMAX = 127
TECHNIQUES = ("int8", "int4")


def round_ste(x: Tensor) -> Tensor:
    """round_half_even(x) forward, identity backward."""
    return x + (torch.round(x) - x).detach()


def grad_scale(x: Tensor, g: float) -> Tensor:
    """x forward, gradient times g backward."""
    return x * g + (x - x * g).detach()


class Int8WeightQuantizer(nn.Module):
    """Per-output-channel LSQ step `step` (N,) float32; codes clamp(round(w / step), -127, 127)."""

    def __init__(self, weight: Tensor, where: str):
        super().__init__()
        _, scale = quantize_weight_int8(weight, where=where)
        self.step = nn.Parameter(scale)
        self.g = 1.0 / math.sqrt(weight[0].numel() * INT8_QMAX)

    def scale(self) -> Tensor:
        """The step the forward uses, (N,) float32: |step| (an optimizer may push a step below zero), at least
        float32's smallest normal so that w / s stays finite."""
        return grad_scale(self.step, self.g).abs().clamp(min=torch.finfo(torch.float32).tiny)

    def forward(self, w: Tensor) -> Tensor:
        """w (N, K) float -> fake-quantized (N, K) float32."""
        s = self.scale().unsqueeze(1)
        return round_ste((w.float() / s).clamp(-INT8_QMAX, INT8_QMAX)) * s

    @torch.no_grad()
    def export(self, w: Tensor) -> dict[str, Tensor]:
        """The Int8 layers' buffers for weight `w` (N, K): qweight and wscale."""
        s = self.scale()
        return {"qweight": torch.round(w.float() / s.unsqueeze(1)).clamp_(-INT8_QMAX, INT8_QMAX).to(torch.int8),
                "wscale": s.contiguous()}


class Int4WeightQuantizer(nn.Module):
    """Group-wise LSQ steps `step` (N, G) (float16 in the forward) and, asymmetric, zero points `zero` (N, G)."""

    def __init__(self, weight: Tensor, group_size: int, symmetric: bool, where: str):
        super().__init__()
        check_group_size(group_size, where)
        check_finite(weight, where)
        self.group_size, self.symmetric, self.k = group_size, symmetric, weight.shape[1]
        scales, zeros = int4_group_params(weight.detach().float(), group_size, symmetric, where=where)
        self.step = nn.Parameter(scales.float())
        self.zero = None if symmetric else nn.Parameter(zeros.float())
        qp = SYMMETRIC_ZERO - 1 if symmetric else QMAX
        self.g = 1.0 / math.sqrt(min(group_size, self.k) * qp)

    def scale(self) -> Tensor:
        """The step the forward uses, (N, G) float32 holding float16 values: |step| (an optimizer may push a
        step below zero) within float16's range, rounded to float16 with a straight-through gradient."""
        s = grad_scale(self.step, self.g).abs().clamp(SCALE_MIN, SCALE_MAX)
        return s + (s.half().float() - s).detach()

    def zero_point(self) -> Tensor | float:
        """(N, G) integer-valued float32 in [0, 15] (rounded straight-through), or 8 when symmetric."""
        if self.zero is None:
            return float(SYMMETRIC_ZERO)
        return round_ste(grad_scale(self.zero, self.g)).clamp(0, QMAX)

    def _params(self) -> tuple[Tensor, Tensor | float]:
        z = self.zero_point()
        return self.scale().unsqueeze(-1), z if isinstance(z, float) else z.unsqueeze(-1)

    def _groups(self, w: Tensor) -> Tensor:
        g = n_groups(self.k, self.group_size)
        return F.pad(w.float(), (0, g * self.group_size - self.k)).reshape(w.shape[0], g, self.group_size)

    def forward(self, w: Tensor) -> Tensor:
        """w (N, K) float -> fake-quantized (N, K) float32: (clamp(round(w / s) + z, 0, 15) - z) * s."""
        s, z = self._params()
        codes = (round_ste(self._groups(w) / s) + z).clamp(0, QMAX)
        return ((codes - z) * s).reshape(w.shape[0], -1)[:, :self.k]

    @torch.no_grad()
    def export(self, w: Tensor) -> dict[str, Tensor | None]:
        """The Int4 layers' buffers for weight `w` (N, K): packed, scales, zeros."""
        s, z = self._params()
        scales = s.squeeze(-1).half()
        zeros = None if self.zero is None else z.squeeze(-1).to(torch.uint8)
        return {"packed": pack_int4(w, scales, zeros, self.group_size), "scales": scales, "zeros": zeros}


class _QATLayer(nn.Module):
    """A float layer training under fake quantization: `weight` and `bias` stay parameters, as in the float layer."""

    name: str = ""

    @property
    def label(self) -> str:
        return f"{type(self).__name__} '{self.name}'" if self.name else type(self).__name__

    _check_input = check_input

    def _setup(self, module: nn.Module, technique: str, options: dict, name: str) -> None:
        self.name, self.technique = name, technique
        self.weight, self.bias = module.weight, module.bias
        w = module.weight.detach().reshape(module.weight.shape[0], -1)
        if technique == "int8":
            mode = options.get("mode", "dynamic")
            if mode not in MODES:
                raise ValueError(f"{self.label}: mode must be one of {MODES}, got {mode!r}")
            self.mode = mode
            self.quantizer = Int8WeightQuantizer(w, self.label)
        else:
            self.group_size, self.symmetric = options.get("group_size", 128), options.get("symmetric", False)
            self.quantizer = Int4WeightQuantizer(w, self.group_size, self.symmetric, self.label)

    def _linear(self, x: Tensor, rows: slice = slice(None)) -> Tensor:
        """x (..., K) -> (..., N') with the fake-quantized weight rows `rows`."""
        if self.technique == "int8" and self.mode == "dynamic":
            q, s = quantize_per_token_int8_ref(x)
            x = x + (q.float() * s.unsqueeze(-1) - x).detach()  # straight-through, as the op's backward
        w = self.quantizer(self.weight.reshape(self.weight.shape[0], -1))[rows]
        bias = None if self.bias is None else self.bias[rows]
        return F.linear(x.float(), w, None if bias is None else bias.float()).to(x.dtype)

    def _settings(self) -> dict:
        if self.technique == "int8":
            return {"mode": self.mode}
        return {"group_size": self.group_size, "symmetric": self.symmetric}

    @torch.no_grad()
    def to_layer(self) -> nn.Module:
        """The packed layer (Int8*/Int4*) computing what this layer computes, its steps as the scales."""
        from pycomp.nn import Int4Conv2d, Int4Linear, Int8Conv2d, Int8Linear

        linear = isinstance(self, QATLinear)
        cls = {("int8", True): Int8Linear, ("int8", False): Int8Conv2d,
               ("int4", True): Int4Linear, ("int4", False): Int4Conv2d}[self.technique, linear]
        layer = cls(**self._geometry(), **self._settings(), device=self.weight.device, dtype=self.weight.dtype,
                    name=self.name)
        for key, value in self.quantizer.export(self.weight.reshape(self.weight.shape[0], -1)).items():
            if value is not None:
                getattr(layer, key).copy_(value)
        if self.bias is not None:
            layer.bias.copy_(self.bias)
        layer.check_buffers()
        return layer


class QATLinear(_QATLayer):
    """nn.Linear under fake quantization. x: (..., in_features) float -> (..., out_features) in x's dtype."""

    def __init__(self, linear: nn.Linear, technique: str, name: str = "", **options):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self._setup(linear, technique, options, name)

    def _geometry(self) -> dict:
        return {"in_features": self.in_features, "out_features": self.out_features, "bias": self.bias is not None}

    def forward(self, x: Tensor) -> Tensor:
        self._check_input(x, self.in_features, -1)
        return self._linear(x)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, {self.technique} {self._settings()}"


class QATConv2d(_QATLayer, Im2ColConv2d):
    """nn.Conv2d under fake quantization. x: (B, C, H, W) -> (B, O, H', W').

    int8 dynamic runs as Int8Conv2d does, a GEMM over im2col patches with each patch row quantized;
    weight-only settings run F.conv2d on the fake-quantized weight.
    """

    def __init__(self, conv: nn.Conv2d, technique: str, name: str = "", **options):
        super().__init__()
        self.name = name
        self._conv = conv_settings(conv, f"QATConv2d '{name}'")
        self._init_conv(*(self._conv[k] for k in ("in_channels", "out_channels", "kernel_size", "stride", "padding",
                                                  "dilation", "groups")))
        self._setup(conv, technique, options, name)

    def _geometry(self) -> dict:
        return dict(self._conv)

    def forward(self, x: Tensor) -> Tensor:
        og = self.out_channels // self.groups
        if self.technique == "int8" and self.mode == "dynamic":
            return self._conv_gemm(x, lambda rows, i: self._linear(rows, slice(i * og, (i + 1) * og)))
        # Float activations: the same weights through F.conv2d, which trains faster than the im2col GEMM.
        w = self.quantizer(self.weight.reshape(self.out_channels, -1)).reshape(self.weight.shape)
        bias = None if self.bias is None else self.bias.float()
        return F.conv2d(x.float(), w, bias, self.stride, self.padding, self.dilation, self.groups).to(x.dtype)

    def extra_repr(self) -> str:
        return f"{self._conv_repr()}, {self.technique} {self._settings()}"


def _check_options(technique: str, options: dict) -> None:
    if technique not in TECHNIQUES:
        raise ValueError(f"prepare_qat: technique must be one of {TECHNIQUES}, got {technique!r}")
    valid = {"int8": {"mode"}, "int4": {"group_size", "symmetric"}}[technique]
    unknown = sorted(set(options) - valid)
    if unknown:
        raise TypeError(f"prepare_qat: {technique}: unknown option(s) {unknown}; valid: {sorted(valid)}")


def prepare_qat(model: nn.Module, technique: str, *, skip: Iterable[str] = (), **options) -> nn.Module:
    """A copy of `model` whose nn.Linear / nn.Conv2d (names not matching `skip`) train under fake quantization.

    technique "int8": mode="dynamic"|"weight_only"; "int4": group_size=32|64|128, symmetric=False.
    The copy's float parameters are shared with nothing: train it, then convert() it.
    """

    _check_options(technique, options)
    skip = [skip] if isinstance(skip, str) else list(skip)
    out = copy.deepcopy(model)

    def qat_layer(module: nn.Module, name: str) -> nn.Module | None:
        cls = QATLinear if isinstance(module, nn.Linear) else QATConv2d if isinstance(module, nn.Conv2d) else None
        return None if cls is None else cls(module, technique, name, **options)

    if (root := qat_layer(out, "")) is not None:
        return root
    targets = [(n, m) for n, m in replaceable(out, skip) if isinstance(m, (nn.Linear, nn.Conv2d))]
    if not targets:
        raise ValueError(f"prepare_qat: found no nn.Linear or nn.Conv2d to train (after skip={skip})")
    for name, module in targets:
        put_layer(out, name, qat_layer(module, name))
    return out


def convert(model: nn.Module) -> nn.Module:
    """A copy of a prepare_qat model with each QAT layer replaced by its packed layer (Int8*/Int4*)."""
    out = copy.deepcopy(model)
    if isinstance(out, _QATLayer):
        return out.to_layer()
    targets = [(n, m) for n, m in out.named_modules() if isinstance(m, _QATLayer)]
    if not targets:
        raise ValueError("convert: the model holds no QAT layer; run prepare_qat first")
    for name, module in targets:
        put_layer(out, name, module.to_layer())
    return out
