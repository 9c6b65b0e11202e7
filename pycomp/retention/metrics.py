"""Retention metrics: what a compressed model kept of the original's behaviour, as plain functions.

Four families, each usable on its own:

- outputs (logits in, numbers out): top-k accuracy, argmax agreement, KL and
  Jensen-Shannon divergence, expected calibration error, per-class accuracy
  and drop, and the examples compression flipped (Hooker et al. 2019);
- robustness (models and data in): accuracy under Gaussian noise and FGSM;
- representations: linear CKA (Kornblith et al. 2019), per layer matched by name;
- attributions and embeddings: gradient x input rank agreement, embedding
  cosine and k-NN agreement for models without labels.

Conventions. Logits are (N, C) float, labels (N,) int64, N examples and C
classes. Divergences use the natural log (nats). Example indices count from 0
in the order `data` yields them. `data` is a re-iterable of (inputs, labels)
batches, or of inputs alone where no labels are needed. Functions that run
models put them in eval mode and restore their previous mode.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# ----------------------------------------------------------------------------- outputs (from logits)


def topk_accuracy(logits: Tensor, labels: Tensor, k: int = 1) -> float:
    """Fraction of rows whose label is among the k largest logits; k above C counts as C.

    logits (N, C) float, labels (N,) int64. Ties among logits are broken by torch.topk.
    """
    k = min(k, logits.shape[-1])
    top = logits.topk(k, dim=-1).indices
    return float((top == labels.unsqueeze(-1)).any(-1).float().mean())


def agreement(lo: Tensor, lc: Tensor) -> float:
    """Fraction of rows where the two models' argmax (top-1) is the same. lo, lc: (N, C) float."""
    return float((lo.argmax(-1) == lc.argmax(-1)).float().mean())


def kl_divergence(lo: Tensor, lc: Tensor) -> float:
    """Mean over rows of KL(p_orig || p_comp) in nats, p = softmax(logits). lo, lc: (N, C) float."""
    log_po, log_pc = F.log_softmax(lo.double(), -1), F.log_softmax(lc.double(), -1)
    return float((log_po.exp() * (log_po - log_pc)).sum(-1).mean())


def js_divergence(lo: Tensor, lc: Tensor) -> float:
    """Mean over rows of the Jensen-Shannon divergence in nats (0 <= JS <= ln 2).

    JS(p, q) = (KL(p || m) + KL(q || m)) / 2 with m = (p + q) / 2; symmetric and
    finite even where one model gives a class (numerically) zero probability.
    lo, lc: (N, C) float logits.
    """
    log_p, log_q = F.log_softmax(lo.double(), -1), F.log_softmax(lc.double(), -1)
    log_m = torch.logaddexp(log_p, log_q) - math.log(2.0)
    kl_pm = (log_p.exp() * (log_p - log_m)).sum(-1)
    kl_qm = (log_q.exp() * (log_q - log_m)).sum(-1)
    return float(((kl_pm + kl_qm) / 2).mean())


def expected_calibration_error(logits: Tensor, labels: Tensor, n_bins: int = 15) -> float:
    """ECE of Guo et al. 2017: sum over bins of |B|/N * |accuracy(B) - mean confidence(B)|.

    Confidence is the largest softmax probability, the prediction its class.
    Bins are n_bins equal-width intervals (m-1)/M < conf <= m/M (closed on the
    right, as in Guo et al.'s code). logits (N, C) float, labels (N,) int64.
    """
    probs = F.softmax(logits.double(), -1)
    conf, pred = probs.max(-1)
    correct = (pred == labels).double()
    uppers = torch.linspace(0, 1, n_bins + 1, dtype=torch.float64, device=conf.device)[1:]
    bins = torch.bucketize(conf, uppers).clamp_max(n_bins - 1)  # clamp: a confidence rounded above 1
    gap = conf.new_zeros(n_bins).index_add_(0, bins, correct - conf)
    return float(gap.abs().sum() / len(conf))  # |B|/N |acc(B) - conf(B)| = |sum over B of (correct - conf)| / N


def per_class_accuracy(logits: Tensor, labels: Tensor) -> dict[int, float]:
    """{class: top-1 accuracy on the rows labelled with it}; classes absent from labels are left out.

    logits (N, C) float, labels (N,) int64.
    """
    correct = (logits.argmax(-1) == labels).float()
    return {int(c): float(correct[labels == c].mean()) for c in labels.unique()}


