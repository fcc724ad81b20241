// CorrflowExpLeft: exp(X) U for su(3) elements X and SU(3) matrices U, (..., 3, 3) each, the formula of
// corrflow.groups._exp_su3 (Cayley-Hamilton, Morningstar & Peardon; cos(arccos(c) / 3) by Newton steps and sines and
// cosines by the polynomials of corrflow.fastmath, the same coefficients) on W matrices per vector.
#pragma once

#include "vmath.h"

namespace corrflow_native {

// exp(X) for W su(3) matrices at once.
template <class T, int W>
inline Mat<typename Lanes<T, W>::V> exp_su3(const Mat<typename Lanes<T, W>::V>& x) {
  using V = typename Lanes<T, W>::V;
  using I = typename Lanes<T, W>::I;
  Mat<V> q;  // Q = -i X
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 3; ++j) {
      q.re[i][j] = x.im[i][j];
      q.im[i][j] = -x.re[i][j];
    }
  const Mat<V> q2 = mul<false, false>(q, q);
  const V c1 = static_cast<T>(0.5) * (q2.re[0][0] + q2.re[1][1] + q2.re[2][2]);
  // c0 = det Q = -Im det X, by cofactors along the first row
  auto el = [&](int i, int j) { return Cx<V>{x.re[i][j], x.im[i][j]}; };
  auto sub = [](Cx<V> a, Cx<V> b) { return Cx<V>{a.re - b.re, a.im - b.im}; };
  const Cx<V> m0 = sub(cmul(el(1, 1), el(2, 2)), cmul(el(1, 2), el(2, 1)));
  const Cx<V> m1 = sub(cmul(el(1, 0), el(2, 2)), cmul(el(1, 2), el(2, 0)));
  const Cx<V> m2 = sub(cmul(el(1, 0), el(2, 1)), cmul(el(1, 1), el(2, 0)));
  const V det_im = cmul(el(0, 0), m0).im - cmul(el(0, 1), m1).im + cmul(el(0, 2), m2).im;
  const V c0 = -det_im;
  const auto small = c1 < static_cast<T>(1e-3);
  const V one = c1 * 0 + 1, zero = c1 * 0;
  const V c1s = small ? one : c1;
  const V c0s = small ? zero : c0;
  const auto neg = c0s < 0;
  const V c0a = neg ? -c0s : c0s;
  const V c13 = c1s * static_cast<T>(1.0 / 3.0);
  const V sq13 = vsqrt(c13);
  const V c0max = static_cast<T>(2) * c13 * sq13;
  V c = c0a / c0max;
  c = c < 0 ? zero : (c > 1 ? one : c);
  V y = static_cast<T>(0.86609252) + c * (static_cast<T>(0.16521472) +
                                          c * (static_cast<T>(-0.04063051) + c * static_cast<T>(0.00937448)));
  for (int it = 0; it < 3; ++it) y = y - (4 * y * y * y - 3 * y - c) / (12 * y * y - 3);
  const V u = sq13 * y;
  V w2 = c1s * (1 - y * y);
  w2 = w2 < 0 ? zero : w2;
  const auto wsmall = w2 < static_cast<T>(0.0025);
  const V wsafe = vsqrt(wsmall ? one : w2);
  const V xi0 = wsmall ? 1 - w2 / 6 * (1 - w2 / 20 * (1 - w2 / 42 * (1 - w2 / 72)))
                       : sin_poly<T, V, I>(wsafe) / wsafe;
  const V cosw = wsmall ? 1 - w2 / 2 * (1 - w2 / 12 * (1 - w2 / 30 * (1 - w2 / 56))) : cos_poly<T, V, I>(wsafe);
  const V cu = cos_poly<T, V, I>(u), su = sin_poly<T, V, I>(u);
  const Cx<V> e2iu{2 * cu * cu - 1, 2 * su * cu}, emiu{cu, -su};
  const V u2 = u * u;
  // h0 = (u2 - w2) e2iu + emiu (8 u2 cosw + 2i u (3 u2 + w2) xi0)
  const Cx<V> a0 = cmul(emiu, Cx<V>{8 * u2 * cosw, 2 * u * (3 * u2 + w2) * xi0});
  const Cx<V> h0{(u2 - w2) * e2iu.re + a0.re, (u2 - w2) * e2iu.im + a0.im};
  // h1 = 2u e2iu - emiu (2u cosw - i (3 u2 - w2) xi0)
  const Cx<V> a1 = cmul(emiu, Cx<V>{2 * u * cosw, -(3 * u2 - w2) * xi0});
  const Cx<V> h1{2 * u * e2iu.re - a1.re, 2 * u * e2iu.im - a1.im};
  // h2 = e2iu - emiu (cosw + 3i u xi0)
  const Cx<V> a2 = cmul(emiu, Cx<V>{cosw, 3 * u * xi0});
  const Cx<V> h2{e2iu.re - a2.re, e2iu.im - a2.im};
  const V den = 9 * u2 - w2;
  Cx<V> f0{h0.re / den, h0.im / den}, f1{h1.re / den, h1.im / den}, f2{h2.re / den, h2.im / den};
  // c0 -> -c0: f_j(-c0) = (-1)^j conj(f_j(c0))
  f0.im = neg ? -f0.im : f0.im;
  f1.re = neg ? -f1.re : f1.re;
  f2.im = neg ? -f2.im : f2.im;
  // small Q: the Taylor series with Q^k = a 1 + b Q + g Q^2 reduced by Q^3 = c1 Q + c0 1
  V ta = one, tb = zero, tg = zero;
  Cx<V> t0{zero, zero}, t1{zero, zero}, t2{zero, zero};
  double cre = 1.0, cim = 0.0;  // i^k / k!
  for (int k = 0; k < 13; ++k) {
    t0.re += static_cast<T>(cre) * ta; t0.im += static_cast<T>(cim) * ta;
    t1.re += static_cast<T>(cre) * tb; t1.im += static_cast<T>(cim) * tb;
    t2.re += static_cast<T>(cre) * tg; t2.im += static_cast<T>(cim) * tg;
    const V na = tg * c0, nb = ta + tg * c1, ng = tb;
    ta = na; tb = nb; tg = ng;
    const double r = -cim / (k + 1), i = cre / (k + 1);
    cre = r; cim = i;
  }
  f0 = {small ? t0.re : f0.re, small ? t0.im : f0.im};
  f1 = {small ? t1.re : f1.re, small ? t1.im : f1.im};
  f2 = {small ? t2.re : f2.re, small ? t2.im : f2.im};
  Mat<V> e;
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 3; ++j) {
      const Cx<V> b = cmul(f1, Cx<V>{q.re[i][j], q.im[i][j]});
      const Cx<V> g = cmul(f2, Cx<V>{q2.re[i][j], q2.im[i][j]});
      e.re[i][j] = b.re + g.re + (i == j ? f0.re : zero);
      e.im[i][j] = b.im + g.im + (i == j ? f0.im : zero);
    }
  return e;
}

