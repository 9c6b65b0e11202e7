"""pycomp::im2col: the C++ rows equal F.unfold's on odd geometries; gradients are F.fold; opcheck."""
import pytest
import torch
import torch.nn.functional as F

from pycomp import _ext
from pycomp.ops import conv as ops

GEOMETRIES = [  # (B, C, H, W), kernel, stride, dilation
    ((2, 3, 7, 9), (3, 3), (1, 1), (1, 1)),
    ((1, 1, 8, 8), (3, 3), (1, 1), (1, 1)),
    ((3, 5, 11, 6), (2, 3), (2, 1), (1, 1)),
    ((2, 4, 13, 12), (3, 2), (1, 3), (2, 2)),
    ((1, 2, 5, 5), (5, 5), (1, 1), (1, 1)),
    ((4, 7, 9, 10), (1, 3), (3, 2), (1, 3)),
    ((2, 3, 9, 9), (3, 1), (1, 1), (1, 1)),  # every kernel width the C++ code specializes (1, 3, 5, 7) and others
    ((1, 2, 9, 15), (2, 7), (1, 2), (1, 1)),
]


@pytest.mark.parametrize("shape,kernel,stride,dilation", GEOMETRIES)
def test_rows_equal_unfold(shape, kernel, stride, dilation):
    x = torch.randn(shape)
    want = F.unfold(x, kernel, dilation=dilation, stride=stride).transpose(1, 2).reshape(-1, shape[1] * kernel[0]
                                                                                         * kernel[1])
    got = ops.im2col(x, kernel, stride, dilation)
    assert got.is_contiguous() and torch.equal(got, want)  # a copy of values: exact


def test_the_cpu_kernel_runs_for_float32():
    assert _ext.has_c("im2col_cpu"), "pycomp._C lacks im2col_cpu"
    x = torch.randn(2, 3, 6, 6)
    assert torch.equal(_ext._C.im2col_cpu(x, 3, 3, 1, 1, 1, 1), ops.im2col_ref(x, (3, 3), (1, 1), (1, 1)))
    with pytest.raises(RuntimeError, match="smaller than the dilated kernel"):
        _ext._C.im2col_cpu(torch.randn(1, 1, 2, 2), 3, 3, 1, 1, 1, 1)


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_other_dtypes_use_unfold(dtype):
    x = torch.randn(2, 3, 6, 7).to(dtype)
    assert torch.equal(ops.im2col(x, (3, 2), (1, 2), (1, 1)), ops.im2col_ref(x, (3, 2), (1, 2), (1, 1)))


def test_gradient_is_fold():
    x = torch.randn(2, 3, 7, 8, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: ops.im2col(t, (3, 2), (2, 1), (1, 2)), (x,))


def test_opcheck_and_bad_input():
    torch.library.opcheck(torch.ops.pycomp.im2col.default, (torch.randn(2, 3, 7, 8), [3, 3], [1, 2], [1, 1]))
    with pytest.raises(RuntimeError, match="smaller than the kernel"):
        ops.im2col(torch.randn(1, 1, 2, 2), (3, 3), (1, 1), (1, 1))
    # The number in the message too: an extension with its own static copy of libstdc++ formats numbers wrongly
    # (it printed nothing here, and crashed on the H200 machine); setup.py links the shared one.
    with pytest.raises(RuntimeError, match=r"must be 4-D \(B, C, H, W\), got 3-D"):
        ops.im2col(torch.randn(3, 8, 8), (3, 3), (1, 1), (1, 1))
