"""Reports of a `Frontier`: JSON, one self-contained HTML page, and a terminal table.

JSON schema (`Frontier.to_json`, schema_version 1). Fractions are in points of 1.0
(0.01 = one percentage point), sizes in bytes of the `pycomp.save` file, latencies in
milliseconds per forward pass of the data's first batch (median):

    {
      "schema": "pycomp.frontier", "schema_version": 1,
      "pycomp_version": "0.1.0",
      "retention_metric": "accuracy" | "agreement",   # agreement when the data has no labels
      "objectives": ["retention", "size", "latency"],  # what the Pareto front is over
      "budget": {"size_mb": 0.1, "latency_ms": 20, "max_drop": 0.01},  # any subset, {} when none
      "reference": {"retention": 0.975, "size_bytes": 606336, "latency_ms": 9.3},  # the float model
      "best": "int4 g128 rtn" | null,                 # Frontier.best(budget)
      "pareto": ["label", ...],                       # the front, smallest file first
      "candidates": [{
        "label": "int4 g32 rtn x2 + int8 dynamic x2",
        "kind": "uniform" | "mixed" | "chain",
        "spec": "int4" | ["int4", "int8"],            # mixed: one entry per step
        "options": {"group_size": 32} | [{...}, {...}],
        "steps": [{"spec": "int4", "options": {...}, "skip": ["fc2"], "calib": false}],
                                                      # the exact pycomp.compress calls, in order
        "assignment": {"conv1": "int4 g32 rtn", ...}, # the setting each compressible layer gets
        "retention": 0.975, "drop": 0.0056,           # accuracy (or agreement) and its drop
        "size_bytes": 94152, "latency_ms": 14.3, "speedup": 0.6,  # speedup: original/compressed ms
        "seconds": 1.1,                               # compress + evaluate
        "latency_measured": "sequential" | "parallel",  # parallel: taken beside other workers (noisy)
        "pareto": true, "fits_budget": true,
        "metrics": {...}                              # pycomp.retention.evaluate(...).to_dict()
      }, ...],
      "sensitivity": {"conv1": {"int4 g32 rtn": {"retention": 0.97, "drop": 0.008, "agreement": 0.99,
                                                 "kl_divergence": 1e-3, "layer_bytes": 384}, ...}, ...},
                                                      # each layer compressed alone, the rest float;
                                                      # layer_bytes: that layer's compressed tensors
      "meta": {"model": "DigitsCNN", "n_parameters": 151306, "layers": [...],
               "data": {"n_examples": 360, "n_batches": 3, "input_shape": [1, 8, 8], "labelled": true},
               "threads": 2, "workers": 1, "created": "2026-01-01T00:00:00Z",
               "left_out": {"int4 g128 gptq": "needs calib="},
               "sensitivity": {"evaluations": 16, "cached": [], "settings": [...], "seconds": 0.8, "folder": "..."},
               "seconds": {"sensitivity": 0.8, "candidates": 12.0, "total": 13.0},
               "remeasured": 3}                      # workers > 1 only: front candidates timed again
                                                      # (then "seconds" has "remeasure" too)
    }

The HTML page (`Frontier.to_html`) holds no script and loads nothing: charts are inline SVG.
"""
from __future__ import annotations

import html
import json
import math
import os
from pathlib import Path

SCHEMA = "pycomp.frontier"
SCHEMA_VERSION = 1


# ----------------------------------------------------------------------------- JSON


def to_dict(frontier) -> dict:
    import pycomp

    front = {id(c) for c in frontier.pareto()}
    fitting = {id(c) for c in frontier.fits()}
    best = frontier.best()
    return {
        "schema": SCHEMA, "schema_version": SCHEMA_VERSION, "pycomp_version": pycomp.__version__,
        "retention_metric": frontier.meta.get("retention_metric"), "objectives": list(frontier.objectives()),
        "budget": frontier.budget, "reference": frontier.reference, "best": best["label"] if best else None,
        "pareto": [c["label"] for c in frontier.pareto()],
        "candidates": [{**c, "pareto": id(c) in front, "fits_budget": id(c) in fitting} for c in frontier.candidates],
        "sensitivity": frontier.sensitivity, "meta": frontier.meta,
    }


