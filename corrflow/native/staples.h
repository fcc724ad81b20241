// What the 4D SU(3) kernels on virtual nodes share (force.h, sweeps.h): their arguments, the geometry, the copy of
// the links into virtual nodes and the weighted staple sum of one block.
#pragma once

#include <initializer_list>
#include <string>
#include <utility>

#include "simd.h"

namespace corrflow_native {

// The links (*batch, L0, L1, L2, L3, 4, 3, 3) and plane weights (*batch prefix, 4, 4) of a kernel call.
struct LinkArgs {
  int64_t L[4];
  int64_t batch, weight_batch;
  int64_t volume() const { return L[0] * L[1] * L[2] * L[3]; }
  // The (4, 4) weights of configuration b.
  const double* weights(const double* w, int64_t b) const {
    return w + (weight_batch == 1 ? 0 : b / (batch / weight_batch)) * 16;
  }
};

// Checks the links and weights of kernel `name` (even: every extent even) and fills *a.
inline ffi::Error link_args(const char* name, const ffi::AnyBuffer& u, const ffi::Buffer<ffi::F64>& weights,
                            bool even, LinkArgs* a) {
  const auto dims = u.dimensions();
  const int64_t rank = static_cast<int64_t>(dims.size());
  if (rank < 7 || dims[rank - 3] != 4 || dims[rank - 2] != 3 || dims[rank - 1] != 3)
    return ffi::Error::InvalidArgument(std::string(name) + ": links must be (*batch, L0, L1, L2, L3, 4, 3, 3)");
  for (int i = 0; i < 4; ++i) {
    a->L[i] = dims[rank - 7 + i];
    if (even && a->L[i] % 2) return ffi::Error::InvalidArgument(std::string(name) + ": extents must be even");
  }
  a->batch = 1;
  for (int64_t i = 0; i < rank - 7; ++i) a->batch *= dims[i];
  const auto wd = weights.dimensions();
  a->weight_batch = 1;
  for (size_t i = 0; i + 2 < wd.size(); ++i) a->weight_batch *= wd[i];
  if (wd.size() < 2 || wd[wd.size() - 1] != 4 || wd[wd.size() - 2] != 4 || a->batch % a->weight_batch != 0)
    return ffi::Error::InvalidArgument(std::string(name) + ": weights must be (*batch prefix, 4, 4)");
  if (u.element_type() != ffi::C64 && u.element_type() != ffi::C128)
    return ffi::Error::InvalidArgument(std::string(name) + ": links must be complex64 or complex128");
  return ffi::Error::Success();
}

// The virtual-node geometry: the first (lanes, multiple) of `choices` for which some extent is a multiple of
// `multiple` puts `lanes` lanes along the first such axis.  Returns the lane width, 0 if no choice fits.
inline int choose_geometry(const int64_t L[4], std::initializer_list<std::pair<int, int>> choices, Geometry* g) {
  for (auto [width, multiple] : choices)
    for (int a = 0; a < 4; ++a)
      if (L[a] % multiple == 0) {
        g->lane = a;
        g->stride[3] = 1;
        for (int i = 2; i >= 0; --i) g->stride[i] = g->stride[i + 1] * L[i + 1];
        for (int i = 0; i < 4; ++i) g->ext[i] = i == a ? L[i] / width : L[i];
        return width;
      }
  return 0;
}

// Block coordinates of block r of work item (row) `row`: rows run over (c0, c1), blocks of a row over (c2, c3).
inline void block_coords(const Geometry& g, int64_t row, int64_t r, int64_t c[4]) {
  c[0] = row / g.ext[1];
  c[1] = row % g.ext[1];
  c[2] = r / g.ext[3];
  c[3] = r % g.ext[3];
}

// Links (*batch, L0..L3, 4, 3, 3) -> virtual nodes vn[(b * blocks + block) * 4 + mu], in parallel over rows.
template <class T, int W>
void to_virtual_nodes(ffi::ThreadPool& pool, const std::complex<T>* u, int64_t batch, int64_t volume,
                      const Geometry& g, Mat<typename Lanes<T, W>::V>* vn) {
  const int64_t nb = g.blocks(), rows = g.ext[0] * g.ext[1], per_row = g.ext[2] * g.ext[3];
  const int64_t ls = g.lane_stride();
  parallel_for(pool, batch * rows, [&](int64_t item) {
    const int64_t b = item / rows, row = item % rows;
    const std::complex<T>* ub = u + b * volume * 36;
    for (int64_t r = 0; r < per_row; ++r) {
      int64_t c[4];
      block_coords(g, row, r, c);
      const int64_t s0 = g.site(c);
      auto* m = vn + (b * nb + row * per_row + r) * 4;
      for (int k = 0; k < W; ++k)
        for (int mu = 0; mu < 4; ++mu) set_lane<T>(m[mu], k, ub + (s0 + k * ls) * 36 + mu * 9);
    }
  });
}

// Weighted staple sum Sigma_mu(x) = sum_{nu != mu} w_{mu nu} (upper + lower staple) at block x, as
// corrflow.lattice.staple_sum: upper U_nu(x+mu) U_mu(x+nu)^dag U_nu(x)^dag, lower U_nu(x+mu-nu)^dag U_mu(x-nu)^dag
// U_nu(x-nu) = (U_mu(x-nu) U_nu(x+mu-nu))^dag U_nu(x-nu).
template <class T, int W>
inline Mat<typename Lanes<T, W>::V> staple_sum(const Mat<typename Lanes<T, W>::V>* field, const Geometry& g,
                                               const int64_t x[4], int mu, const double* w) {
  using V = typename Lanes<T, W>::V;
  auto link = [&](const int64_t c[4], int m, int r) { return load<T, W>(field[g.index(c) * 4 + m], r); };
  Mat<V> sigma = {};
  for (int nu = 0; nu < 4; ++nu) {
    if (nu == mu) continue;
    int64_t xm[4] = {x[0], x[1], x[2], x[3]}, xn[4] = {x[0], x[1], x[2], x[3]};
    const int rm = g.step(xm, mu, 1), rn = g.step(xn, nu, 1);
    int64_t ym[4] = {x[0], x[1], x[2], x[3]};
    const int ry = g.step(ym, nu, -1);
    int64_t ymn[4] = {xm[0], xm[1], xm[2], xm[3]};
    const int rmn = rm + g.step(ymn, nu, -1);
    const Mat<V> up = mul<false, true>(mul<false, true>(link(xm, nu, rm), link(xn, mu, rn)), link(x, nu, 0));
    const Mat<V> lo = mul<true, false>(mul<false, false>(link(ym, mu, ry), link(ymn, nu, rmn)), link(ym, nu, ry));
    const T wt = static_cast<T>(w[mu * 4 + nu]);
    for (int i = 0; i < 3; ++i)
      for (int j = 0; j < 3; ++j) {
        sigma.re[i][j] += wt * (up.re[i][j] + lo.re[i][j]);
        sigma.im[i][j] += wt * (up.im[i][j] + lo.im[i][j]);
      }
  }
  return sigma;
}

}  // namespace corrflow_native
