"""pycomp.explore: Pareto front, budgets, the sensitivity cache, reports; end to end on a tiny model."""
import copy
import io
import json
import re
import shutil
import subprocess

import pytest
import torch
from torch import nn

import pycomp
from pycomp.nn import Int4Linear, Int8Linear
from pycomp.retention.explore import Frontier, Setting, build, explore, mix_counts, pareto_mask


def _c(label, retention, size, latency, drop=None):
    return {"label": label, "kind": "uniform", "retention": retention, "drop": 0.98 - retention if drop is None
            else drop, "size_bytes": size, "latency_ms": latency}


# A dominates B; C dominates D; E is only the fastest; F equals A (ties stay on the front).
SYNTHETIC = [_c("B", 0.97, 100, 10.0), _c("D", 0.95, 60, 12.0), _c("A", 0.98, 100, 10.0), _c("C", 0.95, 50, 12.0),
             _c("E", 0.90, 60, 5.0), _c("F", 0.98, 100, 10.0)]


def test_pareto_on_a_known_dominance_order():
    front = Frontier([dict(c) for c in SYNTHETIC])
    assert [c["label"] for c in front.pareto()] == ["C", "E", "A", "F"]  # smallest file first
    assert {c["label"] for c in front.pareto(("retention", "size"))} == {"A", "C", "F"}
    assert {c["label"] for c in front.pareto(("size",))} == {"C"}
    assert pareto_mask([[1, 2], [2, 1], [2, 2], [1, 2]]) == [True, True, False, True]
    with pytest.raises(ValueError, match="unknown objective"):
        front.pareto(("accuracy",))


def test_latency_leaves_the_objectives_when_one_candidate_has_none():
    cands = [_c("A", 0.98, 100, None), _c("B", 0.97, 100, 1.0)]
    assert Frontier(cands).objectives() == ("retention", "size")
    assert [c["label"] for c in Frontier(cands).pareto()] == ["A"]


def test_best_respects_each_budget_key_and_picks_the_best_inside():
    front = Frontier([dict(c) for c in SYNTHETIC])
    assert front.best()["label"] == "A"  # A and F tie on everything: the label breaks it
    # The first candidate inside each budget is not the best one inside it.
    assert front.best({"size_mb": 60e-6})["label"] == "C"  # D passes first; same retention, C is smaller
    assert front.best({"latency_ms": 11})["label"] == "A"  # B passes first
    assert front.best({"latency_ms": 6})["label"] == "E"
    assert front.best({"max_drop": 0.031})["label"] == "A"
    assert front.best({"max_drop": 0.05, "size_mb": 70e-6})["label"] == "C"  # D passes first, C is smaller
    assert front.best({"size_mb": 60e-6, "latency_ms": 6})["label"] == "E"
    assert front.best({"size_mb": 10e-6}) is None
    assert "no candidate fits size_mb 1e-05; closest: C (size 5e-05 MB > 1e-05)" in front.explain({"size_mb": 10e-6})
    assert "closest: E" in front.explain({"latency_ms": 1})
    assert "best inside" in front.explain({"latency_ms": 6})
    with pytest.raises(ValueError, match="unknown key.*size_gb"):
        front.best({"size_gb": 1})
    with pytest.raises(ValueError, match="must be a number"):
        front.best({"size_mb": "1"})


def test_best_uses_the_budget_explore_was_given():
    assert Frontier([dict(c) for c in SYNTHETIC], budget={"latency_ms": 6}).best()["label"] == "E"


def test_size_ties_go_to_the_smaller_file():
    front = Frontier([_c("big", 0.95, 60, 1.0), _c("small", 0.95, 50, 9.0)])
    assert front.best()["label"] == "small"


def test_mix_counts():
    assert mix_counts(4, 4) == [1, 2, 3]
    assert mix_counts(3, 4) == [1, 2, 3]
    assert mix_counts(1, 2) == [1]
    assert mix_counts(0, 4) == [] and mix_counts(1, 1) == []


