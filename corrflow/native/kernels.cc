// corrflow's native CPU kernels, called from JAX through the XLA FFI (corrflow/native/__init__.py builds this file
// once per machine and registers it; the pure-JAX kernels stay the reference and the fallback).  Sections:
// CorrflowStapleForce, CorrflowExpLeft, CorrflowOverrelax, CorrflowHeatbath, CorrflowAlgebraLogj.
//
// CorrflowStapleForce: F_mu(x) = P_TA[U_mu(x) Sigma_mu(x)] for 4D SU(3) links, Sigma_mu the staple sum weighted by
// the symmetric (4, 4) plane weights -- the numbers of corrflow.lattice.staple_force_xla up to rounding.
//
// Layout.  The links (*batch, L0, L1, L2, L3, 4, 3, 3) (complex, colour innermost) are copied once per call into
// "virtual nodes": the W = 8 (else 4) SIMD lanes of a vector hold the W sites x_a = k (L_a / W) + o, k = 0..W-1, of
// one block along a lane axis a (the first extent W divides), and each block stores its 4 links as 18 vectors (real
// and imaginary planes of the 3x3 entries).  Every 3x3 complex product then works on W sites at once with plain
// vector arithmetic, and a shift by one site is another block -- across the edge of a lane's range along a, a
// rotation of the lanes by one.  All products of a site stay in registers and L1; the links are read once and only
// the force is written.

#include <algorithm>
#include <atomic>
#include <cmath>
#include <complex>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>
#include <thread>
#include <type_traits>
#include <utility>

#include <sys/mman.h>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

// W SIMD lanes of T: one vector holds W sites (the "virtual nodes" of the header).
template <class T, int W>
struct Lanes {
  typedef T V __attribute__((vector_size(W * sizeof(T))));
  using IT = std::conditional_t<sizeof(T) == 4, int32_t, int64_t>;
  typedef IT I __attribute__((vector_size(W * sizeof(IT))));
};

template <class V> struct Mat { V re[3][3]; V im[3][3]; };  // 18 vectors: W 3x3 complex matrices

// The matrices of a block with the lanes rotated by r in {-1, 0, +1}: lane k takes lane k + r (mod W).
template <class T, int W>
inline Mat<typename Lanes<T, W>::V> load(const Mat<typename Lanes<T, W>::V>& m, int r) {
  using V = typename Lanes<T, W>::V;
  using I = typename Lanes<T, W>::I;
  if (r == 0) return m;
  I mask;
  for (int k = 0; k < W; ++k) mask[k] = (k + r + W) % W;
  Mat<V> o;
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 3; ++j) {
      o.re[i][j] = __builtin_shuffle(m.re[i][j], mask);
      o.im[i][j] = __builtin_shuffle(m.im[i][j], mask);
    }
  return o;
}

// c = a b, with a^dag (da) and / or b^dag (db).
template <bool da, bool db, class V>
inline Mat<V> mul(const Mat<V>& a, const Mat<V>& b) {
  Mat<V> c;
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 3; ++j) {
      V re = {}, im = {};
      for (int k = 0; k < 3; ++k) {
        const V ar = da ? a.re[k][i] : a.re[i][k];
        const V ai = da ? -a.im[k][i] : a.im[i][k];
        const V br = db ? b.re[j][k] : b.re[k][j];
        const V bi = db ? -b.im[j][k] : b.im[k][j];
        re += ar * br - ai * bi;
        im += ar * bi + ai * br;
      }
      c.re[i][j] = re;
      c.im[i][j] = im;
    }
  return c;
}

// The work items [0, n) over the pool's threads and the caller; returns when every item is done.  Late tasks find
// no item left and touch nothing but the shared counters (kept alive by their own reference).
template <class F>
void parallel_for(ffi::ThreadPool& pool, int64_t n, const F& f) {
  const int64_t workers = std::min<int64_t>(pool.num_threads(), n);
  if (workers <= 1) {
    for (int64_t i = 0; i < n; ++i) f(i);
    return;
  }
  struct State { std::atomic<int64_t> next{0}, done{0}; };
  auto st = std::make_shared<State>();
  const F* fp = &f;
  auto work = [st, n, fp]() {
    for (int64_t i; (i = st->next.fetch_add(1, std::memory_order_relaxed)) < n;) {
      (*fp)(i);
      st->done.fetch_add(1, std::memory_order_release);
    }
  };
  for (int64_t t = 1; t < workers; ++t) {
    auto task = work;
    pool.Schedule(std::move(task));
  }
  work();
  while (st->done.load(std::memory_order_acquire) < n) std::this_thread::yield();
}

// The calling thread's scratch memory for the virtual nodes, kept between calls, 2 MiB aligned and advised as huge
// pages (a block's neighbours lie up to a lane's range away: 16^4 complex64 force 11.9 -> 9.2 ms on a 2-core EPYC).
// nullptr when out of memory.
void* scratch(size_t bytes) {
  struct Block {
    void* p = nullptr;
    size_t n = 0;
    ~Block() { free(p); }
  };
  thread_local Block block;
  if (block.n < bytes) {
    free(block.p);
    block.p = nullptr;
    block.n = 0;
    const size_t huge = size_t(1) << 21;
    const size_t n = (bytes + huge - 1) / huge * huge;
    if (posix_memalign(&block.p, huge, n) != 0) return nullptr;
    madvise(block.p, n, MADV_HUGEPAGE);
    block.n = n;
  }
  return block.p;
}

