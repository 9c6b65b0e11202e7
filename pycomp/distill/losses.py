"""Distillation losses: soft targets (Hinton et al. 2015), feature matching (FitNets, Romero et al. 2015),
spatial attention transfer (Zagoruyko & Komodakis 2017), and attention-probability matching for
transformers whose attention modules return their probabilities (TinyBERT-style KL)."""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def kd_loss(student_logits: Tensor, teacher_logits: Tensor, labels: Tensor | None = None, *,
            temperature: float = 4.0, alpha: float = 0.9) -> Tensor:
    """alpha * T^2 * KL(softmax(t / T) || softmax(s / T)) + (1 - alpha) * cross_entropy(s, labels).

    logits (N, C) float, labels (N,) int64 (needed unless alpha == 1). The KL is averaged over rows;
    the T^2 keeps the soft term's gradients the size of the hard term's as T changes (Hinton et al.).
    """
    if temperature <= 0:
        raise ValueError(f"kd_loss: temperature must be positive, got {temperature}")
    if not 0 <= alpha <= 1:
        raise ValueError(f"kd_loss: alpha must be in [0, 1], got {alpha}")
    loss = student_logits.new_zeros(())
    if alpha > 0:
        log_s = F.log_softmax(student_logits / temperature, -1)
        log_t = F.log_softmax(teacher_logits.detach() / temperature, -1)
        soft = F.kl_div(log_s, log_t, reduction="batchmean", log_target=True)
        loss = loss + alpha * temperature ** 2 * soft
    if alpha < 1:
        if labels is None:
            raise ValueError("kd_loss: alpha < 1 mixes in the hard-label loss, which needs labels")
        loss = loss + (1 - alpha) * F.cross_entropy(student_logits, labels)
    return loss


def attention_map(features: Tensor, p: int = 2) -> Tensor:
    """Spatial attention of a CNN feature map (Zagoruyko & Komodakis 2017): features (B, C, H, W) ->
    (B, H * W), the channel mean of |f|^p at each position, scaled to unit L2 norm per example."""
    if features.dim() != 4:
        raise ValueError(f"attention_map: expected a (B, C, H, W) feature map, got shape {tuple(features.shape)}")
    return F.normalize(features.abs().pow(p).mean(1).flatten(1), dim=1)


def attention_loss(student_features: Tensor, teacher_features: Tensor, p: int = 2, where: str = "attention") -> Tensor:
    """Mean squared difference of the two attention maps; the channel counts may differ, the H x W may not."""
    if student_features.shape[-2:] != teacher_features.shape[-2:]:
        raise ValueError(f"{where}: attention maps need the same spatial size, student "
                         f"{tuple(student_features.shape)} vs teacher {tuple(teacher_features.shape)}")
    return (attention_map(student_features, p) - attention_map(teacher_features.detach(), p)).pow(2).mean()


def attention_prob_loss(student_probs: Tensor, teacher_probs: Tensor, where: str = "attention probs") -> Tensor:
    """KL(teacher || student) between attention probabilities (B, heads, L, L) (rows sum to 1), averaged
    over batch, heads and query rows. When the head counts differ, each side's heads are averaged first."""
    if student_probs.dim() != 4 or student_probs.shape[-2:] != teacher_probs.shape[-2:] \
            or student_probs.shape[0] != teacher_probs.shape[0]:
        raise ValueError(f"{where}: expected (B, heads, L, L) probabilities of one B and L, student "
                         f"{tuple(student_probs.shape)} vs teacher {tuple(teacher_probs.shape)}")
    s, t = student_probs, teacher_probs.detach()
    if s.shape[1] != t.shape[1]:
        s, t = s.mean(1, keepdim=True), t.mean(1, keepdim=True)
    eps = 1e-12
    return (t * (t.clamp_min(eps).log() - s.clamp_min(eps).log())).sum(-1).mean()


def feature_loss(student_features: Tensor, teacher_features: Tensor, where: str = "features") -> Tensor:
    """Mean squared error between (adapted) student features and the teacher's, which must share a shape."""
    if student_features.shape != teacher_features.shape:
        raise ValueError(f"{where}: student features {tuple(student_features.shape)} do not match the teacher's "
                         f"{tuple(teacher_features.shape)} (after the adapter)")
    return F.mse_loss(student_features, teacher_features.detach())