def to_json(frontier, path) -> None:
    _write(path, json.dumps(to_dict(frontier), indent=1))


def from_json(path):
    """A Frontier read back from `to_json`'s file (it cannot build() models: it holds none)."""
    from pycomp.retention.explore import Frontier

    doc = json.loads(Path(path).read_text())
    if doc.get("schema") != SCHEMA or not isinstance(doc.get("schema_version"), int):
        raise ValueError(f"{path}: not a pycomp frontier file (schema {doc.get('schema')!r})")
    if doc["schema_version"] > SCHEMA_VERSION:
        raise ValueError(f"{path}: frontier schema version {doc['schema_version']} is newer than this pycomp reads")
    candidates = [{k: v for k, v in c.items() if k not in ("pareto", "fits_budget")} for c in doc["candidates"]]
    return Frontier(candidates, reference=doc["reference"], sensitivity=doc["sensitivity"], budget=doc["budget"],
                    meta=doc["meta"])


def _write(path, text: str) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


# ----------------------------------------------------------------------------- terminal


def _fmt_latency(c: dict) -> str:
    if c["latency_ms"] is None:
        return "-"
    return f"{c['latency_ms']:.2f}" + ("~" if c.get("latency_measured") == "parallel" else "")


def table(frontier):
    """A rich Table of every candidate, smallest file first; * marks the Pareto front, > the best."""
    from rich.table import Table

    ref, metric = frontier.reference, frontier.meta.get("retention_metric", "retention")
    best = frontier.best()
    front = {id(c) for c in frontier.pareto()}
    t = Table(title=f"{frontier.meta.get('model', 'model')}: float {metric} {100 * ref.get('retention', 1):.2f}%, "
                    f"{ref.get('size_bytes', 0):,} bytes, {ref.get('latency_ms') or float('nan'):.2f} ms",
              caption=frontier.explain() + (" (~: latency taken in parallel)" if any(
                  c.get("latency_measured") == "parallel" for c in frontier.candidates) else ""))
    for col in ("", "candidate", "kind", f"{metric} %", "drop pts", "agree %", "KL", "bytes", "ratio", "ms",
                "speed-up"):
        t.add_column(col, justify="left" if col in ("", "candidate", "kind") else "right")
    for c in sorted(frontier.candidates, key=lambda c: (c["size_bytes"], -c["retention"])):
        m = c["metrics"]
        mark = (">" if best is not None and c is best else "") + ("*" if id(c) in front else "")
        t.add_row(mark, c["label"], c["kind"], f"{100 * c['retention']:.2f}", f"{100 * c['drop']:+.2f}",
                  f"{100 * m['agreement']:.2f}", f"{m['kl_divergence']:.1e}", f"{c['size_bytes']:,}",
                  f"{m['compression_ratio']:.2f}x", _fmt_latency(c),
                  f"{c['speedup']:.2f}x" if c["speedup"] else "-")
    return t


def print_table(frontier, console=None) -> None:
    import sys

    from rich.console import Console

    console = console or Console(width=None if sys.stdout.isatty() else 160)
    console.print(table(frontier))


# ----------------------------------------------------------------------------- SVG


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    span = hi - lo if hi > lo else 1.0
    step = 10 ** math.floor(math.log10(span / n))
    for m in (1, 2, 2.5, 5, 10):
        if span / (step * m) <= n:
            step *= m
            break
    first = math.ceil(lo / step) * step
    return [round(first + i * step, 10) for i in range(int((hi - first) / step + 1e-9) + 1)]


