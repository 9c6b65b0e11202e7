"""`Distiller(teacher, student, ...)`: train a (compressed or smaller) student to mimic a teacher.

    d = Distiller(teacher, student, temperature=4, alpha=0.9, features={"conv2": "conv2"}, attention=["conv2"])
    student = d.fit(train_batches, val_batches, epochs=20)    # best student on validation, restored

The student may be any trainable module: a smaller architecture, a LowRankLinear/LowRankConv2d model
(its factors are parameters), a quantization-aware model (fake-quant modules train through their STE),
or a pruned model (pass its masks: they stay applied through training). Layers holding only packed
buffers (Int8Linear, Int4Linear) have nothing to train and stay as they are.
"""
from __future__ import annotations

import copy
import math
from collections.abc import Iterable, Mapping, Sequence

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from pycomp.distill.losses import attention_loss, attention_prob_loss, feature_loss, kd_loss
from pycomp.prune.mask import keep_masks
from pycomp.retention.metrics import agreement, topk_accuracy

METRICS = ("agreement", "accuracy")


def _pairs(spec, what: str) -> dict[str, str]:
    """{student layer: teacher layer} from a mapping, or a list of names the two models share."""
    if spec is None:
        return {}
    if isinstance(spec, str):
        spec = [spec]
    pairs = dict(spec) if isinstance(spec, Mapping) else {name: name for name in spec}
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in pairs.items()):
        raise TypeError(f"Distiller: {what} must map student layer names to teacher layer names, got {spec!r}")
    return pairs


def _first_tensor(out) -> Tensor:
    if isinstance(out, Tensor):
        return out
    if isinstance(out, (tuple, list)):
        for item in out:
            if isinstance(item, Tensor):
                return item
    raise TypeError(f"output of type {type(out).__name__} holds no tensor")


def _split(batch) -> tuple[Tensor, Tensor | None]:
    if isinstance(batch, (tuple, list)):
        return batch[0], (batch[1] if len(batch) > 1 else None)
    return batch, None


class _Taps:
    """Forward hooks keeping the outputs of named modules of one model, for the current forward."""

    def __init__(self, model: nn.Module, names: Iterable[str], who: str):
        self.out: dict[str, Tensor] = {}
        self.handles = []
        for name in dict.fromkeys(names):
            try:
                module = model.get_submodule(name)
            except AttributeError:
                raise ValueError(f"Distiller: the {who} has no module '{name}'") from None
            self.handles.append(module.register_forward_hook(self._hook(name, who)))

    def _hook(self, name: str, who: str):
        def keep(mod, args, out):
            try:
                self.out[name] = _first_tensor(out)
            except TypeError as e:
                raise TypeError(f"Distiller: {who} module '{name}': {e}") from None
        return keep

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


def _adapter(s: Tensor, t: Tensor, where: str) -> nn.Module:
    """Identity when the widths match, else a learned 1x1 conv (B, C, H, W) or linear (..., D) on the student."""
    if s.shape == t.shape:
        return nn.Identity()
    same_rest = s.dim() == t.dim() and (s.shape[:1] + s.shape[2:] == t.shape[:1] + t.shape[2:] if s.dim() == 4
                                        else s.shape[:-1] == t.shape[:-1])
    if not same_rest:
        raise ValueError(f"{where}: student features {tuple(s.shape)} and teacher features {tuple(t.shape)} differ "
                         "in more than their width (channels, or the last dimension); match layers of one size")
    if s.dim() == 4:
        return nn.Conv2d(s.shape[1], t.shape[1], 1, bias=False)
    return nn.Linear(s.shape[-1], t.shape[-1], bias=False)


