"""Drop-in compressed layers holding packed buffers."""
from pycomp.nn.base import CompressedLayer
from pycomp.nn.binary import BinaryConv2d, BinaryLinear
from pycomp.nn.int4 import Int4Conv2d, Int4Linear
from pycomp.nn.int8 import Int8Conv2d, Int8Linear

# Layer class name -> class: what pycomp.load may rebuild from a file (a name outside this table is refused).
LAYERS: dict[str, type[CompressedLayer]] = {
    cls.__name__: cls for cls in (Int4Conv2d, Int4Linear, Int8Conv2d, Int8Linear)
}

__all__ = ["LAYERS", "CompressedLayer", "Int4Conv2d", "Int4Linear", "Int8Conv2d", "Int8Linear"]
LAYERS.update({cls.__name__: cls for cls in (BinaryConv2d, BinaryLinear)})
__all__ += ["BinaryConv2d", "BinaryLinear"]
