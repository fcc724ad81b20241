// CorrflowPathSums: the staple sums of the residual layers (corrflow.flows.staples.gathered_staple_sums), every loop
// shape of a layer in one pass: out[b, k, s] = sum_{p: shape p = k} prod_j U[b, link(p, j, s)]^(dag(p, j)) for SU(3)
// links of the flat field U (*batch, V d, 3, 3), 8 active sites s per vector.
//
// The factors U_nu(x + offset) of all paths are given once each (`factors` (F, d + 1): offset and nu; a factor shared
// by several staples -- 62 distinct of 108 for plaquettes and rectangles in 4D -- is fetched once per site) and each
// path as a list of factor ids with an adjoint flag (`program` (P, 1 + Lmax): its shape k, then 2 id + dag, -1 past
// its end).  The link indices are computed here from the active sites and the lattice extents (nothing per call in
// JAX); the links are fetched with the CPU's vector gathers where it has them.
#pragma once

#include "simd.h"

namespace corrflow_native {

// Lanes k <- the 3x3 complex matrices at the links link[k] of u.
template <class T, int W>
inline void gather_mat(Mat<typename Lanes<T, W>::V>& m, const std::complex<T>* u, typename Lanes<T, W>::I32 link) {
  const T* base = reinterpret_cast<const T*>(u);
  const typename Lanes<T, W>::I32 off = link * 18;
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 3; ++j) {
      m.re[i][j] = gather<T, W>(base + 2 * (i * 3 + j), off);
      m.im[i][j] = gather<T, W>(base + 2 * (i * 3 + j) + 1, off);
    }
}

template <class V>
inline Mat<V> adjoint(const Mat<V>& m) {
  Mat<V> a;
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 3; ++j) {
      a.re[i][j] = m.re[j][i];
      a.im[i][j] = -m.im[j][i];
    }
  return a;
}

// c = a^(da) b^(db) (da, db: the adjoint flags of a path's factors).
template <class V>
inline void mul_codes(Mat<V>& c, const Mat<V>& a, bool da, const Mat<V>& b, bool db) {
  if (da)
    db ? mul_to<true, true>(c, a, b) : mul_to<true, false>(c, a, b);
  else
    db ? mul_to<false, true>(c, a, b) : mul_to<false, false>(c, a, b);
}

constexpr int kMaxDims = 8, kMaxShapes = 8;

template <class T, int W>
ffi::Error path_sums(ffi::ThreadPool& pool, const std::complex<T>* u, int64_t batch, int64_t u_batch, int64_t m,
                     const int32_t* sites,
                     int64_t sites_batch, const int32_t* factors, int64_t factors_batch, int64_t n_factors,
                     const int32_t* extents, int d, const int32_t* program, int64_t paths, int64_t width,
                     int64_t shapes, int64_t n, std::complex<T>* out) {
  using V = typename Lanes<T, W>::V;
  using M = Mat<V>;
  using I32 = typename Lanes<T, W>::I32;
  int64_t stride[kMaxDims];
  int64_t sites_total = 1;
  for (int a = d - 1; a >= 0; --a) {
    stride[a] = sites_total;
    sites_total *= extents[a];
  }
  if (sites_total * d != m) return ffi::Error::InvalidArgument("corrflow_path_sums: U must hold V d links");
  if (m * 18 > INT32_MAX) return ffi::Error::InvalidArgument("corrflow_path_sums: at most 2^31 / 18 links");
  std::atomic<bool> bad_site{false}, failed{false};
  for_blocks<W>(pool, batch, n, 8, [&](int64_t b, int64_t first, int lanes) {
    const std::complex<T>* ub = u + (u_batch == 1 ? 0 : b) * m * 9;
    const int32_t* sb = sites + (sites_batch == 1 ? 0 : b) * n;
    const int32_t* fb = factors + (factors_batch == 1 ? 0 : b) * n_factors * (d + 1);
    M* cache = static_cast<M*>(scratch(sizeof(M) * (n_factors + 1)));
    if (cache == nullptr) {
      failed = true;
      return;
    }
    bool* have = reinterpret_cast<bool*>(cache + n_factors);  // n_factors flags after the matrices
    I32 coord[kMaxDims];
    for (int k = 0; k < W; ++k) {
      int64_t s = sb[first + (k < lanes ? k : 0)];
      if (s < 0 || s >= sites_total) {
        bad_site = true;
        s = 0;
      }
      for (int a = 0; a < d; ++a) coord[a][k] = static_cast<int32_t>((s / stride[a]) % extents[a]);
    }
    for (int64_t f = 0; f < n_factors; ++f) have[f] = false;
    auto fetch = [&](int64_t f) -> const M& {  // the factor's links, gathered on first use
      if (!have[f]) {
        const int32_t* row = fb + f * (d + 1);
        I32 site = {};
        for (int a = 0; a < d; ++a) {
          int32_t o = row[a] % extents[a];
          if (o < 0) o += extents[a];
          I32 x = coord[a] + o;
          x -= (x >= extents[a]) & extents[a];
          site += x * static_cast<int32_t>(stride[a]);
        }
        const int32_t nu = std::clamp<int32_t>(row[d], 0, d - 1);  // JAX's gathers clip; valid plans never reach
        gather_mat<T, W>(cache[f], ub, site * d + nu);
        have[f] = true;
      }
      return cache[f];
    };
    M sum[kMaxShapes] = {};
    M buf[2];  // the product so far and the next one (no copies of a 3x3 of vectors per factor)
    for (int64_t p = 0; p < paths; ++p) {
      const int32_t* row = program + p * (1 + width);
      int cur = 0;
      if (width == 1 || row[2] < 0) {
        buf[0] = (row[1] & 1) ? adjoint(fetch(row[1] >> 1)) : fetch(row[1] >> 1);
      } else {
        const M& a = fetch(row[1] >> 1);
        mul_codes(buf[0], a, row[1] & 1, fetch(row[2] >> 1), row[2] & 1);
      }
      for (int64_t j = 3; j <= width && row[j] >= 0; ++j, cur ^= 1)
        mul_codes(buf[cur ^ 1], buf[cur], false, fetch(row[j] >> 1), row[j] & 1);
      const M& prod = buf[cur];
      M& s = sum[row[0]];
      for (int a = 0; a < 3; ++a)
        for (int c = 0; c < 3; ++c) {
          s.re[a][c] += prod.re[a][c];
          s.im[a][c] += prod.im[a][c];
        }
    }
    for (int64_t k = 0; k < shapes; ++k)
      for (int l = 0; l < lanes; ++l) get_lane<T>(sum[k], l, out + ((b * shapes + k) * n + first + l) * 9);
  });
  if (failed) return ffi::Error::Internal("corrflow_path_sums: out of memory");
  if (bad_site) return ffi::Error::InvalidArgument("corrflow_path_sums: an active site outside the lattice");
  return ffi::Error::Success();
}

