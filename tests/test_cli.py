"""The command line: info, demo, bench run and print what they promise."""
import json

import pytest
import torch

from pycomp.cli import main


def test_info(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "pycomp._C" in out and "Int8Linear" in out
    assert "cpu-dense" in out  # the M=8192, K=288 column: weight-only layers on a conv's im2col rows
    assert "cuda (none here)" in out or torch.cuda.is_available()  # the CUDA rows show without a device
    assert "reduce_range=True" in out and "LowRankLinear" in out  # every layer


def test_demo_json(capsys):
    assert main(["demo", "--json"]) == 0
    results = json.loads(capsys.readouterr().out)
    for r in results.values():
        assert r["accuracy_original"] - r["accuracy_compressed"] <= 0.003 + 1e-9
        assert r["latency_ms_compressed"] > 0


def test_bench_json_small(capsys):
    assert main(["bench", "--json", "--shapes", "256x192", "--m", "1,16", "--repeats", "2"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert [r["m"] for r in result["rows"]] == [1, 16]
    assert all(r["w8a8_ms"] > 0 and r["fbgemm_ms"] > 0 for r in result["rows"])
    assert result["machine"]["threads"] == 2


@pytest.mark.parametrize("family", ["int8", "int4"])
def test_bench_int8_and_int4_tables(family, capsys):
    assert main(["bench", "--family", family, "--shapes", "128x256", "--m", "1,5", "--repeats", "2"]) == 0
    out = capsys.readouterr().out
    assert "128x256" in out and "fp32" in out and out.count("128x256") == 2  # one table row per M
    assert "vs fbgemm" in out if family == "int8" else "int4pack" in out


@pytest.mark.parametrize("family", ["binary", "sparse"])
def test_bench_binary_and_sparse_families(family, capsys):
    assert main(["bench", "--family", family, "--shapes", "128x96", "--m", "1,3", "--repeats", "2"]) == 0
    out = capsys.readouterr().out
    assert "x fp32" in out and "128x96" in out
    if family == "binary":
        assert "GB/s" in out and "% ceil" in out  # W1A32's memory rate beside its time
    assert main(["bench", "--family", family, "--json", "--shapes", "128x96", "--m", "2,5", "--repeats", "2"]) == 0
    rows = json.loads(capsys.readouterr().out)["rows"]
    assert {r["m"] for r in rows} == {2, 5}
    # % of the read ceiling in the JSON too, where the call reads its weight once (binary: M <= 4)
    assert all((r["pct_ceiling"] is None) == (family == "binary" and r["m"] > 4) for r in rows)


def test_explore_command(tmp_path, capsys):
    out_json, out_html = tmp_path / "f.json", tmp_path / "r.html"
    rc = main(["explore", "--model", "pycomp.models.digits:pretrained_digits_cnn",
               "--data", "pycomp.models.digits:test_batches", "--techniques", "int8",
               "--budget", "size_mb=1,max_drop=0.01", "--threads", "1",
               "--json", str(out_json), "--html", str(out_html)])
    assert rc == 0
    front = json.loads(out_json.read_text())
    assert front["best"] is not None
    assert all(c["spec"] == "int8" for c in front["candidates"] if c["kind"] == "uniform")
    assert "<svg" in out_html.read_text()
    assert "best inside" in capsys.readouterr().out


def test_explore_command_bad_arguments():
    import pytest

    with pytest.raises(SystemExit, match="package.module:name"):
        main(["explore", "--model", "nocolon", "--data", "pycomp.models.digits:test_batches"])
    with pytest.raises(SystemExit, match="key=value"):
        main(["explore", "--model", "pycomp.models.digits:pretrained_digits_cnn",
              "--data", "pycomp.models.digits:test_batches", "--budget", "size_mb"])


def test_time_interleaved_takes_turns_with_one_call_count():
    from pycomp.benchmark.timing import time_interleaved

    calls = []
    times = time_interleaved({"a": lambda i: calls.append(("a", i)), "b": lambda i: calls.append(("b", i))},
                             repeats=3, warmup=1, block=1)
    assert calls == [("a", 0), ("b", 1), ("a", 2), ("b", 3), ("a", 4), ("b", 5), ("a", 6), ("b", 7)]
    assert sorted(times) == ["a", "b"] and all(len(v) == 3 and min(v) >= 0 for v in times.values())


def test_time_interleaved_in_turns_times_all_but_the_first_call_of_each_turn():
    from pycomp.benchmark import timing

    calls, clock = [], iter(range(1000))
    real = timing.time.perf_counter
    timing.time.perf_counter = lambda: float(next(clock))  # each call then "takes" 1 s, exactly
    try:
        times = timing.time_interleaved({"a": lambda i: calls.append(("a", i)), "b": lambda i: calls.append(("b", i))},
                                        repeats=3, warmup=0, block=3)
    finally:
        timing.time.perf_counter = real
    # 2 rounds of 3 calls each (3 timed calls need 2 turns of 2 timed), one index count over all calls
    assert calls == [("a", 0), ("a", 1), ("a", 2), ("b", 3), ("b", 4), ("b", 5),
                     ("a", 6), ("a", 7), ("a", 8), ("b", 9), ("b", 10), ("b", 11)]
    assert times == {"a": [1.0, 1.0, 1.0], "b": [1.0, 1.0, 1.0]}
    with pytest.raises(ValueError, match="block"):
        timing.time_interleaved({"a": lambda i: None}, block=0)
