"""Low-rank factorization: truncated SVD of Linear weights (rank by energy, ratio or a spread budget),
Tucker-2 and CP of Conv2d kernels, and NMF for non-negative weights. The layers are in pycomp.nn.lowrank."""
from pycomp.lowrank.budget import allocate_ranks, factored_params
from pycomp.lowrank.config import LowRankConfig, plan_budget
from pycomp.lowrank.nmf import nmf
from pycomp.lowrank.rank import choose_rank, energy_rank, max_saving_rank, ratio_rank, svd_factors
from pycomp.lowrank.tensor import cp_als, tucker2, tucker2_ranks

__all__ = ["LowRankConfig", "allocate_ranks", "choose_rank", "cp_als", "energy_rank", "factored_params",
           "max_saving_rank", "nmf", "plan_budget", "ratio_rank", "svd_factors", "tucker2", "tucker2_ranks"]
