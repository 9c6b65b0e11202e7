"""The ops' C++ CPU entries (csrc/cpu/op_entry.h) against the Python checks they mirror.

Each op's CPU kernel is its C++ entry, which checks the arguments itself; the Python checks still guard the
fake, CUDA and reference paths. Both must reject the same inputs with the same message, rule by rule, and
the entry must give the kernel's result in x's dtype and shape. (The device rule cannot be reached here: a
meta tensor among the arguments sends the call to the fake impl, and the machine has no second device.)
"""
import pytest
import torch

from pycomp import _ext
from pycomp.formats import sparse as sfmt
from pycomp.ops import binary, conv, int4, int8, sparse
from pycomp.prune.nm import nm_mask

pytestmark = pytest.mark.skipif(_ext._C is None, reason="pycomp._C not built")


def _message(fn, *args) -> str:
    with pytest.raises(RuntimeError) as info:
        fn(*args)
    return str(info.value).splitlines()[0]


def _same_rejection(python_check, op, *args):
    assert _message(op, *args) == _message(python_check, *args)


def _int8_args(**bad):
    args = {"x": torch.randn(3, 40), "qweight": torch.randint(-127, 128, (8, 40), dtype=torch.int8),
            "wscale": torch.rand(8), "bias": torch.randn(8)}
    return tuple({**args, **bad}.values())


INT8_BAD = {
    "x dtype": {"x": torch.ones(3, 40, dtype=torch.int32)},
    "K": {"x": torch.randn(3, 41)},
    "qweight dtype": {"qweight": torch.ones(8, 40)},
    "qweight dim": {"qweight": torch.ones(8, 40, 1, dtype=torch.int8)},
    "wscale": {"wscale": torch.rand(7)},
    "wscale dtype": {"wscale": torch.rand(8, dtype=torch.float64)},
    "bias": {"bias": torch.randn(9)},
    "x 0-d": {"x": torch.tensor(1.0)},
}


@pytest.mark.parametrize("case", INT8_BAD)
@pytest.mark.parametrize("mode", ["dynamic", "weight_only"])
def test_int8_entries_reject_like_the_python_checks(mode, case):
    op = getattr(torch.ops.pycomp, f"int8_linear_{mode}")
    _same_rejection(int8._CHECKS[mode], op, *_int8_args(**INT8_BAD[case]))


@pytest.mark.parametrize("case", [*INT8_BAD, "wsum", "wsum dtype"])
def test_reduce_range_entry_rejects_like_the_python_check(case):
    x, q, s, b = _int8_args(**INT8_BAD.get(case, {}))
    wsum = {"wsum": torch.zeros(7, dtype=torch.int32), "wsum dtype": torch.zeros(8)}.get(
        case, torch.zeros(8, dtype=torch.int32))
    _same_rejection(int8._check_reduce_range, torch.ops.pycomp.int8_linear_dynamic_reduce_range, x, q, s, wsum, b)


def test_int8_entry_max_k_and_quantizer_rules():
    k = int8.MAX_K_DYNAMIC + 1
    args = (torch.randn(1, k), torch.zeros(2, k, dtype=torch.int8), torch.ones(2), None)
    _same_rejection(int8._check_dynamic, torch.ops.pycomp.int8_linear_dynamic, *args)
    for name in ("quantize_per_token_int8", "quantize_per_token_uint7"):
        _same_rejection(int8._check_features(name), getattr(torch.ops.pycomp, name), torch.randn(3, 0))


