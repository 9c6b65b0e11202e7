"""Gradual magnitude pruning on the cubic schedule of Zhu & Gupta 2017 ("To prune, or not to prune").

    s_t = s_f + (s_i - s_f) * (1 - (t - t0) / (n * dt)) ** 3    for t0 <= t <= t0 + n * dt

The sparsity rises fast at first, while the network still has redundant
weights, and slowly near the end. Masks are recomputed by magnitude every dt
steps; pruned weights are zero, so they stay the smallest and stay pruned.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Literal

from torch import Tensor, nn

from pycomp.prune.magnitude import SCOPES, magnitude_masks
from pycomp.prune.mask import check_sparsity, keep_masks


def cubic_sparsity(step: int, *, initial: float, final: float, begin_step: int, end_step: int) -> float:
    """The schedule's sparsity at training step `step`: `initial` before begin_step (t0), `final` from end_step
    (t0 + n * dt) on, and s_f + (s_i - s_f)(1 - (t - t0) / (end_step - begin_step))^3 between."""
    if step <= begin_step:
        return initial
    if step >= end_step:
        return final
    return final + (initial - final) * (1 - (step - begin_step) / (end_step - begin_step)) ** 3


class GradualPruner:
    """Prunes a model while the user's own loop trains it; call `step()` after each `optimizer.step()`.

        pruner = GradualPruner(model, 0.9, end_step=1000, frequency=50)
        for x, y in batches:
            opt.zero_grad(); loss_fn(model(x), y).backward(); opt.step()
            pruner.step()
        masks = pruner.remove()                   # the zeros stay, the hooks go

    Steps count from 0 at construction; `step()` advances the count t, recomputes the masks by
    magnitude at s_t when t = begin_step + k * frequency (k = 0, 1, ...) or t = end_step, and
    re-applies them after every step, so whatever the optimizer's state did to a pruned weight is
    undone. Gradient hooks zero the pruned weights' gradients. Masks are applied at construction
    when begin_step is 0 (a no-op at initial_sparsity 0).

    final_sparsity, initial_sparsity: in [0, 1), initial <= final.
    begin_step (t0) < end_step (t0 + n dt); frequency (dt) >= 1.
    scope, skip, scale: as in `magnitude_masks` ("layer": each layer at s_t; "global": one threshold).
    """

    def __init__(self, model: nn.Module, final_sparsity: float, *, end_step: int, begin_step: int = 0,
                 frequency: int = 100, initial_sparsity: float = 0.0, scope: Literal["layer", "global"] = "layer",
                 skip: str | Iterable[str] = (), scale: str | Mapping[str, float] | None = None):
        self.final = check_sparsity(final_sparsity, "GradualPruner: final_sparsity")
        self.initial = check_sparsity(initial_sparsity, "GradualPruner: initial_sparsity")
        if self.initial > self.final:
            raise ValueError(f"GradualPruner: initial_sparsity {self.initial} exceeds final_sparsity {self.final}")
        if not 0 <= begin_step < end_step or frequency < 1:
            raise ValueError(f"GradualPruner: need 0 <= begin_step < end_step and frequency >= 1, got "
                             f"begin_step={begin_step}, end_step={end_step}, frequency={frequency}")
        if scope not in SCOPES:
            raise ValueError(f"GradualPruner: scope must be one of {SCOPES}, got {scope!r}")
        self.model, self.begin_step, self.end_step, self.frequency = model, begin_step, end_step, frequency
        self._options = dict(scope=scope, skip=skip, scale=scale)
        self.t = 0
        self._sparsity = 0.0
        self._keeper = keep_masks(model, magnitude_masks(model, 0.0, **self._options))
        if self._due(0):
            self._update()
            self._keeper.apply()

    @property
    def sparsity(self) -> float:
        """The sparsity of the masks now applied (the schedule's value at the last mask update)."""
        return self._sparsity

    @property
    def masks(self) -> dict[str, Tensor]:
        return self._keeper.masks

    def schedule(self, step: int) -> float:
        return cubic_sparsity(step, initial=self.initial, final=self.final, begin_step=self.begin_step,
                              end_step=self.end_step)

    def _due(self, t: int) -> bool:
        return t == self.end_step or (self.begin_step <= t < self.end_step
                                      and (t - self.begin_step) % self.frequency == 0)

    def _update(self) -> None:
        self._sparsity = self.schedule(self.t)
        self._keeper.masks.update(magnitude_masks(self.model, self._sparsity, **self._options))

    def step(self) -> None:
        """Advance one training step: update the masks when due, then re-apply them."""
        self.t += 1
        if self._due(self.t):
            self._update()
        self._keeper.apply()

    def remove(self) -> dict[str, Tensor]:
        """Make the masks permanent: apply them a last time, remove the hooks; returns them."""
        return self._keeper.remove()
