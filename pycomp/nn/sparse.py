"""Sparse drop-in layers: SparseLinear and SparseConv2d, in 2:4, CSR ("unstructured") or block-CSR ("block") form.

`from_float` keeps a weight's existing sparsity pattern when it already has one (a model pruned and
fine-tuned with pycomp.prune) and prunes by magnitude otherwise, then packs the weight into its format
(pycomp.formats.sparse). The forward runs the pattern's op (pycomp.ops.sparse).

Float values (and the bias) are parameters: fine-tuning or distilling a sparse layer trains the kept
weights in place and never moves the pattern. `quantized()` turns a 2:4 layer's kept values into int8
with a per-row scale (quant="int8"; pycomp.compress's "int8" step does this to the 2:4 layers it meets),
which holds the weight in 5 bits per entry; those values are frozen buffers.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from pycomp.formats import sparse as fmt
from pycomp.nn.base import CompressedLayer
from pycomp.nn.conv import Im2ColConv2d, conv_settings
from pycomp.ops import sparse as sparse_ops
from pycomp.prune.config import block_magnitude_mask
from pycomp.prune.magnitude import magnitude_mask
from pycomp.prune.mask import check_sparsity
from pycomp.prune.nm import is_nm_sparse, nm_mask

PATTERNS = sparse_ops.PATTERNS
_FORMATS = {"2:4": "sparse24", "unstructured": "csr", "block": "bsr"}
QUANTS = (None, "int8")
MODES = ("weight_only", "dynamic")
_LAYOUTS = {"2:4": "values (N, Kp/2) + meta (Np, Kp/16) int16, CUTLASS-reordered",
            "unstructured": "crow int32, col, values", "block": "crow int32, col int32, values (nblocks, bn, bk)"}


def _pair(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(int(x) for x in v)


def _block_sparsity(w: Tensor, block: tuple[int, int]) -> float:
    _, _, values = fmt.pack_bsr(w, block)
    bn, bk = block
    total = (-(-w.shape[0] // bn)) * (-(-w.shape[1] // bk))
    return 1.0 - values.shape[0] / total


def sparsify(weight: Tensor, pattern: str, sparsity: float | None, block: tuple[int, int], where: str) -> Tensor:
    """weight (N, K) with the pattern applied: kept as it is when it already has the pattern (at least
    `sparsity` zeros, or every group of 4 at most 2 non-zeros for 2:4), else pruned by magnitude."""
    w = weight.detach()
    if pattern == "2:4":
        if sparsity not in (None, 0.5):
            raise ValueError(f"{where}: pattern '2:4' keeps exactly half of the weights; sparsity must be None or "
                             f"0.5, got {sparsity!r}")
        return w if is_nm_sparse(w, pad=True) else w * nm_mask(w, pad=True, where=where)
    if sparsity is None:
        return w
    sparsity = check_sparsity(sparsity, where)
    if pattern == "unstructured":
        # existing zeros rank first, so a weight that is not sparse enough is pruned further, never re-masked
        have = float((w == 0).float().mean()) if w.numel() else 1.0
        return w if have >= sparsity - 0.5 / max(w.numel(), 1) else w * magnitude_mask(w, sparsity, where=where)
    return w if _block_sparsity(w, block) >= sparsity else w * block_magnitude_mask(w, sparsity, block, where=where)


class _SparseWeights(CompressedLayer):
    """Tensors shared by the sparse layers (pycomp.formats.sparse), by pattern:
    2:4: values (N, Kp/2), meta (Np, Kp/16) int16 (quant="int8": int8 values and scale (N,) float32);
    unstructured: crow (N+1,) int32, col (nnz,) int16|int32, values (nnz,); block: crow (ceil(N/bn)+1,)
    int32, col (nblocks,) int32, values (nblocks, bn, bk). Float values and the bias are parameters, the
    rest buffers. `nnz` is the number of stored values (values.numel()); it sizes them when a file is loaded.
    """

    def _init_weights(self, n: int, k: int, bias: bool, pattern: str, nnz: int | None, block_size, quant, mode,
                      device, dtype) -> None:
        if pattern not in PATTERNS:
            raise ValueError(f"{self.label}: pattern must be one of {PATTERNS}, got {pattern!r}")
        if quant not in QUANTS or mode not in MODES:
            raise ValueError(f"{self.label}: quant must be one of {QUANTS} and mode one of {MODES}, got "
                             f"quant={quant!r}, mode={mode!r}")
        if quant is not None and pattern != "2:4":
            raise ValueError(f"{self.label}: quant={quant!r} needs pattern '2:4' (the only sparse format with int8 "
                             f"values), got pattern={pattern!r}")
        self.pattern, self.block_size, self.n, self.k = pattern, _pair(block_size), n, k
        self.quant, self.mode = quant, mode
        bn, bk = self.block_size
        if bn < 1 or bk < 1:
            raise ValueError(f"{self.label}: block_size must be positive, got {block_size!r}")
        idx = dict(dtype=torch.int32, device=device)
        if quant is None:
            def values(*shape):
                self.values = nn.Parameter(torch.zeros(*shape, dtype=dtype, device=device))
        else:
            def values(*shape):
                self.register_buffer("values", torch.zeros(*shape, dtype=torch.int8, device=device))
                self.register_buffer("scale", torch.zeros(n, dtype=torch.float32, device=device))
        if pattern == "2:4":
            kp, np_ = -(-k // fmt.K_ALIGN_24) * fmt.K_ALIGN_24, -(-n // fmt.N_ALIGN_24) * fmt.N_ALIGN_24
            if nnz not in (None, n * kp // 2):
                raise ValueError(f"{self.label}: a 2:4 weight of shape ({n}, {k}) stores nnz={n * kp // 2}, got {nnz}")
            self.nnz = n * kp // 2
            values(n, kp // 2)
            self.register_buffer("meta", torch.zeros(np_, kp // 16, dtype=torch.int16, device=device))
        else:
            if not isinstance(nnz, int) or nnz < 0 or (pattern == "block" and nnz % (bn * bk)):
                rule = "a multiple of bn * bk" if pattern == "block" else "an int >= 0"
                raise ValueError(f"{self.label}: nnz (stored values) must be {rule}, got {nnz!r}")
            self.nnz = nnz
            if pattern == "unstructured":
                self.register_buffer("crow", torch.zeros(n + 1, **idx))
                self.register_buffer("col", torch.zeros(nnz, dtype=fmt.index_dtype(k), device=device))
                values(nnz)
            else:
                self.register_buffer("crow", torch.zeros(-(-n // bn) + 1, **idx))
                self.register_buffer("col", torch.zeros(nnz // (bn * bk), **idx))
                values(nnz // (bn * bk), bn, bk)
        if bias and quant is None:
            self.bias = nn.Parameter(torch.zeros(n, dtype=dtype, device=device))
        else:
            self.register_buffer("bias", torch.zeros(n, dtype=dtype, device=device) if bias else None)

    @classmethod
    def _packed(cls, weight: Tensor, pattern: str, sparsity, block_size, label: str) -> tuple[Tensor, ...]:
        w = sparsify(weight.reshape(weight.shape[0], -1), pattern, sparsity, _pair(block_size), label)
        if pattern == "2:4":
            return fmt.pack_24(w, where=label)
        if pattern == "unstructured":
            return fmt.pack_csr(w)
        return fmt.pack_bsr(w, _pair(block_size))

    @torch.no_grad()
    def _load_packed(self, packed: tuple[Tensor, ...], bias: Tensor | None) -> None:
        names = ("values", "meta", "scale") if self.pattern == "2:4" else ("crow", "col", "values")
        for name, t in zip(names, packed):
            getattr(self, name).copy_(t)
        if bias is not None:
            self.bias.copy_(bias.detach())
        self.check_buffers()

    def quantized(self, mode: str = "weight_only"):
        """A copy of this 2:4 layer with its kept values in int8 and a per-row scale (pycomp.quantize.int8's
        symmetric per-channel rule on the kept values; the pattern stays). mode: "weight_only" keeps the
        activations in float (W8A32 on the CPU kernel), "dynamic" quantizes them per token (W8A8)."""
        from pycomp.quantize.int8 import quantize_weight_int8

        if self.pattern != "2:4" or self.quant is not None:
            raise ValueError(f"{self.label}: quantized() needs a float 2:4 layer, got pattern={self.pattern!r}, "
                             f"quant={self.quant!r}")
        if mode not in MODES:
            raise ValueError(f"{self.label}: mode must be one of {MODES}, got {mode!r}")
        q, scale = quantize_weight_int8(self.values, where=self.label)
        settings = {**self.settings(), "quant": "int8", "mode": mode}
        out = type(self)(**settings, device=self.values.device, dtype=self.values.dtype, name=self.name)
        out._load_packed((q, self.meta, scale), self.bias)
        return out

    def check_buffers(self) -> None:
        if self.pattern == "2:4":
            fmt.check_24(self.values, self.meta, self.n, self.k, scale=getattr(self, "scale", None), where=self.label)
        elif self.pattern == "unstructured":
            fmt.check_csr(self.crow, self.col, self.values, self.n, self.k, where=self.label)
        else:
            fmt.check_bsr(self.crow, self.col, self.values, self.n, self.k, self.block_size, where=self.label)

    def format_info(self) -> dict:
        """What a file manifest records to read the buffers back."""
        info = {"format": _FORMATS[self.pattern] + ("_int8" if self.quant else ""), "layout": _LAYOUTS[self.pattern],
                "version": fmt.FORMAT_VERSION}
        if self.quant:
            info["layout"] += "; values int8, scale (N,) float32"
            info["activations"] = "int8 per token" if self.mode == "dynamic" else "float"
        if self.pattern == "unstructured":
            info["index_dtype"] = str(fmt.index_dtype(self.k)).removeprefix("torch.")
        if self.pattern == "block":
            info["block_size"] = list(self.block_size)
        return info

    def _linear(self, x: Tensor) -> Tensor:
        if self.quant is not None and self.mode == "dynamic":
            return sparse_ops.sparse24_linear_dynamic(x, self.values, self.meta, self.k, self.scale, self.bias)
        if self.pattern == "2:4":
            return sparse_ops.sparse24_linear(x, self.values, self.meta, self.k, self.bias,
                                              self.scale if self.quant else None)
        if self.pattern == "unstructured":
            return sparse_ops.csr_linear(x, self.crow, self.col, self.values, self.k, self.bias)
        return sparse_ops.bsr_linear(x, self.crow, self.col, self.values, self.n, self.k, self.bias)

    def _dense(self) -> Tensor:
        if self.quant is not None:
            return fmt.densify_24(self.values, self.meta, self.k).float() * self.scale.unsqueeze(1)
        if self.pattern == "2:4":
            return fmt.densify_24(self.values, self.meta, self.k)
        if self.pattern == "unstructured":
            return fmt.densify_csr(self.crow, self.col, self.values, self.k)
        return fmt.densify_bsr(self.crow, self.col, self.values, self.n, self.k)

    @property
    def sparsity(self) -> float:
        """Fraction of the (N, K) weight's entries that are zero."""
        return 1.0 - int((self._dense() != 0).sum()) / max(self.n * self.k, 1)

    @property
    def backend(self) -> str:
        """The backend that runs this layer's forward on its current device (large batches)."""
        return sparse_ops.plan(self.pattern, self.values.device, None, self.values.dtype, self.block_size)

    def backend_for(self, m: int) -> str:
        return sparse_ops.plan(self.pattern, self.values.device, m, self.values.dtype, self.block_size)

    def nbytes(self) -> int:
        """Bytes of the packed weight (bias excluded)."""
        return fmt.nbytes(*(t for name, t in self.state_dict().items() if name != "bias"))

    def _sparse_repr(self) -> str:
        block = f", block_size={self.block_size}" if self.pattern == "block" else ""
        quant = f", quant={self.quant}, mode={self.mode}" if self.quant else ""
        return f"pattern={self.pattern}, nnz={self.nnz}{block}{quant}"


