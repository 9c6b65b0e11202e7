"""Retention: how much of a model's knowledge survives compression, and at what cost."""
from pycomp.retention import metrics
from pycomp.retention.evaluate import EXTRAS, RetentionReport, evaluate, file_nbytes, model_nbytes
from pycomp.retention.explore import Frontier, Setting, explore

__all__ = ["EXTRAS", "Frontier", "RetentionReport", "Setting", "evaluate", "explore", "file_nbytes", "metrics",
           "model_nbytes"]