def per_class_drop(lo: Tensor, lc: Tensor, labels: Tensor) -> dict[int, float]:
    """{class: accuracy_original - accuracy_compressed}; positive means compression hurt it.

    lo, lc (N, C) float, labels (N,) int64.
    """
    ao, ac = per_class_accuracy(lo, labels), per_class_accuracy(lc, labels)
    return {c: ao[c] - ac[c] for c in ao}


def worst_classes(lo: Tensor, lc: Tensor, labels: Tensor, n: int = 5) -> list[tuple[int, float]]:
    """The n classes with the largest accuracy drop, as (class, drop), largest first (ties: lower class first)."""
    drops = per_class_drop(lo, lc, labels)
    return sorted(drops.items(), key=lambda cd: (-cd[1], cd[0]))[:n]


def flipped_examples(lo: Tensor, lc: Tensor, labels: Tensor | None = None) -> dict[str, list[int]]:
    """Indices of the examples compression changed (Hooker et al. 2019, "What do compressed DNNs forget?").

    Returns {"disagree": rows where the top-1 classes differ}, plus, with labels,
    "right_to_wrong" (original right, compressed wrong) and "wrong_to_right"
    (the reverse). lo, lc (N, C) float, labels (N,) int64 or None.
    """
    po, pc = lo.argmax(-1), lc.argmax(-1)
    out = {"disagree": (po != pc).nonzero().flatten().tolist()}
    if labels is not None:
        ro, rc = po == labels, pc == labels
        out["right_to_wrong"] = (ro & ~rc).nonzero().flatten().tolist()
        out["wrong_to_right"] = (~ro & rc).nonzero().flatten().tolist()
    return out


def output_metrics(lo: Tensor, lc: Tensor, labels: Tensor | None = None, *, topk: Sequence[int] = (1, 5),
                   n_bins: int = 15, n_worst: int = 5) -> dict:
    """Every output metric above in one dict, from logits already computed (cheap: no model runs).

    Keys: agreement, kl_divergence, js_divergence, flipped; with labels also
    top{k}_original / top{k}_compressed for each k in topk, ece_original,
    ece_compressed, per_class_drop and worst_classes.
    lo, lc (N, C) float, labels (N,) int64 or None.
    """
    out = {"agreement": agreement(lo, lc), "kl_divergence": kl_divergence(lo, lc),
           "js_divergence": js_divergence(lo, lc), "flipped": flipped_examples(lo, lc, labels)}
    if labels is not None:
        for k in topk:
            out[f"top{k}_original"] = topk_accuracy(lo, labels, k)
            out[f"top{k}_compressed"] = topk_accuracy(lc, labels, k)
        out["ece_original"] = expected_calibration_error(lo, labels, n_bins)
        out["ece_compressed"] = expected_calibration_error(lc, labels, n_bins)
        out["per_class_drop"] = per_class_drop(lo, lc, labels)
        out["worst_classes"] = worst_classes(lo, lc, labels, n_worst)
    return out


# ----------------------------------------------------------------------------- running models


def _split(batch) -> tuple[Tensor, Tensor | None]:
    if isinstance(batch, (tuple, list)):
        return batch[0], (batch[1] if len(batch) > 1 else None)
    return batch, None


def _take(data: Iterable, max_examples: int | None) -> Iterator[tuple[Tensor, Tensor | None]]:
    """(inputs, labels or None) batches from data, cut so that at most max_examples come out."""
    left = math.inf if max_examples is None else max_examples
    for batch in data:
        if left <= 0:
            return
        x, y = _split(batch)
        n = min(len(x), left)
        yield x[:n], (None if y is None else y[:n])
        left -= n


def _labelled(data: Iterable, max_examples: int | None, who: str) -> Iterator[tuple[Tensor, Tensor]]:
    for x, y in _take(data, max_examples):
        if y is None:
            raise ValueError(f"{who}: needs (inputs, labels) batches; data yielded inputs alone")
        yield x, y


def _device(model: nn.Module) -> torch.device:
    for t in (*model.parameters(), *model.buffers()):
        return t.device
    return torch.device("cpu")


@contextmanager
def _eval_mode(*models: nn.Module):
    was = [m.training for m in models]
    for m in models:
        m.eval()
    try:
        yield
    finally:
        for m, w in zip(models, was):
            m.train(w)


# ----------------------------------------------------------------------------- robustness (models + data)


