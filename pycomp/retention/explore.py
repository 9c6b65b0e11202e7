"""`pycomp.explore`: what each way of compressing a model keeps, and what it buys, measured.

explore compresses the model with every candidate setting, evaluates each with
`pycomp.retention.evaluate` (retention, file size, latency) and returns a `Frontier`:
the candidates, their Pareto front and the best one inside a budget.

Candidates:
- uniform: one row of `SETTINGS` applied to every layer (`pycomp.compress(model, spec, **options)`);
- mixed: per-layer allocations guided by sensitivity. Each layer is compressed alone with a
  setting while the rest stays float, and its retention drop measured (the sensitivity table,
  cached on disk: pycomp.retention.sensitivity). For each (low, high) pair of `MIXES`, the k
  least sensitive layers get the low setting and the others the high one, for a few k; layers
  the low setting does not shrink (int4 on a tiny layer can outweigh int8) stay at the high one.

Retention is top-1 accuracy when the data has labels and agreement with the original's
predictions when it has not; "drop" is the original's figure minus the candidate's, in
points of 1.0 (0.01 = one percentage point).
"""
from __future__ import annotations

import concurrent.futures as cf
import datetime
import math
import multiprocessing
import pickle
import statistics
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn
from tqdm.auto import tqdm

from pycomp.retention.evaluate import evaluate
from pycomp.retention.sensitivity import (compressible_layers, data_size, exact_pattern, least_sensitive,
                                          sensitivity_table, shrinks)

OBJECTIVES = ("retention", "size", "latency")
BUDGET_KEYS = ("size_mb", "latency_ms", "max_drop")


@dataclass(frozen=True)
class Setting:
    """One uniform candidate: `pycomp.compress(model, spec, **options)`, with calib= when a step calibrates."""

    label: str
    spec: str | tuple[str, ...]
    options: dict = field(default_factory=dict)

    @property
    def techniques(self) -> tuple[str, ...]:
        return (self.spec,) if isinstance(self.spec, str) else tuple(self.spec)

    @property
    def calibrates(self) -> bool:
        from pycomp.api import make_config
        from pycomp.recipe import route_options

        per_step = route_options(list(self.techniques), self.options)
        return any(getattr(make_config(t, **o), "calibrates", False) for t, o in zip(self.techniques, per_step))

    def call(self) -> dict:
        """The compress call as JSON: {"spec", "options"} (a chain's spec is a list)."""
        return {"spec": self.spec if isinstance(self.spec, str) else list(self.spec), "options": dict(self.options)}


# The candidates explore tries, one row per setting; a new technique adds its rows here.
# Rows whose techniques are not in pycomp.TECHNIQUES are left out, and so are rows that
# calibrate when explore gets no calib. A chain's options go to the step(s) that take them
# (pycomp.recipe.route_options). Chains need a first step that leaves nn.Linear/nn.Conv2d
# modules for the next one: low-rank does (its factors are plain layers), while the
# quantizers and the sparse formats replace layers with pycomp layers that later steps skip.
SETTINGS: tuple[Setting, ...] = (
    Setting("int8 dynamic", "int8", {"mode": "dynamic"}),
    Setting("int8 weight_only", "int8", {"mode": "weight_only"}),
    Setting("int4 g128 rtn", "int4", {"group_size": 128, "method": "rtn"}),
    Setting("int4 g32 rtn", "int4", {"group_size": 32, "method": "rtn"}),
    Setting("int4 g128 gptq", "int4", {"group_size": 128, "method": "gptq"}),
    Setting("int4 g32 gptq", "int4", {"group_size": 32, "method": "gptq"}),
    Setting("binary", "binary", {}),
    Setting("xnor centred", "xnor", {"centre": True}),
    Setting("2:4", "2:4", {}),
    Setting("2:4 + int8", ("2:4", "int8"), {"mode": "dynamic"}),
    Setting("sparse 90%", "sparse", {"sparsity": 0.9}),
    Setting("lowrank budget 0.5", "lowrank", {"budget": 0.5}),
    Setting("lowrank budget 0.5 + int8", ("lowrank", "int8"), {"budget": 0.5, "mode": "dynamic"}),
)