def _int4_args(**bad):
    n, k, g = 6, 80, 32
    args = {"x": torch.randn(2, k), "packed": torch.zeros(n, k // 2, dtype=torch.uint8),
            "scales": torch.ones(n, 3, dtype=torch.float16), "zeros": torch.zeros(n, 3, dtype=torch.uint8),
            "bias": torch.randn(n), "group_size": g, "in_features": k}
    return tuple({**args, **bad}.values())


@pytest.mark.parametrize("bad", [
    {"x": torch.ones(2, 80, dtype=torch.int64)}, {"x": torch.randn(2, 81)}, {"group_size": 48},
    {"packed": torch.zeros(6, 41, dtype=torch.uint8)}, {"packed": torch.zeros(6, 40, dtype=torch.int8)},
    {"scales": torch.ones(6, 3)}, {"scales": torch.ones(6, 2, dtype=torch.float16)},
    {"zeros": torch.zeros(6, 3, dtype=torch.int32)}, {"bias": torch.randn(5)},
])
def test_int4_entry_rejects_like_the_python_check(bad):
    _same_rejection(int4._check, torch.ops.pycomp.w4a16_linear, *_int4_args(**bad))


def _binary_args(**bad):
    args = {"x": torch.randn(2, 70), "packed": torch.zeros(4, 3, dtype=torch.uint32), "alpha": torch.rand(4, 1),
            "group_size": 0, "bias": torch.randn(4)}
    return tuple({**args, **bad}.values())


@pytest.mark.parametrize("bad", [
    {"x": torch.ones(2, 70, dtype=torch.int32)}, {"packed": torch.zeros(4, 3, dtype=torch.int32)},
    {"packed": torch.zeros(4, 2, dtype=torch.uint32)}, {"group_size": 40}, {"group_size": -32},
    {"alpha": torch.rand(4, 2)}, {"alpha": torch.rand(4, 1, dtype=torch.float64)}, {"bias": torch.randn(3)},
])
@pytest.mark.parametrize("op", ["w1a16", "xnor"])
def test_binary_entries_reject_like_the_python_check(op, bad):
    name = f"{op}_linear"
    _same_rejection(lambda *a: binary._check(name, *a), getattr(torch.ops.pycomp, name), *_binary_args(**bad))


def test_sparse_entries_reject_like_the_python_checks():
    w = torch.randn(8, 40) * (torch.rand(8, 40) > 0.7)
    crow, col, values = sfmt.pack_csr(w)
    x = torch.randn(3, 40)
    for args in [(x[:, :39], crow, col, values, 40, None), (x, crow.long(), col, values, 40, None),
                 (x, crow, col.int(), values, 40, None), (x, crow, col, values[:-1], 40, None),
                 (x, crow, col, values, 40, torch.randn(9)), (x.int(), crow, col, values, 40, None)]:
        _same_rejection(sparse._check_csr, torch.ops.pycomp.csr_linear, *args)
    w24 = torch.randn(8, 40)
    w24 = w24 * nm_mask(w24, 2, 4, pad=True)
    v24, meta = sfmt.pack_24(w24)
    for args in [(x[:, :39], v24, meta, 40, None, None), (x, v24[:, :-1], meta, 40, None, None),
                 (x, v24, meta, 40, None, torch.ones(8)), (x, v24, meta[:, :-1], 40, None, None),
                 (x, v24.to(torch.int8), meta, 40, None, None),
                 (x, v24.to(torch.int8), meta, 40, None, torch.ones(7))]:
        _same_rejection(sparse._check_24, torch.ops.pycomp.sparse24_linear, *args)
    crow_b, col_b, values_b = sfmt.pack_bsr(w, (4, 8))
    for args in [(x, crow_b[:-1], col_b, values_b, 8, 40, None), (x, crow_b, col_b.short(), values_b, 8, 40, None),
                 (x, crow_b, col_b, values_b, 8, 40, torch.randn(3)), (x[:, :30], crow_b, col_b, values_b, 8, 40, None)]:
        _same_rejection(sparse._check_bsr, torch.ops.pycomp.bsr_linear, *args)


def test_im2col_entry_rejects_like_the_python_check():
    for args in [(torch.randn(2, 3, 8), [3, 3], [1, 1], [1, 1]), (torch.randn(1, 2, 5, 5), [3], [1], [1]),
                 (torch.randn(1, 2, 3, 5), [2, 2], [2, 2], [3, 3]), (torch.randn(1, 2, 2, 9), [3, 3], [2, 2], [1, 1])]:
        _same_rejection(conv._check, torch.ops.pycomp.im2col, *args)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_entries_keep_x_dtype_shape_and_strides_right(dtype):
    """Leading dimensions, a non-contiguous x and every float dtype give the kernel's float32 answer in x's
    dtype and shape (x is converted to float32 rows around the kernel)."""
    torch.manual_seed(0)
    x = torch.randn(2, 5, 96).to(dtype).transpose(0, 1)  # (5, 2, 96), not contiguous
    q = torch.randint(-127, 128, (24, 96), dtype=torch.int8)
    s, b = torch.rand(24), torch.randn(24)
    got = torch.ops.pycomp.int8_linear_weight_only(x, q, s, b)
    want = _ext._C.int8_linear_weight_only_cpu(x.reshape(-1, 96).float().contiguous(), q, s, b)
    assert got.dtype == dtype and got.shape == (5, 2, 24)
    torch.testing.assert_close(got, want.to(dtype).reshape(5, 2, 24), rtol=0, atol=0)
    assert torch.ops.pycomp.int8_linear_dynamic(x[:, :0], q, s, b).shape == (5, 0, 24)


def _weight_only_cases(k: int, n: int):
    """(name, op(x)) for every weight-only CPU entry, on random weights of shape (n, k) (int8's ignores the route)."""
    from pycomp.formats.binary import binarize_weight
    from pycomp.quantize.int4 import rtn_int4
    from pycomp.quantize.int8 import quantize_weight_int8

    torch.manual_seed(1)
    w, b = torch.randn(n, k), torch.randn(n)
    q8, s8 = quantize_weight_int8(w)
    packed, scales, zeros = rtn_int4(w, 32)
    bits, alpha = binarize_weight(w, 32)
    w24 = w * nm_mask(w, 2, 4, pad=True)
    v24, meta = sfmt.pack_24(w24)
    v8, s24 = quantize_weight_int8(v24)
    csr = sfmt.pack_csr(w * (torch.rand(n, k) > 0.8))
    bsr = sfmt.pack_bsr(w * (torch.rand(n, k) > 0.8), (4, 8))
    return {
        "int8 weight-only": lambda x: int8.int8_linear_weight_only(x, q8, s8, b),
        "int4": lambda x: int4.w4a16_linear(x, packed, scales, zeros, b, 32, k),
        "w1a16": lambda x: binary.w1a16_linear(x, bits, alpha, 32, b),
        "2:4": lambda x: sparse.sparse24_linear(x, v24, meta, k, b),
        "csr": lambda x: sparse.csr_linear(x, *csr, k, b),
        "bsr": lambda x: sparse.bsr_linear(x, *bsr, n, k, b),
        "2:4 int8": lambda x: sparse.sparse24_linear(x, v8, meta, k, b, s24),
    }


@pytest.fixture
def dense_route_off():
    previous = _ext._C.set_cpu_dense_route(0)
    yield
    _ext._C.set_cpu_dense_route(previous)


def test_dense_route_gives_the_kernels_answer(dense_route_off):
    """On a large batch of a small layer the weight-only entries decode the weight once (their kernel on the
    identity) and run MKL; the answer is the kernel's up to float32 summation order."""
    m, k, n = 1024, 100, 24
    assert m >= 8 * k  # the default rows_per_k is 8
    x = torch.randn(m, k)
    for name, op in _weight_only_cases(k, n).items():
        kernel = op(x)
        _ext._C.set_cpu_dense_route(8)
        dense = op(x)
        _ext._C.set_cpu_dense_route(0)
        torch.testing.assert_close(dense, kernel, rtol=1e-4, atol=1e-4, msg=name)
    assert int4.plan("cpu", m, k) != "cpu-dense"
    # int4's kernels read a bfloat16 x in place; the dense route multiplies a float32 copy of it.
    xb, int4_op = x.bfloat16(), _weight_only_cases(k, n)["int4"]
    kernel = int4_op(xb)
    _ext._C.set_cpu_dense_route(8)
    dense = int4_op(xb)
    assert dense.dtype == kernel.dtype == torch.bfloat16
    torch.testing.assert_close(dense.float(), kernel.float(), rtol=1e-2, atol=1e-2)
    assert int4.plan("cpu", m, k) == binary.plan("w1a16", "cpu", m, K=k) == "cpu-dense"
    assert sparse.plan("2:4", "cpu", m, K=k) == sparse.plan("unstructured", "cpu", m, K=k) == "cpu-dense"
    assert sparse.plan("2:4", "cpu", m, K=m // 8 - 1) == "cpu-dense"  # 2:4 pads K to a multiple of 32: 127 -> 128
    assert sparse.plan("2:4", "cpu", m, K=m // 8 + 1) != "cpu-dense"
    assert int8.plan("weight_only", "cpu", m, k) != "cpu-dense"  # int8's small-N tiles beat the dense route
    assert binary.plan("xnor", "cpu", m, K=k) != "cpu-dense"  # XNOR binarizes x: no dense form
    assert int4.plan("cpu", m - 1, k) != "cpu-dense" and int4.plan("cpu", m, m // 8 + 1) != "cpu-dense"
    with pytest.raises(RuntimeError, match="rows_per_k must be >= 0"):
        _ext._C.set_cpu_dense_route(-1)


def test_no_grad_calls_skip_the_autograd_wrapper_and_agree():
    """Under torch.no_grad() the public wrappers dispatch below the Autograd key (pycomp.ops._library.run);
    results equal the grad-mode ones, also under torch.compile, and gradients still flow with grad mode on."""
    from pycomp.nn import Int8Linear

    torch.manual_seed(0)
    x = torch.randn(5, 100, requires_grad=True)
    for name, op in _weight_only_cases(100, 24).items():
        with_grad = op(x)
        assert with_grad.requires_grad, name
        with torch.no_grad():
            without = op(x)
        assert not without.requires_grad, name
        torch.testing.assert_close(without, with_grad.detach(), rtol=0, atol=0, msg=name)
    layer = Int8Linear.from_float(torch.nn.Linear(100, 24))
    compiled = torch.compile(layer, backend="aot_eager", fullgraph=True)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), layer(x), rtol=0, atol=0)
    layer(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
