"""The C++ sparse kernels, each ISA this CPU runs, against float64 on odd shapes and both CSR M paths."""
import pytest
import torch

from pycomp import _ext
from pycomp.formats import sparse as fmt
from pycomp.prune import nm_mask
from simde_harness import needs_simde, run_emulated

pytestmark = pytest.mark.skipif(not _ext.has_c("csr_linear_cpu"), reason="pycomp._C without the sparse kernels")

ISAS = ["portable", "avx2", "avx512vnni"]


def _isa(name):
    if not _ext._C.cpu_isa_supported(name):
        pytest.skip(f"this CPU does not run {name}")
    return name


def _sparse(n, k, density, seed):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(n, k, generator=g) * (torch.rand(n, k, generator=g) < density)
    if n > 3:
        w[n // 3] = 0  # an empty row
    return w


def _close(got, x, w, bias=None):
    want = torch.nn.functional.linear(x.double(), w.double(), None if bias is None else bias.double())
    # fp32 FMAs in another order: within 1e-5 of the output's scale
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5 * float(want.abs().max()) + 1e-6)


# M < 3 gathers along K per row, M >= 3 transposes x into panels of 32 rows (AVX2; 64 AVX-512, 4 portable,
# the last one narrower): both paths, with odd tails and 2-3 panels
MS = [1, 2, 3, 4, 5, 7, 8, 9, 33, 70]


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("m", MS)
@pytest.mark.parametrize("n,k,density", [(45, 77, 0.1), (16, 300, 0.5), (7, 5, 0.9)])
def test_csr(isa, m, n, k, density):
    w = _sparse(n, k, density, seed=m * 7 + n)
    x, bias = torch.randn(m, k), torch.randn(n)
    crow, col, values = fmt.pack_csr(w)
    _close(_ext._C.csr_linear_cpu(x, crow, col, values, k, bias, isa=_isa(isa)), x, w, bias)


