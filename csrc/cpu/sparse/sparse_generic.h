// The CSR and block-CSR kernels, written once over a vector type. Each ISA file defines `struct V`
// (width W; zero, set1, loadu, storeu, fma(a, b, c) = a * b + c, hsum, idx(int16/int32 pointer) -> index
// vector, gather(base, idx)) and includes this header inside its anonymous namespace and target region,
// so every function here is compiled for that ISA.
//
// CSR, M < kCsrTransposeMinM: per output row, W non-zeros at a time, one index load and one value load
// shared by up to 4 activation rows, each gathering its W x values (the weights stream once).
// CSR, larger M: x transposed once to (K, Mpad); per non-zero, one broadcast weight times a vector of
// R*W rows of x (outer product), so the gather disappears and x^T rows are reused across output rows.
// Block-CSR: per output row of a block row, dot products of the block's row with x along bk, up to 4
// activation rows sharing each weight vector.
// 2:4, M >= kCsrTransposeMinM (the ISA files have their own kernels for small M): outer products like
// CSR's, blocked for the caches: x^T packed into panels of 4*W activation rows, and per block of 32
// output rows x 128 columns, each row's two kept weights per group broadcast times the panel rows of
// their columns (decoded from the metadata nibble); values float or int8, the int8 row scale applied
// once per output.

template <class Idx, int MR>
void csr_gather_rows(const float* x, int64_t ldx, const int32_t* crow, const Idx* col, const float* val,
                     const float* bias, float* out, int64_t ldo, int64_t n0, int64_t n1) {
  for (int64_t n = n0; n < n1; ++n) {
    // two accumulator sets: consecutive FMAs into one register would wait on each other's latency
    typename V::F acc[2][MR];
    for (int m = 0; m < MR; ++m) acc[0][m] = acc[1][m] = V::zero();
    int64_t j = crow[n];
    const int64_t end = crow[n + 1];
    for (; j + 2 * V::W <= end; j += 2 * V::W) {
      for (int u = 0; u < 2; ++u) {
        const typename V::F v = V::loadu(val + j + u * V::W);
        const typename V::I i = V::idx(col + j + u * V::W);
        for (int m = 0; m < MR; ++m) acc[u][m] = V::fma(v, V::gather(x + m * ldx, i), acc[u][m]);
      }
    }
    if (j + V::W <= end) {
      const typename V::F v = V::loadu(val + j);
      const typename V::I i = V::idx(col + j);
      for (int m = 0; m < MR; ++m) acc[0][m] = V::fma(v, V::gather(x + m * ldx, i), acc[0][m]);
      j += V::W;
    }
    float s[MR];
    for (int m = 0; m < MR; ++m) s[m] = V::hsum(acc[0][m]) + V::hsum(acc[1][m]);
    for (; j < end; ++j) {
      const float v = val[j];
      const int64_t c = col[j];
      for (int m = 0; m < MR; ++m) s[m] += v * x[m * ldx + c];
    }
    const float b = bias ? bias[n] : 0.0f;
    for (int m = 0; m < MR; ++m) out[m * ldo + n] = s[m] + b;
  }
}

// x (M, K) -> x^T (K, mpad), the columns past M zero.
inline std::vector<float> transpose_x(const float* x, int64_t ldx, int64_t M, int64_t K, int64_t mpad) {
  std::vector<float> xt(static_cast<size_t>(K * mpad), 0.0f);
  parallel_for(K, 64, [&](int64_t k0, int64_t k1) {
    for (int64_t m = 0; m < M; ++m)
      for (int64_t k = k0; k < k1; ++k) xt[k * mpad + m] = x[m * ldx + k];
  });
  return xt;
}

template <class Idx, int R>
void csr_outer_rows(const float* xt, int64_t mpad, int64_t mc, int64_t mcount, const int32_t* crow, const Idx* col,
                    const float* val, const float* bias, float* out, int64_t ldo, int64_t n0, int64_t n1) {
  for (int64_t n = n0; n < n1; ++n) {
    typename V::F acc[R];
    for (int r = 0; r < R; ++r) acc[r] = V::zero();
    for (int64_t j = crow[n]; j < crow[n + 1]; ++j) {
      const typename V::F v = V::set1(val[j]);
      const float* p = xt + static_cast<int64_t>(col[j]) * mpad + mc;
      for (int r = 0; r < R; ++r) acc[r] = V::fma(v, V::loadu(p + r * V::W), acc[r]);
    }
    float tmp[R * V::W];
    for (int r = 0; r < R; ++r) V::storeu(tmp + r * V::W, acc[r]);
    const float b = bias ? bias[n] : 0.0f;
    for (int64_t i = 0; i < mcount; ++i) out[(mc + i) * ldo + n] = tmp[i] + b;
  }
}