# (low, high) setting labels for mixed candidates: the least sensitive layers get `low`, the rest `high`.
# Fewer bits (int4 in int8, binary in int4) and more sparsity (90% in int8) where the layer tolerates it.
MIXES: tuple[tuple[str, str], ...] = (("int4 g32 rtn", "int8 dynamic"), ("binary", "int4 g32 rtn"),
                                      ("sparse 90%", "int8 dynamic"))

# Fractions of the eligible layers (those the low setting shrinks) given the low setting in
# mixed candidates, rounded; never every layer, which is the uniform low candidate.
MIX_FRACTIONS = (0.25, 0.5, 0.75, 1.0)


# ----------------------------------------------------------------------------- choosing candidates


def select_settings(settings: Sequence[Setting], techniques: str | Iterable[str] | None,
                    calib) -> tuple[list[Setting], dict[str, str]]:
    """(the settings explore will try, {label: why left out})."""
    from pycomp.api import TECHNIQUES

    wanted = None if techniques is None else {techniques} if isinstance(techniques, str) else set(techniques)
    if wanted is not None:
        unknown = sorted(wanted - set(TECHNIQUES))
        if unknown:
            raise ValueError(f"explore: unknown technique(s) {unknown}; available: {', '.join(sorted(TECHNIQUES))}")
        offered = {t for s in settings for t in s.techniques}
        missing = sorted(wanted - offered)
        if missing:
            raise ValueError(f"explore: no candidate setting uses {missing}; add rows to "
                             "pycomp.retention.explore.SETTINGS or pass settings=")
    kept, left_out = [], {}
    for s in settings:
        if not set(s.techniques) <= set(TECHNIQUES):
            left_out[s.label] = "technique not available"
        elif wanted is not None and not set(s.techniques) <= wanted:
            left_out[s.label] = "filtered out by techniques="
        elif s.calibrates and calib is None:
            left_out[s.label] = "needs calib="
        else:
            kept.append(s)
    if not kept:
        raise ValueError(f"explore: no candidate left to try ({left_out})")
    return kept, left_out


def _step(setting: Setting, skip: Sequence[str]) -> dict:
    return {**setting.call(), "skip": list(skip), "calib": setting.calibrates}


def uniform_candidate(setting: Setting, layers: Sequence[str], skip: Sequence[str]) -> dict:
    return {"label": setting.label, "kind": "chain" if len(setting.techniques) > 1 else "uniform",
            **setting.call(), "steps": [_step(setting, skip)], "assignment": {n: setting.label for n in layers}}


def mixed_candidate(low: Setting, high: Setting, chosen: Sequence[str], layers: Sequence[str],
                    skip: Sequence[str]) -> dict:
    """`chosen` layers at `low`, the other layers at `high`: two compress calls with complementary skips."""
    rest = [n for n in layers if n not in chosen]
    steps = [_step(low, [*skip, *map(exact_pattern, rest)]), _step(high, [*skip, *map(exact_pattern, chosen)])]
    return {"label": f"{low.label} x{len(chosen)} + {high.label} x{len(rest)}", "kind": "mixed",
            "spec": [s["spec"] for s in steps], "options": [s["options"] for s in steps], "steps": steps,
            "assignment": {n: low.label if n in chosen else high.label for n in layers}}


def mix_counts(n_eligible: int, n_layers: int, fractions: Sequence[float] = MIX_FRACTIONS) -> list[int]:
    """How many layers get the low setting in mixed candidates: round(f * n_eligible), within 1 .. n_layers-1."""
    top = min(n_eligible, n_layers - 1)
    return sorted({min(top, max(1, round(f * n_eligible))) for f in fractions}) if top >= 1 else []


