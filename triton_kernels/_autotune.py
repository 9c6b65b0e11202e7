"""triton.autotune with its results kept on disk (Triton's cache directory, TRITON_CACHE_DIR), so a new
process reuses the winning configuration of each key instead of timing every configuration again
(1-3 s per configuration for the int4 kernel). Triton releases without cache_results tune per process."""
import inspect

import triton

_CACHE = {"cache_results": True} if "cache_results" in inspect.signature(triton.autotune).parameters else {}


def autotune(**kwargs):
    return triton.autotune(**kwargs, **_CACHE)
