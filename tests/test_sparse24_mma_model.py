"""The index arithmetic of the CUDA 2:4 kernels (csrc/cuda/sparse/sparse24_mma.cu), replayed on the CPU.

There is no GPU here, so the per-thread loads of each kernel are written out again in numpy, on the real packed
layout of pycomp.formats.sparse, and fed to a model of mma.sp m16n8k32 (PTX ISA: fragments of A, B and the
metadata register, the sparsity selector). The model reproduces variant 0, the kernel proven on an H200, which
ties it to the format; variant 1 of the GEMV (16-byte loads, relabelled k32 steps) and the tiled GEMMs (cp.async into
padded shared rows, ldmatrix.x4, metadata words per stage) must then give the dense product too. A change to a
kernel's indexing must be made here as well: this test checks the design, the GPU tests check the code.
"""
import numpy as np
import pytest
import torch

from pycomp.formats import sparse as fmt
from pycomp.prune.nm import nm_mask


def mma_sp(A, B, E, sel):
    """A, B: [lane][4] value pairs; E: [lane] uint32 metadata registers -> D (16, 8) of one m16n8k32 mma.sp."""
    Ac, Bd = np.zeros((16, 16)), np.zeros((32, 8))
    for lane in range(32):
        g, t = lane >> 2, lane & 3
        for r, (row, col) in enumerate([(g, 2 * t), (g + 8, 2 * t), (g, 2 * t + 8), (g + 8, 2 * t + 8)]):
            Ac[row, col:col + 2] = A[lane][r]
        for i in range(4):
            Bd[2 * t + 8 * i:2 * t + 8 * i + 2, g] = B[lane][i]
    D = np.zeros((16, 8))
    for row in range(16):
        g, hi = row % 8, row // 8
        for G in range(8):  # groups of 4 columns: chunk G // 4 from thread 2 sel + G // 4, nibble G % 4
            nib = (E[4 * g + 2 * sel + G // 4] >> (16 * hi + 4 * (G % 4))) & 0xF
            i0, i1 = nib & 3, nib >> 2
            assert i0 < i1, "metadata a kernel hands to mma.sp must name two distinct, ordered columns"
            D[row] += Ac[row, 2 * G] * Bd[4 * G + i0] + Ac[row, 2 * G + 1] * Bd[4 * G + i1]
    return D


def _case(n, k, m, seed):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(n, k, generator=g)
    w = w * nm_mask(w, pad=True)
    values, meta = fmt.pack_24(w)
    kp = values.shape[1] * 2
    x = torch.nn.functional.pad(torch.randn(m, k, generator=g), (0, kp - k))
    words = meta.view(torch.int32).numpy().view(np.uint32).reshape(-1)  # word s * Np + r
    want = x.double().numpy()[:, :k] @ w.double().numpy().T
    return values.double().numpy(), words, x.double().numpy(), meta.shape[0], kp, want


def gemv_v0(values, words, x, Np, N, Kp, n0, M):
    steps, acc = Kp // 32, np.zeros((16, 8))
    for s in range(0, steps, 2):
        E = []
        for lane in range(32):
            g, t = lane >> 2, lane & 3
            r = n0 // 32 * 32 + 4 * g + 2 * (n0 % 32 // 16) + (t & 1)
            E.append(int(words[(s + (t >> 1)) * Np + r]) if s + (t >> 1) < steps else 0)
        for h in range(min(2, steps - s)):
            A, B = [], []
            for lane in range(32):
                g, t = lane >> 2, lane & 3
                lo, hi, c = values[min(n0 + g, N - 1)], values[min(n0 + g + 8, N - 1)], (s + h) * 16 + 2 * t
                A.append([lo[c:c + 2], hi[c:c + 2], lo[c + 8:c + 10], hi[c + 8:c + 10]])
                xr, kb = x[min(g, M - 1)], (s + h) * 32 + 2 * t
                B.append([xr[kb + 8 * i:kb + 8 * i + 2] for i in range(4)])
            acc += mma_sp(A, B, E, h)
    return acc


def gemv_v1(values, words, x, Np, N, Kp, n0, M):
    acc = np.zeros((16, 8))
    for w in range((Kp + 63) // 64):
        full = 64 * w + 64 <= Kp
        A0, A1, B0, B1, E = [], [], [], [], []
        for lane in range(32):
            g, t = lane >> 2, lane & 3
            ok, c = full or t < 2, 32 * w + 8 * t
            lo = values[min(n0 + g, N - 1), c:c + 8] if ok else np.zeros(8)
            hi = values[min(n0 + g + 8, N - 1), c:c + 8] if ok else np.zeros(8)
            A0.append([lo[0:2], hi[0:2], lo[2:4], hi[2:4]])
            A1.append([lo[4:6], hi[4:6], lo[6:8], hi[6:8]])
            rb = n0 // 32 * 32 + 4 * g + 2 * (n0 % 32 // 16)
            e01 = words[2 * w * Np + rb:2 * w * Np + rb + 2].astype(np.int64)
            e23 = words[(2 * w + 1) * Np + rb:(2 * w + 1) * Np + rb + 2].astype(np.int64) if full else [0xEEEEEEEE] * 2
            E.append(sum(((int(v) >> 4 * t) & 0x000F000F) << 4 * p for p, v in enumerate([*e01, *e23])))
            xr, base = x[min(g, M - 1)], 64 * w + 16 * (t >> 1) + 2 * (t & 1)
            ld = (lambda off, ok=True: xr[base + off:base + off + 2] if ok else np.zeros(2))
            B0.append([ld(0), ld(32, full), ld(4), ld(36, full)])
            B1.append([ld(8), ld(40, full), ld(12), ld(44, full)])
        acc += mma_sp(A0, B0, E, 0) + mma_sp(A1, B1, E, 1)
    return acc


@pytest.mark.parametrize("kernel", [gemv_v0, gemv_v1], ids=["v0", "v1"])
@pytest.mark.parametrize("n,k,m", [(37, 21, 3), (48, 96, 5), (33, 200, 8)])
def test_gemv_index_model(kernel, n, k, m):
    values, words, x, Np, Kp, want = _case(n, k, m, seed=n + k)
    for n0 in range(0, n, 16):
        got = kernel(values, words, x, Np, n, Kp, n0, m)
        rows = min(16, n - n0)
        np.testing.assert_allclose(got[:rows, :m].T, want[:, n0:n0 + rows], rtol=0, atol=1e-12)


# The tiled GEMMs (variants 1, 4, 5 of sparse24_gemm_cuda): byte offsets as in the kernel; tile = (warps along
# weight rows, warps along tokens, m16 tiles per warp, n8 tiles per warp): TileA, TileD, TileB (sparse24_mma.cu).
VAL_ROW, X_ROW = 80, 144


def _geometry(tile):
    wn_count, wm_count, mi, nj = tile
    bn, bm = wn_count * mi * 16, wm_count * nj * 8
    return wn_count * wm_count * 32, bn, bm, bn * VAL_ROW, 2 * bn * 4


def _copy_tile(values, words, x, Np, N, Kp, M, m0, n0, tile, kt):
    """Shared memory of one stage after every thread's cp.async of k-tile kt: 16-bit slots and metadata words
    by byte offset. Variants 4, 5 write each copy j at row vr + j * (threads / 4) (x: xr + j * threads / 8), as
    variant 1 does, from one pointer per operand."""
    threads, bn, bm, val_bytes, meta_bytes = _geometry(tile)
    half, steps = Kp // 2, Kp // 32
    v_step, x_step = threads // 4, threads // 8
    sm, mw = {}, {}
    for tid in range(threads):
        vc, vr, xc, xr = tid & 3, tid >> 2, tid & 7, tid >> 3
        v_live = (N - n0 - vr + v_step - 1) // v_step if n0 + vr < N else 0
        x_live = (M - m0 - xr + x_step - 1) // x_step if m0 + xr < M else 0
        for j in range(bn * 4 // threads):
            n, dst = n0 + vr + v_step * j, (vr + v_step * j) * VAL_ROW + vc * 16
            ok = j < v_live and kt * 32 + vc * 8 < half
            assert ok == (n < N and kt * 32 + vc * 8 < half)
            for e in range(8):
                sm[dst + 2 * e] = values[n, kt * 32 + vc * 8 + e] if ok else 0.0
        for j in range(bm * 8 // threads):
            m, dst = m0 + xr + x_step * j, val_bytes + meta_bytes + (xr + x_step * j) * X_ROW + xc * 16
            ok = j < x_live and kt * 64 + xc * 8 < Kp
            assert ok == (m < M and kt * 64 + xc * 8 < Kp)
            for e in range(8):
                sm[dst + 2 * e] = x[m, kt * 64 + xc * 8 + e] if ok else 0.0
        if tid < bn // 2:
            ms, mc = tid // (bn // 4), tid % (bn // 4)
            src = (n0 + 4 * mc if n0 + 4 * mc < Np else n0) + min(2 * kt + ms, steps - 1) * Np
            for e in range(4):
                mw[val_bytes + ms * bn * 4 + mc * 16 + 4 * e] = int(words[src + e])
    return sm, mw


def _ldmatrix_x4(sm, addr):  # addr[lane]: row lane % 8 of matrix lane / 8
    return [[(sm[addr[8 * q + (l >> 2)] + 4 * (l & 3)], sm[addr[8 * q + (l >> 2)] + 4 * (l & 3) + 2])
             for q in range(4)] for l in range(32)]


def _warp_offsets(tile, warp):
    _, wm_count, mi, nj = tile
    _, bn, _, val_bytes, meta_bytes = _geometry(tile)
    wn, wm = warp // wm_count, warp % wm_count
    a_off = [(wn * mi * 16 + ((l >> 3) & 1) * 8 + (l & 7)) * VAL_ROW + (l >> 4) * 16 for l in range(32)]
    b_off = [val_bytes + meta_bytes + (wm * nj * 8 + (l & 7)) * X_ROW + (l >> 3) * 16 for l in range(32)]
    e_off = [val_bytes + (((l & 3) >> 1) * bn + wn * mi * 16 + 4 * (l >> 2) + (l & 1)) * 4 for l in range(32)]
    return a_off, b_off, e_off


def _load_a(sm, tile, warp, s):
    a_off = _warp_offsets(tile, warp)[0]
    return [_ldmatrix_x4(sm, [a + i * 16 * VAL_ROW + s * 32 for a in a_off]) for i in range(tile[2])]


def _load_b(sm, tile, warp, s, j):
    b_off = _warp_offsets(tile, warp)[1]
    return _ldmatrix_x4(sm, [b + j * 8 * X_ROW + s * 64 for b in b_off])


def _load_meta(mw, tile, warp):
    e_off = _warp_offsets(tile, warp)[2]
    return [[mw[e_off[l] + ((i >> 1) * 32 + (i & 1) * 2) * 4] for l in range(32)] for i in range(tile[2])]


def _block_out(acc, tile, m0, n0):
    _, wm_count, mi, nj = tile
    out = {}
    for warp in range(acc.shape[0]):
        wn, wm = warp // wm_count, warp % wm_count
        for i in range(mi):
            for j in range(nj):
                for row in range(16):
                    for col in range(8):
                        out[(m0 + wm * nj * 8 + 8 * j + col, n0 + wn * mi * 16 + 16 * i + row)] = acc[warp, i, j, row, col]
    return out


def gemm_block(values, words, x, Np, N, Kp, M, m0, n0, tile):
    """Variant 1: per k-tile, each warp loads a step's fragments, then runs its mma.sp."""
    threads, mi, nj = _geometry(tile)[0], tile[2], tile[3]
    acc = np.zeros((threads // 32, mi, nj, 16, 8))
    for kt in range((Kp + 63) // 64):
        sm, mw = _copy_tile(values, words, x, Np, N, Kp, M, m0, n0, tile, kt)
        for warp in range(threads // 32):
            E = _load_meta(mw, tile, warp)
            for s in range(2):
                A = _load_a(sm, tile, warp, s)
                B = [_load_b(sm, tile, warp, s, j) for j in range(nj)]
                for i in range(mi):
                    for j in range(nj):
                        acc[warp, i, j] += mma_sp(A[i], B[j], E[i], s)
    return _block_out(acc, tile, m0, n0)


class _Ring:
    """The cp.async stage ring of variants 4, 5, in program order: a copy lands in its stage only at the first
    barrier after the wait that covers its commit group, and a stage may be overwritten only when every read
    of it came before the latest barrier."""

    def __init__(self, stages):
        self.stages, self.data = stages, [None] * stages
        self.groups, self.pending, self.waited, self.barriers = [], [], 0, 0
        self.last_read = [-1] * stages

    def copy(self, stage, content):
        assert self.last_read[stage] < self.barriers, "a stage overwritten before the barrier after its last read"
        self.pending.append((stage, content))

    def commit(self):
        self.groups.append(self.pending)
        self.pending = []

    def wait(self, allowed):
        self.waited = max(self.waited, len(self.groups) - allowed)

    def barrier(self):
        for group in self.groups[:self.waited]:
            for stage, content in group:
                self.data[stage] = content
            group.clear()
        self.barriers += 1

    def read(self, stage):
        self.last_read[stage] = self.barriers
        return self.data[stage]


def gemm_block_db(values, words, x, Np, N, Kp, M, m0, n0, tile, stages):
    """Variants 4, 5: the kernel's loop order, per warp (every warp runs it in step; the ring checks the
    barriers): A double-buffered, B reloaded column by column, metadata of the next stage after the barrier.
    A read of a stage holding the wrong k-tile (or none) gives wrong sums or a TypeError."""
    threads, mi, nj = _geometry(tile)[0], tile[2], tile[3]
    warps, ktiles = threads // 32, (Kp + 63) // 64
    acc = np.zeros((warps, mi, nj, 16, 8))
    ring = _Ring(stages)
    tile_at = lambda kt: _copy_tile(values, words, x, Np, N, Kp, M, m0, n0, tile, kt)
    for s in range(stages - 1):
        if s < ktiles:
            ring.copy(s, tile_at(s))
        ring.commit()
    ring.wait(stages - 2)
    ring.barrier()
    stage = lambda st: ring.read(st) or ({}, {})
    e = [_load_meta(stage(0)[1], tile, w) for w in range(warps)]
    a0 = [_load_a(stage(0)[0], tile, w, 0) for w in range(warps)]
    b = [[_load_b(stage(0)[0], tile, w, 0, j) for j in range(nj)] for w in range(warps)]
    read, write = 0, stages - 1
    for kt in range(ktiles):
        a1 = [_load_a(stage(read)[0], tile, w, 1) for w in range(warps)]
        if kt + stages - 1 < ktiles:
            ring.copy(write, tile_at(kt + stages - 1))
        ring.commit()
        for w in range(warps):
            for j in range(nj):
                for i in range(mi):
                    acc[w, i, j] += mma_sp(a0[w][i], b[w][j], e[w][i], 0)
                b[w][j] = _load_b(stage(read)[0], tile, w, 1, j)
        ring.wait(stages - 2)
        ring.barrier()
        read, write = (read + 1) % stages, (write + 1) % stages
        last = kt + 1 == ktiles  # the kernel's reads past the last tile are unused: skipped here
        a0 = None if last else [_load_a(stage(read)[0], tile, w, 0) for w in range(warps)]
        for w in range(warps):
            for j in range(nj):
                for i in range(mi):
                    acc[w, i, j] += mma_sp(a1[w][i], b[w][j], e[w][i], 1)
                if not last:
                    b[w][j] = _load_b(stage(read)[0], tile, w, 0, j)
        if not last:
            e = [_load_meta(stage(read)[1], tile, w) for w in range(warps)]
    return _block_out(acc, tile, m0, n0)


# GEMM variants 1, 4, 5 (2, 3, 6, on TileB, TileC and TileE_db, were removed).
TILES = {"TileA": ((2, 4, 4, 4), None), "TileD_db": ((2, 2, 4, 8), 3), "TileB_db": ((4, 2, 4, 8), 4)}


@pytest.mark.parametrize("name,k", [(name, 90) for name in TILES] + [("TileD_db", 200), ("TileB_db", 300)])
def test_tiled_gemm_index_model(name, k):
    """A partial token tile, a partial weight tile whose rows pass Np (130 -> Np 160), and a half last k-tile
    (K 90 -> Kp 96: 2 k-tiles; K 200 -> Kp 224: 4 k-tiles around a ring of 3 stages; K 300 -> Kp 320: 5 around
    a ring of 4)."""
    tile, stages = TILES[name]
    n, m = 130, 9
    values, words, x, Np, Kp, want = _case(n, k, m, seed=5)
    got = np.full((m, n), np.nan)
    bn = tile[0] * tile[2] * 16
    for n0 in range(0, n, bn):
        if stages is None:
            block = gemm_block(values, words, x, Np, n, Kp, m, 0, n0, tile)
        else:
            block = gemm_block_db(values, words, x, Np, n, Kp, m, 0, n0, tile, stages)
        for (mm, nn), v in block.items():
            if mm < m and nn < n:
                got[mm, nn] = v
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
