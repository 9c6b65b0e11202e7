"""Low-rank drop-in layers: LowRankLinear (U (V x), two thin GEMMs) and LowRankConv2d (Tucker-2 or CP convs).

The factors are ordinary child modules, so they train (distillation, fine-tuning) and compose: a
LowRankLinear's factors may be Int8Linear or Int4Linear (`factor_quant`), and a later compress step
may quantize the float factors of either layer. Factors are float parameters otherwise.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from pycomp.lowrank.nmf import nmf
from pycomp.lowrank.rank import check_weight, choose_rank, max_saving_rank, svd_factors
from pycomp.lowrank.tensor import cp_als, cp_params, cp_ranks, tucker2, tucker2_params, tucker2_ranks
from pycomp.nn.base import CompressedLayer
from pycomp.nn.conv import _pair, conv_settings
from pycomp.nn.int4 import Int4Linear
from pycomp.nn.int8 import Int8Linear

FORMAT_VERSION = 1
FACTOR_QUANT = (None, "int8", "int4")
METHODS = ("svd", "nmf")
DECOMPOSITIONS = ("tucker", "cp")
_FACTOR_KIND = {nn.Linear: None, Int8Linear: "int8", Int4Linear: "int4"}


def _check_factors(layer: CompressedLayer, expected: dict[str, tuple]) -> None:
    """Each float factor child has its expected weight shape and finite values; quantized ones check themselves."""
    for child, shape in expected.items():
        module = getattr(layer, child)
        if isinstance(module, CompressedLayer):
            module.check_buffers()
            continue
        w = module.weight
        if tuple(w.shape) != shape:
            raise ValueError(f"{layer.label}: factor '{child}' has shape {tuple(w.shape)}, expected {shape}")
        if not torch.isfinite(w).all():
            raise ValueError(f"{layer.label}: factor '{child}' has a NaN or infinite value")


class LowRankLinear(CompressedLayer):
    """Drop-in nn.Linear with weight W (out, in) ~= U (out, rank) @ V (rank, in): y = U (V x) + bias.

    x: (..., in_features) float -> (..., out_features). Children: `v` (in -> rank, no bias) and `u`
    (rank -> out, with the bias); nn.Linear, or Int8Linear (dynamic) / Int4Linear (RTN, group_size)
    when factor_quant is "int8" / "int4".
    """

    float_type = nn.Linear

    def __init__(self, in_features: int, out_features: int, rank: int, bias: bool = True,
                 factor_quant: str | None = None, group_size: int = 128, device=None, dtype=torch.float32,
                 name: str = ""):
        super().__init__()
        self.name = name
        if factor_quant not in FACTOR_QUANT:
            raise ValueError(f"{self.label}: factor_quant must be one of {FACTOR_QUANT}, got {factor_quant!r}")
        if isinstance(rank, bool) or not isinstance(rank, int) or not 1 <= rank <= min(in_features, out_features):
            raise ValueError(f"{self.label}: rank must be an int in [1, min(in, out) = "
                             f"{min(in_features, out_features)}], got {rank!r}")
        self.in_features, self.out_features, self.rank = in_features, out_features, rank
        self.group_size = group_size
        kind = {None: nn.Linear, "int8": Int8Linear, "int4": Int4Linear}[factor_quant]
        extra = {"group_size": group_size} if factor_quant == "int4" else {}
        named = {} if factor_quant is None else {"name": f"{name}.v" if name else "v"}
        self.v = kind(in_features, rank, bias=False, device=device, dtype=dtype, **extra, **named)
        named = {} if factor_quant is None else {"name": f"{name}.u" if name else "u"}
        self.u = kind(rank, out_features, bias=bias, device=device, dtype=dtype, **extra, **named)

    @property
    def bias(self) -> Tensor | None:
        return self.u.bias

    @property
    def factor_quant(self) -> str | None:
        """What the factors are now: None (float), "int8" or "int4"; read from the children, so a later
        compress step that quantized them (compress(model, ["lowrank", "int8"])) is reported too."""
        kinds = {_FACTOR_KIND.get(type(m), "?") for m in (self.u, self.v)}
        if len(kinds) != 1 or "?" in kinds:
            raise ValueError(f"{self.label}: factors of types {type(self.v).__name__} and {type(self.u).__name__} "
                             "are not one of float, int8, int4")
        return kinds.pop()

    @classmethod
    def from_float(cls, linear: nn.Linear, rank: int | None = None, *, energy: float | None = None,
                   ratio: float | None = None, method: str = "svd", factor_quant: str | None = None,
                   group_size: int = 128, name: str = "") -> "LowRankLinear":
        """Factor `linear` at a rank given, or chosen by energy kept or parameter ratio (exactly one).

        method="svd": truncated SVD, sqrt(s) in each factor. method="nmf": non-negative factors, for a
        non-negative weight only (ValueError naming the layer otherwise); its rank comes from the same rule.
        Raises ValueError when the chosen rank would not save parameters (rank >= in*out / (in+out)).
        """
        label = f"LowRankLinear '{name}'" if name else "LowRankLinear"
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"{label}: expected nn.Linear, got {type(linear).__name__}")
        if method not in METHODS:
            raise ValueError(f"{label}: method must be one of {METHODS}, got {method!r}")
        w = linear.weight
        n, k = w.shape
        s = torch.linalg.svdvals(check_weight(w, label)) if rank is None and energy is not None else None
        r = choose_rank(s, n, k, rank=rank, energy=energy, ratio=ratio, where=label)
        if r > max_saving_rank(n, k):
            raise ValueError(f"{label}: rank {r} factors hold {r * (n + k)} parameters, not fewer than the dense "
                             f"{n}x{k} weight's {n * k}; ranks up to {max_saving_rank(n, k)} save parameters")
        u, v = svd_factors(w, r, label) if method == "svd" else nmf(w, r, where=label)
        return cls.from_factors(u, v, linear.bias, factor_quant=factor_quant, group_size=group_size, name=name)

    @classmethod
    def from_factors(cls, u: Tensor, v: Tensor, bias: Tensor | None = None, *, factor_quant: str | None = None,
                     group_size: int = 128, name: str = "") -> "LowRankLinear":
        """The layer computing (x @ v.T) @ u.T + bias; u (out, rank), v (rank, in)."""
        (n, r), (r2, k) = u.shape, v.shape
        if r != r2:
            raise ValueError(f"LowRankLinear '{name}': factor shapes {tuple(u.shape)} and {tuple(v.shape)} "
                             "do not chain")
        dtype = bias.dtype if bias is not None else u.dtype
        layer = cls(k, n, r, bias is not None, factor_quant, group_size, device=u.device, dtype=dtype, name=name)
        with torch.no_grad():
            for child, weight, b in (("v", v, None), ("u", u, bias)):
                if factor_quant is None:
                    getattr(layer, child).weight.copy_(weight)
                    if b is not None:
                        getattr(layer, child).bias.copy_(b)
                    continue
                dense = nn.Linear(weight.shape[1], weight.shape[0], bias=b is not None, device=u.device, dtype=dtype)
                dense.weight.copy_(weight)
                if b is not None:
                    dense.bias.copy_(b)
                cname = getattr(layer, child).name
                quant = (Int8Linear.from_float(dense, name=cname) if factor_quant == "int8"
                         else Int4Linear.from_float(dense, group_size=group_size, name=cname))
                setattr(layer, child, quant)
        return layer

    def forward(self, x: Tensor) -> Tensor:
        self._check_input(x, self.in_features, -1)
        return self.u(self.v(x))

    def weight_approx(self) -> Tensor:
        """U @ V, (out_features, in_features) float32 (dequantized factors when quantized)."""
        def mat(m):
            return m.dequantize() if isinstance(m, CompressedLayer) else m.weight.detach().float()
        return mat(self.u) @ mat(self.v)

    def check_buffers(self) -> None:
        _check_factors(self, {"v": (self.rank, self.in_features), "u": (self.out_features, self.rank)})

    def format_info(self) -> dict:
        return {"format": "lowrank", "layout": "u(v(x))", "version": FORMAT_VERSION, "factor_quant": self.factor_quant}

    @property
    def backend(self) -> str:
        """What runs the two GEMMs: "torch" for float factors, else the quantized factors' backend."""
        if self.factor_quant is None:
            return "torch"
        return self.v.backend if self.v.backend == self.u.backend else f"{self.v.backend}+{self.u.backend}"

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, rank={self.rank}, "
                f"bias={self.bias is not None}, factor_quant={self.factor_quant}")