# ----------------------------------------------------------------------------- end to end


def _tiny():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 48), nn.ReLU(), nn.Linear(48, 48), nn.ReLU(), nn.Linear(48, 4)).eval()
    x = torch.randn(192, 16)
    with torch.no_grad():
        y = model(x).argmax(-1)
    y[::10] = (y[::10] + 1) % 4  # the float model is not perfect, so drops can be either sign
    data = [(x[i:i + 64], y[i:i + 64]) for i in range(0, 192, 64)]
    calib = [torch.randn(64, 16) for _ in range(2)]
    return model, data, calib


@pytest.fixture(scope="module")
def explored(tmp_path_factory):
    model, data, calib = _tiny()
    cache = tmp_path_factory.mktemp("sens")
    front = explore(model, data, techniques=["int8", "int4"], calib=calib, budget={"size_mb": 0.01}, cache=cache,
                    progress=False, latency_repeats=3)
    return model, data, calib, cache, front


def test_every_technique_is_a_candidate_and_probes_only_what_it_compresses():
    """The default rows cover every technique; binary keeps the first and last layers float, so its
    sensitivity column has only the middle layer, and the chain compresses the low-rank factors to int8."""
    model, data, _ = _tiny()
    front = explore(model, data, mixes=(("binary", "int4 g32 rtn"),), cache=False, progress=False,
                    latency_repeats=2)
    labels = {c["label"] for c in front.candidates}
    mixed = [c for c in front.candidates if c["kind"] == "mixed"]
    assert [c["assignment"] for c in mixed] == [{"0": "int4 g32 rtn", "2": "binary", "4": "int4 g32 rtn"}]
    assert {"int8 dynamic", "int4 g32 rtn", "binary", "xnor centred", "2:4", "sparse 90%", "lowrank budget 0.5",
            "lowrank budget 0.5 + int8", "2:4 + int8"} <= labels
    assert [n for n in front.sensitivity if "binary" in front.sensitivity[n]] == ["2"]
    chain = front.build("lowrank budget 0.5 + int8")
    kinds = {type(m).__name__ for m in chain.modules()}
    assert "LowRankLinear" in kinds and "Int8Linear" in kinds
    sparse = [m for m in front.build("2:4 + int8").modules() if type(m).__name__ == "SparseLinear"]
    assert sparse and all(m.quant == "int8" for m in sparse)
    assert all(c["retention"] is not None and c["size_bytes"] > 0 for c in front.candidates)


def test_explore_measures_every_candidate(explored):
    model, data, calib, cache, front = explored
    labels = [c["label"] for c in front.candidates]
    assert labels[:6] == ["int8 dynamic", "int8 weight_only", "int4 g128 rtn", "int4 g32 rtn", "int4 g128 gptq",
                          "int4 g32 gptq"]
    mixed = [c for c in front.candidates if c["kind"] == "mixed"]
    assert len(mixed) == 2  # 1 and 2 of the 3 layers at int4
    for c in front.candidates:
        m = c["metrics"]
        for key in ("accuracy_original", "accuracy_compressed", "agreement", "kl_divergence", "size_bytes_compressed",
                    "latency_ms_compressed", "per_class_drop"):
            assert m[key] is not None, (c["label"], key)
        assert c["size_bytes"] == m["size_bytes_compressed"] < front.reference["size_bytes"]
        assert c["retention"] == m["accuracy_compressed"]
        assert c["drop"] == pytest.approx(m["accuracy_original"] - m["accuracy_compressed"])
        assert c["latency_measured"] == "sequential"
    assert front.meta["retention_metric"] == "accuracy" and front.meta["layers"] == ["0", "2", "4"]
    assert set(front.sensitivity) == {"0", "2", "4"}
    assert set(front.sensitivity["0"]) == {"int8 dynamic", "int8 weight_only", "int4 g128 rtn", "int4 g32 rtn"}


