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
// 2:4, M >= kCsrTransposeMinM: the CSR outer-product loop with the two column indices of each group
// decoded from its metadata nibble (the ISA files have their own kernels for small M); values float or
// int8, the int8 row scale applied once per output.

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

template <class T, int R>
void s24_outer_rows(const float* xt, int64_t mpad, int64_t mc, int64_t mcount, const T* val, const float* scale,
                    const int16_t* meta, int64_t Np, int64_t Kp, const float* bias, float* out, int64_t ldo,
                    int64_t n0, int64_t n1) {
  for (int64_t n = n0; n < n1; ++n) {
    const MetaRow row(n);
    const T* v = val + n * (Kp / 2);
    typename V::F acc[R];
    for (int r = 0; r < R; ++r) acc[r] = V::zero();
    for (int64_t c = 0; c < Kp / 16; ++c) {
      const uint32_t word = static_cast<uint16_t>(meta[row.offset(c, Np)]);
      for (int g = 0; g < 4; ++g) {
        const uint32_t nib = (word >> (4 * g)) & 15u;
        const float* p0 = xt + (16 * c + 4 * g + (nib & 3u)) * mpad + mc;
        const float* p1 = xt + (16 * c + 4 * g + (nib >> 2)) * mpad + mc;
        const typename V::F v0 = V::set1(static_cast<float>(v[8 * c + 2 * g]));
        const typename V::F v1 = V::set1(static_cast<float>(v[8 * c + 2 * g + 1]));
        for (int r = 0; r < R; ++r) acc[r] = V::fma(v1, V::loadu(p1 + r * V::W), V::fma(v0, V::loadu(p0 + r * V::W), acc[r]));
      }
    }
    float tmp[R * V::W];
    for (int r = 0; r < R; ++r) V::storeu(tmp + r * V::W, acc[r]);
    const float b = bias ? bias[n] : 0.0f;
    const float sc = scale ? scale[n] : 1.0f;
    for (int64_t i = 0; i < mcount; ++i) out[(mc + i) * ldo + n] = tmp[i] * sc + b;
  }
}

template <class T>
void s24_outer_driver(const float* x, int64_t ldx, const T* val, const float* scale, const int16_t* meta, int64_t Np,
                      const float* bias, float* out, int64_t ldo, int64_t M, int64_t N, int64_t Kp) {
  const int64_t mpad = (M + V::W - 1) / V::W * V::W;
  const std::vector<float> xt = transpose_x(x, ldx, M, Kp, mpad);
  constexpr int64_t chunk = 4 * V::W;
  parallel_for(N, kRowGrain, [&](int64_t n0, int64_t n1) {
    for (int64_t mc = 0; mc < M; mc += chunk) {
      const int64_t mcount = std::min(chunk, M - mc);
      const float* t = xt.data();
      switch ((mcount + V::W - 1) / V::W) {
        case 1: s24_outer_rows<T, 1>(t, mpad, mc, mcount, val, scale, meta, Np, Kp, bias, out, ldo, n0, n1); break;
        case 2: s24_outer_rows<T, 2>(t, mpad, mc, mcount, val, scale, meta, Np, Kp, bias, out, ldo, n0, n1); break;
        case 3: s24_outer_rows<T, 3>(t, mpad, mc, mcount, val, scale, meta, Np, Kp, bias, out, ldo, n0, n1); break;
        default: s24_outer_rows<T, 4>(t, mpad, mc, mcount, val, scale, meta, Np, Kp, bias, out, ldo, n0, n1); break;
      }
    }
  });
}
