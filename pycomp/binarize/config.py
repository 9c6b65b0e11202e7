"""`pycomp.compress(model, "binary" | "xnor")`: 1-bit weights, float or binary activations, no training.

The first and the last compressible layer (nn.Linear / nn.Conv2d, in module order) stay in float by
default: binarizing the input layer (few inputs, raw pixels) and the classifier costs the most accuracy
for the least size, the standard practice since XNOR-Net. `keep_first_last=False` binarizes them too.
"""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from pycomp.formats.binary import check_group_size
from pycomp.nn.base import replaceable

ACTIVATIONS = ("float", "binary")


def compressible_names(model: nn.Module) -> list[str]:
    """Qualified names of the nn.Linear and nn.Conv2d modules of `model` that a technique may replace
    (pycomp.nn.base.replaceable: not an nn.MultiheadAttention's out_proj), in module (registration) order."""
    return [n for n, m in replaceable(model) if isinstance(m, (nn.Linear, nn.Conv2d))]


def first_and_last(model: nn.Module) -> frozenset[str]:
    """The names of the first and the last compressible layer (one name when there is one layer)."""
    names = compressible_names(model)
    return frozenset((names[0], names[-1])) if names else frozenset()


@dataclass(frozen=True)
class BinaryConfig:
    """`compress(model, "binary", activations="float", group_size=0, keep_first_last=True)`.

    activations: "float" (W1A16/W1A32, "BWN") or "binary" (XNOR, W1A1; inputs must be centred).
    group_size: 0 for one α per output channel, or a multiple of 32 for one α per group of inputs.
    keep_first_last: leave the first and last nn.Linear/nn.Conv2d of the model in float. A model with
    one or two such layers then has nothing left to binarize: pass False.
    centre: with binary activations, binarize each token around its mean (for inputs that are all
    positive, e.g. after a ReLU; see pycomp.nn.BinaryLinear).
    """

    activations: str = "float"
    group_size: int = 0
    keep_first_last: bool = True
    centre: bool = False

    def __post_init__(self):
        if self.activations not in ACTIVATIONS:
            raise ValueError(f"binary: activations must be one of {ACTIVATIONS}, got {self.activations!r}")
        check_group_size(self.group_size, where="binary")
        if self.centre and self.activations != "binary":
            raise ValueError("binary: centre=True applies to binary activations only (use \"xnor\")")

    def convert(self, module: nn.Module, name: str) -> nn.Module | None:
        from pycomp.nn.binary import BinaryConv2d, BinaryLinear

        if name == "" and not isinstance(module, (nn.Linear, nn.Conv2d)):
            # compress offers the whole model first, then each module: remember which layers stay float.
            object.__setattr__(self, "_kept", first_and_last(module) if self.keep_first_last else frozenset())
            return None
        if name in getattr(self, "_kept", ()):
            return None
        settings = dict(activations=self.activations, group_size=self.group_size, centre=self.centre, name=name)
        if isinstance(module, nn.Linear):
            return BinaryLinear.from_float(module, **settings)
        if isinstance(module, nn.Conv2d):
            return BinaryConv2d.from_float(module, **settings)
        return None


@dataclass(frozen=True)
class XnorConfig(BinaryConfig):
    """`compress(model, "xnor")`: BinaryConfig with binary activations (W1A1)."""

    activations: str = "binary"