def _log_ticks(lo: float, hi: float) -> list[float]:
    """1-2-5 steps of each decade between 10**lo and 10**hi, thinned to at most 8."""
    ticks = [m * 10.0 ** e for e in range(math.floor(lo), math.ceil(hi) + 1) for m in (1, 2, 5)]
    ticks = [t for t in ticks if lo <= math.log10(t) <= hi]
    return ticks[::math.ceil(len(ticks) / 8)] if ticks else []


class _Axes:
    """A map from data to pixels (x linear, or logarithmic when xlog) and the SVG of its frame and ticks."""

    def __init__(self, xs, ys, width=720, height=420, margin=(60, 20, 30, 50), xlog=False):
        left, right, top, bottom = margin
        self.w, self.h, self.left, self.top = width, height, left, top
        self.pw, self.ph = width - left - right, height - top - bottom
        self.xlog = xlog
        self.x0, self.x1 = self._range([math.log10(x) for x in xs] if xlog else xs)
        self.y0, self.y1 = self._range(ys)

    @staticmethod
    def _range(values) -> tuple[float, float]:
        lo, hi = min(values), max(values)
        pad = (hi - lo) * 0.08 or max(abs(hi) * 0.1, 1e-3)
        return lo - pad, hi + pad

    def px(self, x: float) -> float:
        x = math.log10(x) if self.xlog else x
        return self.left + (x - self.x0) / (self.x1 - self.x0) * self.pw

    def py(self, y: float) -> float:
        return self.top + self.ph - (y - self.y0) / (self.y1 - self.y0) * self.ph

    def frame(self, xlabel: str, ylabel: str) -> list[str]:
        out = [f'<rect x="{self.left}" y="{self.top}" width="{self.pw}" height="{self.ph}" class="frame"/>']
        for x in (_log_ticks if self.xlog else _ticks)(self.x0, self.x1):
            out.append(f'<line x1="{self.px(x):.1f}" x2="{self.px(x):.1f}" y1="{self.top}" '
                       f'y2="{self.top + self.ph}" class="grid"/>'
                       f'<text x="{self.px(x):.1f}" y="{self.top + self.ph + 16}" class="tick" '
                       f'text-anchor="middle">{x:g}</text>')
        for y in _ticks(self.y0, self.y1):
            out.append(f'<line x1="{self.left}" x2="{self.left + self.pw}" y1="{self.py(y):.1f}" '
                       f'y2="{self.py(y):.1f}" class="grid"/>'
                       f'<text x="{self.left - 6}" y="{self.py(y) + 4:.1f}" class="tick" '
                       f'text-anchor="end">{y:g}</text>')
        out.append(f'<text x="{self.left + self.pw / 2}" y="{self.h - 6}" class="axis" text-anchor="middle">'
                   f'{html.escape(xlabel)}</text>')
        out.append(f'<text transform="translate(14 {self.top + self.ph / 2}) rotate(-90)" class="axis" '
                   f'text-anchor="middle">{html.escape(ylabel)}</text>')
        return out


def _place_labels(points: list[tuple[float, float, str]], bounds) -> list[str]:
    """Text labels beside points, each moved to the first nearby spot that overlaps no placed label."""
    placed, out = [], []
    spots = [(7, -6, "start"), (7, 13, "start"), (-7, -6, "end"), (-7, 13, "end")]
    spots += [(dx, dy + k * 13 * (1 if dy > 0 else -1), a) for k in (1, 2, 3) for dx, dy, a in spots]
    for x, y, text in sorted(points, key=lambda p: (p[1], p[0])):
        w = 6.2 * len(text)
        for dx, dy, anchor in spots:
            bx = x + dx if anchor == "start" else x + dx - w
            box = (bx, y + dy - 10, bx + w, y + dy + 2)
            inside = bounds[0] <= box[0] and box[2] <= bounds[2] and bounds[1] <= box[1] and box[3] <= bounds[3]
            if inside and not any(b[0] < box[2] and box[0] < b[2] and b[1] < box[3] and box[1] < b[3]
                                  for b in placed):
                break
        placed.append(box)
        out.append(f'<text x="{x + dx:.1f}" y="{y + dy:.1f}" text-anchor="{anchor}" class="label">'
                   f'{html.escape(text)}</text>')
    return out


