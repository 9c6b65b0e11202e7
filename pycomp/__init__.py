"""pycomp: compress PyTorch models on real low-bit and sparse kernels, and measure what knowledge survives.

    import pycomp
    small = pycomp.compress(model, "int8")
    report = pycomp.retention.evaluate(model, small, loader)
"""
from pycomp import nn, ops, retention
from pycomp.api import TECHNIQUES, compress

__version__ = "0.1.0"
__all__ = ["TECHNIQUES", "compress", "nn", "ops", "retention", "__version__"]
