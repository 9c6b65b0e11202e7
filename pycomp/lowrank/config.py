"""`pycomp.compress(model, "lowrank", ...)`: Linear layers by truncated SVD (or NMF), Conv2d by Tucker-2 or CP.

A layer whose factorization would not hold fewer parameters than its dense weight is kept dense,
with a warning naming it; compress raises only when no layer at all was factored.
"""
from __future__ import annotations

import numbers
import warnings
from dataclasses import dataclass, field

import torch
from torch import nn

from pycomp.lowrank.budget import allocate_ranks
from pycomp.lowrank.rank import check_fraction, check_weight, max_saving_rank
from pycomp.nn.base import replaceable

CONV_MODES = ("tucker", "cp", "none")


@dataclass(frozen=True)
class LowRankConfig:
    """One rank rule (energy=0.95 when none is given):

    energy: keep this fraction of each layer's sum of squared singular values (per mode for Tucker);
    ratio: each layer's factors hold at most this fraction of its dense parameters;
    rank: this rank everywhere (capped by each layer's shape);
    budget: the model's Linear layers' factors hold at most this many parameters in all (an int), or
        this fraction of those layers' dense weights (a float in (0, 1)), spread by their singular
        spectra (pycomp.lowrank.budget). Conv2d layers stay dense under budget=; layers left out by
        compress's skip= still count in the spread (their share goes unused).
    method: "svd", or "nmf" for non-negative weights (a layer with a negative weight raises).
    conv: "tucker" (default), "cp" (needs rank= or ratio=), or "none" to keep Conv2d layers dense.
    factor_quant: None, "int8" or "int4" (group_size) for the Linear factors.
    """

    energy: float | None = None
    ratio: float | None = None
    rank: int | None = None
    budget: float | int | None = None
    method: str = "svd"
    conv: str = "tucker"
    factor_quant: str | None = None
    group_size: int = 128
    _planned: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self):
        given = [n for n in ("energy", "ratio", "rank", "budget") if getattr(self, n) is not None]
        if not given:
            object.__setattr__(self, "energy", 0.95)
        elif len(given) > 1:
            raise ValueError(f"lowrank: give one of energy=, ratio=, rank=, budget= (got {given})")
        if self.energy is not None:
            check_fraction(self.energy, "energy", "lowrank", closed=True)
        if self.ratio is not None:
            check_fraction(self.ratio, "ratio", "lowrank")
        if self.rank is not None and (isinstance(self.rank, bool) or not isinstance(self.rank, int) or self.rank < 1):
            raise ValueError(f"lowrank: rank must be a positive int, got {self.rank!r}")
        if self.budget is not None:
            b = self.budget
            if isinstance(b, bool) or not isinstance(b, numbers.Real) or b <= 0 or (
                    not isinstance(b, numbers.Integral) and b >= 1):
                raise ValueError(f"lowrank: budget must be a positive int (parameters) or a float in (0, 1) "
                                 f"(fraction of the Linear weights), got {b!r}")
        if self.conv not in CONV_MODES:
            raise ValueError(f"lowrank: conv must be one of {CONV_MODES}, got {self.conv!r}")
        if self.method not in ("svd", "nmf"):
            raise ValueError(f"lowrank: method must be 'svd' or 'nmf', got {self.method!r}")

    def convert(self, module: nn.Module, name: str) -> nn.Module | None:
        from pycomp.nn.lowrank import LowRankConv2d, LowRankLinear

        if self.budget is not None and name == "" and not isinstance(module, nn.Linear):
            self._planned.clear()
            self._planned.update(plan_budget(module, self.budget))
            return None
        label = f"layer '{name}'" if name else "the model (a single layer)"
        try:
            if isinstance(module, nn.Linear):
                rule = self._linear_rule(module, name)
                if rule is None:
                    return None
                return LowRankLinear.from_float(module, **rule, method=self.method, factor_quant=self.factor_quant,
                                                group_size=self.group_size, name=name)
            if isinstance(module, nn.Conv2d) and self.conv != "none" and self.budget is None:
                if module.groups != 1:
                    warnings.warn(f"lowrank: {label} kept dense: grouped convs (groups={module.groups}) are not "
                                  "factored", stacklevel=3)
                    return None
                rule = {"rank": self.rank, "energy": self.energy, "ratio": self.ratio}
                return LowRankConv2d.from_float(module, **rule, decomposition=self.conv, name=name)
        except ValueError as e:
            if "not fewer than" not in str(e):
                raise
            warnings.warn(f"lowrank: {label} kept dense: {e}", stacklevel=3)
        return None

    def _linear_rule(self, module: nn.Linear, name: str) -> dict | None:
        if self.budget is None:
            return {"rank": self.rank, "energy": self.energy, "ratio": self.ratio}
        if name == "":  # the model is this one layer: the whole budget is its own
            n, k = module.weight.shape
            if isinstance(self.budget, numbers.Integral):
                return {"rank": max(1, int(self.budget) // (n + k))}
            return {"ratio": self.budget}
        if name not in self._planned:
            warnings.warn(f"lowrank: layer '{name}' kept dense: the budget plan has no rank for it", stacklevel=4)
            return None
        return {"rank": self._planned[name]}


@torch.no_grad()
def plan_budget(model: nn.Module, budget: float | int, skip=()) -> dict[str, int]:
    """{Linear layer name: rank} spreading `budget` (parameters, or a fraction of the dense Linear weights)
    over the model's nn.Linear layers whose names match no fnmatch pattern in `skip` (pycomp.nn.base.replaceable:
    an nn.MultiheadAttention's out_proj stays dense).
    Layers that cannot save parameters at any rank (a side of 1) are left out (kept dense)."""
    layers = {n: m for n, m in replaceable(model, skip) if isinstance(m, nn.Linear)}
    shapes = {n: tuple(m.weight.shape) for n, m in layers.items() if max_saving_rank(*m.weight.shape) >= 1}
    if not shapes:
        raise ValueError("lowrank budget: the model has no nn.Linear layer that a factorization can shrink")
    spectra = {n: torch.linalg.svdvals(check_weight(layers[n].weight, f"layer '{n}'")) for n in shapes}
    total = budget if isinstance(budget, numbers.Integral) else int(budget * sum(n * k for n, k in shapes.values()))
    return allocate_ranks(spectra, shapes, total)
