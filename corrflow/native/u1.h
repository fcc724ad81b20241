// CorrflowU1Force: the force of the U(1) Wilson gauge action in d dimensions (corrflow.theories.WilsonGaugeAction
// .force for U(1)): for angles theta (*batch, L_0, ..., L_{d-1}, d) and plane couplings b (d, d),
//   s_mn(x) = sin(theta_m(x) + theta_n(x + m) - theta_m(x + n) - theta_n(x))   (m < n),
//   F_m(x) = sum_{n > m} b_mn (s_mn(x) - s_mn(x - n)) - sum_{n < m} b_nm (s_nm(x) - s_nm(x - n)),
// the sines by the polynomial of corrflow.fastmath.sin_poly (vmath.h).  Three passes over rows of the last axis, W
// sites per vector: the angles into planar rows with halos, the plaquette sines of every plane, then the force.
#pragma once

#include <cstring>
#include <memory>
#include <new>

#include "simd.h"
#include "vmath.h"

namespace corrflow_native {

// Sites of the rows of the last axis: row r (all coordinates but the last) starts at site r * L_{d-1}.
struct Rows {
  int d;
  int64_t ext[8], rstride[8];  // extents; row-index strides of the first d - 1 axes
  int64_t len, count;          // L_{d-1}; number of rows
  // The row of r shifted by s = +-1 along axis a < d - 1 (periodic).
  int64_t shift(int64_t r, int a, int s) const {
    const int64_t c = (r / rstride[a]) % ext[a];
    const int64_t to = (c + s + ext[a]) % ext[a];
    return r + (to - c) * rstride[a];
  }
};

template <class V, class T>
inline V loadu(const T* p) {
  V v;
  std::memcpy(&v, p, sizeof(V));
  return v;
}

template <class V, class T>
inline void storeu(T* p, V v) {
  std::memcpy(p, &v, sizeof(V));
}

// dst[mu][1 + j] = src[j * D + mu] for the j < len sites of a row (D = 0: d at run time), GCC vectorises the
// fixed strides.
template <int D, class T>
inline void deinterleave(T* const* dst, const T* src, int64_t len, int d) {
  const int dd = D ? D : d;
  for (int mu = 0; mu < dd; ++mu)
    for (int64_t j = 0; j < len; ++j) dst[mu][1 + j] = src[j * dd + mu];
}

template <int D, class T>
inline void interleave(T* dst, const T* const* src, int64_t len, int d) {
  const int dd = D ? D : d;
  for (int64_t j = 0; j < len; ++j)
    for (int mu = 0; mu < dd; ++mu) dst[j * dd + mu] = src[mu][j];
}

template <class T, int W>
ffi::Error u1_force(ffi::ThreadPool& pool, const T* theta, int64_t batch, bool one_theta, const Rows& g,
                    const double* couplings, bool one_coupling, T* out) {
  using V = typename Lanes<T, W>::V;
  using I = typename Lanes<T, W>::I;
  const int d = g.d;
  const int64_t len = g.len, rows = g.count, sites = len * rows, planes = d * (d - 1) / 2;
  // planar rows with halos: [x_{len-1}, x_0 ... x_{len-1}, x_0, padding to whole vectors]
  const int64_t chunks = (len + W - 1) / W, pitch = chunks * W + 2;
  const int64_t angle_sets = one_theta ? 1 : batch;
  std::unique_ptr<T[]> angles(new (std::nothrow) T[angle_sets * d * rows * pitch]);
  std::unique_ptr<T[]> sines(new (std::nothrow) T[batch * planes * rows * pitch]);
  if (!angles || !sines) return ffi::Error::Internal("corrflow_u1_force: out of memory");
  auto row_of = [&](T* base, int64_t set, int64_t field, int64_t n_fields, int64_t r) {
    return base + ((set * n_fields + field) * rows + r) * pitch;
  };
  int plane_m[28], plane_n[28];
  for (int m = 0, k = 0; m < d; ++m)
    for (int n = m + 1; n < d; ++n, ++k) {
      plane_m[k] = m;
      plane_n[k] = n;
    }
  std::atomic<bool> failed{false};
  auto halo = [&](T* row) {
    row[0] = row[len];
    row[len + 1] = row[1];
  };
  auto planar = [&](int64_t b, int64_t r0, int64_t r1) {  // the angles into planar rows
    for (int64_t r = r0; r < r1; ++r) {
      T* dst[8];
      for (int mu = 0; mu < d; ++mu) {
        dst[mu] = row_of(angles.get(), b, mu, d, r);
        std::fill(dst[mu] + len + 2, dst[mu] + pitch, T(0));
      }
      const T* src = theta + (b * sites + r * len) * d;
      if (d == 2) deinterleave<2>(dst, src, len, d);
      else if (d == 4) deinterleave<4>(dst, src, len, d);
      else deinterleave<0>(dst, src, len, d);
      for (int mu = 0; mu < d; ++mu) halo(dst[mu]);
    }
  };
  auto plaquette_sines = [&](int64_t b, int64_t r0, int64_t r1) {
    const int64_t bt = one_theta ? 0 : b;
    for (int64_t r = r0; r < r1; ++r)
      for (int k = 0; k < planes; ++k) {
        const int m = plane_m[k], n = plane_n[k];
        const bool m_last = m == d - 1, n_last = n == d - 1;
        const T* a = row_of(angles.get(), bt, m, d, r) + 1;  // th_m(x)
        const T* e = row_of(angles.get(), bt, n, d, r) + 1;  // th_n(x)
        const T* bm = row_of(angles.get(), bt, n, d, m_last ? r : g.shift(r, m, 1)) + 1 + m_last;  // th_n(x+m)
        const T* cn = row_of(angles.get(), bt, m, d, n_last ? r : g.shift(r, n, 1)) + 1 + n_last;  // th_m(x+n)
        T* s = row_of(sines.get(), b, k, planes, r);
        for (int64_t j = 0; j < chunks * W; j += W)
          storeu(s + 1 + j, sin_poly<T, V, I>(loadu<V>(a + j) + loadu<V>(bm + j) - loadu<V>(cn + j) -
                                              loadu<V>(e + j)));
        halo(s);
      }
  };
  auto force = [&](int64_t b, int64_t r0, int64_t r1) {
    thread_local std::unique_ptr<T[]> buf;  // a row of the force, planar
    thread_local int64_t buf_size = 0;
    if (buf_size < d * pitch) {
      buf.reset(new (std::nothrow) T[d * pitch]);
      buf_size = buf ? d * pitch : 0;
      if (!buf) {
        failed = true;
        return;
      }
    }
    for (int64_t r = r0; r < r1; ++r) {
      T* fm = buf.get();
      std::fill(fm, fm + d * pitch, T(0));
      for (int k = 0; k < planes; ++k) {  // F_m += b (s - s(x - n)), F_n -= b (s - s(x - m)), planar
        const int m = plane_m[k], n = plane_n[k];
        const V bmn = V{} + static_cast<T>(couplings[(one_coupling ? 0 : b) * d * d + m * d + n]);
        const T* s = row_of(sines.get(), b, k, planes, r) + 1;
        auto back = [&](int a) {  // s_mn(x - a)
          return a == d - 1 ? s - 1 : row_of(sines.get(), b, k, planes, g.shift(r, a, -1)) + 1;
        };
        const T *sn = back(n), *sm = back(m);
        T *f_m = fm + m * pitch, *f_n = fm + n * pitch;
        for (int64_t j = 0; j < chunks * W; j += W) {
          const V sx = loadu<V>(s + j);
          storeu(f_m + j, loadu<V>(f_m + j) + bmn * (sx - loadu<V>(sn + j)));
          storeu(f_n + j, loadu<V>(f_n + j) - bmn * (sx - loadu<V>(sm + j)));
        }
      }
      const T* src[8];
      for (int mu = 0; mu < d; ++mu) src[mu] = buf.get() + mu * pitch;
      T* dst = out + (b * sites + r * len) * d;
      if (d == 2) interleave<2>(dst, src, len, d);
      else if (d == 4) interleave<4>(dst, src, len, d);
      else interleave<0>(dst, src, len, d);
    }
  };
  auto status = [&] {
    return failed ? ffi::Error::Internal("corrflow_u1_force: out of memory") : ffi::Error::Success();
  };
  if (batch >= pool.num_threads() || rows < 2) {  // a chain per work item: one pass over the pool
    if (one_theta) planar(0, 0, rows);  // (one field, several couplings)
    parallel_for(pool, batch, [&](int64_t b) {
      if (!one_theta) planar(b, 0, rows);
      plaquette_sines(b, 0, rows);
      force(b, 0, rows);
    });
    return status();
  }
  // few chains: each pass in parallel over rows (the passes need their neighbour rows)
  const int64_t rows_per_item = std::max<int64_t>(1, 1024 / len);
  const int64_t items = (rows + rows_per_item - 1) / rows_per_item;
  auto over_rows = [&](int64_t sets, auto pass) {
    parallel_for(pool, sets * items, [&](int64_t item) {
      const int64_t r0 = (item % items) * rows_per_item;
      pass(item / items, r0, std::min(rows, r0 + rows_per_item));
    });
  };
  over_rows(angle_sets, planar);
  over_rows(batch, plaquette_sines);
  over_rows(batch, force);
  return status();
}

ffi::Error U1ForceImpl(ffi::ThreadPool pool, ffi::AnyBuffer theta, ffi::Buffer<ffi::F64> coupling,
                       ffi::Result<ffi::AnyBuffer> out) {
  const auto td = theta.dimensions();
  const int64_t rank = static_cast<int64_t>(td.size());
  const int d = rank >= 1 ? static_cast<int>(td[rank - 1]) : 0;
  if (d < 2 || d > 8 || rank < d + 1 || coupling.element_count() % size_t(d * d) != 0)
    return ffi::Error::InvalidArgument("corrflow_u1_force: theta (*batch, L_0, ..., L_{d-1}, d), 2 <= d <= 8; "
                                       "couplings (d, d)");
  Rows g;
  g.d = d;
  int64_t sites = 1;
  for (int a = 0; a < d; ++a) {
    g.ext[a] = td[rank - 1 - d + a];
    sites *= g.ext[a];
  }
  g.len = g.ext[d - 1];
  g.count = sites / g.len;
  for (int a = d - 2, s = 1; a >= 0; --a) {
    g.rstride[a] = s;
    s *= static_cast<int>(g.ext[a]);
  }
  int64_t theta_batch = 1;
  for (int64_t a = 0; a < rank - 1 - d; ++a) theta_batch *= td[a];
  const int64_t coupling_batch = static_cast<int64_t>(coupling.element_count()) / (d * d);
  const int64_t batch = std::max(theta_batch, coupling_batch);  // each 1 or the batch (vmap)
  if ((theta_batch != 1 && theta_batch != batch) || (coupling_batch != 1 && coupling_batch != batch) ||
      out->element_count() != size_t(batch * sites * d))
    return ffi::Error::InvalidArgument("corrflow_u1_force: theta, couplings of one batch (or 1)");
  if (theta.element_type() == ffi::F32 && out->element_type() == ffi::F32)
    return u1_force<float, 8>(pool, static_cast<const float*>(theta.untyped_data()), batch, theta_batch == 1, g,
                              coupling.typed_data(), coupling_batch == 1, static_cast<float*>(out->untyped_data()));
  if (theta.element_type() == ffi::F64 && out->element_type() == ffi::F64)
    return u1_force<double, 8>(pool, static_cast<const double*>(theta.untyped_data()), batch, theta_batch == 1, g,
                               coupling.typed_data(), coupling_batch == 1, static_cast<double*>(out->untyped_data()));
  return ffi::Error::InvalidArgument("corrflow_u1_force: float32 or float64 angles only");
}

}  // namespace corrflow_native
