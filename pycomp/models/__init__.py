"""Models pycomp ships for demos and tests.

`FACTORIES` names the ones a pycomp file may ask `pycomp.load` to rebuild
(`"module:Class"` -> class, each with `init_kwargs()`); load looks names up
here and never imports a name read from a file.
"""
from __future__ import annotations

from torch import nn

from pycomp.models.digits import DigitsCNN

FACTORIES: dict[str, type[nn.Module]] = {
    "pycomp.models.digits:DigitsCNN": DigitsCNN,
}


def factory_of(model: nn.Module) -> dict | None:
    """{"name": ..., "kwargs": ...} when `model`'s class is in FACTORIES (exactly), else None."""
    for name, cls in FACTORIES.items():
        if type(model) is cls:
            return {"name": name, "kwargs": model.init_kwargs()}
    return None
