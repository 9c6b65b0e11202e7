"""Binary ops: 1-bit weights with float activations (W1A16 / W1A32, "BWN") or binary activations (XNOR, W1A1).

Shapes: x (..., K) float -> (..., N) in x's dtype; packed (N, ceil(K/32)) uint32 sign bits and
alpha (N, G) float32 as in pycomp.formats.binary; group_size 0 (one α per channel) or a multiple of 32;
bias (N,) float or None.

- `w1a16_linear`: out = x @ (α · sign W)ᵀ + bias.
- `xnor_linear`: x is binarized per token, x ≈ β · sign(x) with β = mean|x| over K (XNOR-Net), and
  out[m, n] = β[m] · Σ_g α[n, g] · dot_g + bias[n], dot_g = len_g − 2 · popc(sign bits of x xor of W)
  over group g (len_g its real, unpadded length). Integer dot products are exact on every backend.

XNOR assumes centred inputs: sign(x) keeps only which side of zero each entry is on, so an input that is
all positive (after a ReLU, say) binarizes to all +1 and the layer sees only β. pycomp.nn.BinaryLinear warns.

Backward passes are straight-through (the binarizers count as identity), so gradients reach the input;
the clipped STE that trains binary networks lives in pycomp.binarize.
"""
from __future__ import annotations

import torch
from torch import Tensor

from pycomp import _ext
from pycomp.formats.binary import WORD_BITS, dequantize_binary, num_groups, pack_signs, unpack_signs, words
from pycomp.ops._library import LIB, check, cpu_dense_route, cpu_entry, impl_cpu, rows, run

# Largest M the CUDA W1A16 GEMV serves; above it the Triton kernel (tensor cores on ±1 tiles). For 16-bit x with one
# α per channel it runs CUDA_GEMV_TC_VARIANT: bits expanded to ±1 pairs in registers for mma.sync with the weights
# as A, x staged once per block in shared memory in the mma's layout (it falls back to variant 1, the same without
# the staging, when x does not fit: M > 4 at K=4096). On the H200 run 3 of 2026-11-28 (14336x4096, cold weights)
# variant 4 took 9.7 / 12.4 us at M=1 / 4 and 25.2 at M=16 (Triton 24.3), against 20.1 / 102.3 / 320.2 for
# variant 0, which keeps fp32 x and per-group α at M=1 only (its cost grows by about 20 us per token).
CUDA_GEMV_MAX_M = 16
CUDA_GEMV_DTYPES = (torch.float16, torch.bfloat16)
CUDA_GEMV_TC_VARIANT = 4
# The XNOR GEMM's variant 1 (64x64 warp tiles, 4-stage cp.async ring, ldmatrix; vectorized binarization): 208.5
# against variant 0's 264.2 us at M=4096 and 71.6 against 85.3 at M=1024 on the same run (variant 2, since removed:
# 235.3, 78.9). Variants 3-7 (persistent, whole-K tiles in shared memory; session 6) have not run on a card yet.
CUDA_XNOR_VARIANT = 1
# The CUDA XNOR GEMM copies weight rows 16 bytes (4 words) at a time.
CUDA_XNOR_WORD_MULTIPLE = 4

LIB.define("w1a16_linear(Tensor x, Tensor packed, Tensor alpha, int group_size, Tensor? bias=None) -> Tensor")
LIB.define("xnor_linear(Tensor x, Tensor packed, Tensor alpha, int group_size, Tensor? bias=None) -> Tensor")


# ----------------------------------------------------------------------------- references


def binarize_per_token_ref(x: Tensor) -> tuple[Tensor, Tensor]:
    """x (..., K) float -> (bits (..., ceil(K/32)) uint32, beta (...) float32 = mean|x| over K)."""
    xf = x.float()
    return pack_signs(xf), xf.abs().mean(-1)


def w1a16_linear_ref(x: Tensor, packed: Tensor, alpha: Tensor, group_size: int, bias: Tensor | None = None) -> Tensor:
    """x @ dequantize_binary(packed, alpha).T + bias, in float64."""
    w = dequantize_binary(packed, alpha, x.shape[-1], group_size, torch.float64)
    out = x.double() @ w.t()
    if bias is not None:
        out = out + bias.double()
    return out.to(x.dtype)


def group_dots_ref(xbits: Tensor, packed: Tensor, k: int, group_size: int) -> Tensor:
    """(M, W), (N, W) uint32 sign bits -> (M, N, G) float64 exact ±1 dot products per group."""
    sx, sw = unpack_signs(xbits, k).double(), unpack_signs(packed, k).double()
    g = num_groups(k, group_size)
    gs = k if group_size == 0 else group_size
    pad = g * gs - k
    sx = torch.nn.functional.pad(sx, (0, pad)).reshape(sx.shape[0], g, gs)
    sw = torch.nn.functional.pad(sw, (0, pad)).reshape(sw.shape[0], g, gs)
    return torch.einsum("mgk,ngk->mng", sx, sw)


