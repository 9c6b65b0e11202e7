"""`pycomp.retention.evaluate`: how much of the original model's behaviour the compressed one kept."""
from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import torch
from torch import Tensor, nn

from pycomp.benchmark.timing import median_ms, percentile_ms, time_interleaved
from pycomp.retention import metrics
from pycomp.retention.metrics import _device, _eval_mode, _split

# What evaluate(..., extras=...) can add; each runs the models again.
EXTRAS = ("noise", "fgsm", "cka", "attribution")
# Report fields that to_dict() leaves out when they were not measured (no CUDA device or no NVML).
ENERGY_FIELDS = ("energy_j_per_inference_original", "energy_j_per_inference_compressed")
# The energy loop runs at least this long: NVML's energy counter advances in steps of several ms.
ENERGY_MIN_SECONDS = 0.5


def file_nbytes(model: nn.Module) -> int:
    """The model's size as reported everywhere: the bytes of its `pycomp.save` file.

    Falls back to `model_nbytes` for a model that cannot be written (a layer type
    pycomp does not know, or non-tensor state).
    """
    from pycomp.files import PycompFileError, save

    with tempfile.TemporaryDirectory(prefix="pycomp_size_") as tmp:
        try:
            return save(model, os.path.join(tmp, "model.pcz"))
        except PycompFileError:
            return model_nbytes(model)


def model_nbytes(model: nn.Module) -> int:
    """Bytes of the model's parameters and buffers (packed tensors count as packed)."""
    seen, total = set(), 0
    for t in list(model.parameters()) + list(model.buffers()):
        key = (t.untyped_storage().data_ptr(), t.storage_offset(), t.numel())
        if key not in seen:
            seen.add(key)
            total += t.numel() * t.element_size()
    return total


@dataclass
class RetentionReport:
    """What `evaluate` measured. Accuracy-type fields are None for data without labels."""

    n_examples: int
    accuracy_original: float | None
    accuracy_compressed: float | None
    agreement: float
    kl_divergence: float
    size_bytes_original: int
    size_bytes_compressed: int
    compression_ratio: float
    latency_ms_original: float | None
    latency_ms_compressed: float | None
    latency_p99_ms_original: float | None
    latency_p99_ms_compressed: float | None
    js_divergence: float
    top5_original: float | None = None
    top5_compressed: float | None = None
    ece_original: float | None = None
    ece_compressed: float | None = None
    per_class_drop: dict[str, float] | None = None  # class -> accuracy drop (points of 1.0)
    worst_classes: list[list] | None = None  # [class, drop], largest drop first
    flipped: dict[str, list[int]] = field(default_factory=dict)  # disagree / right_to_wrong / wrong_to_right
    extras: dict = field(default_factory=dict)  # noise, fgsm, layer_cka, attribution_spearman when asked
    # Joules the GPU drew per forward pass of the latency batch (NVML), None off CUDA or without NVML.
    energy_j_per_inference_original: float | None = None
    energy_j_per_inference_compressed: float | None = None

    def to_dict(self) -> dict:
        d = asdict(self)
        for name in ENERGY_FIELDS:
            if d[name] is None:
                del d[name]
        return d


@torch.no_grad()
def _outputs(model: nn.Module, data) -> tuple[Tensor, Tensor | None]:
    device = _device(model)
    logits, labels = [], []
    for batch in data:
        x, y = _split(batch)
        logits.append(model(x.to(device)).float().cpu())
        if y is not None:
            labels.append(y.cpu())
    return torch.cat(logits), (torch.cat(labels) if labels else None)


@torch.no_grad()
def _latencies(original: nn.Module, compressed: nn.Module, x: Tensor, repeats: int) -> list[tuple[float, float]]:
    """(median ms, p99 ms) of each model on x, the two taking turns (timing.time_interleaved, turns of
    timing.BLOCK calls, the first untimed), so that a drift in the machine's speed lands on both and their ratio,
    the speed-up, holds still."""
    models = {"original": original, "compressed": compressed}
    inputs = {name: x.to(_device(m)) for name, m in models.items()}
    times = time_interleaved({name: (lambda i, m=m, name=name: m(inputs[name])) for name, m in models.items()},
                             repeats=repeats, warmup=3, device=_device(compressed))
    return [(median_ms(t), percentile_ms(t, 99)) for t in times.values()]


def nvml_energy_reader(device: torch.device) -> Callable[[], float] | None:
    """A function returning the GPU's energy counter in joules (NVML, Volta and newer), or None.

    None when `device` is not CUDA, pynvml (the nvidia-ml-py package) is missing, or
    the GPU has no energy counter. The counter counts everything the GPU draws,
    idle power and other processes' work included.
    """
    if device.type != "cuda":
        return None
    try:
        # torch's own NVML handle: it maps the CUDA index to NVML's through CUDA_VISIBLE_DEVICES.
        handle = torch.cuda._get_pynvml_handler(device)
        import pynvml

        pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)
    except Exception:  # no pynvml, no NVML library, or NOT_SUPPORTED: energy is left out, never an error
        return None
    return lambda: pynvml.nvmlDeviceGetTotalEnergyConsumption(handle) / 1e3  # mJ -> J


