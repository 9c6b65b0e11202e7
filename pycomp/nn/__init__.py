"""Drop-in compressed layers holding packed buffers."""
from pycomp.nn.base import CompressedLayer
from pycomp.nn.int4 import Int4Conv2d, Int4Linear
from pycomp.nn.int8 import Int8Conv2d, Int8Linear

__all__ = ["CompressedLayer", "Int4Conv2d", "Int4Linear", "Int8Conv2d", "Int8Linear"]
