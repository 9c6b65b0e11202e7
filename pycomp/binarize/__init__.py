"""Binary networks: 1-bit weights (BWN) and XNOR layers, post-hoc ("binary"/"xnor") or trained with the STE."""
from pycomp.binarize.config import BinaryConfig, XnorConfig, compressible_names, first_and_last
from pycomp.binarize.ste import BinarizedConv2d, BinarizedLinear, convert, prepare, sign_ste

__all__ = ["BinarizedConv2d", "BinarizedLinear", "BinaryConfig", "XnorConfig", "compressible_names", "convert",
           "first_and_last", "prepare", "sign_ste"]