@torch.no_grad()
def energy_per_call(fn: Callable[[], object], read_joules: Callable[[], float], device: torch.device | None = None,
                    *, min_calls: int = 10, min_seconds: float = ENERGY_MIN_SECONDS) -> float:
    """Joules per call of fn: the counter's rise over at least min_calls calls and min_seconds, divided by the calls."""
    _sync = (lambda: torch.cuda.synchronize(device)) if device is not None and device.type == "cuda" else (lambda: None)
    fn()  # warm up: the first call may compile or allocate
    _sync()
    calls, e0, t0 = 0, read_joules(), time.perf_counter()
    while calls < min_calls or time.perf_counter() - t0 < min_seconds:
        fn()
        calls += 1
        if calls % min_calls == 0:  # bounds the queue of launches, so the clock sees the GPU's time
            _sync()
    _sync()
    return (read_joules() - e0) / calls


@torch.no_grad()
def _energy(model: nn.Module, x: Tensor) -> float | None:
    device = _device(model)
    read = nvml_energy_reader(device)
    if read is None:
        return None
    x = x.to(device)
    return energy_per_call(lambda: model(x), read, device)


def _extras(original, compressed, data, names: Sequence[str], clamp, max_examples: int) -> dict:
    unknown = sorted(set(names) - set(EXTRAS))
    if unknown:
        raise ValueError(f"evaluate: unknown extras {unknown}; available: {EXTRAS}")
    out = {}
    if "noise" in names:
        out["noise"] = metrics.noise_robustness(original, compressed, data, clamp=clamp, max_examples=max_examples)
    if "fgsm" in names:
        out["fgsm"] = metrics.fgsm_robustness(original, compressed, data, clamp=clamp, max_examples=max_examples)
    if "cka" in names:
        out["layer_cka"] = metrics.layer_cka(original, compressed, data, max_examples=max_examples)
    if "attribution" in names:
        out["attribution_spearman"] = metrics.attribution_agreement(original, compressed, data,
                                                                    max_examples=max_examples)
    return out


def evaluate(original: nn.Module, compressed: nn.Module, data, *, latency: bool = True,
             latency_repeats: int = 30, extras: Sequence[str] = (), clamp: tuple[float, float] | None = None,
             max_examples: int = 512) -> RetentionReport:
    """Compare `compressed` with `original` on `data`.

    data: a re-iterable (a DataLoader or a list) of (inputs, labels) batches or of
    inputs alone (then accuracy, top-5, calibration and per-class figures are None
    and the fidelity figures stay). Output metrics come from one pass of each model.
    Latency is the median (and p99) time of one forward pass on the first batch.
    On a CUDA device with NVML, energy_j_per_inference_* are the joules the GPU drew
    per forward pass of that batch (over at least ENERGY_MIN_SECONDS); elsewhere
    to_dict() leaves them out.
    extras: any of "noise", "fgsm", "cka", "attribution" (each runs the models again
    on up to max_examples inputs; clamp bounds perturbed inputs, e.g. (0, 1) for images).
    """
    with _eval_mode(original, compressed):
        lo, y = _outputs(original, data)
        lc, _ = _outputs(compressed, data)
        if lo.shape != lc.shape:
            raise ValueError(f"evaluate: outputs differ in shape: original {tuple(lo.shape)}, "
                             f"compressed {tuple(lc.shape)}")
        om = metrics.output_metrics(lo, lc, y)
        lat_o = lat_c = (None, None)
        energy_o = energy_c = None
        if latency:
            x0, _ = _split(next(iter(data)))
            lat_o, lat_c = _latencies(original, compressed, x0, latency_repeats)
            energy_o, energy_c = _energy(original, x0), _energy(compressed, x0)
    more = _extras(original, compressed, data, extras, clamp, max_examples) if extras else {}
    so, sc = file_nbytes(original), file_nbytes(compressed)
    return RetentionReport(
        n_examples=lo.shape[0], accuracy_original=om.get("top1_original"),
        accuracy_compressed=om.get("top1_compressed"), agreement=om["agreement"],
        kl_divergence=om["kl_divergence"], js_divergence=om["js_divergence"],
        size_bytes_original=so, size_bytes_compressed=sc, compression_ratio=so / sc,
        latency_ms_original=lat_o[0], latency_ms_compressed=lat_c[0],
        latency_p99_ms_original=lat_o[1], latency_p99_ms_compressed=lat_c[1],
        top5_original=om.get("top5_original"), top5_compressed=om.get("top5_compressed"),
        ece_original=om.get("ece_original"), ece_compressed=om.get("ece_compressed"),
        per_class_drop=({str(c): d for c, d in om["per_class_drop"].items()} if "per_class_drop" in om else None),
        worst_classes=[[c, d] for c, d in om["worst_classes"]] if "worst_classes" in om else None,
        flipped=om["flipped"], extras=more,
        energy_j_per_inference_original=energy_o, energy_j_per_inference_compressed=energy_c,
    )
