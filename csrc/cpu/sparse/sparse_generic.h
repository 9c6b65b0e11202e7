// The CSR and block-CSR kernels, written once over a vector type. Each ISA file defines `struct V`
// (width W; zero, set1, loadu, storeu, fma(a, b, c) = a * b + c, hsum, gather(base, int16/int32 column
// pointer) -> base at W consecutive column indices) and includes this header inside its anonymous
// namespace and target region, so every function here is compiled for that ISA.
//
// CSR, M < kCsrOuterMinM (1 or 2): per output row, W non-zeros at a time, one value load shared by the
// activation rows, each gathering its W x values (the weights stream once, prefetched ahead).
// CSR, larger M: x transposed once into panels of up to 4*W activation rows, each (K, width) contiguous;
// per non-zero, one broadcast weight times the panel row of its column (outer product), so the gather
// disappears and x^T rows are reused across output rows.
// CSR threads take row ranges with equal shares of the non-zeros (csr_split), not equal row counts.
// Block-CSR: per output row of a block row, dot products of the block's row with x along bk, up to 4
// activation rows sharing each weight vector.
// 2:4, M >= kS24BlockedMinM (the ISA files have their own kernels for small M): outer products like
// CSR's, blocked for the caches: x^T packed into panels of 4*W activation rows, and per block of 32
// output rows x 128 columns, each row's two kept weights per group broadcast times the panel rows of
// their columns (decoded from the metadata nibble); values float or int8, the int8 row scale applied
// once per output.

constexpr int64_t kRowGrain = 16;  // output rows per parallel chunk: enough work to amortize a task
// How far ahead of the row the value stream is prefetched (and the index stream, scaled to its width):
// the hardware prefetcher alone leaves M=1 short of the bandwidth (A/B, one thread, 4096x4096 at 90%, cold:
// 0.95 -> 0.81 ms, noisy).
constexpr int64_t kCsrValuePrefetchBytes = 1024;

// MR activation rows times output rows [n0, n1). V::gather(base, col) loads base[col[0..W)]: the ISA
// picks how (AVX2 from scalar loads, cheaper than vgatherdps on Zen 3; AVX-512 vgatherdps).
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
      __builtin_prefetch(reinterpret_cast<const char*>(val + j) + kCsrValuePrefetchBytes);
      __builtin_prefetch(reinterpret_cast<const char*>(col + j) + kCsrValuePrefetchBytes * sizeof(Idx) / 4);
      for (int u = 0; u < 2; ++u) {
        const typename V::F v = V::loadu(val + j + u * V::W);
        for (int m = 0; m < MR; ++m) acc[u][m] = V::fma(v, V::gather(x + m * ldx, col + j + u * V::W), acc[u][m]);
      }
    }
    if (j + V::W <= end) {
      const typename V::F v = V::loadu(val + j);
      for (int m = 0; m < MR; ++m) acc[0][m] = V::fma(v, V::gather(x + m * ldx, col + j), acc[0][m]);
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

// Output rows [n0, n1) for activation rows mc .. mc+mcount of one x^T panel (`xt`: x[mc + i, k] at
// k * stride + i, stride a multiple of W >= mcount, zero past mcount). Non-zeros two at a time into two
// accumulator sets, so that no FMA waits on the one before it.
template <class Idx, int R>
void csr_outer_rows(const float* xt, int64_t stride, int64_t mc, int64_t mcount, const int32_t* crow,
                    const Idx* col, const float* val, const float* bias, float* out, int64_t ldo, int64_t n0,
                    int64_t n1) {
  for (int64_t n = n0; n < n1; ++n) {
    typename V::F acc[2][R];
    for (int r = 0; r < R; ++r) acc[0][r] = acc[1][r] = V::zero();
    int64_t j = crow[n];
    const int64_t end = crow[n + 1];
    for (; j + 2 <= end; j += 2)
      for (int u = 0; u < 2; ++u) {
        const typename V::F v = V::set1(val[j + u]);
        const float* p = xt + static_cast<int64_t>(col[j + u]) * stride;
        for (int r = 0; r < R; ++r) acc[u][r] = V::fma(v, V::loadu(p + r * V::W), acc[u][r]);
      }
    if (j < end) {
      const typename V::F v = V::set1(val[j]);
      const float* p = xt + static_cast<int64_t>(col[j]) * stride;
      for (int r = 0; r < R; ++r) acc[0][r] = V::fma(v, V::loadu(p + r * V::W), acc[0][r]);
    }
    float tmp[2][R * V::W];
    for (int r = 0; r < R; ++r) V::storeu(tmp[0] + r * V::W, acc[0][r]), V::storeu(tmp[1] + r * V::W, acc[1][r]);
    const float b = bias ? bias[n] : 0.0f;
    for (int64_t i = 0; i < mcount; ++i) out[(mc + i) * ldo + n] = tmp[0][i] + tmp[1][i] + b;
  }
}

// First output row of part t of `parts`: the parts hold equal shares of non-zeros plus kCsrRowCost per row
// (a row's fixed work), so that threads finish together on matrices whose rows differ in density.
constexpr int64_t kCsrRowCost = 16;

inline int64_t csr_split(const int32_t* crow, int64_t N, int64_t parts, int64_t t) {
  if (t >= parts) return N;
  const int64_t target = t * (crow[N] + kCsrRowCost * N) / parts;
  int64_t lo = 0, hi = N;  // first n with crow[n] + kCsrRowCost * n >= target
  while (lo < hi) {
    const int64_t mid = (lo + hi) / 2;
    if (crow[mid] + kCsrRowCost * mid < target)
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo;
}

// fn(n0, n1) over the output rows, one nnz-balanced range per thread.
template <class Fn>
void csr_parallel_rows(const int32_t* crow, int64_t N, const Fn& fn) {
  const int64_t parts = std::max<int64_t>(1, std::min<int64_t>(num_threads(), N / kRowGrain));
  parallel_for(parts, 1, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t n0 = csr_split(crow, N, parts, t), n1 = csr_split(crow, N, parts, t + 1);
      if (n0 < n1) fn(n0, n1);
    }
  });
}

