"""int8 ops: per-token activation quantization, W8A8 ("dynamic") and W8A16/W8A32 ("weight_only") linear.

Each op is one `torch.library` op in the `pycomp` namespace with a plain-PyTorch
reference (the definition of what it computes), a fake impl for torch.compile and
torch.export, a CPU kernel (C++) and a CUDA dispatcher (CUDA C++ kernels or
Triton, chosen by shape). Backward passes treat the quantizers as identity
(straight-through), so gradients reach the input for saliency and attacks.

Shapes: x (..., K) float -> (..., N) in x's dtype; qweight (N, K) int8 with
values in [-127, 127]; wscale (N,) float32; bias (N,) float or None.

The reduce-range W8A8 op (`int8_linear_dynamic_reduce_range`) quantizes activations
to 7 bits, unsigned with a zero point, per token: fbgemm's x86 numerics (which
torch.ao's dynamic int8 uses, per tensor), so that the AVX2 kernel can multiply
u8 by s8 with vpmaddubsw without saturating. It takes wsum = qweight.sum(1) as
int32, computed once with the weights (fbgemm's column offsets).
"""
from __future__ import annotations

import torch
from torch import Tensor

from pycomp import _ext
from pycomp.ops._library import LIB, check, cpu_entry, impl_cpu, rows, run

# Largest M the CUDA W8A16 GEMV serves; above it the Triton GEMM wins (tuned on the GPU run).
CUDA_GEMV_MAX_M = 16
# The CUDA kernels read 16 int8 per load, so K must be a multiple of this; other K go to Triton.
CUDA_K_MULTIPLE = 16
# W8A8 on CUDA runs Triton (per-token quantization, then the int8 GEMM with the dequantizing epilogue): on the
# H200 run of 2026-11-28 its GEMM beat the CUDA s8 tensor-core GEMM at every M timed (M=128: 14.3 vs 23.8 us,
# M=1024: 28.8 vs 49.0 us on 4096x4096; 114.6 vs 184.4 us on 14336x4096). The CUDA GEMM serves from this M on
# only where Triton is missing.
CUDA_W8A8_MIN_M = 17
# From this M on, W8A8's Triton GEMM is its persistent TMA variant (triton_kernels/int8.py variant 1): at M=1024 on
# the H200 run 3 of 2026-11-28 it took 36.4 / 116.3 us with the quantization against 37.7 / 133.7 for variant 0
# (4096x4096 / 14336x4096; cuBLAS bf16 47.0 / 161.7). Smaller M was not timed on it.
TRITON_TMA_MIN_M = 512
# The W8A16 GEMV's launch variant (csrc/cuda/int8/w8a16_gemv.cu) by M and weight size, from two H200 runs of
# 2026-11-28 (session 5 run 3 and session 6 run 1; cold weights, us): at M <= 8 on a weight of at least
# GEMV_LARGE_BYTES variant 3 (4 warps, 4 chunks in flight, 4 blocks per SM) took 19.6 / 19.0 on 14336x4096 against
# variant 0's 20.8 / 20.3; on 4096x4096 variant 0 stayed fastest (7.5 / 7.2 against 8.7 / 8.6). At M=16 no
# variant won by more than 4% in both runs.
GEMV_LARGE_BYTES = 32 << 20
GEMV_LARGE_VARIANT = 3
# W8A8 accumulates in int32: 127 * 127 * K must stay below 2**31.
MAX_K_DYNAMIC = (2**31 - 1) // (127 * 127)
# Every CPU route runs the kernels: the weight-only entries' dense route (pycomp.ops._library.cpu_dense_route)
# is not taken by int8, whose small-N tiles beat MKL on the decoded weight at every large-batch shape measured
# (W8A32 0.52-0.90x dense's time, benchmarks/dense_route_crossover.py); before those tiles, the dense form had
# won 2-13x at M=8192, K <= 64 (session 2). The dense form of W8A8's integer arithmetic was never reliably faster.

LIB.define("quantize_per_token_int8(Tensor x) -> (Tensor, Tensor)")
LIB.define("int8_linear_dynamic(Tensor x, Tensor qweight, Tensor wscale, Tensor? bias=None) -> Tensor")
LIB.define("quantize_per_token_uint7(Tensor x) -> (Tensor, Tensor, Tensor)")
LIB.define("int8_linear_dynamic_reduce_range(Tensor x, Tensor qweight, Tensor wscale, Tensor wsum, "
           "Tensor? bias=None) -> Tensor")
LIB.define("int8_linear_weight_only(Tensor x, Tensor qweight, Tensor wscale, Tensor? bias=None) -> Tensor")


