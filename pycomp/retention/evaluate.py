"""`pycomp.retention.evaluate`: how much of the original model's behaviour the compressed one kept."""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pycomp.benchmark.timing import median_ms, percentile_ms, time_calls


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

    def to_dict(self) -> dict:
        return asdict(self)


def _split(batch) -> tuple[Tensor, Tensor | None]:
    if isinstance(batch, (tuple, list)):
        return batch[0], (batch[1] if len(batch) > 1 else None)
    return batch, None


def _device(model: nn.Module) -> torch.device:
    for t in (*model.parameters(), *model.buffers()):
        return t.device
    return torch.device("cpu")


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
def _latency(model: nn.Module, x: Tensor, repeats: int) -> tuple[float, float]:
    device = _device(model)
    x = x.to(device)
    times = time_calls(lambda i: model(x), repeats=repeats, warmup=3, device=device)
    return median_ms(times), percentile_ms(times, 99)


def evaluate(original: nn.Module, compressed: nn.Module, data, *, latency: bool = True,
             latency_repeats: int = 30) -> RetentionReport:
    """Compare `compressed` with `original` on `data`.

    data: an iterable (re-iterable, e.g. a DataLoader or a list) of (inputs, labels)
    batches or of inputs alone (then accuracy is None and the fidelity figures stay).
    Latency is the median (and p99) time of one forward pass on the first batch.
    """
    was = original.training, compressed.training
    original.eval(), compressed.eval()
    try:
        lo, y = _outputs(original, data)
        lc, _ = _outputs(compressed, data)
        if lo.shape != lc.shape:
            raise ValueError(f"evaluate: outputs differ in shape: original {tuple(lo.shape)}, compressed {tuple(lc.shape)}")
        po, pc = lo.argmax(-1), lc.argmax(-1)
        acc = (lambda p: float((p == y).float().mean())) if y is not None else (lambda p: None)
        kl = F.kl_div(F.log_softmax(lc, -1), F.log_softmax(lo, -1), log_target=True, reduction="batchmean")
        lat_o = lat_c = (None, None)
        if latency:
            x0, _ = _split(next(iter(data)))
            lat_o, lat_c = _latency(original, x0, latency_repeats), _latency(compressed, x0, latency_repeats)
        so, sc = model_nbytes(original), model_nbytes(compressed)
        return RetentionReport(
            n_examples=lo.shape[0], accuracy_original=acc(po), accuracy_compressed=acc(pc),
            agreement=float((po == pc).float().mean()), kl_divergence=float(kl),
            size_bytes_original=so, size_bytes_compressed=sc, compression_ratio=so / sc,
            latency_ms_original=lat_o[0], latency_ms_compressed=lat_c[0],
            latency_p99_ms_original=lat_o[1], latency_p99_ms_compressed=lat_c[1],
        )
    finally:
        original.train(was[0]), compressed.train(was[1])