class LowRankConv2d(CompressedLayer):
    """Drop-in nn.Conv2d (groups=1) as a chain of smaller convs.

    decomposition="tucker", ranks=(r_out, r_in): `first` 1x1 C -> r_in, `core` kxk r_in -> r_out (the
    conv's stride, padding, dilation), `last` 1x1 r_out -> O with the bias.
    decomposition="cp", ranks=(R,): `first` 1x1 C -> R, `vertical` depthwise (kh, 1), `horizontal`
    depthwise (1, kw), `last` 1x1 R -> O with the bias.
    x: (B, C, H, W) float -> (B, O, H', W'), as the dense conv; padding_mode must be "zeros".
    """

    float_type = nn.Conv2d

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, dilation=1,
                 groups: int = 1, bias: bool = True, ranks=(1, 1), decomposition: str = "tucker", device=None,
                 dtype=torch.float32, name: str = ""):
        super().__init__()
        self.name = name
        if groups != 1:
            raise ValueError(f"{self.label}: only groups=1 convs are factored, got groups={groups}")
        if decomposition not in DECOMPOSITIONS:
            raise ValueError(f"{self.label}: decomposition must be one of {DECOMPOSITIONS}, got {decomposition!r}")
        ranks = tuple(ranks)
        if len(ranks) != (2 if decomposition == "tucker" else 1) or not all(
                isinstance(r, int) and not isinstance(r, bool) and r >= 1 for r in ranks):
            raise ValueError(f"{self.label}: ranks must be positive ints, (r_out, r_in) for tucker or (R,) for cp, "
                             f"got {ranks!r}")
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.kernel_size, self.stride, self.dilation = _pair(kernel_size), _pair(stride), _pair(dilation)
        self.padding = padding if isinstance(padding, str) else _pair(padding)
        self.ranks, self.decomposition = ranks, decomposition
        kw = dict(device=device, dtype=dtype)
        (kh, kw_), (sh, sw), (dh, dw) = self.kernel_size, self.stride, self.dilation
        if decomposition == "tucker":
            r_out, r_in = ranks
            self.first = nn.Conv2d(in_channels, r_in, 1, bias=False, **kw)
            self.core = nn.Conv2d(r_in, r_out, self.kernel_size, self.stride, self.padding, self.dilation,
                                  bias=False, **kw)
            self.last = nn.Conv2d(r_out, out_channels, 1, bias=bias, **kw)
            return
        (r,) = ranks
        ph, pw = (self.padding, self.padding) if isinstance(self.padding, str) else self.padding
        self.first = nn.Conv2d(in_channels, r, 1, bias=False, **kw)
        self.vertical = nn.Conv2d(r, r, (kh, 1), (sh, 1), ph if isinstance(ph, str) else (ph, 0), (dh, 1),
                                  groups=r, bias=False, **kw)
        self.horizontal = nn.Conv2d(r, r, (1, kw_), (1, sw), pw if isinstance(pw, str) else (0, pw), (1, dw),
                                    groups=r, bias=False, **kw)
        self.last = nn.Conv2d(r, out_channels, 1, bias=bias, **kw)

    @property
    def bias(self) -> Tensor | None:
        return self.last.bias

    @classmethod
    def from_float(cls, conv: nn.Conv2d, rank: int | None = None, *, energy: float | None = None,
                   ratio: float | None = None, decomposition: str = "tucker", name: str = "") -> "LowRankConv2d":
        """Factor `conv` by one rank rule (see pycomp.lowrank.tensor: tucker2_ranks, cp_ranks).

        Raises ValueError when the factored convs would not hold fewer parameters than the dense kernel.
        """
        label = f"LowRankConv2d '{name}'" if name else "LowRankConv2d"
        settings = conv_settings(conv, label)
        if settings["groups"] != 1:
            raise ValueError(f"{label}: only groups=1 convs are factored, got groups={settings['groups']}")
        if decomposition not in DECOMPOSITIONS:
            raise ValueError(f"{label}: decomposition must be one of {DECOMPOSITIONS}, got {decomposition!r}")
        given = [n for n, v in (("rank", rank), ("energy", energy), ("ratio", ratio)) if v is not None]
        if len(given) != 1:
            raise ValueError(f"{label}: give exactly one of rank=, energy=, ratio= (got {given or 'none'})")
        w = conv.weight
        o, c, kh, kw = w.shape
        if decomposition == "tucker":
            ranks = tucker2_ranks(w, rank=rank, energy=energy, ratio=ratio, where=label)
            params = tucker2_params(o, c, kh, kw, *ranks)
        else:
            ranks = (cp_ranks(w, rank=rank, energy=energy, ratio=ratio, where=label),)
            params = cp_params(o, c, kh, kw, ranks[0])
        if params >= w.numel():
            raise ValueError(f"{label}: {decomposition} ranks {ranks} hold {params} parameters, not fewer than the "
                             f"dense kernel's {w.numel()}")
        layer = cls(**settings, ranks=ranks, decomposition=decomposition, device=w.device, dtype=w.dtype, name=name)
        with torch.no_grad():
            if decomposition == "tucker":
                first, core, last = tucker2(w, *ranks, where=label)
                layer.first.weight.copy_(first[:, :, None, None])
                layer.core.weight.copy_(core)
                layer.last.weight.copy_(last[:, :, None, None])
            else:
                a, b, h, v = cp_als(w, ranks[0], where=label)
                layer.first.weight.copy_(b.T[:, :, None, None])
                layer.vertical.weight.copy_(h.T[:, None, :, None])
                layer.horizontal.weight.copy_(v.T[:, None, None, :])
                layer.last.weight.copy_(a[:, :, None, None])
            if conv.bias is not None:
                layer.last.bias.copy_(conv.bias)
        return layer

    def _children(self) -> list[nn.Conv2d]:
        if self.decomposition == "tucker":
            return [self.first, self.core, self.last]
        return [self.first, self.vertical, self.horizontal, self.last]

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4:
            raise ValueError(f"{self.label}: expected a 4-D input (B, C, H, W), got shape {tuple(x.shape)}")
        self._check_input(x, self.in_channels, 1)
        for conv in self._children():
            x = conv(x)
        return x

    def weight_approx(self) -> Tensor:
        """The dense kernel (O, C, kh, kw) float32 these convs compute."""
        if self.decomposition == "tucker":
            return torch.einsum("rsij,or,sc->ocij", self.core.weight.detach().float(),
                                self.last.weight.detach()[:, :, 0, 0].float(),
                                self.first.weight.detach()[:, :, 0, 0].float())
        return torch.einsum("or,rc,rh,rw->ochw", self.last.weight.detach()[:, :, 0, 0].float(),
                            self.first.weight.detach()[:, :, 0, 0].float(),
                            self.vertical.weight.detach()[:, 0, :, 0].float(),
                            self.horizontal.weight.detach()[:, 0, 0, :].float())

    def check_buffers(self) -> None:
        (kh, kw), c, o = self.kernel_size, self.in_channels, self.out_channels
        if self.decomposition == "tucker":
            r_out, r_in = self.ranks
            expected = {"first": (r_in, c, 1, 1), "core": (r_out, r_in, kh, kw), "last": (o, r_out, 1, 1)}
        else:
            (r,) = self.ranks
            expected = {"first": (r, c, 1, 1), "vertical": (r, 1, kh, 1), "horizontal": (r, 1, 1, kw),
                        "last": (o, r, 1, 1)}
        _check_factors(self, expected)

    def format_info(self) -> dict:
        return {"format": "lowrank-conv", "layout": self.decomposition, "version": FORMAT_VERSION}

    @property
    def backend(self) -> str:
        return "torch"

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, dilation={self.dilation}, decomposition={self.decomposition}, "
                f"ranks={self.ranks}")