class SparseLinear(_SparseWeights):
    """Drop-in nn.Linear with a sparse weight.

    x: (..., in_features) float -> (..., out_features) in x's dtype.
    pattern="2:4": 2 of every 4 weights along in_features (padded to a multiple of 32), tensor-core layout;
    "unstructured": CSR; "block": block-CSR of block_size (rows, columns) blocks.
    quant="int8" (2:4 only, made by `quantized()`): int8 kept values with a per-row scale; mode
    "weight_only" (float activations) or "dynamic" (activations quantized per token).
    """

    float_type = nn.Linear

    def __init__(self, in_features: int, out_features: int, bias: bool = True, pattern: str = "2:4",
                 nnz: int | None = None, block_size=(16, 16), quant: str | None = None, mode: str = "weight_only",
                 device=None, dtype=torch.float32, name: str = ""):
        super().__init__()
        self.name = name
        self.in_features, self.out_features = in_features, out_features
        self._init_weights(out_features, in_features, bias, pattern, nnz, block_size, quant, mode, device, dtype)

    @classmethod
    def from_float(cls, linear: nn.Linear, pattern: str = "2:4", sparsity: float | None = None,
                   block_size=(16, 16), name: str = "") -> "SparseLinear":
        """Packs `linear`'s weight, keeping its sparsity pattern when it has one, else pruning it by magnitude
        (2:4: the 2 largest |w| of each 4; unstructured: to `sparsity`; block: whole blocks to `sparsity`)."""
        label = f"SparseLinear '{name}'" if name else "SparseLinear"
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"{label}.from_float: expected nn.Linear, got {type(linear).__name__}")
        if pattern not in PATTERNS:
            raise ValueError(f"{label}: pattern must be one of {PATTERNS}, got {pattern!r}")
        packed = cls._packed(linear.weight, pattern, sparsity, block_size, label)
        w = linear.weight
        layer = cls(linear.in_features, linear.out_features, linear.bias is not None, pattern,
                    packed[-1].numel() if pattern != "2:4" else None, block_size, device=w.device, dtype=w.dtype,
                    name=name)
        layer._load_packed(packed, linear.bias)
        return layer

    def forward(self, x: Tensor) -> Tensor:
        self._check_input(x, self.in_features, -1)
        return self._linear(x)

    def to_dense(self) -> Tensor:
        """The weight (out_features, in_features), zeros included."""
        return self._dense()

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
                f"{self._sparse_repr()}")