def build(model: nn.Module, candidate: dict, calib=None) -> nn.Module:
    """The compressed model a candidate describes: its steps run through pycomp.compress in order.

    compress leaves pycomp layers alone (they are not nn.Linear/nn.Conv2d), and each step's skip
    names the layers another step owns, so a mixed model's layers get exactly their assignment.
    """
    from pycomp.api import compress

    out = model
    for step in candidate["steps"]:  # compress appends each call to the recorded recipe
        out = compress(out, step["spec"], skip=step["skip"], calib=calib if step["calib"] else None,
                       **step["options"])
    return out


# ----------------------------------------------------------------------------- measuring candidates


def summarize(report: dict) -> dict:
    """The figures the frontier compares, from an evaluate report dict."""
    labelled = report["accuracy_compressed"] is not None
    retention = report["accuracy_compressed"] if labelled else report["agreement"]
    lat_o, lat_c = report["latency_ms_original"], report["latency_ms_compressed"]
    return {"retention": retention, "drop": (report["accuracy_original"] if labelled else 1.0) - retention,
            "size_bytes": report["size_bytes_compressed"], "latency_ms": lat_c,
            "speedup": lat_o / lat_c if lat_o and lat_c else None}


def measure(model: nn.Module, candidate: dict, data, calib=None, latency_repeats: int = 20) -> dict:
    """The candidate with its "metrics" (evaluate's report dict), summary figures and "seconds" filled in."""
    t0 = time.perf_counter()
    small = build(model, candidate, calib)
    report = evaluate(model, small, data, latency_repeats=latency_repeats).to_dict()
    return {**candidate, **summarize(report), "metrics": report, "seconds": time.perf_counter() - t0}


_WORKER: dict = {}


def _init_worker(model, data, calib, latency_repeats, threads) -> None:
    torch.set_num_threads(threads)
    _WORKER.update(model=model, data=data, calib=calib, latency_repeats=latency_repeats)


def _measure_in_worker(candidate: dict) -> dict:
    return measure(_WORKER["model"], candidate, _WORKER["data"], _WORKER["calib"], _WORKER["latency_repeats"])


def _measure_all(model, plans, data, calib, latency_repeats, workers, progress) -> list[dict]:
    bar = tqdm(total=len(plans), desc="candidates", disable=None if progress is None else not progress)
    with bar:
        if workers <= 1:
            out = []
            for plan in plans:
                bar.set_postfix_str(plan["label"])
                out.append({**measure(model, plan, data, calib, latency_repeats), "latency_measured": "sequential"})
                bar.update()
            return out
        try:
            pickle.dumps((model, data, calib))
        except Exception as e:
            raise ValueError(f"explore: workers={workers} sends the model, data and calib to worker processes, "
                             f"which needs them picklable ({type(e).__name__}: {e}); use workers=1") from None
        threads = max(1, torch.get_num_threads() // workers)
        with cf.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                    initializer=_init_worker,
                                    initargs=(model, data, calib, latency_repeats, threads)) as pool:
            futures = {pool.submit(_measure_in_worker, plan): i for i, plan in enumerate(plans)}
            out = [None] * len(plans)
            for fut in cf.as_completed(futures):
                out[futures[fut]] = {**fut.result(), "latency_measured": "parallel"}
                bar.update()
        return out


# ----------------------------------------------------------------------------- the frontier


def pareto_mask(points: Sequence[Sequence[float]]) -> list[bool]:
    """For points whose every coordinate is to be minimized: True where no other point is at least as
    good in every coordinate and better in one. Equal points are all kept."""
    def dominates(a, b):
        return all(x <= y for x, y in zip(a, b)) and any(x < y for x, y in zip(a, b))

    return [not any(dominates(q, p) for q in points) for p in points]


def _objective(candidate: dict, name: str) -> float:
    """The candidate's figure for objective `name`, signed so that smaller is better."""
    if name == "retention":
        return -candidate["retention"]
    if name == "size":
        return candidate["size_bytes"]
    if name == "latency":
        return candidate["latency_ms"]
    raise ValueError(f"unknown objective {name!r}; objectives are {OBJECTIVES}")