def noise_robustness(original: nn.Module, compressed: nn.Module, data,
                     sigmas: Sequence[float] = (0.0, 0.05, 0.1, 0.2), *, seed: int = 0,
                     clamp: tuple[float, float] | None = None, max_examples: int | None = None) -> list[dict]:
    """Accuracy of both models on inputs + sigma * N(0, 1) noise, for each sigma.

    The noise comes from a CPU generator seeded with `seed` afresh for each model
    and each sigma, so both models see exactly the same noisy inputs, reruns give
    the same numbers, and every sigma scales the same standard-normal draw.
    clamp: (low, high) range the noisy inputs are clipped to (digits: (0, 1)).
    data: (inputs, labels) batches; inputs float (B, ...), labels (B,) int64.
    Returns [{"sigma", "accuracy_original", "accuracy_compressed"}, ...] in sigmas' order.
    """
    def accuracy(model: nn.Module, sigma: float) -> float:
        gen = torch.Generator().manual_seed(seed)
        device, correct, total = _device(model), 0, 0
        for x, y in _labelled(data, max_examples, "noise_robustness"):
            noise = torch.randn(x.shape, generator=gen, dtype=x.dtype).to(x.device)
            xn = x + sigma * noise
            if clamp is not None:
                xn = xn.clamp(*clamp)
            correct += int((model(xn.to(device)).argmax(-1).cpu() == y.cpu()).sum())
            total += len(y)
        return correct / total

    with _eval_mode(original, compressed), torch.no_grad():
        return [{"sigma": float(s), "accuracy_original": accuracy(original, s),
                 "accuracy_compressed": accuracy(compressed, s)} for s in sigmas]


def fgsm_robustness(original: nn.Module, compressed: nn.Module, data,
                    epsilons: Sequence[float] = (0.0, 0.01, 0.03, 0.1), *, clamp: tuple[float, float] | None = None,
                    max_examples: int | None = None) -> list[dict]:
    """Accuracy of both models under FGSM (Goodfellow et al. 2015), for each epsilon.

    x_adv = clamp(x + eps * sign(d CE(model(x), y) / dx)): each model is attacked
    with its own gradient (white-box), so this measures how attackable each one
    is. pycomp's compressed layers pass gradients straight through their
    quantizers, so the compressed model's gradient exists. The gradient is taken
    once per batch and reused for every epsilon.
    data: (inputs, labels) batches; inputs float (B, ...), labels (B,) int64.
    Returns [{"epsilon", "accuracy_original", "accuracy_compressed"}, ...] in epsilons' order.
    """
    def accuracies(model: nn.Module) -> list[float]:
        device, correct, total = _device(model), [0] * len(epsilons), 0
        for x, y in _labelled(data, max_examples, "fgsm_robustness"):
            x, y = x.to(device).detach().requires_grad_(True), y.to(device)
            with torch.enable_grad():
                # summed, not averaged: the sign is the same and tiny per-example gradients do not underflow
                loss = F.cross_entropy(model(x).float(), y, reduction="sum")
                (grad,) = torch.autograd.grad(loss, x)
            step = grad.sign()
            with torch.no_grad():
                for i, eps in enumerate(epsilons):
                    xa = x.detach() + eps * step
                    if clamp is not None:
                        xa = xa.clamp(*clamp)
                    correct[i] += int((model(xa).argmax(-1) == y).sum())
            total += len(y)
        return [c / total for c in correct]

    with _eval_mode(original, compressed):
        ao, ac = accuracies(original), accuracies(compressed)
    return [{"epsilon": float(e), "accuracy_original": a, "accuracy_compressed": b}
            for e, a, b in zip(epsilons, ao, ac)]


# ----------------------------------------------------------------------------- representation similarity


def linear_cka(x: Tensor, y: Tensor) -> float:
    """Linear CKA (Kornblith et al. 2019) between x (N, D1) and y (N, D2) float, rows = the same examples.

    CKA = ||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F) with column-centred Xc,
    Yc; in [0, 1], invariant to orthogonal maps and isotropic scaling of either
    side. Computed in float64, through (D, D) products or, when N <= max(D1, D2),
    the equal (N, N) Gram form. NaN when either side is constant across rows.
    """
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"linear_cka: x and y need the same rows (examples), got {x.shape[0]} and {y.shape[0]}")
    x = x.double().flatten(1)
    y = y.double().flatten(1)
    x, y = x - x.mean(0), y - y.mean(0)
    if x.shape[0] <= max(x.shape[1], y.shape[1]):
        k, l = x @ x.T, y @ y.T  # (N, N) Grams: ||Y^T X||_F^2 = <XX^T, YY^T>_F
        cross, xx, yy = (k * l).sum(), k.norm(), l.norm()
    else:
        cross, xx, yy = (y.T @ x).square().sum(), (x.T @ x).norm(), (y.T @ y).norm()
    denom = xx * yy
    return float(cross / denom) if denom > 0 else math.nan


