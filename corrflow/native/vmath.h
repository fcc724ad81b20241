// Transcendentals and random numbers on vectors for corrflow's native kernels: sin / cos polynomials with the
// coefficients of corrflow.fastmath, log / log1p / expm1, and Threefry-2x32 (20 rounds, the Random123 / JAX hash).
#pragma once

#include "simd.h"

namespace corrflow_native {

template <class T> struct Ieee {  // mantissa bits and exponent bias of T
  static constexpr int mant = sizeof(T) == 4 ? 23 : 52, bias = sizeof(T) == 4 ? 127 : 1023;
};

template <class T> struct Poly;
template <> struct Poly<float> {
  static constexpr int n_sin = 7, n_cos = 8;
  static constexpr float two_pi_hi = 6.28125f, two_pi_lo = 0.0019353071795864769f;
};
template <> struct Poly<double> {
  static constexpr int n_sin = 11, n_cos = 12;
  static constexpr double two_pi_hi = 6.283185307179586, two_pi_lo = 2.4492935982947064e-16;
};

// x - 2 pi k in [-pi, pi], k the nearest integer to x / (2 pi).
template <class T, class V, class I>
inline V reduce(V x) {
  const V half = V{} + static_cast<T>(0.5);
  const V t = x * static_cast<T>(1.0 / (2.0 * M_PI)) + (x < 0 ? -half : half);
  const V k = __builtin_convertvector(__builtin_convertvector(t, I), V);
  return (x - k * Poly<T>::two_pi_hi) - k * Poly<T>::two_pi_lo;
}

template <class T, class V>
inline V horner(V r2, int n, bool cosine) {
  // Taylor coefficients of sin(r)/r (cosine = false) or cos(r) (true) in r^2, n terms
  T c[12];
  double f = 1.0;
  for (int j = 0; j < n; ++j) {
    if (j > 0) f *= cosine ? (2.0 * j - 1) * (2.0 * j) : (2.0 * j) * (2.0 * j + 1);
    c[j] = static_cast<T>((j % 2 ? -1.0 : 1.0) / f);
  }
  V acc = r2 * 0 + c[n - 1];
  for (int j = n - 2; j >= 0; --j) acc = acc * r2 + c[j];
  return acc;
}

template <class T, class V, class I>
inline V sin_poly(V x) {
  V r = reduce<T, V, I>(x);
  const T half = static_cast<T>(M_PI / 2), pi = static_cast<T>(M_PI);
  r = r > half ? pi - r : (r < -half ? -pi - r : r);
  return r * horner<T, V>(r * r, Poly<T>::n_sin, false);
}

template <class T, class V, class I>
inline V cos_poly(V x) {
  V a = reduce<T, V, I>(x);
  a = a < 0 ? -a : a;
  const T pi = static_cast<T>(M_PI);
  const auto far = a > static_cast<T>(M_PI / 2);
  const V r = far ? pi - a : a;
  const V c = horner<T, V>(r * r, Poly<T>::n_cos, true);
  return far ? -c : c;
}

template <int W> struct U32 { typedef uint32_t V __attribute__((vector_size(W * sizeof(uint32_t)))); };

template <int W>
inline void threefry(uint32_t k0, uint32_t k1, typename U32<W>::V& x0, typename U32<W>::V& x1) {
  static constexpr int rot[8] = {13, 15, 26, 6, 17, 29, 16, 24};
  const uint32_t ks[3] = {k0, k1, k0 ^ k1 ^ 0x1BD11BDAu};
  x0 += ks[0];
  x1 += ks[1];
  for (int i = 0; i < 5; ++i) {
    for (int j = 0; j < 4; ++j) {
      const int r = rot[(i % 2) * 4 + j];
      x0 += x1;
      x1 = (x1 << r) | (x1 >> (32 - r));
      x1 ^= x0;
    }
    x0 += ks[(i + 1) % 3];
    x1 += ks[(i + 2) % 3] + static_cast<uint32_t>(i + 1);
  }
}

// log(t) for t > 0 (normal): t = m 2^e with m in [sqrt(1/2), sqrt(2)), log m = 2 atanh((m - 1) / (m + 1)).
template <class T, int W>
inline typename Lanes<T, W>::V vlog(typename Lanes<T, W>::V t) {
  using V = typename Lanes<T, W>::V;
  using I = typename Lanes<T, W>::I;
  using IT = typename Lanes<T, W>::IT;
  constexpr int mant = Ieee<T>::mant, bias = Ieee<T>::bias;
  const I bits = (I)t;
  I e = ((bits >> mant) & ((IT(1) << (sizeof(T) * 8 - 1 - mant)) - 1)) - bias;
  V m = (V)((bits & ((IT(1) << mant) - 1)) | (IT(bias) << mant));  // in [1, 2)
  const auto big = m > static_cast<T>(M_SQRT2);
  m = big ? m * static_cast<T>(0.5) : m;
  e = big ? e + 1 : e;
  const V sv = (m - 1) / (m + 1), s2 = sv * sv;
  constexpr int terms = sizeof(T) == 4 ? 6 : 12;
  V acc = s2 * 0 + static_cast<T>(1.0 / (2 * terms - 1));
  for (int j = terms - 2; j >= 0; --j) acc = acc * s2 + static_cast<T>(1.0 / (2 * j + 1));
  return __builtin_convertvector(e, V) * static_cast<T>(M_LN2) + 2 * sv * acc;
}

// log(1 + z) for z > -1, accurate for small |z| too.
template <class T, int W>
inline typename Lanes<T, W>::V vlog1p(typename Lanes<T, W>::V z) {
  using V = typename Lanes<T, W>::V;
  const V t = 1 + z;
  const V d = t - 1;
  const auto exact = d == 0;
  return exact ? z : vlog<T, W>(t) * (z / (exact ? z * 0 + 1 : d));
}

// exp(x) - 1 for x <= 0: the Taylor series for x >= -0.5, else exp(x) - 1 with exp(x) = 2^n exp(r).
template <class T, int W>
inline typename Lanes<T, W>::V vexpm1(typename Lanes<T, W>::V x) {
  using V = typename Lanes<T, W>::V;
  using I = typename Lanes<T, W>::I;
  using IT = typename Lanes<T, W>::IT;
  constexpr int terms = sizeof(T) == 4 ? 10 : 18;
  V series = x * 0 + 1;  // expm1(x) / x = sum_j x^j / (j + 1)!
  for (int j = terms; j >= 1; --j) series = 1 + x * series / static_cast<T>(j + 1);
  series = x * series;
  constexpr T low = sizeof(T) == 4 ? -80 : -700;  // exp(low) stays normal
  const V xc = x < low ? x * 0 + low : x;
  const V y = xc * static_cast<T>(1.0 / M_LN2) - static_cast<T>(0.5);  // <= 0: truncation rounds up
  const V nf = __builtin_convertvector(__builtin_convertvector(y, I), V);
  const V r = xc - nf * static_cast<T>(M_LN2);  // |r| <= ln 2
  V er = r * 0 + 1;
  for (int j = terms; j >= 1; --j) er = 1 + r * er / static_cast<T>(j);
  const I n = __builtin_convertvector(nf, I);
  const V scale = (V)((n + IT(Ieee<T>::bias)) << Ieee<T>::mant);
  return x >= static_cast<T>(-0.5) ? series : er * scale - 1;
}

}  // namespace corrflow_native
