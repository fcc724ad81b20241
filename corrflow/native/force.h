// CorrflowStapleForce (kernels.cc has the layout).
#pragma once

#include "staples.h"

namespace corrflow_native {

template <class T, int W>
ffi::Error staple_force(ffi::ThreadPool& pool, const std::complex<T>* u, const double* weights, int64_t batch,
                        int64_t weight_batch, int64_t volume, const Geometry& g, std::complex<T>* out) {
  using V = typename Lanes<T, W>::V;
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
    const double* w = weights + (weight_batch == 1 ? 0 : b / (batch / weight_batch)) * 16;
    std::complex<T>* ob = out + b * volume * 36;
    auto link = [&](const int64_t c[4], int mu, int r) { return load<T, W>(field[g.index(c) * 4 + mu], r); };
    for (int64_t r = 0; r < per_row; ++r) {
      int64_t x[4];
      block_coords(g, row, r, x);
      Mat<V> f[4];
      for (int mu = 0; mu < 4; ++mu)
        f[mu] = project_ta<T>(mul<false, false>(link(x, mu, 0), staple_sum<T, W>(field, g, x, mu, w)));
      const int64_t s0 = g.site(x);
      for (int k = 0; k < W; ++k) {
        std::complex<T>* dst = ob + (s0 + k * ls) * 36;
        for (int mu = 0; mu < 4; ++mu)
          for (int i = 0; i < 3; ++i)
            for (int j = 0; j < 3; ++j)
              dst[mu * 9 + i * 3 + j] = std::complex<T>(f[mu].re[i][j][k], f[mu].im[i][j][k]);
      }
    }
  });
  return ffi::Error::Success();
}

// The lane width and axis for a lattice: 8 lanes along the first axis whose extent they divide, else 4; 0 if none.
int lanes_for(const int64_t L[4], int* lane) {
  for (int w : {8, 4})
    for (int a = 0; a < 4; ++a)
      if (L[a] % w == 0) {
        *lane = a;
        return w;
      }
  return 0;
}

template <class T>
ffi::Error dispatch(ffi::ThreadPool& pool, const void* u, const double* weights, int64_t batch, int64_t weight_batch,
                    const int64_t L[4], void* out) {
  int lane = 0;
  const int w = lanes_for(L, &lane);
  if (w == 0) return ffi::Error::InvalidArgument("corrflow_staple_force: no lattice extent is a multiple of 4");
  Geometry g;
  g.lane = lane;
  g.stride[3] = 1;
  for (int a = 2; a >= 0; --a) g.stride[a] = g.stride[a + 1] * L[a + 1];
  for (int a = 0; a < 4; ++a) g.ext[a] = a == lane ? L[a] / w : L[a];
  const int64_t volume = L[0] * L[1] * L[2] * L[3];
  const auto* uc = static_cast<const std::complex<T>*>(u);
  auto* oc = static_cast<std::complex<T>*>(out);
  return w == 8 ? staple_force<T, 8>(pool, uc, weights, batch, weight_batch, volume, g, oc)
                : staple_force<T, 4>(pool, uc, weights, batch, weight_batch, volume, g, oc);
}

ffi::Error StapleForceImpl(ffi::ThreadPool pool, ffi::AnyBuffer u, ffi::Buffer<ffi::F64> weights,
                           ffi::Result<ffi::AnyBuffer> out) {
  const auto dims = u.dimensions();
  const int64_t rank = static_cast<int64_t>(dims.size());
  if (rank < 7 || dims[rank - 3] != 4 || dims[rank - 2] != 3 || dims[rank - 1] != 3)
    return ffi::Error::InvalidArgument("corrflow_staple_force: links must be (*batch, L0, L1, L2, L3, 4, 3, 3)");
  const int64_t L[4] = {dims[rank - 7], dims[rank - 6], dims[rank - 5], dims[rank - 4]};
  int64_t batch = 1;
  for (int64_t a = 0; a < rank - 7; ++a) batch *= dims[a];
  const auto wd = weights.dimensions();
  int64_t weight_batch = 1;
  for (size_t a = 0; a + 2 < wd.size(); ++a) weight_batch *= wd[a];
  if (wd.size() < 2 || wd[wd.size() - 1] != 4 || wd[wd.size() - 2] != 4 || batch % weight_batch != 0)
    return ffi::Error::InvalidArgument("corrflow_staple_force: weights must be (*batch prefix, 4, 4)");
  if (u.element_type() == ffi::C64 && out->element_type() == ffi::C64)
    return dispatch<float>(pool, u.untyped_data(), weights.typed_data(), batch, weight_batch, L, out->untyped_data());
  if (u.element_type() == ffi::C128 && out->element_type() == ffi::C128)
    return dispatch<double>(pool, u.untyped_data(), weights.typed_data(), batch, weight_batch, L,
                            out->untyped_data());
  return ffi::Error::InvalidArgument("corrflow_staple_force: links must be complex64 or complex128");
}

}  // namespace corrflow_native
