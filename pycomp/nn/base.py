"""What every compressed layer shares: a name for error messages, input checks, and the settings a file records."""
from __future__ import annotations

import fnmatch
import inspect
import itertools
from collections.abc import Iterable

from torch import Tensor, nn

ALL_ROWS = slice(None)


def take_rows(t: Tensor | None, rows: slice) -> Tensor | None:
    """t's rows `rows` (a conv group's output channels), or t itself for ALL_ROWS: a Linear's forward makes
    no view per buffer per call (each costs about a microsecond, a visible share of a small layer's time)."""
    return t if t is None or rows == ALL_ROWS else t[rows]


# Constructor arguments that are not settings: where the tensors live, their float dtype, the layer's name.
_NOT_SETTINGS = ("self", "device", "dtype", "name")


def _own_tensor(module: nn.Module) -> Tensor | None:
    return next(itertools.chain(module._buffers.values(), module._parameters.values()), None)


def check_input(layer: nn.Module, x: Tensor, features: int, dim: int) -> None:
    """The input checks of every pycomp layer (packed, low-rank, QAT), each error naming the layer (its
    `label`): a float x with `features` entries in dimension `dim`, on the device of the layer's weights."""
    if not x.dtype.is_floating_point:
        raise TypeError(f"{layer.label}: input must be a float tensor, got {x.dtype}")
    if x.dim() == 0 or x.shape[dim] != features:
        raise ValueError(f"{layer.label}: expected {features} input features in dimension {dim}, "
                         f"got shape {tuple(x.shape)}")
    # The layer's own tensors, or (a layer of sublayers: low-rank) its first child's, without walking the module
    # tree: parameters() costs 2-6 us a call.
    weights = next(itertools.chain(layer._buffers.values(), layer._parameters.values()), None)
    if weights is None:
        weights = next((t for c in layer._modules.values() if (t := _own_tensor(c)) is not None), None)
    if weights is not None and weights.device != x.device:
        raise RuntimeError(f"{layer.label}: input is on {x.device} but the layer's weights are on "
                           f"{weights.device}; move one to the other (layer.to(x.device))")


class CompressedLayer(nn.Module):
    """Base of pycomp's drop-in layers.

    `name` is the module's qualified name in the model it came from (set by
    `from_float(..., name=...)` and by `pycomp.compress`), so errors say which layer.
    A subclass sets `float_type`, the float module it replaces (nn.Linear, nn.Conv2d), and
    stores each constructor argument under its own name, so `settings()` can read them back.
    """

    name: str = ""
    float_type: type[nn.Module]

    def settings(self) -> dict:
        """The constructor arguments that rebuild this layer's shapes, JSON-able: `type(self)(**layer.settings())`
        is an equal layer with empty buffers. `bias` is whether the layer has one; tuples become lists.
        """
        out = {}
        for p in inspect.signature(type(self).__init__).parameters.values():
            if p.name in _NOT_SETTINGS or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                continue
            if p.name == "bias":
                value = self.bias is not None
            elif hasattr(self, p.name):
                value = getattr(self, p.name)
            else:
                raise NotImplementedError(f"{self.label}: no attribute for constructor argument {p.name!r}; "
                                          "store it under that name or override settings()")
            out[p.name] = list(value) if isinstance(value, tuple) else value
        return out

    def format_info(self) -> dict:
        """What a file manifest records to read the buffers back: format, layout, version, dtypes."""
        raise NotImplementedError(f"{type(self).__name__} does not describe its storage format")

    def check_buffers(self) -> None:
        """Raises ValueError unless the buffers form a valid packed weight (run on buffers loaded from outside)."""
        raise NotImplementedError(f"{type(self).__name__} does not check its buffers")

    @property
    def label(self) -> str:
        kind = type(self).__name__
        return f"{kind} '{self.name}'" if self.name else kind

    _check_input = check_input  # (self, x, features, dim)


# ------------------------------------------------------------------ parents that read their children's weights
#
# Some torch modules read a child Linear's `.weight` instead of calling it. nn.MultiheadAttention always does
# (its out_proj), so that child stays float (held_by_parent: compress, prepare_qat, binarize.prepare and the
# sensitivity scan leave it out). nn.TransformerEncoderLayer and nn.TransformerEncoder do it only to decide
# whether to run their fused inference kernel, which would compute with the float weights; with a pycomp layer
# inside they must take their plain path, which calls the children (put_layer).


def held_by_parent(model: nn.Module) -> set[str]:
    """Names of modules whose parent reads their parameters instead of calling them, so no pycomp layer can
    stand in for them: the out_proj of every nn.MultiheadAttention, which its forward passes to
    F.multi_head_attention_forward as a weight and bias. torch's quantize_dynamic keeps it in float too
    (torch marks it NonDynamicallyQuantizableLinear)."""
    return {f"{n}.{c}" if n else c for n, m in model.named_modules() if isinstance(m, nn.MultiheadAttention)
            for c, _ in m.named_children()}


def replaceable(model: nn.Module, skip: Iterable[str] = ()) -> list[tuple[str, nn.Module]]:
    """(name, module) of every submodule of `model` that a technique may replace, in module order: not the root,
    not matched by an fnmatch pattern in `skip`, and not one that its parent reads instead of calling
    (held_by_parent). compress, prepare_qat, binarize.prepare, the binary first/last rule, the low-rank budget
    plan and the sensitivity scan all enumerate layers through it."""
    held, skip = held_by_parent(model), tuple(skip)
    return [(n, m) for n, m in model.named_modules()
            if n and n not in held and not any(fnmatch.fnmatchcase(n, p) for p in skip)]


def put_layer(model: nn.Module, name: str, layer: nn.Module) -> None:
    """Sets submodule `name` (dotted, not empty) of `model` to `layer`: the one way pycomp puts a layer into a
    model. When `layer` is a pycomp module (packed, QAT or latent binary), every nn.TransformerEncoderLayer and
    nn.TransformerEncoder above it is switched to its plain path, through attributes that torch (1.12 and
    later) reads before any weight: the layer's activation_relu_or_gelu (which only the fused kernel uses) and
    the encoder's nested-tensor switch."""
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent), child, layer)
    if not type(layer).__module__.startswith("pycomp."):
        return
    parts = name.split(".")
    for depth in range(len(parts)):
        above = model.get_submodule(".".join(parts[:depth]))
        if isinstance(above, nn.TransformerEncoder):
            above.enable_nested_tensor = above.use_nested_tensor = False
        elif isinstance(above, nn.TransformerEncoderLayer):
            above.activation_relu_or_gelu = 0