def check_budget(budget: dict | None) -> dict:
    budget = dict(budget or {})
    unknown = sorted(set(budget) - set(BUDGET_KEYS))
    if unknown:
        raise ValueError(f"budget: unknown key(s) {unknown}; keys are {BUDGET_KEYS} (size_mb in 10^6 bytes of "
                         "the pycomp.save file, latency_ms per batch, max_drop in points of 1.0)")
    for k, v in budget.items():
        if not isinstance(v, (int, float)) or isinstance(v, bool) or math.isnan(v):
            raise ValueError(f"budget: {k} must be a number, got {v!r}")
    return budget


def misses(candidate: dict, budget: dict) -> list[str]:
    """Why the candidate is outside the budget (empty when it fits). An unmeasured latency does not fit."""
    out = []
    if "size_mb" in budget and candidate["size_bytes"] > budget["size_mb"] * 1e6:
        out.append(f"size {candidate['size_bytes'] / 1e6:.4g} MB > {budget['size_mb']:g}")
    if "latency_ms" in budget and (candidate["latency_ms"] is None or candidate["latency_ms"] > budget["latency_ms"]):
        out.append(f"latency {candidate['latency_ms'] or float('nan'):.4g} ms > {budget['latency_ms']:g}")
    if "max_drop" in budget and candidate["drop"] > budget["max_drop"]:
        out.append(f"drop {candidate['drop']:.4g} > {budget['max_drop']:g}")
    return out


def _excess(candidate: dict, budget: dict) -> float:
    """How far outside the budget, summed over its keys as fractions of each limit (drop: of one point
    at least, since its limit may be 0)."""
    over = 0.0
    if "size_mb" in budget:
        over += max(0.0, candidate["size_bytes"] / 1e6 / budget["size_mb"] - 1) if budget["size_mb"] > 0 else 0.0
    if "latency_ms" in budget and budget["latency_ms"] > 0:
        over += max(0.0, (candidate["latency_ms"] or math.inf) / budget["latency_ms"] - 1)
    if "max_drop" in budget:
        over += max(0.0, candidate["drop"] - budget["max_drop"]) / max(abs(budget["max_drop"]), 0.01)
    return over


def budget_text(budget: dict) -> str:
    return ", ".join(f"{k} {v:g}" for k, v in budget.items()) or "no budget"


def _preference(c: dict) -> tuple:
    """Sort key of best(): highest retention, then smaller file, then lower latency, then label."""
    lat = c["latency_ms"] if c["latency_ms"] is not None else math.inf
    return (-c["retention"], c["size_bytes"], lat, c["label"])


