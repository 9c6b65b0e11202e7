"""pytest-benchmark suite: CPU sparse linear (CSR 90%, block-CSR 90%, 2:4, 2:4 int8) against fp32 F.linear, with
torch's CSR matmul (torch.sparse_csr) beside the unstructured case.

    pytest benchmarks/test_cpu_sparse.py --benchmark-group-by=group

Cold weights (rotating copies beyond 4x the last-level cache), 2 threads; each case checks its output
against the dense product before it is timed. `python -m pycomp.benchmark.cpu_sparse` prints the same
comparison as one table with ratios. Numbers on the shared development machine are noisy.
"""
import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from pycomp.benchmark.cpu_sparse import CASES, copies, op_call, packed, reference_weight, sparse_weight, torch_csr_call
from pycomp.benchmark.timing import suite_sizes
from pycomp.formats import sparse as fmt

[(N, K)], MS = suite_sizes([(4096, 4096)], [1, 16, 128])
IMPLS = ["fp32", "ours", "torch_csr"]


@pytest.fixture(scope="module")
def dense():
    torch.manual_seed(0)
    w = torch.randn(N, K) / math.sqrt(K)
    return w, torch.randn(N) * 0.1, [w.clone() for _ in range(copies(w.numel() * 4))]


@pytest.fixture(scope="module", params=CASES, ids=[f"{p}@{s}" for p, s in CASES])
def case(request, dense):
    pattern, sparsity = request.param
    w = sparse_weight(dense[0], pattern, sparsity)
    bufs = packed(w, pattern)
    out = {"pattern": pattern, "sparsity": sparsity, "w": w, "bufs": bufs,
           "ours": [tuple(t.clone() for t in bufs) for _ in range(copies(fmt.nbytes(*bufs)))]}
    if pattern == "unstructured":
        w_csr = w.to_sparse_csr()
        out["torch_csr"] = [w_csr.clone() for _ in range(copies(w_csr.values().nbytes * 3))]
    return out


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("m", MS)
def test_cpu_sparse_linear(benchmark, dense, case, m, impl):
    if impl == "torch_csr" and "torch_csr" not in case:
        pytest.skip("torch's CSR peer is printed beside the unstructured case only")
    _, b, dense_sets = dense
    x = torch.randn(m, K)
    want = F.linear(x.double(), reference_weight(case["w"], case["pattern"], case["bufs"]), b.double())
    pattern = case["pattern"]
    if impl == "ours":
        got = op_call(pattern, x, case["bufs"], N, K, b)
        torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-4 * float(want.abs().max()))
    benchmark.group = f"{N}x{K} {pattern}@{case['sparsity']} M={m}"
    if impl == "fp32":
        pool = itertools.cycle(dense_sets)
        fn = lambda: F.linear(x, next(pool), b)  # noqa: E731
    elif impl == "ours":
        pool = itertools.cycle(case["ours"])
        fn = lambda: op_call(pattern, x, next(pool), N, K, b)  # noqa: E731
    else:
        pool = itertools.cycle(case["torch_csr"])
        fn = lambda: torch_csr_call(x, next(pool), b)  # noqa: E731
    with torch.no_grad():
        benchmark.pedantic(fn, rounds=15, warmup_rounds=3)