def test_mixed_candidates_put_the_least_sensitive_layers_at_int4(explored):
    model, data, calib, cache, front = explored
    table = front.sensitivity
    order = sorted(table, key=lambda n: (max(0.0, table[n]["int4 g32 rtn"]["drop"]),
                                         table[n]["int4 g32 rtn"]["kl_divergence"]))
    for c in (c for c in front.candidates if c["kind"] == "mixed"):
        low = [n for n, s in c["assignment"].items() if s == "int4 g32 rtn"]
        assert set(low) == set(order[:len(low)])
        small = front.build(c["label"])
        for n, s in c["assignment"].items():
            layer = small.get_submodule(n)
            assert isinstance(layer, Int4Linear if s.startswith("int4") else Int8Linear), (c["label"], n)
            if isinstance(layer, Int4Linear):
                assert layer.group_size == 32
        assert small._pycomp_recipe["spec"][0] == "int4"
        assert pycomp.Recipe.from_dict(small._pycomp_recipe)  # the file's record rebuilds as a recipe


def test_compress_leaves_pycomp_layers_alone():
    """What mixed candidates rely on: a second compress skips layers the first one replaced."""
    model, _, _ = _tiny()
    first = pycomp.compress(model, "int4", skip=["2"], group_size=32)
    second = pycomp.compress(first, "int8")
    assert isinstance(second[0], Int4Linear) and isinstance(second[4], Int4Linear)
    assert isinstance(second[2], Int8Linear)
    assert torch.equal(second[0].packed, first[0].packed)


def test_sensitivity_is_cached(explored):
    model, data, calib, cache, front = explored
    assert front.meta["sensitivity"]["evaluations"] == 3 * 4 and front.meta["sensitivity"]["cached"] == []
    assert len(list(cache.glob("*.json"))) == 4
    again = explore(model, data, techniques=["int8", "int4"], calib=calib, cache=cache, progress=False,
                    latency_repeats=3)
    assert again.meta["sensitivity"]["evaluations"] == 0
    assert sorted(again.meta["sensitivity"]["cached"]) == sorted(front.meta["sensitivity"]["settings"])
    assert again.sensitivity == front.sensitivity
    assert [c["assignment"] for c in again.candidates] == [c["assignment"] for c in front.candidates]
    # Another model (one weight changed) misses the cache; so does cache=False.
    changed = copy.deepcopy(model)
    with torch.no_grad():
        changed[0].weight[0, 0] += 1.0
    other = explore(changed, data, techniques="int8", cache=cache, progress=False, latency_repeats=3)
    assert other.meta["sensitivity"]["evaluations"] == 3 * 2
    off = explore(model, data, techniques="int8", mixes=(), cache=False, progress=False, latency_repeats=3)
    assert off.meta["sensitivity"]["evaluations"] == 3 * 2


def test_techniques_filter_calib_and_errors():
    model, data, calib = _tiny()
    front = explore(model, data, techniques=["int4"], cache=False, progress=False, latency_repeats=2)
    assert [c["label"] for c in front.candidates] == ["int4 g128 rtn", "int4 g32 rtn"]  # no calib: no GPTQ, no mix
    left_out = front.meta["left_out"]
    assert left_out["int4 g128 gptq"] == left_out["int4 g32 gptq"] == "needs calib="
    assert left_out["int8 dynamic"] == left_out["binary"] == "filtered out by techniques="
    assert left_out["lowrank budget 0.5 + int8"] == "filtered out by techniques="  # a chain needs every step wanted
    with pytest.raises(ValueError, match="unknown technique.*int3"):
        explore(model, data, techniques="int3")
    with pytest.raises(ValueError, match="unknown key"):
        explore(model, data, budget={"bytes": 1})
    own = [Setting("w8 only", "int8", {"mode": "weight_only"})]
    front = explore(model, data, settings=own, mixes=(), cache=False, progress=False, latency_repeats=2)
    assert [c["label"] for c in front.candidates] == ["w8 only"]