def _first_tensor(out) -> Tensor | None:
    if isinstance(out, Tensor):
        return out
    if isinstance(out, (tuple, list)):
        return next((t for t in out if isinstance(t, Tensor)), None)
    return None


def matched_layers(original: nn.Module, compressed: nn.Module) -> list[str]:
    """Names of the original's leaf modules that the compressed model also has (in the original's order)."""
    theirs = {n for n, _ in compressed.named_modules()}
    return [n for n, m in original.named_modules() if n and n in theirs and next(m.children(), None) is None]


def _activations(model: nn.Module, names: Sequence[str], inputs: list[Tensor]) -> dict[str, Tensor]:
    """{name: (N, features) float32 CPU}: each named module's outputs on inputs, flattened per example.

    A module called several times in one forward (a shared ReLU) gives all its
    outputs side by side along the features; one that never ran is left out.
    """
    calls: dict[str, list[Tensor]] = {n: [] for n in names}
    batches: dict[str, list[Tensor]] = {n: [] for n in names}

    def hook(name):
        def record(module, args, out):
            t = _first_tensor(out)
            if t is None:
                raise TypeError(f"layer_cka: module {name!r} returned {type(out).__name__}, not a tensor")
            calls[name].append(t.detach().reshape(t.shape[0], -1).float().cpu())
        return record

    modules = dict(model.named_modules())
    handles = [modules[n].register_forward_hook(hook(n)) for n in names]
    device = _device(model)
    try:
        with torch.no_grad():
            for x in inputs:
                model(x.to(device))
                for n in names:
                    if calls[n]:
                        batches[n].append(torch.cat(calls[n], 1))
                        calls[n].clear()
    finally:
        for h in handles:
            h.remove()
    return {n: torch.cat(b) for n, b in batches.items() if b}


def layer_cka(original: nn.Module, compressed: nn.Module, data, layers: Sequence[str] | None = None,
              *, max_examples: int = 512) -> dict[str, float]:
    """{layer name: linear CKA between the two models' outputs of that layer} on the first max_examples inputs.

    Compression replaces modules in place, so layers are matched by name.
    layers: module names to compare; default matched_layers(original, compressed),
    less those that did not run in both forward passes (a named one must run).
    Outputs (the first tensor of a tuple) must have the batch first; each is
    flattened to (N, features) and kept on the CPU in float32:
    memory is about 4 * max_examples * features bytes per layer per model.
    data: batches of inputs, or of (inputs, labels) (labels unused).
    """
    names = matched_layers(original, compressed) if layers is None else list(layers)
    for model, which in ((original, "original"), (compressed, "compressed")):
        missing = sorted(set(names) - {n for n, _ in model.named_modules()})
        if missing:
            raise ValueError(f"layer_cka: the {which} model has no module named {missing}")
    inputs = [x for x, _ in _take(data, max_examples)]
    with _eval_mode(original, compressed):
        ao, ac = _activations(original, names, inputs), _activations(compressed, names, inputs)
    ran = [n for n in names if n in ao and n in ac]
    if layers is not None and len(ran) < len(names):
        idle = [n for n in names if n not in ran]
        raise ValueError(f"layer_cka: module(s) {idle} did not run in both models' forward pass")
    return {n: linear_cka(ao[n], ac[n]) for n in ran}


# ----------------------------------------------------------------------------- attribution agreement


def saliency(model: nn.Module, x: Tensor, target: Tensor) -> Tensor:
    """Gradient x input of logit[target] per example: x (B, ...) float, target (B,) int64 -> (B, ...) float32.

    One backward pass over the summed target logits gives every example's own
    gradient, which holds when examples do not interact (eval mode: no batch
    statistics). The model's parameter .grad is left untouched.
    """
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = model(x)
        picked = logits.gather(-1, target.to(logits.device).unsqueeze(-1)).sum()
        (grad,) = torch.autograd.grad(picked, x)
    return (grad * x).detach().float()


def _ranks(a: Tensor) -> Tensor:
    """Ranks along the last dimension of a (B, D), 0-based; ties get the average of their ranks."""
    values, order = a.sort(-1)
    starts = torch.ones_like(values, dtype=torch.bool)
    starts[:, 1:] = values[:, 1:] != values[:, :-1]
    group = starts.long().cumsum(-1) - 1  # tie group of each sorted position, numbered per row
    pos = torch.arange(a.shape[-1], dtype=torch.float64, device=a.device).expand(a.shape).contiguous()
    total = torch.zeros_like(pos).scatter_add_(-1, group, pos)
    count = torch.zeros_like(pos).scatter_add_(-1, group, torch.ones_like(pos))
    mean_rank = (total / count.clamp_min(1)).gather(-1, group)  # unused group slots have count 0
    return torch.empty_like(mean_rank).scatter_(-1, order, mean_rank)


