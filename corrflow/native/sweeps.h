// CorrflowOverrelax: one over-relaxation sweep of 4D SU(3) links with plane couplings b, the algorithm of
// corrflow.heatbath.overrelax_sweep: for mu = 0..3, parity 0 then 1, the links U_mu of that parity get
// U <- R U in the SU(2) subgroups (0,1), (0,2), (1,2) in turn, R = (V^dag)^2 from the quaternion of the block of
// W = U Sigma_mu (W <- R W alongside); then every link is re-unitarised (Gram-Schmidt on the rows).  Links of one
// (mu, parity) only see links of other directions or parity, so each sub-sweep updates the virtual nodes in place;
// where a lane's range along the lane axis is odd, a block holds both parities and only the active lanes are stored
// (a concurrent reader of such a block uses only the other lanes).
//
// CorrflowHeatbath: one Cabibbo-Marinari heat-bath sweep of 4D SU(3) links, the algorithm of
// corrflow.heatbath.heatbath_sweep (same directions, parities, subgroups; SU(2) draws by Kennedy-Pendleton above
// a = 1.7 and Creutz below, at most max_rounds accept/reject rounds, a site still rejected keeps its link in that
// subgroup; then re-unitarised).  Its random numbers are its own: Threefry-2x32 (20 rounds) keyed by the sweep's
// JAX key, counter (chain * V + site, draw) with draw = (((mu * 2 + parity) * 3 + subgroup) * max_rounds + round)
// * 6 + number (float64: one counter per number, 53 bits), so a link's numbers depend on neither the lane layout
// nor the threads nor the batching of chains that carry their own keys.
#pragma once

#include "staples.h"
#include "vmath.h"