class Distiller:
    """Teacher-student training with soft targets, feature matching and attention transfer.

    temperature, alpha: the soft-target loss kd_loss (alpha=0: labels only, the teacher unused by the loss).
    features: {student layer: teacher layer} (or names both share) whose outputs are matched by MSE,
        through a learned 1x1 conv / linear adapter where the widths differ; weighted by feature_weight.
    attention: layer pairs of CNN feature maps whose spatial attention maps are matched (Zagoruyko &
        Komodakis 2017), weighted by attention_beta / 2 (beta = 1000 in the paper).
    attention_probs: layer pairs of transformer attention modules whose output (or its first tensor) is
        the attention probabilities (B, heads, L, L); matched by KL, weighted by attention_probs_weight.
        Modules that do not return their probabilities cannot be tapped: use attention= on CNNs only.
    masks: {student layer: bool mask} of a pruned student, kept applied while training.
    """

    def __init__(self, teacher: nn.Module, student: nn.Module, *, temperature: float = 4.0, alpha: float = 0.9,
                 features=None, feature_weight: float = 1.0, attention=None, attention_beta: float = 1000.0,
                 attention_probs=None, attention_probs_weight: float = 1.0,
                 masks: Mapping[str, Tensor] | None = None):
        if temperature <= 0 or not 0 <= alpha <= 1:
            raise ValueError(f"Distiller: need temperature > 0 and alpha in [0, 1], got {temperature}, {alpha}")
        self.teacher, self.student = teacher, student
        self.temperature, self.alpha = temperature, alpha
        self.features, self.attention = _pairs(features, "features"), _pairs(attention, "attention")
        self.attention_probs = _pairs(attention_probs, "attention_probs")
        self.feature_weight, self.attention_beta = feature_weight, attention_beta
        self.attention_probs_weight = attention_probs_weight
        self.masks = dict(masks) if masks else {}
        self.adapters = nn.ModuleDict()
        self.history: list[dict] = []
        self._taps: tuple[_Taps, _Taps] | None = None
        self._attach()  # now, so that a wrong layer name fails here
        self.close()

    def _attach(self) -> tuple[_Taps, _Taps]:
        if self._taps is None:
            tapped = (self.features, self.attention, self.attention_probs)
            student = _Taps(self.student, [s for p in tapped for s in p], "student")
            try:
                teacher = _Taps(self.teacher, [t for p in tapped for t in p.values()], "teacher")
            except ValueError:
                student.remove()
                raise
            self._taps = (student, teacher)
        return self._taps

    def close(self) -> None:
        """Remove the forward hooks from both models (loss() puts them back; fit removes them when it ends)."""
        if self._taps is not None:
            for taps in self._taps:
                taps.remove()
            self._taps = None

    def _device(self) -> torch.device:
        return next((t.device for t in (*self.student.parameters(), *self.student.buffers())), torch.device("cpu"))

    def loss(self, x: Tensor, labels: Tensor | None = None) -> tuple[Tensor, dict[str, float]]:
        """(total loss, {part: value}) for one batch; the teacher runs in eval mode without gradients."""
        student_taps, teacher_taps = self._attach()
        self.teacher.eval()
        with torch.no_grad():
            teacher_logits = self.teacher(x)
        student_logits = self.student(x)
        total = kd_loss(student_logits, teacher_logits, labels, temperature=self.temperature, alpha=self.alpha)
        parts = {"kd": float(total.detach())}
        s_out, t_out = student_taps.out, teacher_taps.out
        if self.features:
            fl = sum(feature_loss(self._adapt(s, t, s_out[s], t_out[t]), t_out[t], f"features '{s}'<-'{t}'")
                     for s, t in self.features.items())
            parts["features"] = float(fl.detach())
            total = total + self.feature_weight * fl
        if self.attention:
            al = sum(attention_loss(s_out[s], t_out[t], where=f"attention '{s}'<-'{t}'")
                     for s, t in self.attention.items())
            parts["attention"] = float(al.detach())
            total = total + self.attention_beta / 2 * al
        if self.attention_probs:
            pl = sum(attention_prob_loss(s_out[s], t_out[t], f"attention_probs '{s}'<-'{t}'")
                     for s, t in self.attention_probs.items())
            parts["attention_probs"] = float(pl.detach())
            total = total + self.attention_probs_weight * pl
        return total, parts

    def _adapt(self, s: str, t: str, sf: Tensor, tf: Tensor) -> Tensor:
        key = s.replace(".", "/")  # ModuleDict keys may not hold dots
        if key not in self.adapters:
            self.adapters[key] = _adapter(sf, tf, f"features '{s}'<-'{t}'").to(sf.device, sf.dtype)
        return self.adapters[key](sf)

    @torch.no_grad()
    def evaluate(self, data, metric: str = "agreement") -> float:
        """Student agreement with the teacher (top-1) or student accuracy on `data`, batches of (inputs, labels)."""
        if metric not in METRICS:
            raise ValueError(f"Distiller: metric must be one of {METRICS}, got {metric!r}")
        was = self.student.training
        self.student.eval()
        self.teacher.eval()
        device = self._device()
        try:
            lt, ls, ys = [], [], []
            for batch in data:
                x, y = _split(batch)
                x = x.to(device)
                ls.append(self.student(x))
                if metric == "agreement":
                    lt.append(self.teacher(x))
                elif y is None:
                    raise ValueError("Distiller: metric='accuracy' needs (inputs, labels) batches")
                else:
                    ys.append(y.to(device))
        finally:
            self.student.train(was)
        if not ls:
            raise ValueError("Distiller: the validation data holds no batch")
        if metric == "agreement":
            return agreement(torch.cat(lt), torch.cat(ls))
        return topk_accuracy(torch.cat(ls), torch.cat(ys))

    def fit(self, train, val=None, *, epochs: int = 10, lr: float = 1e-3, weight_decay: float = 0.0,
            metric: str = "agreement", patience: int | None = 5, seed: int = 0, cosine: bool = True,
            progress: bool | None = None) -> nn.Module:
        """Train the student on `train` (a re-iterable of (inputs, labels) or inputs) with Adam; returns it.

        val: batches for early stopping on `metric` ("agreement" with the teacher, or "accuracy"), checked
        before training and after each epoch; the best student (first of equals, the starting one
        included) is restored at the end, and training stops
        after `patience` epochs without improvement (None: never early). Without val, the last student.
        seed fixes the initialization of adapters and the batch order (a list of batches is shuffled per epoch).
        cosine: cosine learning-rate decay over `epochs`. progress: a tqdm bar (None: on a terminal only).
        The forward hooks on both models are removed at the end.
        """
        if metric not in METRICS:
            raise ValueError(f"Distiller: metric must be one of {METRICS}, got {metric!r}")
        torch.manual_seed(seed)
        device = self._device()
        batches = train if isinstance(train, Sequence) else list(train)
        if not batches:
            raise ValueError("Distiller: the training data holds no batch")
        self.student.eval()  # eval: the probe below must not move batch-norm statistics
        with torch.no_grad():  # one forward builds the adapters, so the optimizer sees their parameters
            x, y = _split(batches[0])
            self.loss(x.to(device), None if y is None else y.to(device))
        params = [p for p in (*self.student.parameters(), *self.adapters.parameters()) if p.requires_grad]
        if not any(p.requires_grad for p in self.student.parameters()):
            raise ValueError("Distiller: the student has no trainable parameter (packed int8/int4 layers hold "
                             "buffers only); distill before quantizing, or use quantization-aware layers")
        opt = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs) if cosine else None
        keeper = keep_masks(self.student, self.masks, opt) if self.masks else None
        best, best_state, waited = -math.inf, None, 0
        if val is not None:  # the starting student is a candidate too: fine-tuning never ends worse on val
            best, best_state = self.evaluate(val, metric), copy.deepcopy(self.student.state_dict())
        bar = tqdm(range(epochs), desc="distill", disable=None if progress is None else not progress)
        try:
            for epoch in bar:
                self.student.train()
                order = torch.randperm(len(batches), generator=torch.Generator().manual_seed(seed * 1000 + epoch))
                total = 0.0
                for i in order.tolist():
                    x, y = _split(batches[i])
                    opt.zero_grad()
                    loss, _ = self.loss(x.to(device), None if y is None else y.to(device))
                    loss.backward()
                    opt.step()
                    total += float(loss.detach())
                if sched is not None:
                    sched.step()
                record = {"epoch": epoch, "loss": total / len(batches)}
                if val is not None:
                    score = record[metric] = self.evaluate(val, metric)
                    if score > best:
                        best, best_state, waited = score, copy.deepcopy(self.student.state_dict()), 0
                    else:
                        waited += 1
                self.history.append(record)
                bar.set_postfix({k: round(v, 4) for k, v in record.items() if k != "epoch"})
                if patience is not None and val is not None and waited >= patience:
                    break
        finally:
            bar.close()
            if keeper is not None:
                keeper.remove()
            self.close()
        if best_state is not None:
            self.student.load_state_dict(best_state)
        return self.student.eval()