ffi::Error PathSumsImpl(ffi::ThreadPool pool, ffi::AnyBuffer u, ffi::Buffer<ffi::S32> sites,
                        ffi::Buffer<ffi::S32> factors, ffi::Buffer<ffi::S32> extents, ffi::Buffer<ffi::S32> program,
                        ffi::Result<ffi::AnyBuffer> out) {
  const auto ud = u.dimensions(), sd = sites.dimensions(), fd = factors.dimensions(), pd = program.dimensions();
  const auto od = out->dimensions();
  const int64_t ur = static_cast<int64_t>(ud.size()), sr = static_cast<int64_t>(sd.size());
  const int64_t fr = static_cast<int64_t>(fd.size()), orank = static_cast<int64_t>(od.size());
  const int64_t pr = static_cast<int64_t>(pd.size());
  const int d = static_cast<int>(extents.element_count());
  if (ur < 3 || ud[ur - 1] != 3 || ud[ur - 2] != 3 || sr < 1 || fr < 2 || pr < 2 || orank < 4)
    return ffi::Error::InvalidArgument(
        "corrflow_path_sums: U (*batch, M, 3, 3), sites (*, n), factors (*, F, d + 1), program (P, 1 + L)");
  if (d < 1 || d > kMaxDims || fd[fr - 1] != d + 1)
    return ffi::Error::InvalidArgument("corrflow_path_sums: factors must be (F, d + 1) for d <= 8 extents");
  const int64_t m = ud[ur - 3], n = sd[sr - 1], n_factors = fd[fr - 2], paths = pd[pr - 2], width = pd[pr - 1] - 1;
  const int64_t shapes = od[orank - 4];
  if (shapes < 1 || shapes > kMaxShapes || width < 1 || paths < 1 ||
      program.element_count() != size_t(paths * pd[pr - 1]))
    return ffi::Error::InvalidArgument("corrflow_path_sums: 1 to 8 loop shapes of paths with factors");
  const int32_t* prog = program.typed_data();
  for (int64_t p = 0; p < paths; ++p) {
    const int32_t* row = prog + p * (1 + width);
    if (row[0] < 0 || row[0] >= shapes || row[1] < 0)
      return ffi::Error::InvalidArgument("corrflow_path_sums: every path needs a shape and a first factor");
    for (int64_t j = 1; j <= width && row[j] >= 0; ++j)
      if ((row[j] >> 1) >= n_factors) return ffi::Error::InvalidArgument("corrflow_path_sums: factor id out of range");
  }
  const int32_t* ext = extents.typed_data();
  for (int a = 0; a < d; ++a)
    if (ext[a] < 1) return ffi::Error::InvalidArgument("corrflow_path_sums: extents must be positive");
  int64_t u_batch = 1, sites_batch = 1, factors_batch = 1;
  for (int64_t a = 0; a < ur - 3; ++a) u_batch *= ud[a];
  for (int64_t a = 0; a < sr - 1; ++a) sites_batch *= sd[a];
  for (int64_t a = 0; a < fr - 2; ++a) factors_batch *= fd[a];
  const int64_t batch = std::max({u_batch, sites_batch, factors_batch});  // each 1 or the batch (vmap)
  if ((u_batch != 1 && u_batch != batch) || (sites_batch != 1 && sites_batch != batch) ||
      (factors_batch != 1 && factors_batch != batch) || out->element_count() != size_t(batch * shapes * n * 9))
    return ffi::Error::InvalidArgument("corrflow_path_sums: U, sites, factors: one batch (or 1); out (*, K, n, 3, 3)");
  if (u.element_type() == ffi::C64 && out->element_type() == ffi::C64)
    return path_sums<float, 8>(pool, static_cast<const std::complex<float>*>(u.untyped_data()), batch, u_batch, m,
                               sites.typed_data(), sites_batch, factors.typed_data(), factors_batch, n_factors, ext, d,
                               prog, paths, width, shapes, n, static_cast<std::complex<float>*>(out->untyped_data()));
  if (u.element_type() == ffi::C128 && out->element_type() == ffi::C128)
    return path_sums<double, 8>(pool, static_cast<const std::complex<double>*>(u.untyped_data()), batch, u_batch, m,
                                sites.typed_data(), sites_batch, factors.typed_data(), factors_batch, n_factors, ext,
                                d, prog, paths, width, shapes, n,
                                static_cast<std::complex<double>*>(out->untyped_data()));
  return ffi::Error::InvalidArgument("corrflow_path_sums: complex64 or complex128 only");
}

}  // namespace corrflow_native