namespace corrflow_native {

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

// The quaternion k V of the SU(2) block (i, j) of W (corrflow.su2_subgroups.project, unit): alpha = (w_ii +
// conj w_jj) / 2, beta = (w_ij - conj w_ji) / 2, q = (Re alpha, Im beta, Re beta, Im alpha), k = |q|, V = q / k
// (V = 1 where k <= 1e-10, ok false there).
template <class V> struct Unit { Quat<V> v; V k; decltype(V{} > V{}) ok; };

template <class T, class V>
inline Unit<V> subgroup_unit(const Mat<V>& w, int i, int j) {
  const V q0 = static_cast<T>(0.5) * (w.re[i][i] + w.re[j][j]);
  const V q3 = static_cast<T>(0.5) * (w.im[i][i] - w.im[j][j]);
  const V q2 = static_cast<T>(0.5) * (w.re[i][j] - w.re[j][i]);
  const V q1 = static_cast<T>(0.5) * (w.im[i][j] + w.im[j][i]);
  const V k = vsqrt(q0 * q0 + q1 * q1 + q2 * q2 + q3 * q3);
  const auto ok = k > static_cast<T>(1e-10);
  const V one = k * 0 + 1;
  const V inv = ok ? one / (ok ? k : one) : k * 0;
  return {{ok ? q0 * inv : one, q1 * inv, q2 * inv, q3 * inv}, k, ok};
}

template <class T, class V>
inline void overrelax_link(Mat<V>& u, const Mat<V>& sigma) {
  Mat<V> w = mul<false, false>(u, sigma);
  const int pairs[3][2] = {{0, 1}, {0, 2}, {1, 2}};
  for (const auto& pr : pairs) {
    const int i = pr[0], j = pr[1];
    const Unit<V> s = subgroup_unit<T>(w, i, j);
    const V one = s.k * 0 + 1;
    const V v0 = s.v.q0, v1 = s.v.q1, v2 = s.v.q2, v3 = s.v.q3;
    const V vv = v1 * v1 + v2 * v2 + v3 * v3;
    const Quat<V> r{s.ok ? v0 * v0 - vv : one, -2 * v0 * v1, -2 * v0 * v2, -2 * v0 * v3};
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

// One sweep of link updates (over-relaxation or heat bath): update(link, sigma, chain, x, mu, parity) changes the
// links U_mu at the blocks x, in place for the active lanes; then every link is re-unitarised.
template <class T, int W, class F>
ffi::Error update_sweep(ffi::ThreadPool& pool, const std::complex<T>* u, const double* weights, const LinkArgs& a,
                        const Geometry& g, std::complex<T>* out, const F& update) {
  using V = typename Lanes<T, W>::V;
  const int64_t batch = a.batch, volume = a.volume();
  const int64_t nb = g.blocks();
  const int64_t rows = g.ext[0] * g.ext[1];
  const int64_t per_row = g.ext[2] * g.ext[3];
  const int64_t ls = g.lane_stride();
  const bool mixed = g.ext[g.lane] % 2 == 1;  // lanes of one block alternate in parity
  Mat<V>* vn = static_cast<Mat<V>*>(scratch(static_cast<size_t>(batch * nb * 4) * sizeof(Mat<V>)));
  if (vn == nullptr) return ffi::Error::Internal("corrflow: out of memory");
  to_virtual_nodes<T, W>(pool, u, batch, volume, g, vn);
  for (int mu = 0; mu < 4; ++mu)
    for (int parity = 0; parity < 2; ++parity)
      parallel_for(pool, batch * rows, [&](int64_t item) {
        const int64_t b = item / rows, row = item % rows;
        Mat<V>* field = vn + b * nb * 4;
        const double* w = a.weights(weights, b);
        for (int64_t r = 0; r < per_row; ++r) {
          int64_t x[4];
          block_coords(g, row, r, x);
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
      block_coords(g, row, r, c);
      const int64_t s0 = g.site(c);
      const Mat<V>* m = vn + (b * nb + row * per_row + r) * 4;
      for (int mu = 0; mu < 4; ++mu) {
        const Mat<V> n = normalize(m[mu]);
        for (int k = 0; k < W; ++k) get_lane<T>(n, k, ob + (s0 + k * ls) * 36 + mu * 9);
      }
    }
  });
  return ffi::Error::Success();
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
    const Unit<V> s = subgroup_unit<T>(w, i, j);
    const V k = s.k, one = k * 0 + 1, zero = k * 0;
    const V v0 = s.v.q0, v1 = s.v.q1, v2 = s.v.q2, v3 = s.v.q3;
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

// Lanes whose range along the lane axis is even (one parity per block) where the extents allow.
constexpr std::initializer_list<std::pair<int, int>> kSweepLanes = {{8, 16}, {4, 8}, {8, 8}, {4, 4}};

template <class T, int W>
ffi::Error overrelax(ffi::ThreadPool& pool, const ffi::AnyBuffer& u, const double* weights, const LinkArgs& a,
                     const Geometry& g, ffi::AnyBuffer& out) {
  using V = typename Lanes<T, W>::V;
  return update_sweep<T, W>(pool, static_cast<const std::complex<T>*>(u.untyped_data()), weights, a, g,
                            static_cast<std::complex<T>*>(out.untyped_data()),
                            [](Mat<V>& link, const Mat<V>& sigma, int64_t, const int64_t*, int, int) {
                              overrelax_link<T, V>(link, sigma);
                            });
}

template <class T, int W>
ffi::Error heatbath(ffi::ThreadPool& pool, const ffi::AnyBuffer& u, const double* weights, const LinkArgs& a,
                    const uint32_t* keys, int64_t key_batch, int max_rounds, const Geometry& g, ffi::AnyBuffer& out) {
  using V = typename Lanes<T, W>::V;
  using UV = typename U32<W>::V;
  const int64_t per_key = a.batch / key_batch;
  const int64_t ls = g.lane_stride();
  return update_sweep<T, W>(
      pool, static_cast<const std::complex<T>*>(u.untyped_data()), weights, a, g,
      static_cast<std::complex<T>*>(out.untyped_data()),
      [&](Mat<V>& link, const Mat<V>& sigma, int64_t b, const int64_t* x, int mu, int parity) {
        const uint32_t* key = keys + (b / per_key) * 2;
        UV site;
        const int64_t first = (b % per_key) * a.volume() + g.site(x);
        for (int k = 0; k < W; ++k) site[k] = static_cast<uint32_t>(first + k * ls);
        heatbath_link<T, W>(link, sigma, key[0], key[1], site, static_cast<uint32_t>((mu * 2 + parity) * 3),
                            max_rounds);
      });
}

ffi::Error OverrelaxImpl(ffi::ThreadPool pool, ffi::AnyBuffer u, ffi::Buffer<ffi::F64> weights,
                         ffi::Result<ffi::AnyBuffer> out) {
  LinkArgs a;
  if (auto err = link_args("corrflow_overrelax", u, weights, true, &a); err.failure()) return err;
  Geometry g;
  const int width = choose_geometry(a.L, kSweepLanes, &g);
  if (width == 0) return ffi::Error::InvalidArgument("corrflow_overrelax: no lattice extent is a multiple of 4");
  const double* w = weights.typed_data();
  if (u.element_type() == ffi::C64)
    return width == 8 ? overrelax<float, 8>(pool, u, w, a, g, *out) : overrelax<float, 4>(pool, u, w, a, g, *out);
  return width == 8 ? overrelax<double, 8>(pool, u, w, a, g, *out) : overrelax<double, 4>(pool, u, w, a, g, *out);
}

ffi::Error HeatbathImpl(ffi::ThreadPool pool, ffi::AnyBuffer u, ffi::Buffer<ffi::F64> weights,
                        ffi::Buffer<ffi::U32> keys, ffi::Result<ffi::AnyBuffer> out, int64_t max_rounds) {
  LinkArgs a;
  if (auto err = link_args("corrflow_heatbath", u, weights, true, &a); err.failure()) return err;
  const auto kd = keys.dimensions();
  int64_t key_batch = 1;
  for (size_t i = 0; i + 1 < kd.size(); ++i) key_batch *= kd[i];
  if (kd.size() < 1 || kd[kd.size() - 1] != 2 || a.batch % key_batch != 0 || max_rounds < 1)
    return ffi::Error::InvalidArgument("corrflow_heatbath: keys must be (*batch prefix, 2) uint32, max_rounds >= 1");
  if (a.batch / key_batch * a.volume() >= (int64_t(1) << 32))
    return ffi::Error::InvalidArgument("corrflow_heatbath: more than 2^32 sites per key");
  Geometry g;
  const int width = choose_geometry(a.L, kSweepLanes, &g);
  if (width == 0) return ffi::Error::InvalidArgument("corrflow_heatbath: no lattice extent is a multiple of 4");
  const double* w = weights.typed_data();
  const uint32_t* k = keys.typed_data();
  const int rounds = static_cast<int>(max_rounds);
  if (u.element_type() == ffi::C64)
    return width == 8 ? heatbath<float, 8>(pool, u, w, a, k, key_batch, rounds, g, *out)
                      : heatbath<float, 4>(pool, u, w, a, k, key_batch, rounds, g, *out);
  return width == 8 ? heatbath<double, 8>(pool, u, w, a, k, key_batch, rounds, g, *out)
                    : heatbath<double, 4>(pool, u, w, a, k, key_batch, rounds, g, *out);
}

}  // namespace corrflow_native