def scatter_svg(frontier) -> str:
    """File size against retention drop: every candidate, the float model, the size/retention front
    (filled, joined by its staircase), members of the full front with latency (ringed), budget lines."""
    cands = frontier.candidates
    ref = frontier.reference
    xs = [c["size_bytes"] / 1e3 for c in cands] + [ref["size_bytes"] / 1e3]
    ys = [100 * c["drop"] for c in cands] + [0.0]
    budget = frontier.budget
    if "size_mb" in budget:
        xs.append(budget["size_mb"] * 1e3)
    if "max_drop" in budget:
        ys.append(100 * budget["max_drop"])
    xlog = max(xs) > 4 * min(xs)  # the float model often sits far right of every candidate
    ax = _Axes(xs, ys, xlog=xlog)
    metric = frontier.meta.get("retention_metric", "retention")
    out = [f'<svg class="chart" width="{ax.w}" height="{ax.h}" viewBox="0 0 {ax.w} {ax.h}" role="img">']
    out += ax.frame(f"file size (kB, pycomp.save{', log scale' if xlog else ''})", f"{metric} drop (points)")
    if "size_mb" in budget:
        x = ax.px(budget["size_mb"] * 1e3)
        out.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{ax.top}" y2="{ax.top + ax.ph}" class="budget"/>')
    if "max_drop" in budget:
        y = ax.py(100 * budget["max_drop"])
        out.append(f'<line x1="{ax.left}" x2="{ax.left + ax.pw}" y1="{y:.1f}" y2="{y:.1f}" class="budget"/>')
    front2 = frontier.pareto(("retention", "size"))
    if front2:  # smallest first, so the drop falls step by step as the size grows
        pts = [(ax.px(c["size_bytes"] / 1e3), ax.py(100 * c["drop"])) for c in front2]
        d = f"M{pts[0][0]:.1f},{pts[0][1]:.1f}" + "".join(f" H{x:.1f} V{y:.1f}" for x, y in pts[1:])
        out.append(f'<path d="{d}" class="stairs"/>')
    on2, on3 = {id(c) for c in front2}, {id(c) for c in frontier.pareto()}
    labels = []
    for c in cands:
        x, y = ax.px(c["size_bytes"] / 1e3), ax.py(100 * c["drop"])
        cls = "front" if id(c) in on2 else "point"
        tip = (f"{c['label']}: {metric} {100 * c['retention']:.2f}% (drop {100 * c['drop']:+.2f}), "
               f"{c['size_bytes']:,} bytes, {_fmt_latency(c)} ms")
        if id(c) in on3:
            out.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="8" class="ring"/>')
        out.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="5" class="{cls}"><title>{html.escape(tip)}</title>'
                   "</circle>")
        labels.append((x, y, c["label"]))
    rx, ry = ax.px(ref["size_bytes"] / 1e3), ax.py(0.0)
    out.append(f'<rect x="{rx - 5:.1f}" y="{ry - 5:.1f}" width="10" height="10" class="ref" '
               f'transform="rotate(45 {rx:.1f} {ry:.1f})"><title>float model</title></rect>')
    labels.append((rx, ry, "float"))
    out += _place_labels(labels, (0, 0, ax.w, ax.h))
    out.append("</svg>")
    return "\n".join(out)


def _heat(value: float, scale: float) -> str:
    """White at 0, red for a loss, green for a gain, full colour at |value| = scale."""
    return _tint(min(1.0, abs(value) / scale) if scale > 0 else 0.0, value > 0)


