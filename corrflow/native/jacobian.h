// CorrflowAlgebraLogj: (g, log J) of a stout-like SU(3) link update U' = exp(g) U, g = P_TA(W), W = U Sigma, per
// matrix W: corrflow.flows.jacobian.algebra_and_logj on 8 matrices per vector -- M and ad g from (Re W, Im W) by
// the real linear maps passed in (k_m (18, 64), k_x (18, 8), k_ad (8, 64)), F(ad g) by the same Paterson-Stockmeyer
// Taylor polynomial (degree 23 in float64, 15 in float32), J = det(1 + F M) by the same unpivoted LU.
#pragma once

#include "vmath.h"

namespace corrflow_native {

template <class V>
inline void mul8(const V (&a)[8][8], const V (&b)[8][8], V (&c)[8][8]) {
  for (int i = 0; i < 8; ++i)
    for (int j = 0; j < 8; ++j) {
      V acc = a[i][0] * b[0][j];
      for (int k = 1; k < 8; ++k) acc += a[i][k] * b[k][j];
      c[i][j] = acc;
    }
}

template <class T, int W>
ffi::Error algebra_logj(ffi::ThreadPool& pool, const std::complex<T>* w, const double* k_m, const double* k_x,
                        const double* k_ad, int64_t n, std::complex<T>* x_out, T* logj_out) {
  using V = typename Lanes<T, W>::V;
  constexpr int degree = sizeof(T) == 4 ? 15 : 23;
  T coef[degree + 1];
  double f = 1.0;
  for (int k = 0; k <= degree; ++k) {
    f *= (k + 1);
    coef[k] = static_cast<T>((k % 2 ? -1.0 : 1.0) / f);  // (-1)^k / (k + 1)!
  }
  for_blocks<W>(pool, 1, n, 64, [&](int64_t, int64_t first, int lanes) {
    Mat<V> wm = {};
    for (int k = 0; k < lanes; ++k) set_lane<T>(wm, k, w + (first + k) * 9);
    // (Re W, Im W) as 18 vectors, the order of the linear maps' rows
    auto wr = [&](int r) -> const V& { return r < 9 ? wm.re[r / 3][r % 3] : wm.im[(r - 9) / 3][(r - 9) % 3]; };
    V m[8][8], ad[8][8], gx[8];
    for (int a = 0; a < 64; ++a) {
      V acc = wr(0) * static_cast<T>(k_m[a]);
      for (int r = 1; r < 18; ++r) acc += wr(r) * static_cast<T>(k_m[r * 64 + a]);
      m[a / 8][a % 8] = acc;
    }
    for (int c = 0; c < 8; ++c) {
      V acc = wr(0) * static_cast<T>(k_x[c]);
      for (int r = 1; r < 18; ++r) acc += wr(r) * static_cast<T>(k_x[r * 8 + c]);
      gx[c] = acc;
    }
    for (int a = 0; a < 64; ++a) {
      V acc = gx[0] * static_cast<T>(k_ad[a]);
      for (int c = 1; c < 8; ++c) acc += gx[c] * static_cast<T>(k_ad[c * 64 + a]);
      ad[a / 8][a % 8] = acc;
    }
    // F(ad g) = sum_k (-A)^k / (k + 1)! by Paterson-Stockmeyer in A^4 (corrflow.flows.jacobian._phi)
    V a2[8][8], a3[8][8], a4[8][8], out[8][8], tmp[8][8];
    mul8(ad, ad, a2);
    mul8(a2, ad, a3);
    mul8(a2, a2, a4);
    auto block = [&](int j, V (&res)[8][8]) {
      for (int r = 0; r < 8; ++r)
        for (int c = 0; c < 8; ++c)
          res[r][c] = coef[4 * j + 1] * ad[r][c] + coef[4 * j + 2] * a2[r][c] + coef[4 * j + 3] * a3[r][c] +
                      (r == c ? wr(0) * 0 + coef[4 * j] : wr(0) * 0);
    };
    constexpr int nblocks = (degree + 1) / 4;
    block(nblocks - 1, out);
    for (int j = nblocks - 2; j >= 0; --j) {
      mul8(a4, out, tmp);
      block(j, out);
      for (int r = 0; r < 8; ++r)
        for (int c = 0; c < 8; ++c) out[r][c] += tmp[r][c];
    }
    // J = det(1 + F M) by unpivoted LU (corrflow.flows.jacobian._logdet_lu)
    V jac[8][8];
    mul8(out, m, jac);
    for (int r = 0; r < 8; ++r) jac[r][r] += 1;
    V logdet = wr(0) * 0;
    for (int k = 0; k < 8; ++k) {
      const V piv = jac[k][k];
      logdet += vlog<T, W>(piv < 0 ? -piv : piv);
      for (int r = k + 1; r < 8; ++r) {
        const V fct = jac[r][k] / piv;
        for (int c = k + 1; c < 8; ++c) jac[r][c] -= fct * jac[k][c];
      }
    }
    const Mat<V> g = project_ta<T>(wm);  // g = P_TA(W)
    for (int k = 0; k < lanes; ++k) {
      get_lane<T>(g, k, x_out + (first + k) * 9);
      logj_out[first + k] = logdet[k];
    }
  });
  return ffi::Error::Success();
}

ffi::Error AlgebraLogjImpl(ffi::ThreadPool pool, ffi::AnyBuffer w, ffi::Buffer<ffi::F64> k_m,
                           ffi::Buffer<ffi::F64> k_x, ffi::Buffer<ffi::F64> k_ad, ffi::Result<ffi::AnyBuffer> x,
                           ffi::Result<ffi::AnyBuffer> logj) {
  const auto dims = w.dimensions();
  const int64_t rank = static_cast<int64_t>(dims.size());
  if (rank < 2 || dims[rank - 2] != 3 || dims[rank - 1] != 3 || k_m.element_count() != 18 * 64 ||
      k_x.element_count() != 18 * 8 || k_ad.element_count() != 8 * 64)
    return ffi::Error::InvalidArgument(
        "corrflow_algebra_logj: W must be (..., 3, 3), constants (18, 64), (18, 8), (8, 64)");
  const int64_t n = static_cast<int64_t>(w.element_count()) / 9;
  if (w.element_type() == ffi::C64 && logj->element_type() == ffi::F32)
    return algebra_logj<float, 8>(pool, static_cast<const std::complex<float>*>(w.untyped_data()), k_m.typed_data(),
                                  k_x.typed_data(), k_ad.typed_data(), n,
                                  static_cast<std::complex<float>*>(x->untyped_data()),
                                  static_cast<float*>(logj->untyped_data()));
  if (w.element_type() == ffi::C128 && logj->element_type() == ffi::F64)
    return algebra_logj<double, 8>(pool, static_cast<const std::complex<double>*>(w.untyped_data()),
                                   k_m.typed_data(), k_x.typed_data(), k_ad.typed_data(), n,
                                   static_cast<std::complex<double>*>(x->untyped_data()),
                                   static_cast<double*>(logj->untyped_data()));
  return ffi::Error::InvalidArgument("corrflow_algebra_logj: complex64 or complex128 only");
}

}  // namespace corrflow_native
