"""pycomp: compress PyTorch models on real low-bit and sparse kernels, and measure what knowledge survives.

    import pycomp
    small = pycomp.compress(model, "int8")
    small = pycomp.compress(model, pycomp.Recipe.load("recipe.yaml"), calib=batches, train=batches)
    report = pycomp.retention.evaluate(model, small, loader)
    front = pycomp.explore(model, loader, budget={"size_mb": 2}); front.to_html("report.html")
    nbytes = pycomp.save(small, "small.pcz"); again = pycomp.load("small.pcz", model=skeleton)
"""
from pycomp import nn, ops, retention
from pycomp.api import TECHNIQUES, compress
from pycomp.files import PycompFileError, load, save
from pycomp.recipe import Recipe
from pycomp.retention.explore import explore

__version__ = "0.1.0"
__all__ = ["TECHNIQUES", "PycompFileError", "Recipe", "compress", "explore", "load", "nn", "ops", "retention", "save",
           "__version__"]