def _tint(t: float, loss: bool = True) -> str:
    """White at t = 0 to full red (loss) or green (gain) at t = 1."""
    target = (214, 39, 40) if loss else (44, 160, 44)
    r, g, b = (round(255 + (c - 255) * t) for c in target)
    return f"rgb({r},{g},{b})"


def heatmap_svg(frontier) -> str:
    """Layers by setting, each cell that layer alone compressed: the colour is the KL divergence on a
    log scale over the table (what ranks layers that tie on the drop), the text the drop in points.

    Accuracy on a few hundred examples moves in steps of a few tenths of a point, up or down by
    chance; KL moves with every output, so it carries the shading."""
    table = frontier.sensitivity
    layers = list(table)
    settings = list(dict.fromkeys(s for row in table.values() for s in row))
    if not layers or not settings:
        return "<p>No sensitivity table.</p>"
    cw, ch, left, top = 130, 38, 10 + 7 * max(len(n) for n in layers), 40
    w, h = left + cw * len(settings) + 10, top + ch * len(layers) + 10
    kls = [math.log10(max(v["kl_divergence"], 1e-12)) for row in table.values() for v in row.values()]
    lo, hi = min(kls), max(kls)

    def shade(kl):  # 0.15 .. 1 so that the least sensitive cell is still tinted
        return _tint(0.15 + 0.85 * ((math.log10(max(kl, 1e-12)) - lo) / (hi - lo) if hi > lo else 1.0))

    out = [f'<svg class="chart" width="{w}" height="{h}" viewBox="0 0 {w} {h}" role="img">']
    for j, s in enumerate(settings):
        out.append(f'<text x="{left + cw * j + cw / 2}" y="{top - 10}" text-anchor="middle" class="axis">'
                   f'{html.escape(s)}</text>')
    for i, n in enumerate(layers):
        y = top + ch * i
        out.append(f'<text x="{left - 8}" y="{y + ch / 2 + 4}" text-anchor="end" class="axis">{html.escape(n)}</text>')
        for j, s in enumerate(settings):
            v = table[n].get(s)
            x = left + cw * j
            if v is None:
                out.append(f'<rect x="{x}" y="{y}" width="{cw}" height="{ch}" class="missing"/>')
                continue
            tip = (f"{n} alone at {s}: retention {100 * v['retention']:.2f}%, drop {100 * v['drop']:+.2f} points, "
                   f"agreement {100 * v['agreement']:.2f}%, KL {v['kl_divergence']:.2e}")
            out.append(f'<rect x="{x}" y="{y}" width="{cw}" height="{ch}" fill="{shade(v["kl_divergence"])}" '
                       f'class="cell"><title>{html.escape(tip)}</title></rect>'
                       f'<text x="{x + cw / 2}" y="{y + 16}" text-anchor="middle" class="value">'
                       f'{100 * v["drop"]:+.2f}</text>'
                       f'<text x="{x + cw / 2}" y="{y + 30}" text-anchor="middle" class="small">'
                       f'KL {v["kl_divergence"]:.1e}</text>')
    out.append("</svg>")
    return "\n".join(out)