// Blocks of W sites: along the lane axis `lane` the block coordinate o runs over L / W and lane k holds the site
// k (L / W) + o; the other axes are the lattice's.
struct Geometry {
  int64_t ext[4];     // block extents
  int64_t stride[4];  // site-index strides of the (row-major) lattice
  int lane;           // the lane axis
  int64_t blocks() const { return ext[0] * ext[1] * ext[2] * ext[3]; }
  int64_t index(const int64_t c[4]) const { return ((c[0] * ext[1] + c[1]) * ext[2] + c[2]) * ext[3] + c[3]; }
  // Site index of lane 0 of block c; lane k adds k * lane_stride().
  int64_t site(const int64_t c[4]) const {
    return c[0] * stride[0] + c[1] * stride[1] + c[2] * stride[2] + c[3] * stride[3];
  }
  int64_t lane_stride() const { return ext[lane] * stride[lane]; }
  // c + s mu_hat (s = +-1) in place; returns the lane rotation it needs.
  int step(int64_t c[4], int mu, int s) const {
    c[mu] += s;
    if (c[mu] == ext[mu]) { c[mu] = 0; return mu == lane ? 1 : 0; }
    if (c[mu] < 0) { c[mu] = ext[mu] - 1; return mu == lane ? -1 : 0; }
    return 0;
  }
};

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

  // 1. links -> virtual nodes
  parallel_for(pool, batch * rows, [&](int64_t item) {
    const int64_t b = item / rows, row = item % rows;
    const std::complex<T>* ub = u + b * volume * 36;
    for (int64_t r = 0; r < per_row; ++r) {
      const int64_t c[4] = {row / g.ext[1], row % g.ext[1], r / g.ext[3], r % g.ext[3]};
      const int64_t s0 = g.site(c);
      Mat<V>* m = vn + (b * nb + row * per_row + r) * 4;
      for (int k = 0; k < W; ++k) {
        const std::complex<T>* src = ub + (s0 + k * ls) * 36;
        for (int mu = 0; mu < 4; ++mu)
          for (int i = 0; i < 3; ++i)
            for (int j = 0; j < 3; ++j) {
              m[mu].re[i][j][k] = src[mu * 9 + i * 3 + j].real();
              m[mu].im[i][j][k] = src[mu * 9 + i * 3 + j].imag();
            }
      }
    }
  });

  // 2. the force, block by block
  parallel_for(pool, batch * rows, [&](int64_t item) {
    const int64_t b = item / rows, row = item % rows;
    const Mat<V>* field = vn + b * nb * 4;
    const double* w = weights + (weight_batch == 1 ? 0 : b / (batch / weight_batch)) * 16;
    std::complex<T>* ob = out + b * volume * 36;
    auto link = [&](const int64_t c[4], int mu, int r) { return load<T, W>(field[g.index(c) * 4 + mu], r); };
    for (int64_t r = 0; r < per_row; ++r) {
      const int64_t x[4] = {row / g.ext[1], row % g.ext[1], r / g.ext[3], r % g.ext[3]};
      Mat<V> f[4];
      for (int mu = 0; mu < 4; ++mu) {
        Mat<V> sigma = {};
        for (int nu = 0; nu < 4; ++nu) {
          if (nu == mu) continue;
          int64_t xm[4] = {x[0], x[1], x[2], x[3]}, xn[4] = {x[0], x[1], x[2], x[3]};
          const int rm = g.step(xm, mu, 1), rn = g.step(xn, nu, 1);
          int64_t ym[4] = {x[0], x[1], x[2], x[3]};
          const int ry = g.step(ym, nu, -1);  // x - nu
          int64_t ymn[4] = {xm[0], xm[1], xm[2], xm[3]};
          const int rmn = rm + g.step(ymn, nu, -1);  // x + mu - nu (at most one of the two steps rotates)
          // upper: U_nu(x+mu) U_mu(x+nu)^dag U_nu(x)^dag
          const Mat<V> up = mul<false, true>(mul<false, true>(link(xm, nu, rm), link(xn, mu, rn)), link(x, nu, 0));
          // lower: U_nu(x+mu-nu)^dag U_mu(x-nu)^dag U_nu(x-nu) = (U_mu(x-nu) U_nu(x+mu-nu))^dag U_nu(x-nu)
          const Mat<V> lo = mul<true, false>(mul<false, false>(link(ym, mu, ry), link(ymn, nu, rmn)),
                                             link(ym, nu, ry));
          const T wt = static_cast<T>(w[mu * 4 + nu]);
          for (int i = 0; i < 3; ++i)
            for (int j = 0; j < 3; ++j) {
              sigma.re[i][j] += wt * (up.re[i][j] + lo.re[i][j]);
              sigma.im[i][j] += wt * (up.im[i][j] + lo.im[i][j]);
            }
        }
        const Mat<V> p = mul<false, false>(link(x, mu, 0), sigma);
        // P_TA(P) = (P - P^dag) / 2 - tr(P - P^dag) / 6
        const V tr = (p.im[0][0] + p.im[1][1] + p.im[2][2]) * static_cast<T>(1.0 / 3.0);
        for (int i = 0; i < 3; ++i)
          for (int j = 0; j < 3; ++j) {
            f[mu].re[i][j] = static_cast<T>(0.5) * (p.re[i][j] - p.re[j][i]);
            f[mu].im[i][j] = static_cast<T>(0.5) * (p.im[i][j] + p.im[j][i]);
          }
        for (int i = 0; i < 3; ++i) f[mu].im[i][i] = p.im[i][i] - tr;
      }
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

// ---------------------------------------------------------------------------------------------------------------
// CorrflowExpLeft: exp(X) U for su(3) elements X and SU(3) matrices U, (..., 3, 3) each, the formula of
// corrflow.groups._exp_su3 (Cayley-Hamilton, Morningstar & Peardon; cos(arccos(c) / 3) by Newton steps and sines and
// cosines by the polynomials of corrflow.fastmath, the same coefficients) on W matrices per vector.

template <class T> struct Poly;
template <> struct Poly<float> {
  static constexpr int n_sin = 7, n_cos = 8;
  static constexpr float two_pi_hi = 6.28125f, two_pi_lo = 0.0019353071795864769f;
};
template <> struct Poly<double> {
  static constexpr int n_sin = 11, n_cos = 12;
  static constexpr double two_pi_hi = 6.283185307179586, two_pi_lo = 2.4492935982947064e-16;
};

// x - 2 pi k in [-pi, pi] for x >= 0 (every argument here is), k the nearest integer to x / (2 pi).
template <class T, class V, class I>
inline V reduce(V x) {
  const V t = x * static_cast<T>(1.0 / (2.0 * M_PI)) + static_cast<T>(0.5);
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

template <class V>
inline V vsqrt(V x) {
  V r;
  for (size_t k = 0; k < sizeof(V) / sizeof(x[0]); ++k) r[k] = __builtin_sqrt(x[k]);
  return r;
}

template <class V> struct Cx { V re, im; };
template <class V>
inline Cx<V> cmul(Cx<V> a, Cx<V> b) {
  return {a.re * b.re - a.im * b.im, a.re * b.im + a.im * b.re};
}

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
  const int64_t blocks = (n + W - 1) / W;
  const int64_t per_item = 256;
  parallel_for(pool, (blocks + per_item - 1) / per_item, [&](int64_t item) {
    const int64_t last = std::min(blocks, (item + 1) * per_item);
    for (int64_t blk = item * per_item; blk < last; ++blk) {
      const int lanes = static_cast<int>(std::min<int64_t>(W, n - blk * W));
      Mat<V> xm = {}, um = {};
      for (int k = 0; k < lanes; ++k) {
        const std::complex<T>* xs = x + (blk * W + k) * 9;
        const std::complex<T>* us = u + (blk * W + k) * 9;
        for (int i = 0; i < 3; ++i)
          for (int j = 0; j < 3; ++j) {
            xm.re[i][j][k] = xs[i * 3 + j].real();
            xm.im[i][j][k] = xs[i * 3 + j].imag();
            um.re[i][j][k] = us[i * 3 + j].real();
            um.im[i][j][k] = us[i * 3 + j].imag();
          }
      }
      const Mat<V> r = mul<false, false>(exp_su3<T, W>(xm), um);
      for (int k = 0; k < lanes; ++k) {
        std::complex<T>* os = out + (blk * W + k) * 9;
        for (int i = 0; i < 3; ++i)
          for (int j = 0; j < 3; ++j) os[i * 3 + j] = std::complex<T>(r.re[i][j][k], r.im[i][j][k]);
      }
    }
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

// ---------------------------------------------------------------------------------------------------------------
// CorrflowOverrelax: one over-relaxation sweep of 4D SU(3) links with plane couplings b, the algorithm of
// corrflow.heatbath.overrelax_sweep: for mu = 0..3, parity 0 then 1, the links U_mu of that parity get
// U <- R U in the SU(2) subgroups (0,1), (0,2), (1,2) in turn, R = (V^dag)^2 from the quaternion of the block of
// W = U Sigma_mu (W <- R W alongside); then every link is re-unitarised (Gram-Schmidt on the rows).  Links of one
// (mu, parity) only see links of other directions or parity, so each sub-sweep updates the virtual nodes in place;
// where a lane's range along the lane axis is odd, a block holds both parities and only the active lanes are stored
// (a concurrent reader of such a block uses only the other lanes).

template <class V> struct Quat { V q0, q1, q2, q3; };

// W rows i, j <- R (rows i, j) for the SU(2) quaternion r embedded in (i, j): ra = r0 + i r3, rb = r2 + i r1.
template <class V>
inline void apply_left(const Quat<V>& r, Mat<V>& m, int i, int j) {
  for (int c = 0; c < 3; ++c) {
    const V mir = m.re[i][c], mii = m.im[i][c], mjr = m.re[j][c], mji = m.im[j][c];
    m.re[i][c] = r.q0 * mir - r.q3 * mii + r.q2 * mjr - r.q1 * mji;
    m.im[i][c] = r.q0 * mii + r.q3 * mir + r.q2 * mji + r.q1 * mjr;
    // -conj(rb) m_i + conj(ra) m_j
    m.re[j][c] = -(r.q2 * mir + r.q1 * mii) + r.q0 * mjr + r.q3 * mji;
    m.im[j][c] = -(r.q2 * mii - r.q1 * mir) + r.q0 * mji - r.q3 * mjr;
  }
}

template <class T, class V>
inline void overrelax_link(Mat<V>& u, const Mat<V>& sigma) {
  Mat<V> w = mul<false, false>(u, sigma);
  const int pairs[3][2] = {{0, 1}, {0, 2}, {1, 2}};
  for (const auto& pr : pairs) {
    const int i = pr[0], j = pr[1];
    // alpha = (w_ii + conj w_jj) / 2, beta = (w_ij - conj w_ji) / 2; q = (Re alpha, Im beta, Re beta, Im alpha)
    const V q0 = static_cast<T>(0.5) * (w.re[i][i] + w.re[j][j]);
    const V q3 = static_cast<T>(0.5) * (w.im[i][i] - w.im[j][j]);
    const V q2 = static_cast<T>(0.5) * (w.re[i][j] - w.re[j][i]);
    const V q1 = static_cast<T>(0.5) * (w.im[i][j] + w.im[j][i]);
    const V k = vsqrt(q0 * q0 + q1 * q1 + q2 * q2 + q3 * q3);
    const auto ok = k > static_cast<T>(1e-10);
    const V one = k * 0 + 1;
    const V inv = ok ? one / (ok ? k : one) : k * 0;
    const V v0 = ok ? q0 * inv : one, v1 = q1 * inv, v2 = q2 * inv, v3 = q3 * inv;
    const V vv = v1 * v1 + v2 * v2 + v3 * v3;
    const Quat<V> r{ok ? v0 * v0 - vv : one, -2 * v0 * v1, -2 * v0 * v2, -2 * v0 * v3};
    apply_left(r, u, i, j);
    apply_left(r, w, i, j);
  }
}

// Gram-Schmidt on the rows, the third row conj(r0 x r1) (corrflow.groups.SUN.normalize).
template <class V>
inline Mat<V> normalize(const Mat<V>& u) {
  Mat<V> o;
  V n0 = {};
  for (int c = 0; c < 3; ++c) n0 += u.re[0][c] * u.re[0][c] + u.im[0][c] * u.im[0][c];
  n0 = vsqrt(n0);
  for (int c = 0; c < 3; ++c) { o.re[0][c] = u.re[0][c] / n0; o.im[0][c] = u.im[0][c] / n0; }
  V dre = {}, dim = {};  // conj(r0) . u1
  for (int c = 0; c < 3; ++c) {
    dre += o.re[0][c] * u.re[1][c] + o.im[0][c] * u.im[1][c];
    dim += o.re[0][c] * u.im[1][c] - o.im[0][c] * u.re[1][c];
  }
  V n1 = {};
  for (int c = 0; c < 3; ++c) {
    o.re[1][c] = u.re[1][c] - (dre * o.re[0][c] - dim * o.im[0][c]);
    o.im[1][c] = u.im[1][c] - (dre * o.im[0][c] + dim * o.re[0][c]);
    n1 += o.re[1][c] * o.re[1][c] + o.im[1][c] * o.im[1][c];
  }
  n1 = vsqrt(n1);
  for (int c = 0; c < 3; ++c) { o.re[1][c] /= n1; o.im[1][c] /= n1; }
  for (int c = 0; c < 3; ++c) {
    const int a = (c + 1) % 3, b = (c + 2) % 3;  // (r0 x r1)_c = r0_a r1_b - r0_b r1_a
    const V re = (o.re[0][a] * o.re[1][b] - o.im[0][a] * o.im[1][b]) -
                 (o.re[0][b] * o.re[1][a] - o.im[0][b] * o.im[1][a]);
    const V im = (o.re[0][a] * o.im[1][b] + o.im[0][a] * o.re[1][b]) -
                 (o.re[0][b] * o.im[1][a] + o.im[0][b] * o.re[1][a]);
    o.re[2][c] = re;
    o.im[2][c] = -im;
  }
  return o;
}

// Weighted staple sum Sigma_mu at block x (the force's).
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

// One sweep of link updates (over-relaxation or heat bath): update(link, sigma, chain, x, mu, parity) changes the
// links U_mu at the blocks x, in place for the active lanes; then every link is re-unitarised.
template <class T, int W, class F>
ffi::Error update_sweep(ffi::ThreadPool& pool, const std::complex<T>* u, const double* weights, int64_t batch,
                        int64_t weight_batch, int64_t volume, const Geometry& g, std::complex<T>* out,
                        const F& update) {
  using V = typename Lanes<T, W>::V;
  const int64_t nb = g.blocks();
  const int64_t rows = g.ext[0] * g.ext[1];
  const int64_t per_row = g.ext[2] * g.ext[3];
  const int64_t ls = g.lane_stride();
  const bool mixed = g.ext[g.lane] % 2 == 1;  // lanes of one block alternate in parity
  Mat<V>* vn = static_cast<Mat<V>*>(scratch(static_cast<size_t>(batch * nb * 4) * sizeof(Mat<V>)));
  if (vn == nullptr) return ffi::Error::Internal("corrflow: out of memory");
  auto coords = [&](int64_t row, int64_t r, int64_t c[4]) {
    c[0] = row / g.ext[1]; c[1] = row % g.ext[1]; c[2] = r / g.ext[3]; c[3] = r % g.ext[3];
  };
  parallel_for(pool, batch * rows, [&](int64_t item) {
    const int64_t b = item / rows, row = item % rows;
    const std::complex<T>* ub = u + b * volume * 36;
    for (int64_t r = 0; r < per_row; ++r) {
      int64_t c[4];
      coords(row, r, c);
      const int64_t s0 = g.site(c);
      Mat<V>* m = vn + (b * nb + row * per_row + r) * 4;
      for (int k = 0; k < W; ++k) {
        const std::complex<T>* src = ub + (s0 + k * ls) * 36;
        for (int mu = 0; mu < 4; ++mu)
          for (int i = 0; i < 3; ++i)
            for (int j = 0; j < 3; ++j) {
              m[mu].re[i][j][k] = src[mu * 9 + i * 3 + j].real();
              m[mu].im[i][j][k] = src[mu * 9 + i * 3 + j].imag();
            }
      }
    }
  });
  for (int mu = 0; mu < 4; ++mu)
    for (int parity = 0; parity < 2; ++parity)
      parallel_for(pool, batch * rows, [&](int64_t item) {
        const int64_t b = item / rows, row = item % rows;
        Mat<V>* field = vn + b * nb * 4;
        const double* w = weights + (weight_batch == 1 ? 0 : b / (batch / weight_batch)) * 16;
        for (int64_t r = 0; r < per_row; ++r) {
          int64_t x[4];
          coords(row, r, x);
          const int block_parity = static_cast<int>((x[0] + x[1] + x[2] + x[3]) % 2);
          // lane k: the lane-axis coordinate k ext + x_lane, parity block_parity + k ext (mod 2)
          if (!mixed && block_parity != parity) continue;
          const Mat<V> sigma = staple_sum<T, W>(field, g, x, mu, w);
          Mat<V>& target = field[g.index(x) * 4 + mu];
          Mat<V> upd = target;
          update(upd, sigma, b, x, mu, parity);
          if (!mixed) {
            target = upd;
            continue;
          }
          for (int k = 0; k < W; ++k)
            if ((block_parity + k) % 2 == parity)
              for (int i = 0; i < 3; ++i)
                for (int j = 0; j < 3; ++j) {
                  target.re[i][j][k] = upd.re[i][j][k];
                  target.im[i][j][k] = upd.im[i][j][k];
                }
        }
      });
  parallel_for(pool, batch * rows, [&](int64_t item) {
    const int64_t b = item / rows, row = item % rows;
    std::complex<T>* ob = out + b * volume * 36;
    for (int64_t r = 0; r < per_row; ++r) {
      int64_t c[4];
      coords(row, r, c);
      const int64_t s0 = g.site(c);
      const Mat<V>* m = vn + (b * nb + row * per_row + r) * 4;
      for (int mu = 0; mu < 4; ++mu) {
        const Mat<V> n = normalize(m[mu]);
        for (int k = 0; k < W; ++k) {
          std::complex<T>* dst = ob + (s0 + k * ls) * 36 + mu * 9;
          for (int i = 0; i < 3; ++i)
            for (int j = 0; j < 3; ++j) dst[i * 3 + j] = std::complex<T>(n.re[i][j][k], n.im[i][j][k]);
        }
      }
    }
  });
  return ffi::Error::Success();
}

// ---------------------------------------------------------------------------------------------------------------
// CorrflowHeatbath: one Cabibbo-Marinari heat-bath sweep of 4D SU(3) links, the algorithm of
// corrflow.heatbath.heatbath_sweep (same directions, parities, subgroups; SU(2) draws by Kennedy-Pendleton above
// a = 1.7 and Creutz below, at most max_rounds accept/reject rounds, a site still rejected keeps its link in that
// subgroup; then re-unitarised).  Its random numbers are its own: Threefry-2x32 (20 rounds) keyed by the sweep's
// JAX key, counter (chain * V + site, draw) with draw = (((mu * 2 + parity) * 3 + subgroup) * max_rounds + round)
// * 6 + number (float64: one counter per number, 53 bits), so a link's numbers depend on neither the lane layout
// nor the threads nor the batching of chains that carry their own keys.

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
  constexpr int mant = sizeof(T) == 4 ? 23 : 52;
  constexpr int bias = sizeof(T) == 4 ? 127 : 1023;
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
  constexpr int mant = sizeof(T) == 4 ? 23 : 52;
  constexpr int bias = sizeof(T) == 4 ? 127 : 1023;
  const I n = __builtin_convertvector(nf, I);
  const V scale = (V)((n + IT(bias)) << mant);
  return x >= static_cast<T>(-0.5) ? series : er * scale - 1;
}

template <class T, int W>
inline void heatbath_link(Mat<typename Lanes<T, W>::V>& u, const Mat<typename Lanes<T, W>::V>& sigma, uint32_t k0,
                          uint32_t k1, typename U32<W>::V site, uint32_t draw0, int max_rounds) {
  using V = typename Lanes<T, W>::V;
  using I = typename Lanes<T, W>::I;
  using UV = typename U32<W>::V;
  Mat<V> w = mul<false, false>(u, sigma);
  const int pairs[3][2] = {{0, 1}, {0, 2}, {1, 2}};
  const T two_pi = static_cast<T>(2 * M_PI);
  for (int sg = 0; sg < 3; ++sg) {
    const int i = pairs[sg][0], j = pairs[sg][1];
    const V q0 = static_cast<T>(0.5) * (w.re[i][i] + w.re[j][j]);
    const V q3 = static_cast<T>(0.5) * (w.im[i][i] - w.im[j][j]);
    const V q2 = static_cast<T>(0.5) * (w.re[i][j] - w.re[j][i]);
    const V q1 = static_cast<T>(0.5) * (w.im[i][j] + w.im[j][i]);
    const V k = vsqrt(q0 * q0 + q1 * q1 + q2 * q2 + q3 * q3);
    const auto ok = k > static_cast<T>(1e-10);
    const V one = k * 0 + 1, zero = k * 0;
    const V inv = ok ? one / (ok ? k : one) : zero;
    const V v0 = ok ? q0 * inv : one, v1 = q1 * inv, v2 = q2 * inv, v3 = q3 * inv;
    V a = static_cast<T>(2.0 / 3.0) * k;  // a = 2 k / N
    const auto use_kp = a > static_cast<T>(1.7);
    a = a < static_cast<T>(1e-10) ? zero + static_cast<T>(1e-10) : a;
    const V em = vexpm1<T, W>(-2 * a);
    V x0 = one, ang0 = zero, ang1 = zero;
    auto done = zero != zero;  // all false
    for (int round = 0; round < max_rounds; ++round) {
      const uint32_t base = ((draw0 + static_cast<uint32_t>(sg)) * static_cast<uint32_t>(max_rounds) +
                             static_cast<uint32_t>(round)) * 6u;
      V un[6];
      if constexpr (sizeof(T) == 4) {
        for (int p = 0; p < 3; ++p) {
          UV c0 = site, c1 = site * 0 + (base + static_cast<uint32_t>(p));
          threefry<W>(k0, k1, c0, c1);
          un[2 * p] = __builtin_convertvector(c0 >> 8, V) * static_cast<T>(1.0 / 16777216.0);
          un[2 * p + 1] = __builtin_convertvector(c1 >> 8, V) * static_cast<T>(1.0 / 16777216.0);
        }
      } else {
        for (int p = 0; p < 6; ++p) {
          UV c0 = site, c1 = site * 0 + (base + static_cast<uint32_t>(p));
          threefry<W>(k0, k1, c0, c1);
          const V hi = __builtin_convertvector(c0 >> 6, V), lo = __builtin_convertvector(c1 >> 5, V);
          un[p] = (hi * static_cast<T>(134217728.0) + lo) * static_cast<T>(1.0 / 9007199254740992.0);
        }
      }
      const V c = cos_poly<T, V, I>(two_pi * un[1]);
      const V lam2 = -(vlog1p<T, W>(-un[0]) + c * c * vlog1p<T, W>(-un[2])) / (2 * a);
      const V x_kp = 1 - 2 * lam2;
      const V x_cr = 1 + vlog1p<T, W>(un[0] * em) / a;
      const V x = use_kp ? x_kp : x_cr;
      // accept with probability sqrt(1 - lam^2) (Kennedy-Pendleton) or sqrt(1 - x^2) (Creutz)
      const auto acc = un[3] * un[3] <= (use_kp ? 1 - lam2 : 1 - x * x);
      const auto fresh = acc & ~done;
      x0 = fresh ? x : x0;
      ang0 = fresh ? un[4] : ang0;
      ang1 = fresh ? un[5] : ang1;
      done = done | acc;
      bool all = true;
      for (int l = 0; l < W; ++l) all = all && done[l];
      if (all) break;  // later rounds would change nothing
    }
    const V cos_t = 1 - 2 * ang0;
    const V st2 = 1 - cos_t * cos_t;
    const V sin_t = vsqrt(st2 < 0 ? zero : st2);
    const V phi = two_pi * ang1;
    const V s2 = 1 - x0 * x0;
    const V sr = vsqrt(s2 < 0 ? zero : s2);
    const V x1 = sr * sin_t * cos_poly<T, V, I>(phi);
    const V x2 = sr * sin_t * sin_poly<T, V, I>(phi);
    const V x3 = sr * cos_t;
    // r = x conj(v) (corrflow.su2_subgroups.qmul with b = (v0, -v1, -v2, -v3)); the identity where nothing accepted
    const V b1 = -v1, b2 = -v2, b3 = -v3;
    Quat<V> r{x0 * v0 - x1 * b1 - x2 * b2 - x3 * b3, x0 * b1 + v0 * x1 - (x2 * b3 - x3 * b2),
              x0 * b2 + v0 * x2 - (x3 * b1 - x1 * b3), x0 * b3 + v0 * x3 - (x1 * b2 - x2 * b1)};
    r.q0 = done ? r.q0 : one;
    r.q1 = done ? r.q1 : zero;
    r.q2 = done ? r.q2 : zero;
    r.q3 = done ? r.q3 : zero;
    apply_left(r, u, i, j);
    apply_left(r, w, i, j);
  }
}

// The geometry of an update sweep: lanes whose range along the lane axis is even (one parity per block) where the
// extents allow.  Returns the lane width, 0 if no extent is a multiple of 4.
int sweep_geometry(const int64_t L[4], Geometry* g) {
  int lane = -1, width = 0;
  for (auto [w, m] : {std::pair{8, 16}, std::pair{4, 8}, std::pair{8, 8}, std::pair{4, 4}}) {
    for (int a = 0; a < 4 && lane < 0; ++a)
      if (L[a] % m == 0) { lane = a; width = w; }
    if (lane >= 0) break;
  }
  if (lane < 0) return 0;
  g->lane = lane;
  g->stride[3] = 1;
  for (int a = 2; a >= 0; --a) g->stride[a] = g->stride[a + 1] * L[a + 1];
  for (int a = 0; a < 4; ++a) g->ext[a] = a == lane ? L[a] / width : L[a];
  return width;
}

// Checks shared by the sweeps; fills L, batch, weight_batch.
ffi::Error sweep_args(const char* name, const ffi::AnyBuffer& u, const ffi::Buffer<ffi::F64>& weights, int64_t L[4],
                      int64_t* batch, int64_t* weight_batch) {
  const auto dims = u.dimensions();
  const int64_t rank = static_cast<int64_t>(dims.size());
  if (rank < 7 || dims[rank - 3] != 4 || dims[rank - 2] != 3 || dims[rank - 1] != 3)
    return ffi::Error::InvalidArgument(std::string(name) + ": links must be (*batch, L0, L1, L2, L3, 4, 3, 3)");
  for (int a = 0; a < 4; ++a) {
    L[a] = dims[rank - 7 + a];
    if (L[a] % 2) return ffi::Error::InvalidArgument(std::string(name) + ": extents must be even");
  }
  *batch = 1;
  for (int64_t a = 0; a < rank - 7; ++a) *batch *= dims[a];
  const auto wd = weights.dimensions();
  *weight_batch = 1;
  for (size_t a = 0; a + 2 < wd.size(); ++a) *weight_batch *= wd[a];
  if (wd.size() < 2 || wd[wd.size() - 1] != 4 || wd[wd.size() - 2] != 4 || *batch % *weight_batch != 0)
    return ffi::Error::InvalidArgument(std::string(name) + ": weights must be (*batch prefix, 4, 4)");
  if (u.element_type() != ffi::C64 && u.element_type() != ffi::C128)
    return ffi::Error::InvalidArgument(std::string(name) + ": links must be complex64 or complex128");
  return ffi::Error::Success();
}

template <class T, int W>
ffi::Error overrelax(ffi::ThreadPool& pool, const ffi::AnyBuffer& u, const double* weights, int64_t batch,
                     int64_t weight_batch, const int64_t L[4], const Geometry& g, ffi::AnyBuffer& out) {
  using V = typename Lanes<T, W>::V;
  return update_sweep<T, W>(pool, static_cast<const std::complex<T>*>(u.untyped_data()), weights, batch,
                            weight_batch, L[0] * L[1] * L[2] * L[3], g,
                            static_cast<std::complex<T>*>(out.untyped_data()),
                            [](Mat<V>& link, const Mat<V>& sigma, int64_t, const int64_t*, int, int) {
                              overrelax_link<T, V>(link, sigma);
                            });
}

template <class T, int W>
ffi::Error heatbath(ffi::ThreadPool& pool, const ffi::AnyBuffer& u, const double* weights, int64_t batch,
                    int64_t weight_batch, const uint32_t* keys, int64_t key_batch, int max_rounds,
                    const int64_t L[4], const Geometry& g, ffi::AnyBuffer& out) {
  using V = typename Lanes<T, W>::V;
  using UV = typename U32<W>::V;
  const int64_t volume = L[0] * L[1] * L[2] * L[3];
  const int64_t per_key = batch / key_batch;
  const int64_t ls = g.lane_stride();
  return update_sweep<T, W>(
      pool, static_cast<const std::complex<T>*>(u.untyped_data()), weights, batch, weight_batch, volume, g,
      static_cast<std::complex<T>*>(out.untyped_data()),
      [&](Mat<V>& link, const Mat<V>& sigma, int64_t b, const int64_t* x, int mu, int parity) {
        const uint32_t* key = keys + (b / per_key) * 2;
        UV site;
        const int64_t first = (b % per_key) * volume + g.site(x);
        for (int k = 0; k < W; ++k) site[k] = static_cast<uint32_t>(first + k * ls);
        heatbath_link<T, W>(link, sigma, key[0], key[1], site, static_cast<uint32_t>((mu * 2 + parity) * 3),
                            max_rounds);
      });
}

ffi::Error OverrelaxImpl(ffi::ThreadPool pool, ffi::AnyBuffer u, ffi::Buffer<ffi::F64> weights,
                         ffi::Result<ffi::AnyBuffer> out) {
  int64_t L[4], batch, weight_batch;
  if (auto err = sweep_args("corrflow_overrelax", u, weights, L, &batch, &weight_batch); err.failure()) return err;
  Geometry g;
  const int width = sweep_geometry(L, &g);
  if (width == 0) return ffi::Error::InvalidArgument("corrflow_overrelax: no lattice extent is a multiple of 4");
  const double* w = weights.typed_data();
  if (u.element_type() == ffi::C64)
    return width == 8 ? overrelax<float, 8>(pool, u, w, batch, weight_batch, L, g, *out)
                      : overrelax<float, 4>(pool, u, w, batch, weight_batch, L, g, *out);
  return width == 8 ? overrelax<double, 8>(pool, u, w, batch, weight_batch, L, g, *out)
                    : overrelax<double, 4>(pool, u, w, batch, weight_batch, L, g, *out);
}

ffi::Error HeatbathImpl(ffi::ThreadPool pool, ffi::AnyBuffer u, ffi::Buffer<ffi::F64> weights,
                        ffi::Buffer<ffi::U32> keys, ffi::Result<ffi::AnyBuffer> out, int64_t max_rounds) {
  int64_t L[4], batch, weight_batch;
  if (auto err = sweep_args("corrflow_heatbath", u, weights, L, &batch, &weight_batch); err.failure()) return err;
  const auto kd = keys.dimensions();
  int64_t key_batch = 1;
  for (size_t a = 0; a + 1 < kd.size(); ++a) key_batch *= kd[a];
  if (kd.size() < 1 || kd[kd.size() - 1] != 2 || batch % key_batch != 0 || max_rounds < 1)
    return ffi::Error::InvalidArgument("corrflow_heatbath: keys must be (*batch prefix, 2) uint32, max_rounds >= 1");
  if (batch / key_batch * L[0] * L[1] * L[2] * L[3] >= (int64_t(1) << 32))
    return ffi::Error::InvalidArgument("corrflow_heatbath: more than 2^32 sites per key");
  Geometry g;
  const int width = sweep_geometry(L, &g);
  if (width == 0) return ffi::Error::InvalidArgument("corrflow_heatbath: no lattice extent is a multiple of 4");
  const double* w = weights.typed_data();
  const uint32_t* k = keys.typed_data();
  const int rounds = static_cast<int>(max_rounds);
  if (u.element_type() == ffi::C64)
    return width == 8 ? heatbath<float, 8>(pool, u, w, batch, weight_batch, k, key_batch, rounds, L, g, *out)
                      : heatbath<float, 4>(pool, u, w, batch, weight_batch, k, key_batch, rounds, L, g, *out);
  return width == 8 ? heatbath<double, 8>(pool, u, w, batch, weight_batch, k, key_batch, rounds, L, g, *out)
                    : heatbath<double, 4>(pool, u, w, batch, weight_batch, k, key_batch, rounds, L, g, *out);
}

// ---------------------------------------------------------------------------------------------------------------
// CorrflowAlgebraLogj: (g, log J) of a stout-like SU(3) link update U' = exp(g) U, g = P_TA(W), W = U Sigma, per
// matrix W: corrflow.flows.jacobian.algebra_and_logj on 8 matrices per vector -- M and ad g from (Re W, Im W) by
// the real linear maps passed in (k_m (18, 64), k_x (18, 8), k_ad (8, 64)), F(ad g) by the same Paterson-Stockmeyer
// Taylor polynomial (degree 23 in float64, 15 in float32), J = det(1 + F M) by the same unpivoted LU.

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
  const int64_t blocks = (n + W - 1) / W;
  const int64_t per_item = 64;
  parallel_for(pool, (blocks + per_item - 1) / per_item, [&](int64_t item) {
    const int64_t last = std::min(blocks, (item + 1) * per_item);
    for (int64_t blk = item * per_item; blk < last; ++blk) {
      const int lanes = static_cast<int>(std::min<int64_t>(W, n - blk * W));
      V wr[18] = {};
      for (int k = 0; k < lanes; ++k) {
        const std::complex<T>* src = w + (blk * W + k) * 9;
        for (int e = 0; e < 9; ++e) {
          wr[e][k] = src[e].real();
          wr[9 + e][k] = src[e].imag();
        }
      }
      V m[8][8], ad[8][8], gx[8];
      for (int a = 0; a < 64; ++a) {
        V acc = wr[0] * static_cast<T>(k_m[a]);
        for (int r = 1; r < 18; ++r) acc += wr[r] * static_cast<T>(k_m[r * 64 + a]);
        m[a / 8][a % 8] = acc;
      }
      for (int c = 0; c < 8; ++c) {
        V acc = wr[0] * static_cast<T>(k_x[c]);
        for (int r = 1; r < 18; ++r) acc += wr[r] * static_cast<T>(k_x[r * 8 + c]);
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
                        (r == c ? wr[0] * 0 + coef[4 * j] : wr[0] * 0);
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
      V logdet = wr[0] * 0;
      for (int k = 0; k < 8; ++k) {
        const V piv = jac[k][k];
        logdet += vlog<T, W>(piv < 0 ? -piv : piv);
        for (int r = k + 1; r < 8; ++r) {
          const V fct = jac[r][k] / piv;
          for (int c = k + 1; c < 8; ++c) jac[r][c] -= fct * jac[k][c];
        }
      }
      // g = P_TA(W)
      Mat<V> wm, g;
      for (int i = 0; i < 3; ++i)
        for (int j = 0; j < 3; ++j) {
          wm.re[i][j] = wr[i * 3 + j];
          wm.im[i][j] = wr[9 + i * 3 + j];
        }
      const V tr = (wm.im[0][0] + wm.im[1][1] + wm.im[2][2]) * static_cast<T>(1.0 / 3.0);
      for (int i = 0; i < 3; ++i)
        for (int j = 0; j < 3; ++j) {
          g.re[i][j] = static_cast<T>(0.5) * (wm.re[i][j] - wm.re[j][i]);
          g.im[i][j] = static_cast<T>(0.5) * (wm.im[i][j] + wm.im[j][i]);
        }
      for (int i = 0; i < 3; ++i) g.im[i][i] = wm.im[i][i] - tr;
      for (int k = 0; k < lanes; ++k) {
        std::complex<T>* dst = x_out + (blk * W + k) * 9;
        for (int i = 0; i < 3; ++i)
          for (int j = 0; j < 3; ++j) dst[i * 3 + j] = std::complex<T>(g.re[i][j][k], g.im[i][j][k]);
        logj_out[blk * W + k] = logdet[k];
      }
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

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(CorrflowStapleForce, StapleForceImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::Buffer<ffi::F64>>()
                                  .Ret<ffi::AnyBuffer>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(CorrflowExpLeft, ExpLeftImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(CorrflowOverrelax, OverrelaxImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::Buffer<ffi::F64>>()
                                  .Ret<ffi::AnyBuffer>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(CorrflowHeatbath, HeatbathImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::Buffer<ffi::F64>>()
                                  .Arg<ffi::Buffer<ffi::U32>>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Attr<int64_t>("max_rounds"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(CorrflowAlgebraLogj, AlgebraLogjImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::Buffer<ffi::F64>>()
                                  .Arg<ffi::Buffer<ffi::F64>>()
                                  .Arg<ffi::Buffer<ffi::F64>>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>());
