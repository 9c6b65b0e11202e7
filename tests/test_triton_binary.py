"""Triton W1A16 against the float64 reference; on CPU tensors under TRITON_INTERPRET=1 (small shapes)."""
import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

pytest.importorskip("triton")
tk = pytest.importorskip("pycomp.triton_kernels.binary")

from pycomp.formats.binary import binarize_weight, dequantize_binary  # noqa: E402
from pycomp.ops.binary import w1a16_linear_ref  # noqa: E402

DEVICE = "cpu" if tk._INTERPRET else "cuda"
if DEVICE == "cuda" and not torch.cuda.is_available():
    pytest.skip("pycomp.triton_kernels.binary was imported without TRITON_INTERPRET=1 and no CUDA device",
                allow_module_level=True)


@pytest.mark.parametrize("m,n,k", [(1, 5, 33), (17, 20, 100), (3, 16, 64), (20, 7, 130)])
@pytest.mark.parametrize("group_size", [0, 32, 64])
def test_w1a16_matches_reference(m, n, k, group_size):
    g = torch.Generator().manual_seed(m * 1000 + k)
    packed, alpha = binarize_weight(torch.randn(n, k, generator=g), group_size)
    x, b = torch.randn(m, k, generator=g), torch.randn(n, generator=g)
    got = tk.w1a16_linear(x.to(DEVICE), packed.to(DEVICE), alpha.to(DEVICE), group_size, b.to(DEVICE)).cpu()
    want = w1a16_linear_ref(x.double(), packed, alpha, group_size, b)
    mag = x.abs().double() @ dequantize_binary(packed, alpha, k, group_size, torch.float64).abs().t()
    tol = 1e-5 if tk._INTERPRET else 2e-3  # fp32 in the interpreter; TF32 inputs on a GPU
    assert ((got.double() - want).abs() <= tol * mag + 1e-5).all(), (got.double() - want).abs().max()


def test_w1a16_bf16_and_errors():
    packed, alpha = binarize_weight(torch.randn(8, 64))
    x = torch.randn(4, 64).to(torch.bfloat16)
    got = tk.w1a16_linear(x.to(DEVICE), packed.to(DEVICE), alpha.to(DEVICE)).cpu()
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got, w1a16_linear_ref(x, packed, alpha, 0), rtol=2e-2, atol=5e-2)
    with pytest.raises(TypeError, match="uint32"):
        tk.w1a16_linear(x.to(DEVICE), packed.view(torch.int32).to(DEVICE), alpha.to(DEVICE))
    with pytest.raises(TypeError, match="alpha"):
        tk.w1a16_linear(x.to(DEVICE), packed.to(DEVICE), alpha.to(DEVICE), 32)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("m,group_size", [(3, 0), (20, 0), (5, 64), (18, 32)])
def test_w1a16_half_dtypes(m, group_size, dtype):
    # fp16 and bf16 signs in both tile orientations (swapped for M <= 16 in the interpreter), K tail 100
    n, k = 24, 100
    g = torch.Generator().manual_seed(m + group_size)
    packed, alpha = binarize_weight(torch.randn(n, k, generator=g), group_size)
    x, b = torch.randn(m, k, generator=g).to(dtype), torch.randn(n, generator=g).to(dtype)
    got = tk.w1a16_linear(x.to(DEVICE), packed.to(DEVICE), alpha.to(DEVICE), group_size, b.to(DEVICE)).cpu()
    assert got.dtype == dtype
    want = w1a16_linear_ref(x.double(), packed, alpha, group_size, b.double())
    mag = x.abs().double() @ dequantize_binary(packed, alpha, k, group_size, torch.float64).abs().t() + b.abs().double()
    one_rounding = 2.0**-10 if dtype == torch.float16 else 2.0**-7  # of the output (bf16: truncated in the interpreter)
    assert ((got.double() - want).abs() <= one_rounding * want.abs() + 1e-5 * mag + 1e-30).all()


def test_sign_constants():
    # The kernel reads (bit << pos) | one as +1 (bit 0) or -1 (bit 1) in each float type.
    for pos, one, dtype, view in ((tk.BF16_POS, tk.BF16_ONE, torch.bfloat16, torch.int16),
                                  (tk.FP16_POS, tk.FP16_ONE, torch.float16, torch.int16),
                                  (tk.FP32_POS, tk.FP32_ONE, torch.float32, torch.int32)):
        bits = (torch.tensor([0, 1], dtype=torch.int64) << pos.value) | one.value
        assert bits.to(view).view(dtype).tolist() == [1.0, -1.0], dtype  # int64 -> int16/int32 wraps
