// CorrflowPathSums: sums of products of links along paths (the staple sums of the residual layers,
// corrflow.flows.staples.gathered_staple_sums): out[b, s] = sum_p prod_j U[b, idx[p, j, s]]^(dag[p, j]) for SU(3)
// links of the flat field U (*batch, M, 3, 3), 8 sites s per vector (each factor gathered into the lanes).
#pragma once

#include "simd.h"

namespace corrflow_native {

template <class T, int W>
ffi::Error path_sums(ffi::ThreadPool& pool, const std::complex<T>* u, int64_t batch, int64_t m, const int32_t* idx,
                     int64_t idx_batch, const int32_t* dag, int64_t paths, int64_t length, int64_t n,
                     std::complex<T>* out) {
  using V = typename Lanes<T, W>::V;
  for_blocks<W>(pool, batch, n, 16, [&](int64_t b, int64_t first, int lanes) {
    const std::complex<T>* ub = u + b * m * 9;
    const int32_t* ib = idx + (idx_batch == 1 ? 0 : b) * paths * length * n;
    Mat<V> sum = {};
    for (int64_t p = 0; p < paths; ++p) {
      Mat<V> prod;
      for (int64_t j = 0; j < length; ++j) {
        Mat<V> f = {};
        const bool adj = dag[p * length + j] != 0;
        for (int k = 0; k < lanes; ++k) {
          const int64_t link = ib[(p * length + j) * n + first + k];
          if (link >= 0 && link < m) set_lane<T>(f, k, ub + link * 9, adj);  // (JAX clips; valid plans never reach)
        }
        prod = j == 0 ? f : mul<false, false>(prod, f);
      }
      for (int a = 0; a < 3; ++a)
        for (int c = 0; c < 3; ++c) {
          sum.re[a][c] += prod.re[a][c];
          sum.im[a][c] += prod.im[a][c];
        }
    }
    for (int k = 0; k < lanes; ++k) get_lane<T>(sum, k, out + (b * n + first + k) * 9);
  });
  return ffi::Error::Success();
}

ffi::Error PathSumsImpl(ffi::ThreadPool pool, ffi::AnyBuffer u, ffi::Buffer<ffi::S32> idx, ffi::Buffer<ffi::S32> dag,
                        ffi::Result<ffi::AnyBuffer> out) {
  const auto ud = u.dimensions(), id = idx.dimensions(), dd = dag.dimensions(), od = out->dimensions();
  const int64_t ur = static_cast<int64_t>(ud.size()), ir = static_cast<int64_t>(id.size());
  const int64_t dr = static_cast<int64_t>(dd.size());
  if (ur < 3 || ud[ur - 1] != 3 || ud[ur - 2] != 3 || ir < 3 || dr < 2)
    return ffi::Error::InvalidArgument("corrflow_path_sums: U (*batch, M, 3, 3), idx (*, P, L, n), dag (*, P, L)");
  const int64_t paths = id[ir - 3], length = id[ir - 2], n = id[ir - 1], m = ud[ur - 3];
  if (dd[dr - 2] != paths || dd[dr - 1] != length || length < 1 || dag.element_count() != size_t(paths * length))
    return ffi::Error::InvalidArgument("corrflow_path_sums: dag must be (P, L) as idx's paths and factors");
  int64_t batch = 1, idx_batch = 1;
  for (int64_t a = 0; a < ur - 3; ++a) batch *= ud[a];
  for (int64_t a = 0; a < ir - 3; ++a) idx_batch *= id[a];
  if ((idx_batch != 1 && idx_batch != batch) || out->element_count() != size_t(batch * n * 9))
    return ffi::Error::InvalidArgument("corrflow_path_sums: idx batch must be 1 or U's; out (*batch, n, 3, 3)");
  (void)od;
  if (u.element_type() == ffi::C64 && out->element_type() == ffi::C64)
    return path_sums<float, 8>(pool, static_cast<const std::complex<float>*>(u.untyped_data()), batch, m,
                               idx.typed_data(), idx_batch, dag.typed_data(), paths, length, n,
                               static_cast<std::complex<float>*>(out->untyped_data()));
  if (u.element_type() == ffi::C128 && out->element_type() == ffi::C128)
    return path_sums<double, 8>(pool, static_cast<const std::complex<double>*>(u.untyped_data()), batch, m,
                                idx.typed_data(), idx_batch, dag.typed_data(), paths, length, n,
                                static_cast<std::complex<double>*>(out->untyped_data()));
  return ffi::Error::InvalidArgument("corrflow_path_sums: complex64 or complex128 only");
}

}  // namespace corrflow_native
