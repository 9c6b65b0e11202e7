"""GPU energy per inference in pycomp.retention.evaluate: NVML on CUDA, left out elsewhere."""
import pytest
import torch
from torch import nn

import pycomp
from pycomp.retention.evaluate import ENERGY_FIELDS, energy_per_call, nvml_energy_reader


def _model_and_data(device="cpu"):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(256, 512), nn.ReLU(), nn.Linear(512, 10)).to(device)
    data = [torch.randn(64, 256, device=device) for _ in range(2)]
    return model, data


def test_energy_is_left_out_on_cpu():
    model, data = _model_and_data()
    small = pycomp.compress(model, "int8")
    report = pycomp.retention.evaluate(model, small, data, latency_repeats=3)
    assert report.energy_j_per_inference_original is None and report.energy_j_per_inference_compressed is None
    d = report.to_dict()
    assert not set(ENERGY_FIELDS) & set(d)
    assert d["latency_ms_original"] > 0  # the rest of the cost figures stay
    assert nvml_energy_reader(torch.device("cpu")) is None


def test_energy_per_call_divides_the_counter_rise_by_the_calls():
    counter = {"joules": 100.0, "calls": 0}

    def fn():
        counter["joules"] += 2.5
        counter["calls"] += 1

    per_call = energy_per_call(fn, lambda: counter["joules"], min_calls=7, min_seconds=0.0)
    assert per_call == pytest.approx(2.5)
    assert counter["calls"] == 1 + 7  # one warm-up call, not counted


def test_energy_per_call_runs_at_least_min_seconds():
    import time

    calls = []
    energy_per_call(lambda: (calls.append(1), time.sleep(0.01)), lambda: 0.0, min_calls=1, min_seconds=0.1)
    assert len(calls) >= 1 + 9  # 0.1 s of 10 ms calls, after the warm-up


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_energy_on_gpu_is_positive_and_a_plausible_power():
    device = torch.device("cuda")
    if nvml_energy_reader(device) is None:
        pytest.skip("no NVML energy counter (pynvml missing or the GPU has none)")
    model, data = _model_and_data(device)
    small = pycomp.compress(model, "int8")
    d = pycomp.retention.evaluate(model, small, data, latency_repeats=5).to_dict()
    for side in ("original", "compressed"):
        joules = d[f"energy_j_per_inference_{side}"]
        assert joules > 0, side
        # Joules per call over seconds per call: the board's mean power while it ran, idle draw included.
        watts = joules / (d[f"latency_ms_{side}"] / 1e3)
        assert 5 < watts < 3000, (side, watts)
