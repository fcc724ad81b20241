// SIMD building blocks of corrflow's native kernels: W lanes of T as GCC vector types, 3x3 complex matrices of
// vectors and their products, complex numbers of vectors, the thread pool's parallel loop, per-thread scratch memory
// and the virtual-node geometry (kernels.cc describes the layout).
#pragma once

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

#include <immintrin.h>
#include <sys/mman.h>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace corrflow_native {

// W SIMD lanes of T: one vector holds W sites (the "virtual nodes" of the header).
template <class T, int W>
struct Lanes {
  typedef T V __attribute__((vector_size(W * sizeof(T))));
  using IT = std::conditional_t<sizeof(T) == 4, int32_t, int64_t>;
  typedef IT I __attribute__((vector_size(W * sizeof(IT))));
  typedef int32_t I32 __attribute__((vector_size(W * sizeof(int32_t))));  // W 32-bit indices
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

// c = a b, with a^dag (da) and / or b^dag (db); c must not be a or b.
template <bool da, bool db, class V>
inline void mul_to(Mat<V>& c, const Mat<V>& a, const Mat<V>& b) {
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
}

template <bool da, bool db, class V>
inline Mat<V> mul(const Mat<V>& a, const Mat<V>& b) {
  Mat<V> c;
  mul_to<da, db>(c, a, b);
  return c;
}

// P_TA(P) = (P - P^dag) / 2 - tr(P - P^dag) / 6 (corrflow.groups.SUN.project_algebra).
template <class T, class V>
inline Mat<V> project_ta(const Mat<V>& p) {
  Mat<V> f;
  const V tr = (p.im[0][0] + p.im[1][1] + p.im[2][2]) * static_cast<T>(1.0 / 3.0);
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 3; ++j) {
      f.re[i][j] = static_cast<T>(0.5) * (p.re[i][j] - p.re[j][i]);
      f.im[i][j] = static_cast<T>(0.5) * (p.im[i][j] + p.im[j][i]);
    }
  for (int i = 0; i < 3; ++i) f.im[i][i] = p.im[i][i] - tr;
  return f;
}

// Lane k of m <- the 3x3 complex matrix at src (row-major).
template <class T, class V>
inline void set_lane(Mat<V>& m, int k, const std::complex<T>* src) {
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 3; ++j) {
      const std::complex<T> e = src[i * 3 + j];
      m.re[i][j][k] = e.real();
      m.im[i][j][k] = e.imag();
    }
}

// The 3x3 complex matrix at dst (row-major) <- lane k of m.
template <class T, class V>
inline void get_lane(const Mat<V>& m, int k, std::complex<T>* dst) {
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 3; ++j) dst[i * 3 + j] = std::complex<T>(m.re[i][j][k], m.im[i][j][k]);
}

// lane k <- base[idx[k]] (idx in units of T).
template <class T, int W>
inline typename Lanes<T, W>::V gather(const T* base, typename Lanes<T, W>::I32 idx) {
  using V = typename Lanes<T, W>::V;
#if defined(__AVX2__)
  if constexpr (std::is_same_v<T, float> && W == 8) {
    return reinterpret_cast<V>(_mm256_i32gather_ps(base, reinterpret_cast<__m256i>(idx), 4));
  }
#endif
#if defined(__AVX512F__)
  if constexpr (std::is_same_v<T, double> && W == 8) {
    return reinterpret_cast<V>(_mm512_i32gather_pd(reinterpret_cast<__m256i>(idx), base, 8));
  }
#endif
  V v;
  for (int k = 0; k < W; ++k) v[k] = base[idx[k]];
  return v;
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

// f(b, first, lanes) for the blocks of W consecutive matrices [first, first + lanes) of each of `batch` sets of n
// (lanes = W but in a set's last block), in parallel over chunks of per_item blocks.
template <int W, class F>
void for_blocks(ffi::ThreadPool& pool, int64_t batch, int64_t n, int64_t per_item, const F& f) {
  const int64_t blocks = (n + W - 1) / W, items = (blocks + per_item - 1) / per_item;
  parallel_for(pool, batch * items, [&](int64_t item) {
    const int64_t b = item / items, first = (item % items) * per_item, last = std::min(blocks, first + per_item);
    for (int64_t blk = first; blk < last; ++blk) f(b, blk * W, static_cast<int>(std::min<int64_t>(W, n - blk * W)));
  });
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

}  // namespace corrflow_native
