"""pytest-benchmark suite: CPU int4 weight-only linear (W4A16, group 128) against fp32 F.linear and
torch's int4 CPU kernel `torch._weight_int4pack_mm_for_cpu`.

    pytest benchmarks/test_cpu_int4.py --benchmark-group-by=group

Cold weights (rotating copies beyond 4x the last-level cache), 2 threads; each
case checks its output against the reference op before it is timed. `pycomp
bench --family int4` prints the same comparison as one table with ratios.
"""
import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from pycomp.benchmark.cpu_int4 import torch_int4pack
from pycomp.benchmark.timing import cold_copies, suite_sizes
from pycomp.ops import int4 as ops
from pycomp.quantize.int4 import rtn_int4

SHAPES, MS = suite_sizes([(4096, 4096), (11008, 4096)], [1, 16, 128])
IMPLS = ["fp32", "int4pack", "w4a16", "w4a16_round_x"]  # round_x: the layers' default (x rounded to int16)
GROUP = 128


@pytest.fixture(scope="module", params=SHAPES, ids=[f"{n}x{k}" for n, k in SHAPES])
def weights(request):
    n, k = request.param
    torch.manual_seed(0)
    w = torch.randn(n, k) / math.sqrt(k)
    b = torch.randn(n) * 0.1
    q = rtn_int4(w, GROUP, False)
    copies_q, copies_f32 = cold_copies(q[0].numel() + q[1].numel() * 3), cold_copies(w.numel() * 4)
    int4 = [tuple(t.clone() for t in q) for _ in range(copies_q)]
    return {
        "shape": f"{n}x{k}", "k": k, "b": b, "q": q,
        "fp32": [w.clone() for _ in range(copies_f32)],
        "int4": int4,
        "int4pack": [torch_int4pack(*t, GROUP, k) for t in int4],
    }


def _call(impl, wts, x):
    b, k = wts["b"], wts["k"]
    if impl == "fp32":
        pool = itertools.cycle(wts["fp32"])
        return lambda: F.linear(x, next(pool), b)
    if impl == "int4pack":
        pool = itertools.cycle(wts["int4pack"])

        def peer():
            wp, sz = next(pool)
            return torch._weight_int4pack_mm_for_cpu(x, wp, GROUP, sz) + b

        return peer
    pool = itertools.cycle(wts["int4"])
    round_x = impl == "w4a16_round_x"
    return lambda: ops.w4a16_linear(x, *next(pool), b, GROUP, k, round_x)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("m", MS)
def test_cpu_int4_linear(benchmark, weights, m, impl):
    k = weights["k"]
    x = torch.randn(m, k)
    want = ops.w4a16_linear_ref(x, *weights["q"], weights["b"], GROUP, k)
    if impl == "w4a16":
        torch.testing.assert_close(ops.w4a16_linear(x, *weights["q"], weights["b"], GROUP, k), want,
                                   rtol=1e-4, atol=1e-4)
    if impl == "w4a16_round_x":
        got = ops.w4a16_linear(x, *weights["q"], weights["b"], GROUP, k, True).double()
        assert ((got - want.double()).abs() <= ops.round_x_bound(x, *weights["q"], GROUP, k) + 1e-4).all()
    if impl == "int4pack":
        wp, sz = torch_int4pack(*weights["q"], GROUP, k)
        torch.testing.assert_close(torch._weight_int4pack_mm_for_cpu(x, wp, GROUP, sz) + weights["b"], want,
                                   rtol=1e-4, atol=1e-4)
    benchmark.group = f"{weights['shape']} M={m}"
    fn = _call(impl, weights, x)
    # torch's int4 CPU kernel takes seconds per call at M >= 16 here: fewer rounds keep the suite short.
    slow = impl == "int4pack" and m >= 16
    with torch.no_grad():
        benchmark.pedantic(fn, rounds=3 if slow else 15, warmup_rounds=1 if slow else 3)