# ----------------------------------------------------------------------------- references


def quantize_per_token_int8_ref(x: Tensor) -> tuple[Tensor, Tensor]:
    """x (..., K) float -> q (..., K) int8, scale (...) float32.

    scale = max|x| / 127 per row; q = clamp(round_half_even(x * (127 / max|x|)), -127, 127).
    NaN, as in the kernels (and as quantize_per_token_uint7_ref): NaN inputs are left out of max|x|, and a
    NaN product (a NaN input, or inf * 0 when max|x| is infinite) quantizes to -127.
    """
    xf = x.float()
    amax = torch.nan_to_num(xf.abs(), nan=0.0, posinf=float("inf")).amax(dim=-1, keepdim=True)
    # Tensor-by-tensor division: `127.0 / t` runs as reciprocal * 127 and `t / 127.0` as a multiply by
    # fl(1/127) on CUDA; the kernels divide with IEEE rounding, and so must the definition.
    c127 = torch.full_like(amax, 127.0)
    inv = torch.where(amax > 0, c127 / amax, torch.zeros_like(amax))
    q = torch.nan_to_num(torch.round(xf * inv), nan=-127.0).clamp_(-127, 127).to(torch.int8)
    return q, (amax / c127).squeeze(-1)


def int8_linear_dynamic_ref(x: Tensor, qweight: Tensor, wscale: Tensor, bias: Tensor | None = None) -> Tensor:
    """W8A8 in float64: exact integer dot products, then the two scales and the bias."""
    q, s = quantize_per_token_int8_ref(x)
    acc = q.double() @ qweight.double().t()
    out = acc * s.double().unsqueeze(-1) * wscale.double()
    if bias is not None:
        out = out + bias.double()
    return out.to(x.dtype)


