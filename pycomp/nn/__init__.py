"""Drop-in compressed layers holding packed buffers."""
from pycomp.nn.base import CompressedLayer
from pycomp.nn.binary import BinaryConv2d, BinaryLinear
from pycomp.nn.int4 import Int4Conv2d, Int4Linear
from pycomp.nn.int8 import Int8Conv2d, Int8Linear
from pycomp.nn.lowrank import LowRankConv2d, LowRankLinear
from pycomp.nn.sparse import SparseConv2d, SparseLinear

# Layer class name -> class: what pycomp.load may rebuild from a file (a name outside this table is refused).
LAYERS: dict[str, type[CompressedLayer]] = {
    cls.__name__: cls for cls in (BinaryConv2d, BinaryLinear, Int4Conv2d, Int4Linear, Int8Conv2d, Int8Linear,
                                  LowRankConv2d, LowRankLinear, SparseConv2d, SparseLinear)
}

__all__ = ["LAYERS", "BinaryConv2d", "BinaryLinear", "CompressedLayer", "Int4Conv2d", "Int4Linear", "Int8Conv2d",
           "Int8Linear", "LowRankConv2d", "LowRankLinear", "SparseConv2d", "SparseLinear"]
