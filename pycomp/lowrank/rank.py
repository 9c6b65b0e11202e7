"""Truncated SVD and the rules that choose a rank: energy kept, parameter ratio, or a fixed rank.

A weight W (N, K) of rank r is stored as U (N, r) times V (r, K): r * (N + K) numbers
instead of N * K, so a factorization saves parameters only while r < N * K / (N + K).
"""
from __future__ import annotations

import math
import numbers
from contextlib import contextmanager

import torch
from torch import Tensor


def check_weight(weight: Tensor, where: str) -> Tensor:
    """The weight as float64, or a ValueError naming `where` if it holds NaN or infinity (SVD has no answer)."""
    w = weight.detach().double()
    if not torch.isfinite(w).all():
        raise ValueError(f"{where}: weight has a NaN or infinite value; it has no low-rank factorization")
    return w


def max_saving_rank(n: int, k: int) -> int:
    """The largest rank whose factors U (n, r), V (r, k) hold fewer numbers than the dense (n, k) weight."""
    return (n * k - 1) // (n + k)


def energy_rank(singular_values: Tensor, energy: float) -> int:
    """The smallest r whose first r singular values keep at least `energy` of sum(s**2) (r >= 1).

    singular_values: (R,) in descending order, as torch.linalg.svdvals returns them.
    """
    e = singular_values.double() ** 2
    total = float(e.sum())
    if total == 0:
        return 1
    kept = torch.cumsum(e, 0) / total
    # the 1e-12 slack: a spectrum built to keep exactly `energy` must not need one more rank for rounding
    return min(int((kept < energy - 1e-12).sum()) + 1, len(e))


def ratio_rank(n: int, k: int, ratio: float) -> int:
    """The rank whose factors hold at most `ratio` of the dense weight's n * k parameters (at least 1)."""
    return max(1, math.floor(ratio * n * k / (n + k)))


def check_fraction(value, name: str, where: str, *, closed: bool = False) -> float:
    """`value` as a float in (0, 1) (or (0, 1] with closed=True), else a ValueError naming the option."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and 0 < value and (
        value <= 1 if closed else value < 1)
    if not ok:
        raise ValueError(f"{where}: {name} must be a number in (0, {'1]' if closed else '1)'}, got {value!r}")
    return float(value)


def choose_rank(singular_values: Tensor, n: int, k: int, *, rank: int | None = None, energy: float | None = None,
                ratio: float | None = None, where: str = "weight") -> int:
    """Exactly one rule: a fixed `rank` (capped at min(n, k)), `energy` kept, or a parameter `ratio`."""
    given = [name for name, v in (("rank", rank), ("energy", energy), ("ratio", ratio)) if v is not None]
    if len(given) != 1:
        raise ValueError(f"{where}: give exactly one of rank=, energy=, ratio= (got {given or 'none'})")
    if rank is not None:
        if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
            raise ValueError(f"{where}: rank must be a positive int, got {rank!r}")
        return min(rank, n, k)
    if energy is not None:
        return energy_rank(singular_values, check_fraction(energy, "energy", where, closed=True))
    return min(ratio_rank(n, k, check_fraction(ratio, "ratio", where)), n, k)


def svd_factors(weight: Tensor, rank: int, where: str = "weight") -> tuple[Tensor, Tensor]:
    """weight (N, K) -> U (N, r), V (r, K) float32 with U @ V the best rank-r approximation (Eckart-Young).

    The singular values are split as sqrt(s) into both factors, so U and V have like ranges
    (what a later int8 or int4 quantization of either factor wants). Computed in float64.
    """
    w = check_weight(weight, where)
    u, s, vh = torch.linalg.svd(w, full_matrices=False)
    root = s[:rank].sqrt()
    return (u[:, :rank] * root).float(), (root[:, None] * vh[:rank]).float()


@contextmanager
def one_thread():
    """Runs the block on one intra-op thread (restoring the count after): the iterative solvers here loop
    over many tiny products, where the threads' fork and join cost more than the arithmetic."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