constexpr int64_t kRowGrain = 16;  // output rows per parallel chunk: enough work to amortize a task

template <class Idx>
void csr_driver(const float* x, int64_t ldx, const int32_t* crow, const Idx* col, const float* val,
                const float* bias, float* out, int64_t ldo, int64_t M, int64_t N, int64_t K) {
  if (M < kCsrTransposeMinM) {
    parallel_for(N, kRowGrain, [&](int64_t n0, int64_t n1) {
      for (int64_t m0 = 0; m0 < M; m0 += 4) {
        const float* xm = x + m0 * ldx;
        float* om = out + m0 * ldo;
        switch (std::min<int64_t>(4, M - m0)) {
          case 1: csr_gather_rows<Idx, 1>(xm, ldx, crow, col, val, bias, om, ldo, n0, n1); break;
          case 2: csr_gather_rows<Idx, 2>(xm, ldx, crow, col, val, bias, om, ldo, n0, n1); break;
          case 3: csr_gather_rows<Idx, 3>(xm, ldx, crow, col, val, bias, om, ldo, n0, n1); break;
          default: csr_gather_rows<Idx, 4>(xm, ldx, crow, col, val, bias, om, ldo, n0, n1); break;
        }
      }
    });
    return;
  }
  const int64_t mpad = (M + V::W - 1) / V::W * V::W;
  const std::vector<float> xt = transpose_x(x, ldx, M, K, mpad);
  constexpr int64_t chunk = 4 * V::W;
  parallel_for(N, kRowGrain, [&](int64_t n0, int64_t n1) {
    for (int64_t mc = 0; mc < M; mc += chunk) {
      const int64_t mcount = std::min(chunk, M - mc);
      switch ((mcount + V::W - 1) / V::W) {
        case 1: csr_outer_rows<Idx, 1>(xt.data(), mpad, mc, mcount, crow, col, val, bias, out, ldo, n0, n1); break;
        case 2: csr_outer_rows<Idx, 2>(xt.data(), mpad, mc, mcount, crow, col, val, bias, out, ldo, n0, n1); break;
        case 3: csr_outer_rows<Idx, 3>(xt.data(), mpad, mc, mcount, crow, col, val, bias, out, ldo, n0, n1); break;
        default: csr_outer_rows<Idx, 4>(xt.data(), mpad, mc, mcount, crow, col, val, bias, out, ldo, n0, n1); break;
      }
    }
  });
}

template <int MR>
void bsr_rows(const float* x, int64_t ldx, const int32_t* crow, const int32_t* col, const float* val, int64_t bn,
              int64_t bk, const float* bias, float* out, int64_t ldo, int64_t N, int64_t br0, int64_t br1) {
  for (int64_t br = br0; br < br1; ++br) {
    for (int64_t i = 0; i < bn && br * bn + i < N; ++i) {
      const int64_t n = br * bn + i;
      typename V::F acc[MR];
      float tail[MR];
      for (int m = 0; m < MR; ++m) acc[m] = V::zero(), tail[m] = 0.0f;
      for (int64_t b = crow[br]; b < crow[br + 1]; ++b) {
        const float* w = val + (b * bn + i) * bk;
        const float* xb = x + static_cast<int64_t>(col[b]) * bk;
        int64_t kk = 0;
        for (; kk + V::W <= bk; kk += V::W) {
          const typename V::F wv = V::loadu(w + kk);
          for (int m = 0; m < MR; ++m) acc[m] = V::fma(wv, V::loadu(xb + m * ldx + kk), acc[m]);
        }
        for (; kk < bk; ++kk)
          for (int m = 0; m < MR; ++m) tail[m] += w[kk] * xb[m * ldx + kk];
      }
      const float bv = bias ? bias[n] : 0.0f;
      for (int m = 0; m < MR; ++m) out[m * ldo + n] = V::hsum(acc[m]) + tail[m] + bv;
    }
  }
}

