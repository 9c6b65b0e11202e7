"""pytest-benchmark suite: CPU binary linear (W1A32, XNOR) against fp32 F.linear.

    pytest benchmarks/test_cpu_binary.py --benchmark-group-by=group

Cold weights (rotating copies beyond 4x the last-level cache), 2 threads; each case checks its output
against the reference op before it is timed. `python -m pycomp.benchmark.cpu_binary` prints the same
comparison as one table with ratios (targets at 4096x4096: W1A32 M=1 >= 10x, XNOR M=128 >= 15x).
"""
import itertools

import pytest
import torch
import torch.nn.functional as F

from pycomp.benchmark.cpu_binary import check, copies, weights
from pycomp.benchmark.timing import suite_sizes
from pycomp.ops import binary as ops

SHAPES, MS = suite_sizes([(4096, 4096), (11008, 4096)], [1, 16, 128])
IMPLS = ["fp32", "w1a32", "xnor"]


@pytest.fixture(scope="module", params=SHAPES, ids=[f"{n}x{k}" for n, k in SHAPES])
def sets(request):
    n, k = request.param
    w, b, packed, alpha = weights(n, k)
    return {"shape": f"{n}x{k}", "k": k, "b": b, "packed": packed, "alpha": alpha,
            "fp32": [w.clone() for _ in range(copies(w.numel() * 4))],
            "bits": [(packed.clone(), alpha.clone()) for _ in range(copies(packed.numel() * 4))]}


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("m", MS)
def test_cpu_binary_linear(benchmark, sets, m, impl):
    x = torch.randn(m, sets["k"])
    b = sets["b"]
    if impl != "fp32":
        check(x, sets["packed"], sets["alpha"], b)
    if impl == "fp32":
        pool = itertools.cycle(sets["fp32"])
        fn = lambda: F.linear(x, next(pool), b)  # noqa: E731
    else:
        op = ops.w1a16_linear if impl == "w1a32" else ops.xnor_linear
        pool = itertools.cycle(sets["bits"])
        fn = lambda: op(x, *next(pool), 0, b)  # noqa: E731
    benchmark.group = f"{sets['shape']} M={m}"
    with torch.no_grad():
        benchmark.pedantic(fn, rounds=15, warmup_rounds=3)
