"""Loads the compiled extension and Triton, once, and says why not when they are missing.

Everything above the ops layer asks here what is available; the pure-PyTorch
reference paths work without either.
"""
from __future__ import annotations

import importlib
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


_TRITON: dict[str, object] = {}
# Why each Triton kernel family could not be imported, by family ("int8", "int4", "binary", "sparse").
TRITON_ERRORS: dict[str, str] = {}


def triton_kernels(family: str):
    """pycomp.triton_kernels.<family>, imported once; None when Triton cannot import it (why: TRITON_ERRORS)."""
    if family not in _TRITON and family not in TRITON_ERRORS:
        try:
            _TRITON[family] = importlib.import_module(f"pycomp.triton_kernels.{family}")
        except Exception as exc:  # ImportError, or a Triton too old for the kernels
            TRITON_ERRORS[family] = f"{type(exc).__name__}: {exc}"
            log.info("Triton %s kernels unavailable: %s", family, TRITON_ERRORS[family])
    return _TRITON.get(family)


def triton_int8():
    """pycomp.triton_kernels.int8, or None when Triton cannot be imported."""
    return triton_kernels("int8")