def xnor_linear_ref(x: Tensor, packed: Tensor, alpha: Tensor, group_size: int, bias: Tensor | None = None) -> Tensor:
    """β · Σ_g α_g · dot_g + bias in float64, from the exact per-group ±1 dot products."""
    x2 = x.reshape(-1, x.shape[-1])
    bits, beta = binarize_per_token_ref(x2)
    dots = group_dots_ref(bits, packed, x.shape[-1], group_size)
    out = (dots * alpha.double().unsqueeze(0)).sum(-1) * beta.double().unsqueeze(-1)
    if bias is not None:
        out = out + bias.double()
    return out.reshape(*x.shape[:-1], packed.shape[0]).to(x.dtype)


# ----------------------------------------------------------------------------- checks and fakes


def _check(op: str, x: Tensor, packed: Tensor, alpha: Tensor, group_size: int, bias: Tensor | None) -> None:
    check(x.dtype.is_floating_point, lambda: f"pycomp.{op}: x must be a float tensor, got {x.dtype}")
    check(x.dim() >= 1, lambda: f"pycomp.{op}: x must have a feature dimension")
    k = x.shape[-1]
    check(
        packed.dim() == 2 and packed.dtype == torch.uint32,
        lambda: f"pycomp.{op}: packed must be a 2-D uint32 tensor (N, ceil(K/32)), got {packed.dim()}-D {packed.dtype}",
    )
    check(
        packed.shape[1] == words(k),
        lambda: f"pycomp.{op}: x has K={k} features, which pack into {words(k)} words, but packed has "
        f"{packed.shape[1]} words per row",
    )
    check(
        group_size >= 0 and group_size % WORD_BITS == 0,
        lambda: f"pycomp.{op}: group_size must be 0 or a positive multiple of {WORD_BITS}, got {group_size}",
    )
    check(
        alpha.dim() == 2 and alpha.dtype == torch.float32 and alpha.shape[0] == packed.shape[0]
        and alpha.shape[1] == num_groups(k, group_size),
        lambda: f"pycomp.{op}: alpha must be float32 of shape (N, G) = ({packed.shape[0]}, "
        f"{num_groups(k, group_size)}) for K={k}, group_size={group_size}; got {alpha.dtype} {tuple(alpha.shape)}",
    )
    check(
        bias is None or (bias.dim() == 1 and bias.shape[0] == packed.shape[0]),
        lambda: f"pycomp.{op}: bias must be a vector of N={packed.shape[0]} values",
    )
    for name, t in (("packed", packed), ("alpha", alpha), ("bias", bias)):
        check(t is None or t.device == x.device,
                     lambda: f"pycomp.{op}: {name} is on {t.device} but x is on {x.device}")


def _fake(x, packed, alpha, group_size, bias=None):
    return x.new_empty((*x.shape[:-1], packed.shape[0]))


torch.library.register_fake("pycomp::w1a16_linear")(_fake)
torch.library.register_fake("pycomp::xnor_linear")(_fake)


# ----------------------------------------------------------------------------- routing


def plan(op: str, device: torch.device | str, M: int | None = None, dtype: torch.dtype | None = None,
         K: int | None = None, group_size: int = 0) -> str:
    """Name of the backend that runs `op` ("w1a16" or "xnor") for this device, batch size M and K.

    With M left out, the answer is for a single token (M = 1); with K left out, for an aligned K.
    CPU: "cpu-<isa>" (the C++ kernels), except "cpu-dense" for w1a16 on a large batch of a small layer (MKL on
    the weight decoded once, pycomp.ops._library.cpu_dense_route; at M = 16 and 128 on 4096x4096, expanding the
    bits for BLAS per call measured slower than the kernel).
    CUDA: "cuda" (C++ kernels; the XNOR GEMM needs one α per channel and ceil(K/32) % 4 == 0),
    "triton" (w1a16 at mid/large M), else "reference".
    """
    device = torch.device(device)
    m = 1 if M is None else M
    if device.type == "cpu":
        if not _ext.has_c("w1a32_linear_cpu"):
            return "reference"
        return "cpu-dense" if op == "w1a16" and cpu_dense_route(M, K) else f"cpu-{_ext._C.binary_cpu_isa()}"
    if device.type != "cuda" or (dtype is not None and dtype not in (torch.float16, torch.bfloat16, torch.float32)):
        return "reference"
    if op == "xnor":
        aligned = K is None or words(K) % CUDA_XNOR_WORD_MULTIPLE == 0
        return "cuda" if aligned and group_size == 0 and _ext.has_c("xnor_gemm_cuda") else "reference"
    if _ext.has_c("w1a16_gemv_cuda") and (m == 1 or m <= CUDA_GEMV_MAX_M and _tensor_core_gemv(dtype, group_size)):
        return "cuda"
    return "triton" if triton_binary() is not None else "reference"