class Frontier:
    """What explore measured.

    candidates: dicts with label, kind ("uniform", "mixed", "chain"), spec, options, steps (the
        exact compress calls), assignment ({layer: setting label}), metrics (evaluate's report dict),
        retention, drop, size_bytes, latency_ms, speedup, seconds, latency_measured.
    reference: the float model's retention, size and latency.
    sensitivity: {layer: {setting label: {"retention", "drop", "agreement", "kl_divergence", "layer_bytes"}}}.
    budget: the budget explore was given (best() uses it when called without one).
    meta: the model, the data, timings, what was left out and why.
    """

    def __init__(self, candidates: list[dict], *, reference: dict | None = None, sensitivity: dict | None = None,
                 budget: dict | None = None, meta: dict | None = None, model: nn.Module | None = None, calib=None):
        self.candidates = candidates
        self.reference = reference or {}
        self.sensitivity = sensitivity or {}
        self.budget = check_budget(budget)
        self.meta = meta or {}
        self._model, self._calib = model, calib  # for build(); never serialized

    def objectives(self) -> tuple[str, ...]:
        """OBJECTIVES, less latency when some candidate has none measured."""
        timed = all(c["latency_ms"] is not None for c in self.candidates)
        return OBJECTIVES if timed else tuple(o for o in OBJECTIVES if o != "latency")

    def pareto(self, objectives: Sequence[str] | None = None) -> list[dict]:
        """The non-dominated candidates over `objectives` (default: retention up, file size down,
        latency down), smallest file first."""
        objectives = tuple(objectives or self.objectives())
        points = [[_objective(c, o) for o in objectives] for c in self.candidates]
        front = [c for c, keep in zip(self.candidates, pareto_mask(points)) if keep]
        return sorted(front, key=lambda c: (c["size_bytes"], -c["retention"]))

    def fits(self, budget: dict | None = None) -> list[dict]:
        budget = check_budget(self.budget if budget is None else budget)
        return [c for c in self.candidates if not misses(c, budget)]

    def best(self, budget: dict | None = None) -> dict | None:
        """The candidate of highest retention inside the budget (ties: smaller file, then faster), or None
        when none fits. budget: {"size_mb", "latency_ms", "max_drop"}, any subset; None: explore's budget."""
        inside = self.fits(budget)
        return min(inside, key=_preference) if inside else None

    def explain(self, budget: dict | None = None) -> str:
        """One sentence: the best candidate inside the budget, or why nothing fits."""
        budget = check_budget(self.budget if budget is None else budget)
        best = self.best(budget)
        if best is not None:
            return (f"best inside {budget_text(budget)}: {best['label']} (retention {best['retention']:.4f}, "
                    f"drop {best['drop']:+.4f}, {best['size_bytes'] / 1e6:.4g} MB, "
                    f"{best['latency_ms'] or float('nan'):.3g} ms)")
        closest = min(self.candidates, key=lambda c: (len(misses(c, budget)), _excess(c, budget), _preference(c)))
        why = "; ".join(misses(closest, budget))
        return (f"no candidate fits {budget_text(budget)}; closest: {closest['label']} ({why}). "
                "Loosen the budget or add techniques.")

    def build(self, label: str) -> nn.Module:
        """The compressed model of the candidate named `label` (needs the Frontier explore returned)."""
        if self._model is None:
            raise ValueError("Frontier.build: this frontier was read from JSON; use "
                             "pycomp.retention.explore.build(model, candidate, calib)")
        by_label = {c["label"]: c for c in self.candidates}
        if label not in by_label:
            raise KeyError(f"no candidate {label!r}; candidates: {sorted(by_label)}")
        return build(self._model, by_label[label], self._calib)

    def to_dict(self) -> dict:
        from pycomp.retention.report import to_dict

        return to_dict(self)

    def to_json(self, path) -> None:
        from pycomp.retention.report import to_json

        to_json(self, path)

    def to_html(self, path) -> None:
        from pycomp.retention.report import to_html

        to_html(self, path)

    def print_table(self, console=None) -> None:
        from pycomp.retention.report import print_table

        print_table(self, console)

    @classmethod
    def from_json(cls, path) -> Frontier:
        from pycomp.retention.report import from_json

        return from_json(path)


# ----------------------------------------------------------------------------- explore


def _mixed_plans(model, settings: Sequence[Setting], mixes, table: dict, layers, skip) -> list[dict]:
    by_label = {s.label: s for s in settings}
    plans = []
    for low, high in mixes:
        if low not in by_label or high not in by_label:
            continue  # a setting the filter or the missing calib left out
        eligible = shrinks(table, low, high, model)
        order = [n for n in least_sensitive(table, low) if n in eligible]
        plans += [mixed_candidate(by_label[low], by_label[high], order[:k], layers, skip)
                  for k in mix_counts(len(order), len(layers))]
    return plans