inline void bsr_driver(const float* x, int64_t ldx, const int32_t* crow, const int32_t* col, const float* val,
                       int64_t bn, int64_t bk, const float* bias, float* out, int64_t ldo, int64_t M, int64_t N) {
  const int64_t brows = (N + bn - 1) / bn;
  parallel_for(brows, std::max<int64_t>(1, kRowGrain / bn), [&](int64_t b0, int64_t b1) {
    for (int64_t m0 = 0; m0 < M; m0 += 4) {
      const float* xm = x + m0 * ldx;
      float* om = out + m0 * ldo;
      switch (std::min<int64_t>(4, M - m0)) {
        case 1: bsr_rows<1>(xm, ldx, crow, col, val, bn, bk, bias, om, ldo, N, b0, b1); break;
        case 2: bsr_rows<2>(xm, ldx, crow, col, val, bn, bk, bias, om, ldo, N, b0, b1); break;
        case 3: bsr_rows<3>(xm, ldx, crow, col, val, bn, bk, bias, om, ldo, N, b0, b1); break;
        default: bsr_rows<4>(xm, ldx, crow, col, val, bn, bk, bias, om, ldo, N, b0, b1); break;
      }
    }
  });
}

inline void csr_entry(const float* x, int64_t ldx, const int32_t* crow, const int16_t* col16, const int32_t* col32,
                      const float* val, const float* bias, float* out, int64_t ldo, int64_t M, int64_t N, int64_t K) {
  if (col16)
    csr_driver(x, ldx, crow, col16, val, bias, out, ldo, M, N, K);
  else
    csr_driver(x, ldx, crow, col32, val, bias, out, ldo, M, N, K);
}

constexpr int64_t kS24BlockRows = 32;  // output rows per block: one metadata tile
constexpr int64_t kS24BlockK = 128;    // columns per block: a 32-row panel slice of x^T is 16 KB (L1)
constexpr int64_t kS24Panel = 4 * V::W;  // activation rows per panel: 4 vectors, 8 accumulators

// x (M, Kp) -> x^T in panels of kS24Panel activation rows: panel q holds x[q*P + i, k] at q*Kp*P + k*P + i,
// zero past M, so a block of kS24BlockK columns of one panel is contiguous.
inline std::vector<float> pack_panels(const float* x, int64_t ldx, int64_t M, int64_t Kp) {
  constexpr int64_t P = kS24Panel;
  std::vector<float> xt(static_cast<size_t>(ceil_div(M, P) * Kp * P), 0.0f);
  parallel_for(Kp, 64, [&](int64_t k0, int64_t k1) {
    for (int64_t m = 0; m < M; ++m) {
      float* dst = xt.data() + (m / P) * Kp * P + m % P;
      for (int64_t k = k0; k < k1; ++k) dst[k * P] = x[m * ldx + k];
    }
  });
  return xt;
}

// c[0 .. R*W) += one output row's pairs of 16-column chunks [0, pairs) (its column block) times R vectors
// of a panel (`panel` at the block's first column, row stride P); words[32 * p] holds the row's two
// metadata words of pair p. Per group, its two kept weights broadcast, each times the R vectors of its
// column; the two kept columns feed separate accumulators, so no FMA waits on the one before it.
template <int R>
void s24_panel_row(const float* panel, const float* v, const uint32_t* words, int64_t pairs, float* c) {
  constexpr int64_t P = kS24Panel;
  typename V::F acc0[R], acc1[R];
  for (int r = 0; r < R; ++r) acc0[r] = V::zero();
  for (int r = 0; r < R; ++r) acc1[r] = V::zero();
  for (int64_t j = 0; j < 2 * pairs; ++j) {
    const uint32_t word = words[32 * (j >> 1)] >> (16 * (j & 1));
    const float* pc = panel + 16 * j * P;
    for (int g = 0; g < 4; ++g) {
      const uint32_t nib = (word >> (4 * g)) & 15u;
      const float* p0 = pc + (4 * g + (nib & 3u)) * P;
      const float* p1 = pc + (4 * g + (nib >> 2)) * P;
      const typename V::F v0 = V::set1(v[8 * j + 2 * g]), v1 = V::set1(v[8 * j + 2 * g + 1]);
      for (int r = 0; r < R; ++r) {
        acc0[r] = V::fma(v0, V::loadu(p0 + r * V::W), acc0[r]);
        acc1[r] = V::fma(v1, V::loadu(p1 + r * V::W), acc1[r]);
      }
    }
  }
  const typename V::F one = V::set1(1.0f);  // fma(a, 1, b) = a + b: V has no add
  for (int r = 0; r < R; ++r)
    V::storeu(c + r * V::W, V::fma(acc1[r], one, V::fma(acc0[r], one, V::loadu(c + r * V::W))));
}

