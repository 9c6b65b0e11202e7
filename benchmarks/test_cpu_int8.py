"""pytest-benchmark suite: CPU int8 linear against fp32 F.linear and torch's fbgemm dynamic int8.

    pytest benchmarks/test_cpu_int8.py --benchmark-group-by=group

Cold weights (rotating copies beyond 4x the last-level cache), 2 threads; each
case checks its output against the reference op before it is timed. `pycomp
bench` prints the same comparison as one table with ratios.
"""
import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from pycomp.benchmark.cpu_int8 import _fbgemm_linear
from pycomp.benchmark.timing import cold_copies, suite_sizes
from pycomp.ops import int8 as ops
from pycomp.quantize.int8 import quantize_weight_int8

SHAPES, MS = suite_sizes([(4096, 4096), (11008, 4096)], [1, 16, 128])
IMPLS = ["fp32", "fbgemm", "w8a8", "w8a8_rr", "w8a32"]  # w8a8_rr: reduce-range, fbgemm's 7-bit activations


@pytest.fixture(scope="module", params=SHAPES, ids=[f"{n}x{k}" for n, k in SHAPES])
def weights(request):
    n, k = request.param
    torch.manual_seed(0)
    w = torch.randn(n, k) / math.sqrt(k)
    b = torch.randn(n) * 0.1
    q, s = quantize_weight_int8(w)
    wsum = ops.weight_row_sums(q)
    copies_i8, copies_f32 = cold_copies(q.numel()), cold_copies(w.numel() * 4)
    return {
        "shape": f"{n}x{k}", "w": w, "b": b, "q": q, "s": s, "wsum": wsum,
        "fp32": [w.clone() for _ in range(copies_f32)],
        "int8": [(q.clone(), s.clone(), wsum.clone()) for _ in range(copies_i8)],
        "fbgemm": [_fbgemm_linear(w, b) for _ in range(copies_i8)],
    }


def _call(impl, wts, x):
    b = wts["b"]
    if impl == "fp32":
        pool = itertools.cycle(wts["fp32"])
        return lambda: F.linear(x, next(pool), b)
    if impl == "fbgemm":
        pool = itertools.cycle(wts["fbgemm"])
        return lambda: next(pool)(x)
    pool = itertools.cycle(wts["int8"])
    if impl == "w8a8_rr":
        return lambda: ops.int8_linear_dynamic_reduce_range(x, *next(pool), b)
    op = ops.int8_linear_dynamic if impl == "w8a8" else ops.int8_linear_weight_only
    return lambda: op(x, *next(pool)[:2], b)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("m", MS)
def test_cpu_int8_linear(benchmark, weights, m, impl):
    x = torch.randn(m, weights["w"].shape[1])
    if impl in ("w8a8", "w8a32"):
        op, ref = ((ops.int8_linear_dynamic, ops.int8_linear_dynamic_ref) if impl == "w8a8"
                   else (ops.int8_linear_weight_only, ops.int8_linear_weight_only_ref))
        q, s, b = weights["q"], weights["s"], weights["b"]
        torch.testing.assert_close(op(x, q, s, b), ref(x, q, s, b), rtol=1e-4, atol=1e-4)
    if impl == "w8a8_rr":
        args = (x, weights["q"], weights["s"], weights["wsum"], weights["b"])
        assert torch.equal(ops.int8_linear_dynamic_reduce_range(*args), ops.int8_linear_dynamic_reduce_range_ref(*args))
    benchmark.group = f"{weights['shape']} M={m}"
    fn = _call(impl, weights, x)
    with torch.no_grad():
        benchmark.pedantic(fn, rounds=15, warmup_rounds=3)
