"""Knowledge distillation: soft targets, feature matching with learned adapters, attention transfer."""
from pycomp.distill.distiller import Distiller
from pycomp.distill.losses import attention_loss, attention_map, attention_prob_loss, feature_loss, kd_loss

__all__ = ["Distiller", "attention_loss", "attention_map", "attention_prob_loss", "feature_loss", "kd_loss"]