def spearman(a: Tensor, b: Tensor) -> Tensor:
    """Spearman rank correlation per row: a, b (B, ...) -> (B,) float64, features = everything after dim 0.

    Ties get average ranks (so this equals scipy.stats.spearmanr); a row where
    either side is constant has no rank correlation and gives NaN.
    """
    ra, rb = _ranks(a.flatten(1).double()), _ranks(b.flatten(1).double())
    ra, rb = ra - ra.mean(-1, keepdim=True), rb - rb.mean(-1, keepdim=True)
    return (ra * rb).sum(-1) / (ra.norm(dim=-1) * rb.norm(dim=-1))


def attribution_agreement(original: nn.Module, compressed: nn.Module, data, *, max_examples: int = 512) -> float:
    """Mean Spearman correlation between the two models' gradient x input maps, per example.

    Both maps explain the same class: the original model's top-1 prediction.
    Examples where either map is constant (e.g. an all-zero input) are left out;
    NaN if none is left. data: batches of inputs, or of (inputs, labels) (labels unused).
    """
    rhos = []
    with _eval_mode(original, compressed):
        for x, _ in _take(data, max_examples):
            xo, xc = x.to(_device(original)), x.to(_device(compressed))
            with torch.no_grad():
                target = original(xo).argmax(-1)
            so, sc = saliency(original, xo, target), saliency(compressed, xc, target)
            rhos.append(spearman(so.cpu(), sc.cpu()))
    rho = torch.cat(rhos)
    rho = rho[~rho.isnan()]
    return float(rho.mean()) if len(rho) else math.nan


# ----------------------------------------------------------------------------- embedding fidelity (no labels)


def embedding_cosine(eo: Tensor, ec: Tensor) -> float:
    """Mean cosine similarity between matching rows of eo and ec, both (N, D) float."""
    if eo.shape != ec.shape:
        raise ValueError(f"embedding_cosine: shapes differ: {tuple(eo.shape)} and {tuple(ec.shape)}")
    return float(F.cosine_similarity(eo.double(), ec.double(), dim=-1).mean())


def _neighbours(e: Tensor, rows: slice, k: int) -> Tensor:
    """Indices (rows, k) of the k most cosine-similar other rows of e (N, D) for e[rows]."""
    sim = e[rows] @ e.T
    idx = torch.arange(rows.start, rows.stop, device=e.device)
    sim[idx - rows.start, idx] = -math.inf  # a point is not its own neighbour
    return sim.topk(k, dim=-1).indices


def knn_agreement(eo: Tensor, ec: Tensor, k: int = 10, *, chunk: int = 1024) -> float:
    """Mean over examples of |kNN_orig(i) & kNN_comp(i)| / k, neighbours by cosine among the other examples.

    eo (N, D1), ec (N, D2) float: the same N examples under the two models (the
    widths may differ). k above N - 1 counts as N - 1 (then the answer is 1).
    Equal similarities are ordered by torch.topk. Memory: chunk * N float64 at a time.
    """
    n = eo.shape[0]
    if ec.shape[0] != n:
        raise ValueError(f"knn_agreement: eo and ec need the same rows (examples), got {n} and {ec.shape[0]}")
    if n < 2:
        raise ValueError(f"knn_agreement: needs at least 2 examples, got {n}")
    k = min(k, n - 1)
    eo, ec = F.normalize(eo.double(), dim=-1), F.normalize(ec.double(), dim=-1)
    overlap = 0
    for start in range(0, n, chunk):
        rows = slice(start, min(start + chunk, n))
        no, nc = _neighbours(eo, rows, k), _neighbours(ec, rows, k)
        is_no = torch.zeros(no.shape[0], n, dtype=torch.bool, device=no.device).scatter_(1, no, True)
        overlap += int(is_no.gather(1, nc).sum())
    return overlap / (n * k)


def embedding_fidelity(eo: Tensor, ec: Tensor, k: int = 10) -> dict:
    """{"cosine": embedding_cosine, "knn_agreement": knn_agreement, "k": k used}; eo, ec (N, D) float."""
    return {"cosine": embedding_cosine(eo, ec), "knn_agreement": knn_agreement(eo, ec, k),
            "k": min(k, eo.shape[0] - 1)}
