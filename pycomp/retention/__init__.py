"""Retention: how much of a model's knowledge survives compression, and at what cost."""
from pycomp.retention import metrics
from pycomp.retention.evaluate import EXTRAS, RetentionReport, evaluate, file_nbytes, model_nbytes

__all__ = ["EXTRAS", "RetentionReport", "evaluate", "file_nbytes", "metrics", "model_nbytes"]
