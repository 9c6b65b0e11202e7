"""Retention: how much of a model's knowledge survives compression, and at what cost."""
from pycomp.retention.evaluate import RetentionReport, evaluate, model_nbytes

__all__ = ["RetentionReport", "evaluate", "model_nbytes"]
