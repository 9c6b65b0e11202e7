"""Per-layer sensitivity to a compression setting: each layer compressed alone, the rest kept float.

The table ranks layers for mixed allocations (explore gives the low-bit setting to the least
sensitive ones) and is cached on disk, since it costs one pass over the data per layer and
setting. `pycomp.prune.sensitivity_scan` asks the same question of magnitude pruning.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from pycomp.nn.base import replaceable
from pycomp.retention import metrics
from pycomp.retention.evaluate import _outputs

SENSITIVITY_VERSION = 2  # bump when the cached figures change meaning


def compressible_layers(model: nn.Module, skip: Sequence[str] = ()) -> list[str]:
    """Names of the nn.Linear and nn.Conv2d modules (what every technique today compresses), skip and the
    modules that stay float for their parent (held_by_parent) excluded."""

    return [n for n, m in replaceable(model, skip) if isinstance(m, (nn.Linear, nn.Conv2d))]


def exact_pattern(name: str) -> str:
    """An fnmatch pattern matching exactly `name`."""
    return "".join(f"[{c}]" if c in "*?[]" else c for c in name)


def model_digest(model: nn.Module) -> str:
    h = hashlib.sha256(type(model).__qualname__.encode())
    for key, t in sorted(model.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{key}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def data_size(data) -> dict:
    """What the sensitivity cache key knows of the data: its size and shapes (not its values)."""
    n = batches = 0
    shape, labelled = None, False
    for batch in data:
        x, y = metrics._split(batch)
        n, batches, shape, labelled = n + len(x), batches + 1, shape or list(x.shape[1:]), y is not None
    return {"n_examples": n, "n_batches": batches, "input_shape": shape, "labelled": labelled}


def cache_folder(cache) -> Path | None:
    """Where sensitivity tables are kept: cache=True -> $PYCOMP_CACHE/sensitivity, a path, or None (off)."""
    if cache is False or cache is None:
        return None
    if cache is True:
        from pycomp.models.digits import cache_dir

        return cache_dir() / "sensitivity"
    return Path(cache)


def probe(model: nn.Module, setting, layer: str, layers: Sequence[str], skip: Sequence[str],
           data, calib, reference) -> dict | None:
    """Retention figures with only `layer` compressed by `setting`; None when the setting leaves that
    layer alone (binary keeps the first and last layers float, low-rank keeps a layer it cannot shrink)."""
    lo, labels = reference
    from pycomp.api import NothingToCompress, compress

    try:
        small = compress(model, setting.spec, skip=[*skip, *(exact_pattern(n) for n in layers if n != layer)],
                         calib=calib if setting.calibrates else None, **setting.options)
    except NothingToCompress:
        return None
    with metrics._eval_mode(small):
        lc, _ = _outputs(small, data)
    om = metrics.output_metrics(lo, lc, labels, topk=(1,))
    retention = om["top1_compressed"] if labels is not None else om["agreement"]
    base = om["top1_original"] if labels is not None else 1.0
    return {"retention": retention, "drop": base - retention, "agreement": om["agreement"],
            "kl_divergence": om["kl_divergence"],
            "layer_bytes": sum(t.nbytes for t in small.get_submodule(layer).state_dict().values())}


def sensitivity_table(model: nn.Module, data, settings: Sequence, *, skip: Sequence[str] = (),
                      calib=None, cache=True, progress: bool | None = None) -> tuple[dict, dict]:
    """({layer: {setting label: figures}}, info) with figures {"retention", "drop", "agreement",
    "kl_divergence", "layer_bytes"}, each measured with that layer alone compressed by that setting
    (layer_bytes: the compressed layer's tensors). A setting that leaves a layer alone has no entry there.

    One cache file per setting, under cache_folder(cache), named by the SHA-256 of: the model's
    state_dict (names, dtypes, shapes, bytes), the data's size and input shape, the setting's
    spec and options, skip and the layer list. The data's values are not hashed: a different set
    of the same size reuses the table (pass cache=False, or another folder, to measure again).
    info: {"evaluations": probes run now, "cached": settings read from the cache, "seconds"}.
    """
    t0 = time.perf_counter()
    layers = compressible_layers(model, skip)
    folder = cache_folder(cache)
    fields = {"version": SENSITIVITY_VERSION, "model": model_digest(model), "data": data_size(data),
              "skip": list(skip), "layers": layers}
    table: dict[str, dict] = {n: {} for n in layers}
    todo, cached = [], []
    for s in settings:
        key = hashlib.sha256(json.dumps({**fields, "setting": s.call()}, sort_keys=True).encode()).hexdigest()
        path = folder / f"{key[:32]}.json" if folder else None
        hit = _read_cache(path, layers)
        if hit is None:
            todo.append((s, path))
            continue
        cached.append(s.label)
        for n in layers:
            if hit[n] is not None:
                table[n][s.label] = hit[n]
    evaluations = 0
    if todo:
        with metrics._eval_mode(model):
            reference = _outputs(model, data)
        with tqdm(total=len(todo) * len(layers), desc="sensitivity",
                  disable=None if progress is None else not progress) as bar:
            for s, path in todo:
                column = {}
                for n in layers:
                    bar.set_postfix_str(f"{n} @ {s.label}")
                    column[n] = probe(model, s, n, layers, skip, data, calib, reference)
                    if column[n] is not None:
                        table[n][s.label] = column[n]
                    evaluations += 1
                    bar.update()
                if path is not None:
                    _write_cache(path, {**fields, "setting": s.call(), "table": column})
    return table, {"evaluations": evaluations, "cached": cached, "seconds": time.perf_counter() - t0,
                   "settings": [s.label for s in settings], "folder": str(folder) if folder else None}


def _read_cache(path: Path | None, layers: Sequence[str]) -> dict | None:
    if path is None or not path.exists():
        return None
    try:
        table = json.loads(path.read_text())["table"]
    except (OSError, ValueError, KeyError, TypeError):  # a corrupt or foreign file: measure again
        return None
    return table if isinstance(table, dict) and set(table) == set(layers) else None


def _write_cache(path: Path, content: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(content, indent=1, sort_keys=True))
    os.replace(tmp, path)  # atomic: a parallel run never reads half a file


def least_sensitive(table: dict, label: str) -> list[str]:
    """Layers from least to most sensitive to `label`: by retention drop, then by KL divergence.

    A negative drop (the layer alone did better than float) counts as none: on a few hundred
    examples it is noise, and ranking by it would put a harmful layer first. KL, which moves
    with every output, orders the many layers whose drop is zero.
    """
    probed = [n for n in table if label in table[n]]  # layers the setting compresses
    return sorted(probed, key=lambda n: (max(0.0, table[n][label]["drop"]), table[n][label]["kl_divergence"]))


def shrinks(table: dict, low: str, high: str, model: nn.Module) -> set[str]:
    """Layers that take fewer bytes at `low` than at `high` (float when `high` was not probed): for a
    small layer, int4's group padding and scales can outweigh the narrower codes."""
    def size(n, label):
        if label in table[n]:
            return table[n][label]["layer_bytes"]
        return sum(t.nbytes for t in model.get_submodule(n).state_dict().values())

    return {n for n in table if size(n, low) < size(n, high)}
