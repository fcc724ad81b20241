// CorrflowStapleForce (kernels.cc has the layout).
#pragma once

#include "staples.h"

namespace corrflow_native {

template <class T, int W>
ffi::Error staple_force(ffi::ThreadPool& pool, const std::complex<T>* u, const double* weights, const LinkArgs& a,
                        const Geometry& g, std::complex<T>* out) {
  using V = typename Lanes<T, W>::V;
  const int64_t batch = a.batch, volume = a.volume();
  const int64_t nb = g.blocks();
  const int64_t rows = g.ext[0] * g.ext[1];  // work items per configuration: (c0, c1)
  const int64_t per_row = g.ext[2] * g.ext[3];
  const int64_t ls = g.lane_stride();
  Mat<V>* vn = static_cast<Mat<V>*>(scratch(static_cast<size_t>(batch * nb * 4) * sizeof(Mat<V>)));
  if (vn == nullptr) return ffi::Error::Internal("corrflow_staple_force: out of memory");

  to_virtual_nodes<T, W>(pool, u, batch, volume, g, vn);

  // the force, block by block
  parallel_for(pool, batch * rows, [&](int64_t item) {
    const int64_t b = item / rows, row = item % rows;
    const Mat<V>* field = vn + b * nb * 4;
    const double* w = a.weights(weights, b);
    std::complex<T>* ob = out + b * volume * 36;
    auto link = [&](const int64_t c[4], int mu, int r) { return load<T, W>(field[g.index(c) * 4 + mu], r); };
    for (int64_t r = 0; r < per_row; ++r) {
      int64_t x[4];
      block_coords(g, row, r, x);
      Mat<V> f[4];
      for (int mu = 0; mu < 4; ++mu)
        f[mu] = project_ta<T>(mul<false, false>(link(x, mu, 0), staple_sum<T, W>(field, g, x, mu, w)));
      const int64_t s0 = g.site(x);
      for (int k = 0; k < W; ++k)
        for (int mu = 0; mu < 4; ++mu) get_lane<T>(f[mu], k, ob + (s0 + k * ls) * 36 + mu * 9);
    }
  });
  return ffi::Error::Success();
}

ffi::Error StapleForceImpl(ffi::ThreadPool pool, ffi::AnyBuffer u, ffi::Buffer<ffi::F64> weights,
                           ffi::Result<ffi::AnyBuffer> out) {
  LinkArgs a;
  if (auto err = link_args("corrflow_staple_force", u, weights, false, &a); err.failure()) return err;
  if (out->element_type() != u.element_type())
    return ffi::Error::InvalidArgument("corrflow_staple_force: the force has the links' dtype");
  Geometry g;  // 8 lanes along the first extent 8 divides, else 4
  const int width = choose_geometry(a.L, {{8, 8}, {4, 4}}, &g);
  if (width == 0) return ffi::Error::InvalidArgument("corrflow_staple_force: no lattice extent is a multiple of 4");
  const double* w = weights.typed_data();
  if (u.element_type() == ffi::C64) {
    const auto* uc = static_cast<const std::complex<float>*>(u.untyped_data());
    auto* oc = static_cast<std::complex<float>*>(out->untyped_data());
    return width == 8 ? staple_force<float, 8>(pool, uc, w, a, g, oc) : staple_force<float, 4>(pool, uc, w, a, g, oc);
  }
  const auto* uc = static_cast<const std::complex<double>*>(u.untyped_data());
  auto* oc = static_cast<std::complex<double>*>(out->untyped_data());
  return width == 8 ? staple_force<double, 8>(pool, uc, w, a, g, oc) : staple_force<double, 4>(pool, uc, w, a, g, oc);
}

}  // namespace corrflow_native