def triton_binary():
    """pycomp.triton_kernels.binary, or None when Triton cannot import it (why: _ext.TRITON_ERRORS)."""
    return _ext.triton_kernels("binary")


def _impl(op: str, ref, paths):
    name = f"{op}_linear"

    def impl(x, packed, alpha, group_size, bias=None):
        _check(name, x, packed, alpha, group_size, bias)
        x2 = rows(x)
        M, N = x2.shape[0], packed.shape[0]
        if M == 0:
            return x.new_empty((*x.shape[:-1], N))
        backend = plan(op, x.device, M, x.dtype, x2.shape[1], group_size)
        if backend == "reference":
            return ref(x, packed, alpha, group_size, bias)
        out = paths[backend](x2, packed, alpha, group_size, bias)
        return out.to(x.dtype).reshape(*x.shape[:-1], N)

    return impl


def _tensor_core_gemv(dtype: torch.dtype | None, group_size: int) -> bool:
    """Whether the W1A16 GEMV's tensor-core variant takes x of this dtype (None: bfloat16) and α grouping."""
    return (dtype is None or dtype in CUDA_GEMV_DTYPES) and group_size == 0


def _cuda(kernel: str, variant):
    """A CUDA path running `kernel` in the variant that variant(x dtype, group size) names."""
    def run(x2, packed, alpha, group_size, bias):
        b = None if bias is None else bias.to(x2.dtype).contiguous()
        return getattr(_ext._C, kernel)(x2, packed.contiguous(), alpha.contiguous(), group_size, b,
                                        variant(x2.dtype, group_size))

    return run


_w1a16_cuda = _cuda("w1a16_gemv_cuda", lambda dtype, g: CUDA_GEMV_TC_VARIANT if _tensor_core_gemv(dtype, g) else 0)
_xnor_cuda = _cuda("xnor_gemm_cuda", lambda dtype, g: CUDA_XNOR_VARIANT)


def _triton_w1a16(x2, packed, alpha, group_size, bias):
    return triton_binary().w1a16_linear(x2, packed, alpha, group_size, bias)


# CPU: the C++ entries (csrc/cpu/binary/binary_ops.h: these checks, rows, float32 conversion, kernel); without
# the extension, plan() says "reference" and _impl runs it.
impl_cpu("w1a16_linear", cpu_entry("w1a16_linear_op") or _impl("w1a16", w1a16_linear_ref, {}))
impl_cpu("xnor_linear", cpu_entry("xnor_linear_op") or _impl("xnor", xnor_linear_ref, {}))
LIB.impl("w1a16_linear", _impl("w1a16", w1a16_linear_ref,
                               {"cuda": _w1a16_cuda, "triton": _triton_w1a16}), "CUDA")
LIB.impl("xnor_linear", _impl("xnor", xnor_linear_ref, {"cuda": _xnor_cuda}), "CUDA")


# ----------------------------------------------------------------------------- autograd (straight-through)


def _setup_ctx(ctx, inputs, output):
    x, packed, alpha, group_size, bias = inputs
    ctx.save_for_backward(packed, alpha)
    ctx.k, ctx.group_size, ctx.x_dtype, ctx.has_bias = x.shape[-1], group_size, x.dtype, bias is not None


def _backward(ctx, grad_out):
    packed, alpha = ctx.saved_tensors
    w = dequantize_binary(packed, alpha, ctx.k, ctx.group_size, grad_out.dtype)
    grad_x = (grad_out @ w).to(ctx.x_dtype)
    grad_bias = grad_out.reshape(-1, grad_out.shape[-1]).sum(0) if ctx.has_bias else None
    return grad_x, None, None, None, grad_bias


for _name in ("w1a16_linear", "xnor_linear"):
    torch.library.register_autograd(f"pycomp::{_name}", _backward, setup_context=_setup_ctx)


# ----------------------------------------------------------------------------- public wrappers


def w1a16_linear(x: Tensor, packed: Tensor, alpha: Tensor, group_size: int = 0, bias: Tensor | None = None) -> Tensor:
    """1-bit weights, float activations: x (..., K) float -> (..., N) in x's dtype."""
    return run(torch.ops.pycomp.w1a16_linear, x, packed, alpha, group_size, bias)


def xnor_linear(x: Tensor, packed: Tensor, alpha: Tensor, group_size: int = 0, bias: Tensor | None = None) -> Tensor:
    """1-bit weights and activations (β = mean|x| per token): x (..., K) float -> (..., N) in x's dtype."""
    return run(torch.ops.pycomp.xnor_linear, x, packed, alpha, group_size, bias)