def _remeasure_front(frontier: Frontier, model, data, calib, latency_repeats) -> int:
    """Latency from parallel workers shares the CPU: measure the front's candidates again, one at a time."""
    front = [c for c in frontier.pareto() if c["latency_measured"] == "parallel"]
    index = {id(c): i for i, c in enumerate(frontier.candidates)}
    for c in front:
        plan = {k: c[k] for k in ("label", "kind", "spec", "options", "steps", "assignment")}
        frontier.candidates[index[id(c)]] = {**measure(model, plan, data, calib, latency_repeats),
                                             "latency_measured": "sequential"}
    return len(front)


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def explore(model: nn.Module, data, techniques: str | Iterable[str] | None = None, budget: dict | None = None,
            calib=None, *, settings: Sequence[Setting] | None = None, mixes=None, skip: str | Iterable[str] = (),
            sensitivity_data=None, cache=True, workers: int = 1, progress: bool | None = None,
            latency_repeats: int = 20) -> Frontier:
    """Compress `model` every candidate way, evaluate each on `data`, and return the Frontier.

    data: re-iterable (inputs, labels) batches (retention = accuracy) or inputs alone (agreement).
    techniques: technique names to try (default: every one with rows in `settings`).
    budget: {"size_mb", "latency_ms", "max_drop"}, kept for Frontier.best(); all candidates are measured.
    calib: input batches for calibrating settings (int4 GPTQ); without it those rows are left out.
    settings: the uniform candidates (default SETTINGS); mixes: (low, high) label pairs (default MIXES;
        () for none); skip: fnmatch patterns of layers kept float in every candidate.
    sensitivity_data: data for the per-layer sensitivity probes (default `data`). Mixed candidates
        are chosen with it: measuring it on the evaluation data favours them slightly on that data.
    cache: True ($PYCOMP_CACHE/sensitivity), a folder, or False.
    workers: > 1 evaluates candidates in that many spawned processes (model, data and calib must
        pickle; a script calling this needs an `if __name__ == "__main__":` guard). Latency measured
        side by side is noisy, so the Pareto front's candidates are measured again one at a time
        ("latency_measured" says which way each figure was taken).
    progress: tqdm bars: True, False, or None (only on a terminal).
    """
    t0 = time.perf_counter()
    budget = check_budget(budget)
    skip = [skip] if isinstance(skip, str) else list(skip)
    chosen, left_out = select_settings(SETTINGS if settings is None else settings, techniques, calib)
    layers = compressible_layers(model, skip)
    if not layers:
        raise ValueError(f"explore: the model has no nn.Linear or nn.Conv2d layer to compress (skip={skip})")
    mixes = MIXES if mixes is None else tuple(mixes)
    lows = {low for low, high in mixes}
    probed = [s for s in chosen if not s.calibrates or s.label in lows]
    table, sens_info = sensitivity_table(model, data if sensitivity_data is None else sensitivity_data, probed,
                                         skip=skip, calib=calib, cache=cache, progress=progress)
    plans = [uniform_candidate(s, layers, skip) for s in chosen]
    plans += _mixed_plans(model, chosen, mixes, table, layers, skip)
    t1 = time.perf_counter()
    candidates = _measure_all(model, plans, data, calib, latency_repeats, workers, progress)
    first = candidates[0]["metrics"]
    reference = {"retention": first["accuracy_original"] if first["accuracy_original"] is not None else 1.0,
                 "size_bytes": first["size_bytes_original"],
                 "latency_ms": statistics.median(c["metrics"]["latency_ms_original"] for c in candidates)}
    meta = {"model": type(model).__name__, "n_parameters": sum(p.numel() for p in model.parameters()),
            "layers": layers, "data": data_size(data), "retention_metric": "accuracy"
            if first["accuracy_original"] is not None else "agreement", "workers": workers,
            "threads": torch.get_num_threads(), "created": _now(), "left_out": left_out, "sensitivity": sens_info,
            "seconds": {"sensitivity": sens_info["seconds"], "candidates": time.perf_counter() - t1}}
    frontier = Frontier(candidates, reference=reference, sensitivity=table, budget=budget, meta=meta,
                        model=model, calib=calib)
    if workers > 1:
        t2 = time.perf_counter()
        meta["remeasured"] = _remeasure_front(frontier, model, data, calib, latency_repeats)
        meta["seconds"]["remeasure"] = time.perf_counter() - t2
    meta["seconds"]["total"] = time.perf_counter() - t0
    return frontier
