"""Loads the compiled extension and Triton, once, and says why not when they are missing.

Everything above the ops layer asks here what is available; the pure-PyTorch
reference paths work without either.
"""
from __future__ import annotations

import logging
import os

log = logging.getLogger("pycomp")

try:
    from pycomp import _C  # type: ignore[attr-defined]

    C_ERROR: str | None = None
except ImportError as exc:  # a source checkout that was never built, or an ABI mismatch with torch
    _C = None
    C_ERROR = str(exc)
    log.warning("pycomp._C did not load (%s): C++/CUDA kernels are off, reference paths still work", exc)


def has_c(name: str) -> bool:
    """True when the compiled extension is loaded and exports `name`."""
    return _C is not None and hasattr(_C, name)


def triton_interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


_TRITON: object | None = None
TRITON_ERROR: str | None = None


def triton_int8():
    """pycomp.triton_kernels.int8, or None when Triton cannot be imported."""
    global _TRITON, TRITON_ERROR
    if _TRITON is None and TRITON_ERROR is None:
        try:
            from pycomp.triton_kernels import int8 as mod

            _TRITON = mod
        except Exception as exc:  # ImportError, or a Triton too old for the kernels
            TRITON_ERROR = f"{type(exc).__name__}: {exc}"
            log.info("Triton kernels unavailable: %s", TRITON_ERROR)
    return _TRITON
