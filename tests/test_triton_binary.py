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