@pytest.mark.parametrize("isa", ISAS)
def test_csr_int32_indices_and_empty_weight(isa):
    w = _sparse(9, 40000, 0.01, seed=3)
    x = torch.randn(10, 40000)
    crow, col, values = fmt.pack_csr(w)
    assert col.dtype == torch.int32
    _close(_ext._C.csr_linear_cpu(x, crow, col, values, 40000, isa=_isa(isa)), x, w)
    crow, col, values = fmt.pack_csr(torch.zeros(5, 6))
    assert values.numel() == 0
    out = _ext._C.csr_linear_cpu(torch.randn(3, 6), crow, col, values, 6, isa=isa)
    assert torch.equal(out, torch.zeros(3, 5))


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("threads", [2, 3])
@pytest.mark.parametrize("m", [1, 2, 5, 40])
def test_csr_rows_split_by_nonzeros(isa, threads, m):
    """Threads take row ranges of equal non-zero counts: rows of very different density (a dense first
    quarter, empty rows, one row holding a third of the non-zeros), each output row written exactly once."""
    n, k = 203, 301
    g = torch.Generator().manual_seed(threads * 10 + m)
    w = torch.randn(n, k, generator=g) * (torch.rand(n, k, generator=g) < 0.05)
    w[: n // 4] = torch.randn(n // 4, k, generator=g)
    w[n // 2: n // 2 + 20] = 0
    w[-1] = torch.randn(k, generator=g)
    x, bias = torch.randn(m, k), torch.randn(n)
    crow, col, values = fmt.pack_csr(w)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        got = _ext._C.csr_linear_cpu(x, crow, col, values, k, bias, isa=_isa(isa))
        zero = _ext._C.csr_linear_cpu(x, *fmt.pack_csr(torch.zeros(n, k)), k, bias, isa=isa)
    finally:
        torch.set_num_threads(before)
    _close(got, x, w, bias)
    assert torch.equal(zero, bias.expand(m, n))


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("m", [1, 3, 4, 6, 33])
@pytest.mark.parametrize("block", [(16, 16), (4, 8), (3, 5), (1, 24)])
def test_bsr(isa, m, block):
    n, k = 37, 61
    g = torch.Generator().manual_seed(m)
    bn, bk = block
    keep = torch.rand(-(-n // bn), -(-k // bk), generator=g) > 0.6
    keep[0] = False  # an empty block row
    w = torch.randn(n, k, generator=g) * keep.repeat_interleave(bn, 0).repeat_interleave(bk, 1)[:n, :k]
    crow, col, values = fmt.pack_bsr(w, block)
    x, bias = torch.randn(m, k), torch.randn(n)
    xp = torch.nn.functional.pad(x, (0, -(-k // bk) * bk - k))
    _close(_ext._C.bsr_linear_cpu(xp, crow, col, values, n, bias, isa=_isa(isa)), x, w, bias)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("m", [1, 2, 4, 5, 8, 16, 37])
@pytest.mark.parametrize("n,k", [(1, 32), (33, 64), (70, 96), (128, 256), (37, 21)])
def test_sparse24(isa, m, n, k):
    g = torch.Generator().manual_seed(m + n)
    w = torch.randn(n, k, generator=g)
    w = w * nm_mask(w, pad=True)
    if n > 3:
        w[2] = 0
    values, meta = fmt.pack_24(w)
    x, bias = torch.randn(m, k), torch.randn(n)
    xp = torch.nn.functional.pad(x, (0, values.shape[1] * 2 - k))
    _close(_ext._C.sparse24_linear_cpu(xp, values, meta, bias, isa=_isa(isa)), x, w, bias)


def _int8_24(n, k, seed):
    """A 2:4 int8 weight packed as the kernel reads it: (values int8, meta, scale (n) f32)."""
    g = torch.Generator().manual_seed(seed)
    q = torch.randint(-127, 128, (n, k), generator=g).float()
    q = q * nm_mask(q + torch.rand(n, k, generator=g) * 0.1, pad=True)  # the jitter breaks |q| ties
    values, meta = fmt.pack_24(q)
    return values.to(torch.int8), meta, torch.rand(n, generator=g) * 0.02 + 1e-3


# M < 8: s24_rows (AVX2) / per-row loop; M >= 8: the outer-product path; 129 crosses its 32-row chunks
@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("m", [1, 2, 3, 5, 8, 17, 129])
@pytest.mark.parametrize("n,k", [(45, 77), (33, 200), (7, 40)])
def test_sparse24_int8_values(isa, m, n, k):
    values, meta, scale = _int8_24(n, k, seed=m * 31 + n)
    w = fmt.densify_24(values.float(), meta, k).double() * scale.double()[:, None]
    x, bias = torch.randn(m, k), torch.randn(n)
    xp = torch.nn.functional.pad(x, (0, values.shape[1] * 2 - k))
    _close(_ext._C.sparse24_linear_cpu(xp, values, meta, bias, scale, isa=_isa(isa)), x, w, bias)
    _close(_ext._C.sparse24_linear_cpu(xp, values, meta, scale=scale, isa=isa), x, w)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("m", [3, 20])
def test_sparse24_strided_x_rows(isa, m):
    """x rows further apart than Kp (a column slice) reach the kernels as they are: both M paths read ldx."""
    values, meta, scale = _int8_24(40, 64, seed=m)
    w = fmt.densify_24(values.float(), meta, 64).double() * scale.double()[:, None]
    x = torch.randn(m, 100)[:, :64]
    assert x.stride(0) == 100
    _close(_ext._C.sparse24_linear_cpu(x, values, meta, scale=scale, isa=_isa(isa)), x, w)
    wf = fmt.densify_24(values.float(), meta, 64)
    _close(_ext._C.sparse24_linear_cpu(x, values.float(), meta, isa=isa), x, wf)


def test_sparse24_refuses_bad_scale():
    values, meta, scale = _int8_24(5, 32, seed=0)
    x = torch.randn(2, 32)
    with pytest.raises(RuntimeError, match="sparse24_linear_cpu: int8 values need a scale"):
        _ext._C.sparse24_linear_cpu(x, values, meta)
    with pytest.raises(RuntimeError, match="sparse24_linear_cpu: a scale goes only with int8 values"):
        _ext._C.sparse24_linear_cpu(x, values.float(), meta, None, scale)
    with pytest.raises(RuntimeError, match="sparse24_linear_cpu: scale must have N=5 values, got 6"):
        _ext._C.sparse24_linear_cpu(x, values, meta, scale=torch.ones(6))
    with pytest.raises(RuntimeError, match="sparse24_linear_cpu: scale must be a contiguous 1-D float32"):
        _ext._C.sparse24_linear_cpu(x, values, meta, scale=scale.double())
    with pytest.raises(RuntimeError, match="sparse24_linear_cpu: scale must be a contiguous 1-D float32"):
        _ext._C.sparse24_linear_cpu(x, values, meta, scale=scale[:, None])
    with pytest.raises(RuntimeError, match="sparse24_linear_cpu: values must be a contiguous 2-D float32 or int8"):
        _ext._C.sparse24_linear_cpu(x, values.double(), meta)


def test_wrappers_refuse_bad_tensors():
    crow, col, values = fmt.pack_csr(_sparse(4, 8, 0.5, 0))
    with pytest.raises(RuntimeError, match="csr_linear_cpu: x has 9 columns"):
        _ext._C.csr_linear_cpu(torch.randn(2, 9), crow, col, values, 8)
    with pytest.raises(RuntimeError, match="csr_linear_cpu: crow\\[N\\] must equal nnz"):
        _ext._C.csr_linear_cpu(torch.randn(2, 8), crow, col[:-1], values[:-1], 8)
    values, meta = fmt.pack_24(torch.zeros(4, 32))
    with pytest.raises(RuntimeError, match="sparse24_linear_cpu: meta must be"):
        _ext._C.sparse24_linear_cpu(torch.randn(2, 32), values, meta[:16])


# ----------------------------------------------------------------------------- AVX-512 without the hardware

_SIMDE_SHIM = r"""
static inline simde__m512i pyc_cvtepi16_epi32(simde__m256i v) {
  int16_t h[16]; int32_t i[16]; simde_mm256_storeu_si256(reinterpret_cast<simde__m256i*>(h), v);
  for (int l = 0; l < 16; ++l) i[l] = h[l];
  return simde_mm512_loadu_si512(i);
}
static inline simde__m512 pyc_i32gather_ps(simde__m512i idx, const float* base, int) {
  int32_t i[16]; float f[16]; simde_mm512_storeu_si512(i, idx);
  for (int l = 0; l < 16; ++l) f[l] = base[i[l]];
  return simde_mm512_loadu_ps(f);
}
"""

_SIMDE_MAIN = r"""
#include "cpu/sparse/sparse_kernels.h"
using namespace pycomp::cpu::sparse;
int main() {
  std::mt19937 rng(11);
  int bad = 0, cases = 0;
  for (int64_t K : {1, 5, 17, 40, 77, 300})
    for (int64_t N : {1, 7, 45, 100})
      for (int64_t M : {1, 2, 3, 4, 5, 8, 9, 17, 33, 70})
        for (int wide = 0; wide < 2; ++wide) {
          // integer values and activations: every sum exact, so any order matches the portable kernel
          std::vector<int32_t> crow(N + 1, 0), c32;
          std::vector<int16_t> c16;
          std::vector<float> val;
          for (int64_t n = 0; n < N; ++n) {
            const unsigned density = n % 5 == 2 ? 0 : rng() % 100;  // empty rows, sparse to dense
            for (int64_t k = 0; k < K; ++k)
              if (rng() % 100 < density) { c32.push_back(k); c16.push_back(k); val.push_back(float(int(rng() % 9) - 4)); }
            crow[n + 1] = int32_t(val.size());
          }
          std::vector<float> x(M * K), bias(N), o1(M * N), o2(M * N);
          for (auto& v : x) v = float(int(rng() % 9) - 4);
          for (auto& v : bias) v = float(int(rng() % 17) - 8);
          const int16_t* p16 = wide ? nullptr : c16.data();
          const int32_t* p32 = wide ? c32.data() : nullptr;
          csr_portable(x.data(), K, crow.data(), p16, p32, val.data(), bias.data(), o1.data(), N, M, N, K);
          csr_avx512(x.data(), K, crow.data(), p16, p32, val.data(), bias.data(), o2.data(), N, M, N, K);
          ++cases;
          for (int64_t i = 0; i < M * N; ++i)
            if (o1[i] != o2[i]) { ++bad; printf("K=%ld N=%ld M=%ld wide=%d: %g vs %g\n", long(K), long(N), long(M), wide, o1[i], o2[i]); break; }
        }
  // Block-CSR: bn x bk blocks over kb block columns; odd block sizes leave K tails inside each block.
  for (int64_t bn : {1, 4, 16})
    for (int64_t bk : {1, 5, 16, 33})
      for (int64_t N : {7, 45})
        for (int64_t M : {1, 2, 3, 4, 5, 9}) {
          const int64_t kb = 4, K = kb * bk, brows = (N + bn - 1) / bn;
          std::vector<int32_t> crow(brows + 1, 0), col;
          std::vector<float> val;
          for (int64_t r = 0; r < brows; ++r) {
            for (int64_t c = 0; c < kb; ++c)
              if (r % 4 != 1 && rng() % 2) {
                col.push_back(int32_t(c));
                for (int64_t e = 0; e < bn * bk; ++e) val.push_back(float(int(rng() % 9) - 4));
              }
            crow[r + 1] = int32_t(col.size());
          }
          std::vector<float> x(M * K), bias(N), o1(M * N), o2(M * N);
          for (auto& v : x) v = float(int(rng() % 9) - 4);
          for (auto& v : bias) v = float(int(rng() % 17) - 8);
          bsr_portable(x.data(), K, crow.data(), col.data(), val.data(), bn, bk, bias.data(), o1.data(), N, M, N);
          bsr_avx512(x.data(), K, crow.data(), col.data(), val.data(), bn, bk, bias.data(), o2.data(), N, M, N);
          ++cases;
          for (int64_t i = 0; i < M * N; ++i)
            if (o1[i] != o2[i]) { ++bad; printf("bsr bn=%ld bk=%ld N=%ld M=%ld: %g vs %g\n", long(bn), long(bk), long(N), long(M), o1[i], o2[i]); break; }
        }
  printf("%d cases, %d mismatching\n", cases, bad);
  return bad != 0;
}
"""


@needs_simde
def test_avx512_csr_under_simde_emulation(tmp_path):
    """Where the CPU hides AVX-512 (this project's machines), sparse_avx512.cpp is compiled with its
    intrinsics emulated by SIMDe and its CSR and block-CSR kernels checked bit for bit against the portable
    ones on integer sums (exact in any order): CSR with int16 and int32 indices, both M paths (M < 3 gathers;
    from 3 on, panels of up to 64 rows, 70 crossing one), odd K and N, empty rows; BSR with 1 to 16-row
    blocks, block widths with vector tails, empty block rows, M tiles of 1 to 4 rows."""
    run_emulated(tmp_path, "csrc/cpu/sparse/sparse_avx512.cpp",
                 [('"avx512f,avx512bw,avx512vl,avx2,fma"', '"avx2,fma"'),
                  ("_mm512_reduce_add_ps(", "pyc_reduce_add_ps("),
                  ("_mm512_cvtepi16_epi32(", "pyc_cvtepi16_epi32("),
                  ("_mm512_i32gather_ps(", "pyc_i32gather_ps(")],
                 _SIMDE_SHIM, _SIMDE_MAIN, ("csrc/cpu/sparse/sparse_portable.cpp",))
