import os

import torch

# Triton kernels run on CPU tensors through the interpreter when there is no GPU;
# the variable must be set before any @triton.jit decorator runs.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

# Tests build their own small models; keep the trained digits CNN in a per-run cache
# unless the caller points PYCOMP_CACHE somewhere.
os.environ.setdefault("PYCOMP_CACHE", os.path.join(os.path.dirname(__file__), "..", ".cache"))
