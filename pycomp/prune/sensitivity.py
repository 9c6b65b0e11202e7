"""Sensitivity scan: how much a metric suffers when one layer alone is pruned by magnitude, layer by layer.

The table says which layers tolerate high sparsity and which must stay dense,
the usual first step before choosing per-layer sparsities (Han et al. 2015).
"""
from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from pycomp.prune.magnitude import magnitude_mask
from pycomp.prune.mask import check_sparsity, layer_label, prunable_layers


def sensitivity_scan(model: nn.Module, metric: Callable[[nn.Module], float], *,
                     sparsities: Sequence[float] = (0.3, 0.5, 0.7, 0.9), skip: str | Iterable[str] = (),
                     progress: bool | None = None) -> dict[str, dict[float, float]]:
    """{layer name: {sparsity: metric(pruned model)}} for every nn.Linear and nn.Conv2d not matched by a
    `skip` fnmatch pattern, each pruned alone to each sparsity by per-layer magnitude.

    metric: called with a pruned copy of the model (e.g. `lambda m: accuracy(m, test_loader)`); it may
        change the copy's mode. The original model is never changed: the scan works on one copy
        and restores each layer's weight after measuring it.
    progress: show a tqdm bar (True), hide it (False), or show it only on a terminal (None).
    Measure metric(model) yourself for the unpruned reference.
    """
    sparsities = [check_sparsity(s, "sensitivity_scan") for s in sparsities]
    work = copy.deepcopy(model)
    layers = prunable_layers(work, skip)
    if not layers:
        raise ValueError(f"sensitivity_scan: the model has no nn.Linear or nn.Conv2d layer to prune (skip={skip!r})")
    table: dict[str, dict[float, float]] = {}
    with tqdm(total=len(layers) * len(sparsities), desc="sensitivity", disable=None if progress is None
              else not progress) as bar:
        for name, module in layers.items():
            dense = module.weight.detach().clone()
            table[name] = {}
            for s in sparsities:
                bar.set_postfix_str(f"{name} @ {s:g}")
                with torch.no_grad():
                    module.weight.mul_(magnitude_mask(dense, s, where=layer_label(name)))
                table[name][s] = float(metric(work))
                with torch.no_grad():
                    module.weight.copy_(dense)
                bar.update()
    return table
