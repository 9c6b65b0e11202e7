"""The command line: info, demo, bench run and print what they promise."""
import json

from pycomp.cli import main


def test_info(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "pycomp._C" in out and "Int8Linear" in out


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