def quantize_per_token_uint7_ref(x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """x (..., K) float -> q (..., K) uint8 in [0, 127], scale (...) float32, zero_point (...) int32.

    Per row, in fp32: lo = min(0, min x), hi = max(0, max x), r = hi - lo; scale = r / 127;
    inv = 127 / r (0 when r = 0); zp = clamp(round(-lo * inv), 0, 127);
    q = clamp(round(x * inv) + zp, 0, 127) (round half to even), so x ~= (q - zp) * scale.
    NaN, as in the kernels: NaN inputs are left out of min and max (0 is in the range anyway), and a NaN
    before the clamp (a NaN input, or inf * 0 when the range is infinite) quantizes to 0.
    """
    xf = x.float()
    finite_or_inf = torch.nan_to_num(xf, nan=0.0, posinf=float("inf"), neginf=float("-inf"))
    lo = finite_or_inf.amin(dim=-1, keepdim=True).clamp(max=0.0)
    hi = finite_or_inf.amax(dim=-1, keepdim=True).clamp(min=0.0)
    r = hi - lo
    c127 = torch.full_like(r, 127.0)  # tensor divisions round as the kernels' do (see above)
    inv = torch.where(r > 0, c127 / r, torch.zeros_like(r))
    zp = torch.nan_to_num(torch.round(-lo * inv), nan=0.0).clamp_(0, 127)
    q = torch.nan_to_num(torch.round(xf * inv) + zp, nan=0.0).clamp_(0, 127).to(torch.uint8)
    return q, (r / c127).squeeze(-1), zp.squeeze(-1).to(torch.int32)


def int8_linear_dynamic_reduce_range_ref(x: Tensor, qweight: Tensor, wscale: Tensor, wsum: Tensor,
                                         bias: Tensor | None = None) -> Tensor:
    """W8A8 with 7-bit activations: the exact integer dot sum_k (q - zp) * w, then, in fp32 and in this
    order, * scale, * wscale, + bias: the kernels' epilogue, so CPU results equal this bit for bit.
    `wsum` is the kernels' cache of qweight.sum(1); the definition does not need it."""
    q, s, zp = quantize_per_token_uint7_ref(x)
    dot = (q.double() - zp.double().unsqueeze(-1)) @ qweight.double().t()
    out = dot.float() * s.unsqueeze(-1) * wscale
    if bias is not None:
        out = out + bias.float()
    return out.to(x.dtype)


def int8_linear_weight_only_ref(x: Tensor, qweight: Tensor, wscale: Tensor, bias: Tensor | None = None) -> Tensor:
    """x @ (qweight * wscale).T + bias in float64."""
    out = x.double() @ (qweight.double() * wscale.double().unsqueeze(1)).t()
    if bias is not None:
        out = out + bias.double()
    return out.to(x.dtype)


# ----------------------------------------------------------------------------- checks and fakes


def _check_linear(op: str, x: Tensor, qweight: Tensor, wscale: Tensor, bias: Tensor | None) -> None:
    check(x.dtype.is_floating_point, lambda: f"pycomp.{op}: x must be a float tensor, got {x.dtype}")
    check(
        qweight.dim() == 2 and qweight.dtype == torch.int8,
        lambda: f"pycomp.{op}: qweight must be a 2-D int8 tensor (N, K), got {qweight.dim()}-D {qweight.dtype}",
    )
    check(x.dim() >= 1, lambda: f"pycomp.{op}: x must have a feature dimension")
    check(
        x.shape[-1] == qweight.shape[1],
        lambda: f"pycomp.{op}: x has {x.shape[-1]} features (last dim) but the weight expects K={qweight.shape[1]}",
    )
    check(
        wscale.dim() == 1 and wscale.dtype == torch.float32 and wscale.shape[0] == qweight.shape[0],
        lambda: f"pycomp.{op}: wscale must be a float32 vector of N={qweight.shape[0]} per-channel scales",
    )
    check(
        bias is None or (bias.dim() == 1 and bias.shape[0] == qweight.shape[0]),
        lambda: f"pycomp.{op}: bias must be a vector of N={qweight.shape[0]} values",
    )
    for name, t in (("qweight", qweight), ("wscale", wscale), ("bias", bias)):
        check(
            t is None or t.device == x.device,
            lambda: f"pycomp.{op}: {name} is on {t.device} but x is on {x.device}",
        )


@torch.library.register_fake("pycomp::quantize_per_token_int8")
def _quantize_fake(x):
    return x.new_empty(x.shape, dtype=torch.int8), x.new_empty(x.shape[:-1], dtype=torch.float32)


@torch.library.register_fake("pycomp::quantize_per_token_uint7")
def _quantize_uint7_fake(x):
    lead = x.shape[:-1]
    return (x.new_empty(x.shape, dtype=torch.uint8), x.new_empty(lead, dtype=torch.float32),
            x.new_empty(lead, dtype=torch.int32))


@torch.library.register_fake("pycomp::int8_linear_dynamic_reduce_range")
def _reduce_range_fake(x, qweight, wscale, wsum, bias=None):
    return x.new_empty((*x.shape[:-1], qweight.shape[0]))


def _linear_fake(x, qweight, wscale, bias=None):
    return x.new_empty((*x.shape[:-1], qweight.shape[0]))


torch.library.register_fake("pycomp::int8_linear_dynamic")(_linear_fake)
torch.library.register_fake("pycomp::int8_linear_weight_only")(_linear_fake)


# ----------------------------------------------------------------------------- routing


def plan(op: str, device: torch.device | str, M: int | None = None, K: int | None = None,
         dtype: torch.dtype | None = None) -> str:
    """Name of the backend that runs `op` ("dynamic", "dynamic_reduce_range" or "weight_only") for this
    device and shape.

    With M or K left out, the answer is for large M and aligned, large K.
    """
    device = torch.device(device)
    if op == "dynamic_reduce_range":
        # CPU only; AVX-512 VNNI machines run the AVX2 kernels (no vpdpbusd version yet).
        if device.type != "cpu" or not _ext.has_c("int8_linear_dynamic_reduce_range_cpu"):
            return "reference"
        return "cpu-portable" if _ext._C.cpu_isa() == "portable" else "cpu-avx2"
    if device.type == "cpu":
        return f"cpu-{_ext._C.cpu_isa()}" if _ext.has_c("int8_linear_dynamic_cpu") else "reference"
    if device.type != "cuda":
        return "reference"
    aligned = K is None or K % CUDA_K_MULTIPLE == 0
    if dtype is not None and dtype not in (torch.float32, torch.float16, torch.bfloat16):
        return "reference"  # float64 and friends: no kernel computes in them
    if op == "weight_only":
        if M is not None and M <= CUDA_GEMV_MAX_M and aligned and _ext.has_c("w8a16_linear_cuda"):
            return "cuda"
    if _ext.triton_int8() is not None:
        return "triton"
    if op == "dynamic" and (M is None or M >= CUDA_W8A8_MIN_M) and aligned and _ext.has_c("w8a8_gemm_cuda"):
        return "cuda"
    return "reference"


# ----------------------------------------------------------------------------- CPU
# The CPU kernels run through their C++ entries (csrc/cpu/int8/int8_ops.h: these checks and the conversions,
# in C++); without the extension the CPU runs the references.


def _check_reduce_range(x, qweight, wscale, wsum, bias):
    _check_linear("int8_linear_dynamic_reduce_range", x, qweight, wscale, bias)
    check(
        wsum.dim() == 1 and wsum.dtype == torch.int32 and wsum.shape[0] == qweight.shape[0]
        and wsum.device == x.device,
        lambda: f"pycomp.int8_linear_dynamic_reduce_range: wsum must be an int32 vector of N={qweight.shape[0]} "
        f"row sums of qweight on {x.device}, got {wsum.dim()}-D {wsum.dtype} on {wsum.device}",
    )
    check(
        qweight.shape[1] <= MAX_K_DYNAMIC,
        lambda: f"pycomp.int8_linear_dynamic_reduce_range: K={qweight.shape[1]} could overflow the int32 "
        f"accumulator (at most {MAX_K_DYNAMIC}); use mode='weight_only'",
    )


def _check_features(op: str):
    def run(x):
        check(x.shape[-1] > 0, lambda: f"pycomp.{op}: x must have at least one feature")

    return run


def _checked(check_args, ref):
    """ref behind the op's checks: the impl where no kernel serves."""
    def impl(*args):
        check_args(*args)
        return ref(*args)

    return impl


# ----------------------------------------------------------------------------- CUDA


def _quantize_cuda(x):
    x2 = rows(x)
    if _ext.has_c("quantize_per_token_int8_cuda"):
        q, s = _ext._C.quantize_per_token_int8_cuda(x2)
    elif (tk := _ext.triton_int8()) is not None:
        q, s = tk.quantize_per_token_int8(x2)
    else:
        return quantize_per_token_int8_ref(x)
    return q.reshape(x.shape), s.reshape(x.shape[:-1])


def _check_dynamic(x, qweight, wscale, bias):
    _check_linear("int8_linear_dynamic", x, qweight, wscale, bias)
    check(
        qweight.shape[1] <= MAX_K_DYNAMIC,
        lambda: f"pycomp.int8_linear_dynamic: K={qweight.shape[1]} could overflow the int32 accumulator "
        f"(at most {MAX_K_DYNAMIC}); use mode='weight_only'",
    )


def gemv_variant(M: int, weight_bytes: int) -> int:
    """The W8A16 CUDA GEMV variant for M rows against a weight of `weight_bytes` int8 (see GEMV_LARGE_BYTES)."""
    return GEMV_LARGE_VARIANT if M <= 8 and weight_bytes >= GEMV_LARGE_BYTES else 0


def _w8a8_cuda(x2, qweight, wscale, b):
    q, s = _quantize_cuda(x2)
    return _ext._C.w8a8_gemm_cuda(q, s, qweight, wscale, b, x2.dtype)


# The input checks of each mode, shared by the CPU and CUDA impls.
_CHECKS = {"dynamic": _check_dynamic,
           "weight_only": lambda *a: _check_linear("int8_linear_weight_only", *a)}

# mode -> backend name (from plan) -> (x2, qweight, wscale, bias) -> out: one CUDA dispatcher serves both modes.
_CUDA_PATHS = {
    "dynamic": {
        "cuda": _w8a8_cuda,
        "triton": lambda x2, *a: _ext.triton_int8().int8_linear_dynamic(
            x2, *a, variant=1 if x2.shape[0] >= TRITON_TMA_MIN_M else 0),
        "reference": int8_linear_dynamic_ref,
    },
    "weight_only": {
        "cuda": lambda x2, q, *a: _ext._C.w8a16_linear_cuda(x2, q, *a, gemv_variant(x2.shape[0], q.numel())),
        "triton": lambda *a: _ext.triton_int8().w8a16_linear(*a),
        "reference": int8_linear_weight_only_ref,
    },
}


def _linear_cuda(mode: str):
    check, paths = _CHECKS[mode], _CUDA_PATHS[mode]

    def impl(x, qweight, wscale, bias=None):
        check(x, qweight, wscale, bias)
        x2 = rows(x)
        M, K, N = x2.shape[0], x2.shape[1], qweight.shape[0]
        if M == 0:
            return x.new_empty((*x.shape[:-1], N))
        b = None if bias is None else bias.to(x.dtype).contiguous()
        out = paths[plan(mode, x.device, M, K, x.dtype)](x2, qweight, wscale, b)
        return out.reshape(*x.shape[:-1], N)

    return impl


impl_cpu("quantize_per_token_int8", cpu_entry("quantize_per_token_int8_op")
         or _checked(_check_features("quantize_per_token_int8"), quantize_per_token_int8_ref))
impl_cpu("quantize_per_token_uint7", cpu_entry("quantize_per_token_uint7_op")
         or _checked(_check_features("quantize_per_token_uint7"), quantize_per_token_uint7_ref))
impl_cpu("int8_linear_dynamic", cpu_entry("int8_linear_dynamic_op")
         or _checked(_check_dynamic, int8_linear_dynamic_ref))
impl_cpu("int8_linear_weight_only", cpu_entry("int8_linear_weight_only_op")
         or _checked(_CHECKS["weight_only"], int8_linear_weight_only_ref))
impl_cpu("int8_linear_dynamic_reduce_range", cpu_entry("int8_linear_dynamic_reduce_range_op")
         or _checked(_check_reduce_range, int8_linear_dynamic_reduce_range_ref))
LIB.impl("quantize_per_token_uint7", quantize_per_token_uint7_ref, "CUDA")
LIB.impl("int8_linear_dynamic_reduce_range", _checked(_check_reduce_range, int8_linear_dynamic_reduce_range_ref),
         "CUDA")
LIB.impl("quantize_per_token_int8", _quantize_cuda, "CUDA")
LIB.impl("int8_linear_dynamic", _linear_cuda("dynamic"), "CUDA")
LIB.impl("int8_linear_weight_only", _linear_cuda("weight_only"), "CUDA")


# ----------------------------------------------------------------------------- autograd (straight-through)


def _setup_ctx(ctx, inputs, output):
    x, qweight, wscale, bias = inputs
    ctx.save_for_backward(qweight, wscale)
    ctx.x_dtype = x.dtype
    ctx.has_bias = bias is not None


def _backward(ctx, grad_out):
    qweight, wscale = ctx.saved_tensors
    w = qweight.to(grad_out.dtype) * wscale.to(grad_out.dtype).unsqueeze(1)
    grad_x = (grad_out @ w).to(ctx.x_dtype)
    grad_bias = grad_out.reshape(-1, grad_out.shape[-1]).sum(0) if ctx.has_bias else None
    return grad_x, None, None, grad_bias


for _name in ("int8_linear_dynamic", "int8_linear_weight_only"):
    torch.library.register_autograd(f"pycomp::{_name}", _backward, setup_context=_setup_ctx)


def _setup_ctx_reduce_range(ctx, inputs, output):
    x, qweight, wscale, _wsum, bias = inputs
    _setup_ctx(ctx, (x, qweight, wscale, bias), output)


def _backward_reduce_range(ctx, grad_out):
    grad_x, _, _, grad_bias = _backward(ctx, grad_out)
    return grad_x, None, None, None, grad_bias


torch.library.register_autograd("pycomp::int8_linear_dynamic_reduce_range", _backward_reduce_range,
                                setup_context=_setup_ctx_reduce_range)


# ----------------------------------------------------------------------------- public wrappers


def quantize_per_token_int8(x: Tensor) -> tuple[Tensor, Tensor]:
    """x (..., K) float -> (q (..., K) int8, scale (...) float32)."""
    return run(torch.ops.pycomp.quantize_per_token_int8, x)


def int8_linear_dynamic(x: Tensor, qweight: Tensor, wscale: Tensor, bias: Tensor | None = None) -> Tensor:
    """W8A8: x (..., K) float -> (..., N) in x's dtype; activations quantized per token."""
    return run(torch.ops.pycomp.int8_linear_dynamic, x, qweight, wscale, bias)


def quantize_per_token_uint7(x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """x (..., K) float -> (q (..., K) uint8 in [0, 127], scale (...) float32, zero_point (...) int32)."""
    return run(torch.ops.pycomp.quantize_per_token_uint7, x)


def int8_linear_dynamic_reduce_range(x: Tensor, qweight: Tensor, wscale: Tensor, wsum: Tensor,
                                     bias: Tensor | None = None) -> Tensor:
    """W8A8 with 7-bit activations (fbgemm's numerics, per token): x (..., K) float -> (..., N) in x's dtype.

    wsum: (N,) int32, qweight.sum(1) (see weight_row_sums)."""
    return run(torch.ops.pycomp.int8_linear_dynamic_reduce_range, x, qweight, wscale, wsum, bias)


def weight_row_sums(qweight: Tensor) -> Tensor:
    """qweight (N, K) int8 -> (N,) int32 row sums, the wsum of int8_linear_dynamic_reduce_range."""
    return qweight.sum(dim=1, dtype=torch.int32)


def int8_linear_weight_only(x: Tensor, qweight: Tensor, wscale: Tensor, bias: Tensor | None = None) -> Tensor:
    """W8A16 / W8A32: x (..., K) float -> (..., N) in x's dtype; weights dequantized in registers."""
    return run(torch.ops.pycomp.int8_linear_weight_only, x, qweight, wscale, bias)