class SparseConv2d(_SparseWeights, Im2ColConv2d):
    """Drop-in nn.Conv2d (groups=1) with a sparse weight, run as a sparse GEMM over im2col patches.

    x: (B, C, H, W) float -> (B, O, H', W'). The weight is (O, C * kh * kw) in unfold's patch order; a
    2:4 pattern runs along that K (the input dimension), as pycomp.prune.nm_prune prunes it.
    """

    float_type = nn.Conv2d

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, dilation=1,
                 groups: int = 1, bias: bool = True, pattern: str = "2:4", nnz: int | None = None,
                 block_size=(16, 16), quant: str | None = None, mode: str = "weight_only", device=None,
                 dtype=torch.float32, name: str = ""):
        super().__init__()
        self.name = name
        if groups != 1:
            raise ValueError(f"{self.label}: groups={groups} is not supported (a sparse conv needs groups=1)")
        k = self._init_conv(in_channels, out_channels, kernel_size, stride, padding, dilation, groups)
        self._init_weights(out_channels, k, bias, pattern, nnz, block_size, quant, mode, device, dtype)

    @classmethod
    def from_float(cls, conv: nn.Conv2d, pattern: str = "2:4", sparsity: float | None = None,
                   block_size=(16, 16), name: str = "") -> "SparseConv2d":
        """As SparseLinear.from_float, on the conv's (O, C * kh * kw) weight."""
        label = f"SparseConv2d '{name}'" if name else "SparseConv2d"
        settings = conv_settings(conv, label)
        if conv.groups != 1:
            raise ValueError(f"{label}: groups={conv.groups} is not supported (a sparse conv needs groups=1)")
        if pattern not in PATTERNS:
            raise ValueError(f"{label}: pattern must be one of {PATTERNS}, got {pattern!r}")
        packed = cls._packed(conv.weight, pattern, sparsity, block_size, label)
        w = conv.weight
        layer = cls(**settings, pattern=pattern, nnz=packed[-1].numel() if pattern != "2:4" else None,
                    block_size=block_size, device=w.device, dtype=w.dtype, name=name)
        layer._load_packed(packed, conv.bias)
        return layer

    def forward(self, x: Tensor) -> Tensor:
        return self._conv_gemm(x, lambda rows, i: self._linear(rows))

    def to_dense(self) -> Tensor:
        """The weight (out_channels, in_channels, kh, kw), zeros included."""
        return self._dense().reshape(self.out_channels, self.in_channels, *self.kernel_size)

    def extra_repr(self) -> str:
        return f"{self._conv_repr()}, {self._sparse_repr()}"