def test_unlabelled_data_uses_agreement():
    model, data, _ = _tiny()
    front = explore(model, [x for x, _ in data], techniques="int8", cache=False, progress=False, latency_repeats=2)
    assert front.meta["retention_metric"] == "agreement"
    for c in front.candidates:
        assert c["retention"] == c["metrics"]["agreement"] and c["drop"] == pytest.approx(1 - c["retention"])
    assert front.reference["retention"] == 1.0


# ----------------------------------------------------------------------------- reports


def test_to_json_round_trips(explored, tmp_path):
    *_, front = explored
    path = tmp_path / "front.json"
    front.to_json(path)
    doc = json.load(open(path))
    assert doc["schema"] == "pycomp.frontier" and doc["schema_version"] == 1
    assert doc == json.loads(json.dumps(front.to_dict()))
    assert doc["pareto"] == [c["label"] for c in front.pareto()]
    assert doc["best"] == (front.best() or {}).get("label")
    assert sum(c["pareto"] for c in doc["candidates"]) == len(doc["pareto"])
    for c in doc["candidates"]:
        assert {"label", "kind", "spec", "options", "steps", "assignment", "metrics", "retention", "drop",
                "size_bytes", "latency_ms", "speedup", "fits_budget"} <= set(c)
    again = Frontier.from_json(path)
    assert again.to_dict() == doc
    with pytest.raises(ValueError, match="read from JSON"):
        again.build(doc["candidates"][0]["label"])
    assert build(explored[0], doc["candidates"][-1], explored[2]) is not None


def test_to_html_is_one_self_contained_file(explored, tmp_path):
    *_, front = explored
    path = tmp_path / "front.html"
    front.to_html(path)
    assert [p.name for p in tmp_path.iterdir()] == ["front.html"]
    page = path.read_text()
    assert page.count("<svg") == 3  # scatter, sensitivity heatmap, per-class bars
    assert "http://" not in page and "https://" not in page
    assert not re.search(r"<script|<link|<img|\bsrc=|@import|url\(", page)
    for c in front.candidates:
        assert c["label"] in page
    assert "int4 g32 rtn" in page and "<table>" in page


def test_print_table(explored):
    from rich.console import Console

    *_, front = explored
    out = io.StringIO()
    front.print_table(Console(file=out, width=200))
    text = out.getvalue()
    assert all(c["label"] in text for c in front.candidates)
    assert "best inside" in text or "no candidate fits" in text


def test_workers_evaluate_in_parallel_and_remeasure_the_front():
    model, data, calib = _tiny()
    front = explore(model, data, techniques="int8", mixes=(), cache=False, progress=False, workers=2,
                    latency_repeats=2)
    assert [c["label"] for c in front.candidates] == ["int8 dynamic", "int8 weight_only"]
    on_front = {c["label"] for c in front.pareto()}
    assert front.meta["remeasured"] >= 1
    for c in front.candidates:
        assert c["latency_measured"] in ("sequential", "parallel")
        assert c["metrics"]["agreement"] > 0.9
    assert any(c["latency_measured"] == "sequential" and c["label"] in on_front for c in front.candidates)


def test_workers_need_picklable_inputs():
    model, data, _ = _tiny()
    model.hook = lambda x: x  # a lambda does not pickle
    with pytest.raises(ValueError, match="picklable"):
        explore(model, data, techniques="int8", mixes=(), cache=False, progress=False, workers=2)


_BROWSER = next((b for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)


@pytest.mark.skipif(_BROWSER is None, reason="no headless Chromium on this machine")
def test_html_renders_in_a_headless_browser(explored, tmp_path):
    *_, front = explored
    page, shot = tmp_path / "front.html", tmp_path / "shot.png"
    front.to_html(page)
    subprocess.run([_BROWSER, "--headless", "--disable-gpu", "--no-sandbox", f"--screenshot={shot}",
                    "--window-size=1200,2400", page.as_uri()], check=True, timeout=60, capture_output=True)
    assert shot.stat().st_size > 10_000
