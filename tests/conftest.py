import os

import pytest
import torch

# Triton kernels run on CPU tensors through the interpreter when there is no GPU;
# the variable must be set before any @triton.jit decorator runs.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

# Tests build their own small models; keep the trained digits CNN in a per-run cache
# unless the caller points PYCOMP_CACHE somewhere.
os.environ.setdefault("PYCOMP_CACHE", os.path.join(os.path.dirname(__file__), "..", ".cache"))


@pytest.fixture
def one_thread():
    """One torch thread for the test (restored after): many small kernel calls on a loaded 2-core machine
    spend their time in OpenMP spin-waits. Test modules opt in with pytest.mark.usefixtures("one_thread")."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
