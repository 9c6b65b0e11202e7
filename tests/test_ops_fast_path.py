"""pycomp.ops._library.run: under no_grad, plain CPU tensors go straight to the op's registered CPU impl (what the
dispatcher would call), everything else through the dispatcher."""
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from pycomp.ops import _library, int4, int8
from pycomp.quantize.int4 import rtn_int4


def _int4_args():
    packed, scales, zeros = rtn_int4(torch.randn(9, 70), 32, False)
    return (torch.randn(3, 70), packed, scales, zeros, torch.randn(9), 32, 70, True)


def test_every_cpu_impl_is_registered_for_the_fast_path():
    names = {op._qualified_op_name for op in _library._CPU_IMPLS}
    assert {"pycomp::w4a16_linear", "pycomp::int8_linear_dynamic", "pycomp::xnor_linear", "pycomp::csr_linear",
            "pycomp::im2col"} <= names


def test_fast_path_calls_the_cpu_impl_and_matches_the_dispatcher(monkeypatch):
    op = torch.ops.pycomp.w4a16_linear
    impl = _library._CPU_IMPLS[op]
    calls = []
    monkeypatch.setitem(_library._CPU_IMPLS, op, lambda *a: calls.append(1) or impl(*a))
    args = _int4_args()
    with torch.no_grad():
        fast = int4.w4a16_linear(*args)
        with torch._C._AutoDispatchBelowAutograd():
            slow = op(*args)
    assert calls == [1] and torch.equal(fast, slow)
    # with grad mode on, the dispatcher (and the straight-through backward) runs
    x = args[0].clone().requires_grad_()
    int4.w4a16_linear(x, *args[1:]).sum().backward()
    assert calls == [1] and x.grad is not None


class _Count(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(str(func))
        return func(*args, **(kwargs or {}))


def test_modes_subclasses_and_other_devices_take_the_dispatcher(monkeypatch):
    op = torch.ops.pycomp.int8_linear_dynamic
    monkeypatch.setitem(_library._CPU_IMPLS, op, lambda *a: pytest.fail("fast path taken"))
    q = torch.randint(-127, 128, (5, 16), dtype=torch.int8)
    s, b = torch.rand(5) + 0.1, torch.randn(5)
    with torch.no_grad():
        with _Count() as mode:
            int8.int8_linear_dynamic(torch.randn(2, 16), q, s, b)
        assert any("int8_linear_dynamic" in o for o in mode.ops)
        meta = int8.int8_linear_dynamic(torch.randn(2, 16, device="meta"), q.to("meta"), s.to("meta"), b.to("meta"))
        assert meta.shape == (2, 5) and meta.device.type == "meta"

        class Sub(torch.Tensor):
            pass

        x = torch.randn(2, 16)
        out = int8.int8_linear_dynamic(x.as_subclass(Sub), q, s, b)  # the patched fast path would fail the test
    monkeypatch.undo()
    with torch.no_grad():
        assert torch.equal(out.as_subclass(torch.Tensor), int8.int8_linear_dynamic(x, q, s, b))