// One 32-row tile's metadata for column pairs [p0, p0 + pairs): words[32 * p + r] = (word c0) | (word c1) << 16
// of the row in place r of CUTLASS's permutation (in the tile, pair p's words for rows r, r+1 (r even) are
// (r, c0), (r+1, c0), (r, c1), (r+1, c1)). Read in place, each row's words sit on lines 4*Np bytes apart
// that alias in L1/L2 and are evicted between rows.
inline void tile_words(const int16_t* meta, int64_t Np, int64_t t0, int64_t p0, int64_t pairs, uint32_t* words) {
  for (int64_t p = 0; p < pairs; ++p) {
    const uint16_t* q = reinterpret_cast<const uint16_t*>(meta) + (p0 + p) * 2 * Np + 2 * t0;
    for (int r = 0; r < 32; r += 2) {
      words[32 * p + r] = q[2 * r] | uint32_t(q[2 * r + 2]) << 16;
      words[32 * p + r + 1] = q[2 * r + 1] | uint32_t(q[2 * r + 3]) << 16;
    }
  }
}

// 2:4 for larger M: blocks of 32 output rows x kS24BlockK columns; inside, per panel of activation rows, each
// output row's kept weights times the panel's 16 KB slice (L1-resident across the block's rows). Partial
// sums live in a (32, Mpad) tile until the block's last column; int8 values are widened once per block.
template <class T>
void s24_blocked_driver(const float* x, int64_t ldx, const T* val, const float* scale, const int16_t* meta,
                        int64_t Np, const float* bias, float* out, int64_t ldo, int64_t M, int64_t N, int64_t Kp) {
  constexpr int64_t P = kS24Panel, BR = kS24BlockRows, BK = kS24BlockK;
  const int64_t panels = ceil_div(M, P);
  const std::vector<float> xt = pack_panels(x, ldx, M, Kp);
  parallel_for(ceil_div(N, BR), 1, [&](int64_t b0, int64_t b1) {
    std::vector<float> acc(static_cast<size_t>(BR * panels * P));
    std::vector<float> widened(std::is_same_v<T, float> ? 0 : static_cast<size_t>(BR * BK / 2));
    std::vector<uint32_t> words(static_cast<size_t>(BK));
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t nb = b * BR, rows = std::min(BR, N - nb);
      std::fill(acc.begin(), acc.end(), 0.0f);
      for (int64_t k0 = 0; k0 < Kp; k0 += BK) {
        const int64_t kb = std::min(BK, Kp - k0);
        tile_words(meta, Np, nb, k0 / 32, kb / 32, words.data());
        if constexpr (!std::is_same_v<T, float>)
          for (int64_t i = 0; i < rows; ++i)
            for (int64_t j = 0; j < kb / 2; ++j)
              widened[i * (BK / 2) + j] = static_cast<float>(val[(nb + i) * (Kp / 2) + k0 / 2 + j]);
        for (int64_t q = 0; q < panels; ++q) {
          const float* panel = xt.data() + q * Kp * P + k0 * P;
          const int64_t vecs = ceil_div(std::min(P, M - q * P), V::W);
          for (int64_t i = 0; i < rows; ++i) {
            const uint32_t* w = words.data() + (i % 8) * 4 + i / 8;
            const float* v;
            if constexpr (std::is_same_v<T, float>)
              v = val + (nb + i) * (Kp / 2) + k0 / 2;
            else
              v = widened.data() + i * (BK / 2);
            if (q == 0 && k0 + BK < Kp) {
              // the row's values of the next column block: 32 short row segments defeat the hardware prefetcher
              const char* next = reinterpret_cast<const char*>(val + (nb + i) * (Kp / 2) + (k0 + BK) / 2);
              for (int64_t off = 0; off < int64_t(sizeof(T)) * BK / 2; off += 64) __builtin_prefetch(next + off);
            }
            float* c = acc.data() + (i * panels + q) * P;
            switch (vecs) {
              case 1: s24_panel_row<1>(panel, v, w, kb / 32, c); break;
              case 2: s24_panel_row<2>(panel, v, w, kb / 32, c); break;
              case 3: s24_panel_row<3>(panel, v, w, kb / 32, c); break;
              default: s24_panel_row<4>(panel, v, w, kb / 32, c); break;
            }
          }
        }
      }
      for (int64_t i = 0; i < rows; ++i) {
        const int64_t n = nb + i;
        const float sc = scale ? scale[n] : 1.0f, bv = bias ? bias[n] : 0.0f;
        for (int64_t m = 0; m < M; ++m) out[m * ldo + n] = acc[i * panels * P + m] * sc + bv;
      }
    }
  });
}
