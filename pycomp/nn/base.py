"""What every compressed layer shares: a name for error messages and input checks."""
from __future__ import annotations

from torch import Tensor, nn


class CompressedLayer(nn.Module):
    """Base of pycomp's drop-in layers.

    `name` is the module's qualified name in the model it came from (set by
    `from_float(..., name=...)` and by `pycomp.compress`), so errors say which layer.
    """

    name: str = ""

    @property
    def label(self) -> str:
        kind = type(self).__name__
        return f"{kind} '{self.name}'" if self.name else kind

    def _check_input(self, x: Tensor, features: int, dim: int) -> None:
        if not x.dtype.is_floating_point:
            raise TypeError(f"{self.label}: input must be a float tensor, got {x.dtype}")
        if x.dim() == 0 or x.shape[dim] != features:
            raise ValueError(
                f"{self.label}: expected {features} input features in dimension {dim}, got shape {tuple(x.shape)}"
            )
