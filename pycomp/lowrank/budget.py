"""Spread a total parameter budget over layers by their singular spectra.

Raising layer l's rank from r to r + 1 costs N_l + K_l parameters and keeps
s_{r+1}^2 / ||W_l||_F^2 more of that layer's energy. Greedy by that gain per
parameter: every layer starts at rank 1, then the step with the best gain per
parameter is taken while it fits. Within a layer the gains never increase
(singular values are sorted), so taking steps in order of gain per parameter is
the greedy solution of this knapsack. Ranks stop at the largest one that still
saves parameters (see rank.max_saving_rank).
"""
from __future__ import annotations

import heapq

from torch import Tensor

from pycomp.lowrank.rank import max_saving_rank


def allocate_ranks(spectra: dict[str, Tensor], shapes: dict[str, tuple[int, int]], budget: int) -> dict[str, int]:
    """{layer: rank} whose factors hold at most `budget` parameters in all.

    spectra: {layer: singular values (descending)}; shapes: {layer: (N, K)} of the same layers.
    Raises ValueError when even rank 1 everywhere exceeds the budget, or a layer cannot save parameters
    at rank 1 (N or K is 1).
    """
    ranks, cost, heap = {}, {}, []
    for name, (n, k) in shapes.items():
        if max_saving_rank(n, k) < 1:
            raise ValueError(f"lowrank budget: layer '{name}' ({n}x{k}) saves no parameters at any rank; skip it")
        ranks[name], cost[name] = 1, n + k
    floor = sum(cost.values())
    if budget < floor:
        raise ValueError(f"lowrank budget: {budget} parameters is below rank 1 in every layer ({floor})")
    energy = {name: float((s.double() ** 2).sum()) or 1.0 for name, s in spectra.items()}

    def push(name: str) -> None:
        r, s = ranks[name], spectra[name]
        if r < min(len(s), max_saving_rank(*shapes[name])):
            gain = float(s[r].double() ** 2) / energy[name] / cost[name]
            heapq.heappush(heap, (-gain, name))  # ties: by name, so the result does not depend on dict order

    for name in shapes:
        push(name)
    left = budget - floor
    while heap:
        _, name = heapq.heappop(heap)
        if cost[name] > left:
            continue  # this layer's next step does not fit, nor do its later ones (same cost); others may
        left -= cost[name]
        ranks[name] += 1
        push(name)
    return ranks


def factored_params(shapes: dict[str, tuple[int, int]], ranks: dict[str, int]) -> int:
    """Parameters of the factors U, V (bias excluded) at these ranks."""
    return sum(ranks[name] * (n + k) for name, (n, k) in shapes.items())
