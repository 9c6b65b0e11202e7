"""The `pycomp` torch.library namespace, shared by every op module, the ops' input check, and their C++ CPU entries."""
from collections.abc import Callable

import torch

from pycomp import _ext

LIB = torch.library.Library("pycomp", "DEF")  # noqa: TOR901 - one DEF per namespace, op modules add to it


def check(cond, message: Callable[[], str]) -> None:
    """torch._check, with a fast path for a plain True (every check of an eager call on real tensors).

    torch._check costs about a microsecond per call even when the condition holds (it handles symbolic
    conditions), and an op checks ten things: at M=1 that was a visible share of a small layer's time.
    A symbolic condition (torch.compile tracing with dynamic shapes) or a failing one goes to torch._check.
    """
    if cond is True:
        return
    torch._check(cond, message)


def rows(x: torch.Tensor) -> torch.Tensor:
    """(..., K) -> (M, K) with unit column stride (a view when possible): what the non-CPU paths hand their
    kernels (the CPU entries do this in C++, csrc/cpu/op_entry.h rows_f32)."""
    x2 = x.reshape(-1, x.shape[-1])
    return x2 if x2.stride(-1) == 1 else x2.contiguous()


# The CPU impl of each op registered through impl_cpu, by op packet (torch.ops.pycomp.<name>).
_CPU_IMPLS: dict = {}


def impl_cpu(name: str, fn: Callable) -> None:
    """LIB.impl(name, fn, "CPU"), remembered so that run() can call fn itself on plain CPU tensors."""
    LIB.impl(name, fn, "CPU")
    _CPU_IMPLS[getattr(torch.ops.pycomp, name)] = fn


def _plain_cpu(args) -> bool:
    """Every tensor argument an exact torch.Tensor on the CPU, and no torch function or dispatch mode active:
    then the dispatcher would call the op's CPU impl with these very arguments."""
    if torch._C._len_torch_function_stack() or torch._C._len_torch_dispatch_stack():
        return False
    for a in args:  # type() before isinstance, is_cpu before device: 0.7 against 4.7 us for an int4 call
        if type(a) is torch.Tensor:
            if not a.is_cpu:
                return False
        elif isinstance(a, torch.Tensor):
            return False
    return True


def run(op: Callable, *args):
    """op(*args) as the public wrappers call it: with grad mode off (inference under torch.no_grad()), the
    op's CPU impl itself when every tensor is a plain CPU tensor, else the op below the Autograd key, where
    torch.inference_mode() would also put it.

    The straight-through backwards are registered from Python (torch.library.register_autograd), and their
    wrapper runs on every call even when no gradient is wanted: at M=1 on a 64x64 layer it was about half
    of the op's cost (18.4 against 9.8 us, 1 thread). The dispatcher's own trip to a Python-registered
    impl cost 40-60 us more on a 4096x4096 int4 layer at M=1 (0.58-0.61 against 0.53-0.55 ms, cold weights;
    a few us with warm caches), about 8% of that call. Under torch.compile, which traces the op itself,
    with grad mode on, and for tensor subclasses, meta or CUDA tensors and active modes, the op goes through
    the dispatcher as usual.
    """
    if torch.is_grad_enabled() or torch.compiler.is_compiling():
        return op(*args)
    fn = _CPU_IMPLS.get(op)
    if fn is not None and _plain_cpu(args):
        return fn(*args)
    with torch._C._AutoDispatchBelowAutograd():
        return op(*args)


def cpu_entry(name: str) -> Callable | None:
    """pycomp._C's CPU entry `name` (csrc/cpu/op_entry.h: the op's checks, reshapes and dtype conversions around
    its kernel, all in C++), or None when the extension is not built.

    An op registers its entry itself as its CPU kernel where it can, so an eager call costs the dispatcher and
    one C++ call instead of about ten Python-level tensor operations.
    """
    return getattr(_ext._C, name, None) if _ext._C is not None else None


def cpu_dense_route(M: int | None, K: int | None) -> bool:
    """Whether a weight-only CPU entry takes the dense route for M rows of K features (plan() reports it).

    The dense route (csrc/cpu/op_entry.h): on a large batch of a small layer the entries decode the weight once,
    by their own kernel on the identity, and run MKL's fp32 GEMM. The rule lives there, asked here.
    """
    if M is None or K is None or _ext._C is None:
        return False
    return _ext._C.cpu_dense_route_takes(M, K)
