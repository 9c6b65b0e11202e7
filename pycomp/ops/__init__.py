"""Ops: one torch.library op per computation (namespace `pycomp`), with references and dispatch."""
from pycomp.ops import binary, conv, int4, int8, sparse
from pycomp.ops.binary import w1a16_linear, xnor_linear
from pycomp.ops.int4 import w4a16_linear
from pycomp.ops.int8 import int8_linear_dynamic, int8_linear_weight_only, quantize_per_token_int8
from pycomp.ops.sparse import bsr_linear, csr_linear, sparse24_linear

__all__ = ["binary", "bsr_linear", "conv", "csr_linear", "int4", "int8", "int8_linear_dynamic", "int8_linear_weight_only",
           "quantize_per_token_int8", "sparse", "sparse24_linear", "w1a16_linear", "w4a16_linear", "xnor_linear"]
