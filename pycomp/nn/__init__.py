"""Drop-in compressed layers holding packed buffers."""
from pycomp.nn.base import CompressedLayer
from pycomp.nn.int8 import Int8Conv2d, Int8Linear

__all__ = ["CompressedLayer", "Int8Conv2d", "Int8Linear"]
