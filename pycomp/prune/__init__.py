"""Pruning: which weights or channels to remove, one module per method.

- `magnitude`: per-layer or global magnitude masks (`magnitude_prune`);
- `gradual`: Zhu & Gupta's cubic schedule driven by your training loop (`GradualPruner`);
- `nm`: N:M semi-structured masks, 2:4 by default (`nm_prune`, `is_nm_sparse`);
- `channels`: structured filter pruning that returns a smaller dense model (`prune_channels`);
- `sensitivity`: metric vs sparsity, one layer at a time (`sensitivity_scan`);
- `mask`: what the weight methods share (`keep_masks` keeps masks applied while fine-tuning);
- `flops`: a Conv2d/Linear FLOP counter to report what channel pruning saved.

Weight masks are bool tensors shaped like the weight, True keeps; they are applied by zeroing
weights in place, so the model keeps its modules and state_dict keys.
"""
from pycomp.prune.channels import ChannelGroup, plan_channels, prune_channels
from pycomp.prune.flops import count_flops, flops_by_layer
from pycomp.prune.gradual import GradualPruner, cubic_sparsity
from pycomp.prune.magnitude import magnitude_mask, magnitude_masks, magnitude_prune
from pycomp.prune.mask import MaskKeeper, apply_masks, keep_masks, prunable_layers, sparsity_of
from pycomp.prune.nm import is_nm_sparse, nm_mask, nm_masks, nm_prune
from pycomp.prune.sensitivity import sensitivity_scan

__all__ = ["ChannelGroup", "GradualPruner", "MaskKeeper", "apply_masks", "count_flops", "cubic_sparsity",
           "flops_by_layer", "is_nm_sparse", "keep_masks", "magnitude_mask", "magnitude_masks", "magnitude_prune",
           "nm_mask", "nm_masks", "nm_prune", "plan_channels", "prunable_layers", "prune_channels",
           "sensitivity_scan", "sparsity_of"]