// From this M on, CSR runs the outer-product loop on x^T panels; below it, the gather. The outer loop wins
// from M = 3 although its vectors then hold mostly zero rows (A/B, one thread, 4096x4096 at 90%, AVX2,
// noisy: M=3 2.1 -> 1.4 ms, M=4 2.9 -> 1.3, M=7 5.2 -> 1.9; M=2 1.5 vs 2.2 stays with the gather).
constexpr int64_t kCsrOuterMinM = 3;

template <class Idx>
void csr_driver(const float* x, int64_t ldx, const int32_t* crow, const Idx* col, const float* val,
                const float* bias, float* out, int64_t ldo, int64_t M, int64_t N, int64_t K) {
  static_assert(kCsrOuterMinM == 3, "the gather path below instantiates MR = 1 and 2");
  if (M < kCsrOuterMinM) {
    csr_parallel_rows(crow, N, [&](int64_t n0, int64_t n1) {
      if (M == 1)
        csr_gather_rows<Idx, 1>(x, ldx, crow, col, val, bias, out, ldo, n0, n1);
      else
        csr_gather_rows<Idx, 2>(x, ldx, crow, col, val, bias, out, ldo, n0, n1);
    });
    return;
  }
  // x^T in panels of P activation rows, each contiguous (K, width): a panel of the (K, Mpad) transpose
  // would put its rows Mpad floats apart, which for M = 128 alias in the L2's sets (A/B, one thread, 4096x4096
  // at 90%, cold, with the two accumulator sets of csr_outer_rows: M=128 25.2 -> 18.8 ms, M=16 2.8 -> 2.5 ms).
  constexpr int64_t P = 4 * V::W;
  auto width = [&](int64_t mc) { return std::min(P, (M - mc + V::W - 1) / V::W * V::W); };
  std::vector<float> xt(static_cast<size_t>(((M - 1) / P * P + width((M - 1) / P * P)) * K), 0.0f);
  parallel_for(K, 64, [&](int64_t k0, int64_t k1) {
    for (int64_t m = 0; m < M; ++m) {
      const int64_t mc = m / P * P, w = width(mc);
      float* dst = xt.data() + mc * K + m - mc;
      for (int64_t k = k0; k < k1; ++k) dst[k * w] = x[m * ldx + k];
    }
  });
  csr_parallel_rows(crow, N, [&](int64_t n0, int64_t n1) {
    for (int64_t mc = 0; mc < M; mc += P) {
      const int64_t mcount = std::min(P, M - mc), w = width(mc);
      const float* panel = xt.data() + mc * K;
      switch (w / V::W) {
        case 1: csr_outer_rows<Idx, 1>(panel, w, mc, mcount, crow, col, val, bias, out, ldo, n0, n1); break;
        case 2: csr_outer_rows<Idx, 2>(panel, w, mc, mcount, crow, col, val, bias, out, ldo, n0, n1); break;
        case 3: csr_outer_rows<Idx, 3>(panel, w, mc, mcount, crow, col, val, bias, out, ldo, n0, n1); break;
        default: csr_outer_rows<Idx, 4>(panel, w, mc, mcount, crow, col, val, bias, out, ldo, n0, n1); break;
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
