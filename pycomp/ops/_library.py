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


def run(op: Callable, *args):
    """op(*args) as the public wrappers call it: with grad mode off (inference under torch.no_grad()), below
    the Autograd key, where torch.inference_mode() would also put it.

    The straight-through backwards are registered from Python (torch.library.register_autograd), and their
    wrapper runs on every call even when no gradient is wanted: at M=1 on a 64x64 layer it was about half
    of the op's cost (18.4 against 9.8 us, 1 thread). Under torch.compile, which traces the op itself, and
    with grad mode on, the op goes through the dispatcher as usual.
    """
    if torch.is_grad_enabled() or torch.compiler.is_compiling():
        return op(*args)
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