def class_bars_svg(candidate: dict) -> str:
    """Accuracy drop per class (points) for one candidate: red a loss, green a gain."""
    drops = candidate["metrics"].get("per_class_drop")
    if not drops:
        return "<p>No per-class figures: they need labelled data.</p>"
    classes = sorted(drops, key=lambda k: (len(k), k))
    values = [100 * drops[k] for k in classes]
    bw, h, left, top, bottom = 36, 240, 50, 15, 35
    w = left + bw * len(classes) + 20
    lo, hi = min(0.0, *values), max(0.0, *values)
    if hi - lo < 1.0:  # a scale of at least one point, so a tiny difference does not look large
        hi = lo + 1.0
    ph = h - top - bottom

    def py(v):
        return top + (hi - v) / (hi - lo) * ph

    out = [f'<svg class="chart" width="{w}" height="{h}" viewBox="0 0 {w} {h}" role="img">']
    for t in _ticks(lo, hi, 4):
        out.append(f'<line x1="{left}" x2="{w - 20}" y1="{py(t):.1f}" y2="{py(t):.1f}" class="grid"/>'
                   f'<text x="{left - 6}" y="{py(t) + 4:.1f}" text-anchor="end" class="tick">{t:g}</text>')
    out.append(f'<line x1="{left}" x2="{w - 20}" y1="{py(0):.1f}" y2="{py(0):.1f}" class="zero"/>')
    for i, (k, v) in enumerate(zip(classes, values)):
        x = left + bw * i + 6
        y0, y1 = sorted((py(0), py(v)))
        out.append(f'<rect x="{x}" y="{y0:.1f}" width="{bw - 12}" height="{max(y1 - y0, 0.5):.1f}" '
                   f'fill="{_heat(v, 1e-9)}"><title>class {html.escape(k)}: {v:+.2f} points</title></rect>'
                   f'<text x="{x + (bw - 12) / 2}" y="{h - bottom + 16}" text-anchor="middle" class="tick">'
                   f'{html.escape(k)}</text>')
    out.append(f'<text transform="translate(14 {top + ph / 2}) rotate(-90)" class="axis" text-anchor="middle">'
               "accuracy drop (points)</text>")
    out.append(f'<text x="{left + bw * len(classes) / 2}" y="{h - 4}" class="axis" text-anchor="middle">class</text>')
    out.append("</svg>")
    return "\n".join(out)


# ----------------------------------------------------------------------------- HTML