template <class T, int W>
ffi::Error exp_left(ffi::ThreadPool& pool, const std::complex<T>* x, const std::complex<T>* u, int64_t n,
                    std::complex<T>* out) {
  using V = typename Lanes<T, W>::V;
  for_blocks<W>(pool, 1, n, 256, [&](int64_t, int64_t first, int lanes) {
    Mat<V> xm = {}, um = {};
    for (int k = 0; k < lanes; ++k) {
      set_lane<T>(xm, k, x + (first + k) * 9);
      set_lane<T>(um, k, u + (first + k) * 9);
    }
    const Mat<V> r = mul<false, false>(exp_su3<T, W>(xm), um);
    for (int k = 0; k < lanes; ++k) get_lane<T>(r, k, out + (first + k) * 9);
  });
  return ffi::Error::Success();
}

ffi::Error ExpLeftImpl(ffi::ThreadPool pool, ffi::AnyBuffer x, ffi::AnyBuffer u, ffi::Result<ffi::AnyBuffer> out) {
  const auto dims = x.dimensions();
  const int64_t rank = static_cast<int64_t>(dims.size());
  if (rank < 2 || dims[rank - 2] != 3 || dims[rank - 1] != 3 || x.element_count() != u.element_count() ||
      x.element_type() != u.element_type() || out->element_type() != x.element_type())
    return ffi::Error::InvalidArgument("corrflow_exp_left: X and U must be (..., 3, 3) of one shape and dtype");
  const int64_t n = static_cast<int64_t>(x.element_count()) / 9;
  if (x.element_type() == ffi::C64)
    return exp_left<float, 8>(pool, static_cast<const std::complex<float>*>(x.untyped_data()),
                              static_cast<const std::complex<float>*>(u.untyped_data()), n,
                              static_cast<std::complex<float>*>(out->untyped_data()));
  if (x.element_type() == ffi::C128)
    return exp_left<double, 8>(pool, static_cast<const std::complex<double>*>(x.untyped_data()),
                               static_cast<const std::complex<double>*>(u.untyped_data()), n,
                               static_cast<std::complex<double>*>(out->untyped_data()));
  return ffi::Error::InvalidArgument("corrflow_exp_left: complex64 or complex128 only");
}

}  // namespace corrflow_native
