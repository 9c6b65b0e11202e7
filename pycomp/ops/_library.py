"""The `pycomp` torch.library namespace, shared by every op module, and the ops' input check."""
from collections.abc import Callable

import torch

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
