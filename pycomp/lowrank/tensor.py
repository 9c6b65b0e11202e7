"""Conv2d kernels W (O, C, kh, kw) as small tensor products: Tucker-2 (HOSVD) and CP (alternating least squares).

Tucker-2 (Kim et al. 2016): W ~= core x_0 U_out x_1 U_in with U_out (O, r_out), U_in (C, r_in) and
core (r_out, r_in, kh, kw); as layers, a 1x1 conv C -> r_in, the kxk core conv r_in -> r_out, a 1x1
conv r_out -> O. CP (Lebedev et al. 2015): W ~= sum_r a_r o b_r o h_r o w_r; as layers, a 1x1 conv
C -> R, a depthwise (kh, 1) conv, a depthwise (1, kw) conv, a 1x1 conv R -> O.
"""
from __future__ import annotations

import torch
from torch import Tensor

from pycomp.lowrank.rank import check_fraction, check_weight, energy_rank, one_thread


def tucker2_params(o: int, c: int, kh: int, kw: int, r_out: int, r_in: int) -> int:
    return c * r_in + r_out * r_in * kh * kw + r_out * o


def cp_params(o: int, c: int, kh: int, kw: int, rank: int) -> int:
    return rank * (c + kh + kw + o)


def _mode_basis(weight: Tensor, mode: int) -> tuple[Tensor, Tensor]:
    """Left singular vectors and values of the mode-`mode` unfolding of a 4-way tensor."""
    unfolded = weight.movedim(mode, 0).reshape(weight.shape[mode], -1)
    u, s, _ = torch.linalg.svd(unfolded, full_matrices=False)
    return u, s


def tucker2_ranks(weight: Tensor, *, rank: int | None = None, energy: float | None = None,
                  ratio: float | None = None, where: str = "conv") -> tuple[int, int]:
    """(r_out, r_in) by one rule: a fixed rank (capped per mode), energy kept by each mode's unfolding
    (HOSVD truncation), or a parameter ratio (the largest ranks, proportional to O and C, that fit)."""
    o, c, kh, kw = weight.shape
    if rank is not None:
        return min(rank, o), min(rank, c)
    w = check_weight(weight, where)
    if energy is not None:
        energy = check_fraction(energy, "energy", where, closed=True)
        return energy_rank(_mode_basis(w, 0)[1], energy), energy_rank(_mode_basis(w, 1)[1], energy)
    target = check_fraction(ratio, "ratio", where) * o * c * kh * kw
    big, best = max(o, c), (1, 1)
    for t in range(1, big + 1):
        r_out, r_in = max(1, round(t * o / big)), max(1, round(t * c / big))
        if tucker2_params(o, c, kh, kw, r_out, r_in) <= target:
            best = (r_out, r_in)
    return best


def tucker2(weight: Tensor, r_out: int, r_in: int, where: str = "conv") -> tuple[Tensor, Tensor, Tensor]:
    """weight (O, C, kh, kw) -> (first (r_in, C), core (r_out, r_in, kh, kw), last (O, r_out)), float32.

    Truncated HOSVD of the output and input modes; exact when the kernel's multilinear rank in those modes
    is at most (r_out, r_in). Reconstruction: einsum('rsij,or,sc->ocij', core, last, first).
    """
    w = check_weight(weight, where)
    u_out = _mode_basis(w, 0)[0][:, :r_out]
    u_in = _mode_basis(w, 1)[0][:, :r_in]
    core = torch.einsum("ocij,or,cs->rsij", w, u_out, u_in)
    return u_in.T.contiguous().float(), core.float(), u_out.contiguous().float()


def cp_ranks(weight: Tensor, *, rank: int | None = None, energy: float | None = None, ratio: float | None = None,
             where: str = "conv") -> int:
    """R by a fixed rank or a parameter ratio; CP has no energy spectrum to truncate, so energy= is refused."""
    if energy is not None:
        raise ValueError(f"{where}: CP has no singular spectrum for energy=; give rank= or ratio= "
                         "(or use conv='tucker')")
    if rank is not None:
        return rank
    o, c, kh, kw = weight.shape
    return max(1, int(check_fraction(ratio, "ratio", where) * o * c * kh * kw // (c + kh + kw + o)))


def cp_als(weight: Tensor, rank: int, *, iters: int = 500, tol: float = 1e-7, seed: int = 0,
           where: str = "conv") -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """weight (O, C, kh, kw) -> CP factors (A (O, R), B (C, R), H (kh, R), W (kw, R)), float32, with
    weight ~= einsum('or,cr,hr,wr->ochw', A, B, H, W). Alternating least squares in float64 from an HOSVD
    start (random columns where R exceeds a mode's size), stopping when the relative error changes by
    less than tol between sweeps.
    The columns' scale is spread evenly over the four factors.
    """
    x = check_weight(weight, where)
    gen = torch.Generator().manual_seed(seed)
    factors = []
    for mode in range(4):
        u = _mode_basis(x, mode)[0][:, :rank]
        if u.shape[1] < rank:
            extra = torch.randn(x.shape[mode], rank - u.shape[1], generator=gen, dtype=torch.float64)
            u = torch.cat([u, extra], 1)
        factors.append(u)
    with one_thread():
        factors = _als_sweeps(x, factors, rank, iters, tol)
    scales = torch.stack([f.norm(dim=0) for f in factors])  # (4, R)
    total = scales.prod(0)
    share = total.clamp_min(1e-300) ** 0.25
    return tuple((f / scales[i].clamp_min(1e-300) * share).float() for i, f in enumerate(factors))


def _als_sweeps(x: Tensor, factors: list[Tensor], rank: int, iters: int, tol: float) -> list[Tensor]:
    subs = "abcd"
    norm = float(x.norm()) or 1.0
    last_err = float("inf")
    for _ in range(iters):
        for mode in range(4):
            others = [m for m in range(4) if m != mode]
            spec = f"abcd,{','.join(subs[m] + 'r' for m in others)}->{subs[mode]}r"
            mttkrp = torch.einsum(spec, x, *(factors[m] for m in others))
            gram = torch.ones(rank, rank, dtype=torch.float64)
            for m in others:
                gram = gram * (factors[m].T @ factors[m])
            factors[mode] = mttkrp @ torch.linalg.pinv(gram)
        err = float((x - torch.einsum("ar,br,cr,dr->abcd", *factors)).norm()) / norm
        if abs(last_err - err) < tol:
            break
        last_err = err
    return factors