_CSS = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 24px; color: #222; max-width: 1200px; }
h1 { font-size: 20px; } h2 { font-size: 16px; margin-top: 28px; }
.note { color: #555; }
.chart text { font-family: system-ui, sans-serif; font-size: 11px; fill: #222; }
.chart .tick { fill: #555; } .chart .small { font-size: 10px; fill: #333; } .chart .value { font-weight: 600; }
.chart .axis { font-size: 12px; }
.frame { fill: none; stroke: #999; } .grid { stroke: #eee; } .zero { stroke: #666; }
.point { fill: #9ecae1; stroke: #3182bd; } .front { fill: #e6550d; stroke: #a63603; }
.ring { fill: none; stroke: #31a354; stroke-width: 2; } .ref { fill: #777; }
.stairs { fill: none; stroke: #e6550d; stroke-width: 1.5; stroke-dasharray: 4 2; }
.budget { stroke: #756bb1; stroke-width: 1.5; stroke-dasharray: 6 3; }
.cell { stroke: #fff; } .missing { fill: #f4f4f4; stroke: #fff; }
table { border-collapse: collapse; font-size: 13px; }
th, td { padding: 3px 8px; border-bottom: 1px solid #e5e5e5; text-align: right; vertical-align: top; }
th { background: #f6f6f6; } td.l, th.l { text-align: left; }
tr.front td { background: #fff4ec; } tr.best td { font-weight: 600; }
.legend span { margin-right: 16px; }
"""


def _candidate_rows(frontier, best) -> str:
    front = {id(c) for c in frontier.pareto()}
    fitting = {id(c) for c in frontier.fits()}
    rows = []
    for c in sorted(frontier.candidates, key=lambda c: (c["size_bytes"], -c["retention"])):
        m = c["metrics"]
        cls = " ".join(k for k, on in (("front", id(c) in front), ("best", best is not None and c is best)) if on)
        assignment = ", ".join(f"{n}: {s}" for n, s in c["assignment"].items()) if c["kind"] == "mixed" else "all"
        cells = [("l", "front" if id(c) in front else ""), ("l", "yes" if id(c) in fitting else "no"),
                 ("l", c["label"]), ("l", c["kind"]), ("", f"{100 * c['retention']:.2f}"),
                 ("", f"{100 * c['drop']:+.2f}"), ("", f"{100 * m['agreement']:.2f}"),
                 ("", f"{m['kl_divergence']:.2e}"), ("", f"{c['size_bytes']:,}"),
                 ("", f"{m['compression_ratio']:.2f}x"), ("", _fmt_latency(c)),
                 ("", f"{c['speedup']:.2f}x" if c["speedup"] else "-"), ("", f"{c['seconds']:.1f}"),
                 ("l", assignment)]
        rows.append(f'<tr class="{cls}">' + "".join(f'<td class="{k}">{html.escape(v)}</td>' for k, v in cells)
                    + "</tr>")
    return "\n".join(rows)


def to_html(frontier, path) -> None:
    """One self-contained page: no script, no external reference; charts are inline SVG."""
    from pycomp.retention.explore import budget_text

    meta, ref = frontier.meta, frontier.reference
    metric = meta.get("retention_metric", "retention")
    best = frontier.best()
    data = meta.get("data", {})
    seconds = meta.get("seconds", {})
    heads = ["front", "fits", "candidate", "kind", f"{metric} %", "drop pts", "agree %", "KL", "bytes", "ratio",
             "ms", "speed-up", "s", "assignment"]
    left_out = "; ".join(f"{k} ({v})" for k, v in meta.get("left_out", {}).items()) or "none"
    sens = meta.get("sensitivity", {})
    cached = html.escape(", ".join(sens.get("cached", [])) or "none")
    parallel = any(c.get("latency_measured") == "parallel" for c in frontier.candidates)
    body = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>pycomp trade-offs: {html.escape(meta.get('model', 'model'))}</title>
<style>{_CSS}</style></head><body>
<h1>pycomp trade-offs: {html.escape(meta.get('model', 'model'))}</h1>
<p>{data.get('n_examples', '?')} examples ({'labelled' if data.get('labelled') else 'no labels'}); float model:
{metric} {100 * ref.get('retention', 1):.2f}%, {ref.get('size_bytes', 0):,} bytes,
{ref.get('latency_ms') or float('nan'):.2f} ms per batch. {len(frontier.candidates)} candidates,
{meta.get('threads', '?')} threads, {meta.get('workers', 1)} worker(s), {seconds.get('total', float('nan')):.1f} s.</p>
<p><b>{html.escape(frontier.explain())}</b></p>
<p class="note">Budget: {html.escape(budget_text(frontier.budget))}.
Left out: {html.escape(left_out)}.</p>

<h2>Size against {metric} drop</h2>
{scatter_svg(frontier)}
<p class="legend note"><span>orange, joined: front over {metric} and size</span>
<span>green ring: on the front over {metric}, size and latency</span><span>grey diamond: float model</span>
<span>purple dashes: budget</span></p>

<h2>Sensitivity: each layer compressed alone</h2>
<p class="note">Only that layer uses the setting; the others stay float. Number: {metric} drop in points;
shade: KL divergence from the float model's outputs (log scale, darker = more sensitive).
{sens.get('evaluations', 0)} probes run; settings read from the cache: {cached}.
Mixed candidates give the low setting to the least sensitive layers.</p>
{heatmap_svg(frontier)}

<h2>Per-class accuracy drop: {html.escape(best['label'] if best else 'no candidate fits the budget')}</h2>
{class_bars_svg(best) if best else '<p>Nothing to show.</p>'}

<h2>All candidates</h2>
<p class="note">Sizes are pycomp.save file bytes; latency is the median ms of one forward pass on the first
batch; speed-up is against the float model timed in the same evaluate call.{
        ' Latency marked ~ was taken while other workers ran (noisy).' if parallel else ''}</p>
<table><thead><tr>{''.join(f'<th class="{"l" if h in ("front", "fits", "candidate", "kind", "assignment") else ""}">'
                           f'{html.escape(h)}</th>' for h in heads)}</tr></thead>
<tbody>
{_candidate_rows(frontier, best)}
</tbody></table>
</body></html>
"""
    _write(path, body)
