"""Which CUDA kernel variant each op's CUDA path asks for, by M (the choices of the H200 runs in pycomp/ops).

The kernels are replaced by recorders, so this runs without a GPU; tests/test_cuda_*.py run the variants themselves.
"""
import os
import re
import types

import torch

from pycomp import _ext
from pycomp.ops import binary, int4_cuda, int8, sparse

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _recorder(calls, name, result):
    def f(*args, **kwargs):
        calls.append((name, args, kwargs))
        return result(*args)

    return f


def test_int8_w8a8_takes_the_tma_gemm_from_its_threshold(monkeypatch):
    calls = []
    fake = types.SimpleNamespace(int8_linear_dynamic=_recorder(
        calls, "dynamic", lambda x, q, *a: x.new_zeros(x.shape[0], q.shape[0])))
    monkeypatch.setattr(_ext, "triton_int8", lambda: fake)
    q, s = torch.zeros(8, 32, dtype=torch.int8), torch.ones(8)
    for m, want in ((1, 0), (int8.TRITON_TMA_MIN_M - 1, 0), (int8.TRITON_TMA_MIN_M, 1)):
        int8._CUDA_PATHS["dynamic"]["triton"](torch.zeros(m, 32), q, s, None)
        assert calls[-1][2] == {"variant": want}, m


def test_int4_gemv_variant_by_m_and_the_dequantize_path(monkeypatch):
    assert [int4_cuda.gemv_variant(m) for m in (1, 2, 4, 5, 8, 9, 16)] == [1, 5, 5, 10, 10, 11, 11]
    calls = []
    out = lambda x, p, *a: x.new_zeros(x.shape[0], p.shape[0])  # noqa: E731
    fake = types.SimpleNamespace(w4a16_linear=_recorder(calls, "fused", out),
                                 w4a16_linear_dequant=_recorder(calls, "dequant", out))
    monkeypatch.setattr(int4_cuda, "triton_int4", lambda: fake)
    monkeypatch.setattr(int4_cuda._ext, "has_c", lambda name: False)  # no CUDA GEMV: Triton at every M
    packed, scales = torch.zeros(8, 64, dtype=torch.uint8), torch.ones(8, 1, dtype=torch.float16)
    for m, want in ((17, "fused"), (int4_cuda.TRITON_DEQUANT_MIN_M - 1, "fused"),
                    (int4_cuda.TRITON_DEQUANT_MIN_M, "dequant")):
        int4_cuda.cuda_impl(torch.zeros(m, 128, dtype=torch.bfloat16), packed, scales, None, None, 128, 128)
        assert calls[-1][0] == want, m


def test_sparse24_gemv_and_gemm_variants(monkeypatch):
    calls = []
    out = lambda x, v, *a: x.new_zeros(x.shape[0], v.shape[0])  # noqa: E731
    fake = types.SimpleNamespace(sparse24_gemv_cuda=_recorder(calls, "gemv", out),
                                 sparse24_gemm_cuda=_recorder(calls, "gemm", out))
    monkeypatch.setattr(_ext, "_C", fake)
    values, meta = torch.zeros(8, 16, dtype=torch.bfloat16), torch.zeros(8, 2, dtype=torch.int16)
    cases = ((1, "gemv", sparse.CUDA_GEMV_VARIANT), (sparse.CUDA_GEMV_MAX_M, "gemv", sparse.CUDA_GEMV_VARIANT),
             (sparse.CUDA_GEMV_MAX_M + 1, "gemm", sparse.CUDA_GEMM_VARIANT),
             (sparse.CUDA_GEMM_WIDE_MIN_M, "gemm", sparse.CUDA_GEMM_WIDE_VARIANT))
    for m, kernel, variant in cases:
        sparse._sparse24_cuda(torch.zeros(m, 32, dtype=torch.bfloat16), values, meta, None, None)
        assert calls[-1][0] == kernel and calls[-1][1][-1] == variant, m


def test_binary_gemv_variant_by_dtype_and_grouping(monkeypatch):
    calls = []
    out = lambda x, p, *a: x.new_zeros(x.shape[0], p.shape[0])  # noqa: E731
    fake = types.SimpleNamespace(w1a16_gemv_cuda=_recorder(calls, "w1a16", out),
                                 xnor_gemm_cuda=_recorder(calls, "xnor", out))
    monkeypatch.setattr(_ext, "_C", fake)
    packed, alpha = torch.zeros(8, 1, dtype=torch.int32), torch.ones(8, 1)
    for dtype, group_size, want in ((torch.bfloat16, 0, binary.CUDA_GEMV_TC_VARIANT),
                                    (torch.float16, 0, binary.CUDA_GEMV_TC_VARIANT),
                                    (torch.float32, 0, 0), (torch.bfloat16, 32, 0)):
        binary._w1a16_cuda(torch.zeros(1, 32, dtype=dtype), packed, alpha, group_size, None)
        assert calls[-1][1][-1] == want, (dtype, group_size)
    binary._xnor_cuda(torch.zeros(4, 32), packed, alpha, 0, None)
    assert calls[-1][1][-1] == binary.CUDA_XNOR_VARIANT


def test_int8_w8a16_gemv_variant_by_m_and_weight_size(monkeypatch):
    calls = []
    fake_c = types.SimpleNamespace(w8a16_linear_cuda=_recorder(
        calls, "gemv", lambda x, q, *a: x.new_zeros(x.shape[0], q.shape[0])))
    monkeypatch.setattr(_ext, "_C", fake_c)
    big = int8.GEMV_LARGE_BYTES
    for m, n, want in ((1, 8, 0), (1, big // 16, int8.GEMV_LARGE_VARIANT), (8, big // 16, int8.GEMV_LARGE_VARIANT),
                       (9, big // 16, 0), (16, big // 16, 0), (1, big // 16 - 1, 0)):
        q = torch.empty(n, 16, dtype=torch.int8)  # empty: only its shape matters to the choice
        int8._CUDA_PATHS["weight_only"]["cuda"](torch.zeros(m, 16), q, torch.ones(n), None)
        assert calls[-1][1][-1] == want, (m, n)


def _header_variants(path: str, name: str) -> set[int]:
    """The variant numbers a CUDA header lists as `inline constexpr int <name>[] = {...};`."""
    with open(os.path.join(ROOT, path)) as f:
        m = re.search(name + r"\[\] = \{([^}]*)\}", f.read())
    assert m, f"{path} lists no {name}"
    return {int(v) for v in m.group(1).split(",")}


def test_the_variants_asked_for_exist():
    """Variants that lost on the H200 were removed and their numbers left unused: every number the ops ask for must
    be one the kernels still have (the binding refuses the others), checked here without a CUDA build."""
    int4 = _header_variants("csrc/cuda/int4/int4_cuda.h", "kW4A16GemvVariants")
    assert {int4_cuda.gemv_variant(m) for m in range(1, int4_cuda.CUDA_GEMV_MAX_M + 1)} <= int4
    gemv = _header_variants("csrc/cuda/sparse/sparse_cuda.h", "kSparse24GemvVariants")
    gemm = _header_variants("csrc/cuda/sparse/sparse_cuda.h", "kSparse24GemmVariants")
    assert sparse.CUDA_GEMV_VARIANT in gemv
    assert {sparse.CUDA_GEMM_VARIANT, sparse.CUDA_GEMM_WIDE_VARIANT} <= gemm
    assert 0 in int4 & gemv & gemm and not int4 & {3, 4, 8, 9, 13} and 3 not in gemv and not gemm & {2, 3, 6}
