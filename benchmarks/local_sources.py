"""Local sources in 4D SU(3): is the held-out smoothing field's limit at strong coupling the extensive ∂S/∂β?

    python benchmarks/local_sources.py                          # 8x4^3, beta = 5.7, 2 x 400 heat-bath configurations
    python benchmarks/local_sources.py --beta 6.0
    python benchmarks/local_sources.py --smear 0.4              # source and sink operators of Wilson-flowed links

The β-derivative's ``∂S/∂β`` is a sum over the whole lattice; the reference results for tangent flows
(arXiv:2603.02984: 10–60x) are for *insertions* of local gluonic operators -- glueball correlators and matrix
elements, ``C(Δt) = <O(t0 + Δt) O(t0)>_c = d<O(t0 + Δt)>/dλ`` for the source ``S → S − λ O(t0)``.  This benchmark
measures the same field family (:class:`corrflow.tangent.SmoothingField`, ``held_out``: exact per-link divergence,
so a field may be cut to any set of links) on three sources of decreasing extent, all on the same configurations:

* **whole lattice**: ``∂_λ S = −Σ_t O(t)``, one coefficient per flow time and link direction (temporal / spatial);
* **one timeslice** ``t0`` (every ``t0``, translation-averaged): the field cut into timeslices, one coefficient per
  flow time, link direction and time distance ``|t − t0| <= --dmax`` from the source; the correlator ``C(Δt)`` with
  the tangent estimator ``T_v = v·∇O(t0 + Δt) − (O(t0 + Δt) − <O>)(R_v − <R_v>)`` against the connected one
  (``v = 0``), errors by the Gamma method over the chains;
* **one plaquette** (``--sources`` random plaquettes per plane and configuration): one coefficient per flow time and
  class of links around it (the orbits of the plaquette's symmetry group within ``--r2`` of its centre).

``O(t)`` is the sum of the spatial plaquettes ``Re tr U_ij / 3`` at time ``t`` (the 0++ glueball operator; of the
links flowed to ``--smear``).  Coefficients cross-fitted between the two chains (chain ``c`` uses the least-squares
fit of ``Var[R_v]`` on the other).  Printed: ``Var[∂_λ S] / Var[R_v]`` per fold and, for the timeslice source, the
correlator's variance reduction ``(error connected / error tangent)^2`` at every ``Δt``.
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks._machine import cpu_model  # noqa: E402
from benchmarks.tangent import timed_generate  # noqa: E402
from corrflow import lattice, make_theory  # noqa: E402
from corrflow import tangent as tg  # noqa: E402
from corrflow.groups import trace  # noqa: E402
from corrflow.heatbath import HeatbathConfig  # noqa: E402
from corrflow.observables.gradient_flow import flow_step  # noqa: E402
from corrflow.stats import gamma_method  # noqa: E402


def per_configuration(theory, field, smear: float, smear_eps: float = 0.05):  # noqa: ANN001, ANN201
    """``u -> (O (T,), a (K, *sites, d), P (*sites, n_planes), B (K, T_sink, T_link, 2))``: the timeslice operator,
    the per-link terms ``a_{k,l} = x_{k,l}·∂_l S − ∂_l·x_{k,l}`` of the held-out basis fields ``x_k`` (so that
    ``R_v = ∂_λ S + Σ c a``), every plaquette, and ``x_k·∇O(t')`` summed over the temporal / spatial links of each
    timeslice."""
    g = theory.group
    d = len(theory.shape)
    n_flow = int(round(smear / smear_eps))

    def o_vec(u: jax.Array) -> jax.Array:
        if n_flow:
            u = jax.lax.scan(lambda w, _: (flow_step(w, g, smear_eps), None), u, None, length=n_flow)[0]
        tot = 0.0
        for i, j in itertools.combinations(range(1, d), 2):
            tot = tot + jnp.sum(jnp.real(trace(lattice.plaquette(u, i, j, g))) / g.N, axis=tuple(range(1, d)))
        return tot

    def one(u: jax.Array):  # noqa: ANN202
        v = field.held_out_flowed(u, theory)  # (K, *u.shape): V_l independent of U_l
        x = field.basis(v, u, theory)  # (K, *sites, d, n_gen)
        a = jnp.sum(x * tg.gradient(theory.action, u, g), -1) - field.link_divergence(v, u, theory)
        w0 = jnp.zeros(a.shape[1:] + (g.n_generators,), a.dtype)  # one forward pass, a pullback per timeslice
        o, pull = jax.vjp(lambda w: o_vec(tg.lift(w, u, g)), w0)
        grads = jax.vmap(pull)(jnp.eye(theory.shape[0], dtype=o.dtype))[0]
        xg = jnp.einsum("k...a,s...a->ks...", x, grads)  # (K, T_sink, *sites, d)
        xg = jnp.stack([xg[..., 0], jnp.sum(xg[..., 1:], -1)], -1)
        b = jnp.sum(xg, axis=tuple(range(3, 3 + d - 1)))
        p = jnp.stack([jnp.real(trace(lattice.plaquette(u, m, n, g))) / g.N for m, n in lattice.planes(d)], -1)
        return o, a, p, b

    return jax.jit(jax.vmap(one))


def cross_fitted(y: np.ndarray, f: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``R = y + f c`` with ``c`` minimising ``Var[R]`` on the other chain: ``y`` ``(2, ...)``, ``f`` ``(2, ..., F)``.
    Returns ``R`` and the coefficients ``(2, F)``."""
    coef = []
    for c in range(2):
        ff, yy = f[1 - c].reshape(-1, f.shape[-1]), y[1 - c].reshape(-1)
        coef.append(-np.linalg.lstsq(ff - ff.mean(0), yy - yy.mean(), rcond=None)[0])
    coef = np.stack(coef)
    return y + np.einsum("c...f,cf->c...", f, coef), coef


def ratios(y: np.ndarray, r: np.ndarray) -> str:
    return " / ".join(f"{np.var(y[c]) / np.var(r[c]):.2f}x" for c in range(2))


def plaquette_classes(d: int, m: int, n: int, r2: float) -> dict[tuple, list[tuple[tuple[int, ...], int]]]:
    """Links ``(offset, direction)`` within ``sqrt(r2)`` of the centre of the ``(m, n)`` plaquette at the origin
    (link midpoints), grouped by the orbits of the plaquette's symmetries (reflections, ``m <-> n``, permutations
    of the other directions): the key lists the absolute displacements along the link, along the plane and across."""
    out: dict[tuple, list] = {}
    centre = 0.5 * (np.eye(d)[m] + np.eye(d)[n])
    for off in itertools.product(range(-2, 3), repeat=d):
        for r in range(d):
            mid = np.asarray(off, float) + 0.5 * np.eye(d)[r]
            a = np.abs(mid - centre)
            if a @ a > r2 + 1e-9:
                continue
            rest = tuple(sorted(a[[i for i in range(d) if i not in (m, n, r)]]))
            if r in (m, n):
                key = ("in", a[r], a[n if r == m else m], rest)
            else:
                key = ("across", a[r], tuple(sorted(a[[m, n]])), rest)
            out.setdefault(key, []).append((off, r))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--beta", type=float, default=5.7)
    ap.add_argument("--shape", default="8,4,4,4", help="time first")
    ap.add_argument("--n", type=int, default=400, help="configurations per chain (2 chains)")
    ap.add_argument("--times", default="0.1,0.2,0.4", help="flow times of the held-out basis fields")
    ap.add_argument("--smear", type=float, default=0.0,
                    help="flow time of the operator's links (RK3 steps of 0.05; 0: plain)")
    ap.add_argument("--dmax", type=int, default=2, help="time distances from a timeslice source with coefficients")
    ap.add_argument("--r2", type=float, default=2.5, help="squared radius of the link classes of a plaquette source")
    ap.add_argument("--sources", type=int, default=8, help="random plaquette sources per plane and configuration")
    args = ap.parse_args()
    jax.config.update("jax_enable_x64", True)
    shape = tuple(int(s) for s in args.shape.split(","))
    th = make_theory("su3", shape, beta=args.beta)
    field = tg.SmoothingField(times=tuple(float(t) for t in args.times.split(",")), held_out=True)
    T, d, K = shape[0], len(shape), field.n_coef
    print(f"4D SU(3) {'x'.join(map(str, shape))}, beta {args.beta}, held-out smoothing times {field.times}, "
          f"operator smeared to t = {args.smear}; {cpu_model()}", flush=True)
    t0 = time.perf_counter()
    out, gen = timed_generate(jax.random.PRNGKey(58), th, HeatbathConfig(1, 4), n_chains=2, n_traj=args.n, n_therm=50,
                              block_size=min(args.n, 100))
    configs = np.asarray(out["configs"])
    print(f"heat bath (1 HB + 4 OR): 2 x {args.n}, {time.perf_counter() - t0:.1f} s ({gen * 1e3:.1f} ms per "
          "configuration)", flush=True)
    fn = per_configuration(th, field, args.smear)
    flat = configs.reshape((-1,) + configs.shape[2:])
    t0 = time.perf_counter()
    parts = [fn(jnp.asarray(flat[i:i + 16])) for i in range(0, flat.shape[0], 16)]
    o, a, p, b = (np.concatenate([np.asarray(q[j]) for q in parts]).reshape((2, args.n) + parts[0][j].shape[1:])
                  for j in range(4))
    print(f"terms: {(time.perf_counter() - t0) / flat.shape[0] * 1e3:.0f} ms per configuration (compilation "
          "included)", flush=True)
    # the per-link terms add up to the field's own (corrflow.tangent.SmoothingField.terms), checked on one configuration
    ref = np.asarray(field.terms(jnp.asarray(flat[0]), th, lambda u: jnp.zeros(1), jax.random.PRNGKey(0))[0])
    dev = np.max(np.abs(a[0, 0].sum(axis=tuple(range(1, a.ndim - 2))) - ref)) / np.max(np.abs(ref))
    if not dev < 1e-8:
        raise SystemExit(f"per-link terms disagree with SmoothingField.terms: relative deviation {dev:.1e}")
    print(f"per-link terms add up to SmoothingField.terms (relative deviation {dev:.0e})")
    cls = np.stack([a[..., 0], a[..., 1:].sum(-1)], -1).sum(axis=tuple(range(4, 4 + d - 1)))  # (2, n, K, T, 2)

    y = -o.sum(-1)
    r, _ = cross_fitted(y, cls.sum(3).reshape(2, args.n, -1))
    print(f"\nwhole-lattice source (-sum_t O(t)), {2 * K} coefficients: Var[d_lam S]/Var[R] {ratios(y, r)}")

    dist = np.arange(T)
    dist = dist[np.minimum(dist, T - dist) <= args.dmax]
    link_t = (np.arange(T)[:, None] + dist[None, :]) % T  # [t0, j] -> timeslice of the links at distance dist[j]
    feats = np.moveaxis(cls[:, :, :, link_t, :], 3, 2).reshape(2, args.n, T, -1)  # (2, n, t0, K * |dist| * 2)
    y = -o
    r, coef = cross_fitted(y, feats)
    print(f"timeslice source (-O(t0)), {feats.shape[-1]} coefficients (|t - t0| <= {args.dmax}): "
          f"Var[d_lam S]/Var[R] {ratios(y, r)}")
    bs = np.moveaxis(b[:, :, :, :, link_t, :], 4, 2)  # (2, n, t0, K, T_sink, |dist|, 2)
    dvo = np.einsum("cnsktjx,ckjx->cnst", bs, coef.reshape(2, K, len(dist), 2))  # v_{t0}·∇O(t')
    ob, rb = o.mean(), r.mean()
    print(f"{'dt':>3} {'connected':>18} {'tangent':>18} {'reduction':>10}")
    for dt in range(T // 2 + 1):
        sink = (np.arange(T) + dt) % T
        conn = np.mean((o[:, :, sink] - ob) * (o - ob), -1)
        tang = np.mean(dvo[:, :, np.arange(T), sink] - (o[:, :, sink] - ob) * (r - rb), -1)
        sc, st = gamma_method(conn), gamma_method(tang)
        print(f"{dt:>3} {sc.value:>+11.5f}({sc.error:.5f}) {st.value:>+11.5f}({st.error:.5f}) "
              f"{(sc.error / st.error) ** 2:>9.1f}x")

    rng = np.random.default_rng(1)
    xs, ys, own = [], [], None
    ci, ni = np.meshgrid(np.arange(2), np.arange(args.n), indexing="ij")
    for pl, (m, n) in enumerate(lattice.planes(d)):
        classes = plaquette_classes(d, m, n, args.r2)
        keys = sorted(classes, key=str)
        own = own or [j for j, k in enumerate(keys) if k == ("in", 0.0, 0.5, (0.0,) * (d - 2))]
        sites = rng.integers(0, np.asarray(shape), size=(2, args.n, args.sources, d))
        f = np.zeros((2, args.n, args.sources, len(keys), K))
        for j, key in enumerate(keys):
            for off, rho in classes[key]:
                s = (sites + np.asarray(off)) % np.asarray(shape)
                f[:, :, :, j] += a[ci[..., None], ni[..., None], :, *np.moveaxis(s, -1, 0), rho]
        xs.append(f)
        ys.append(-p[ci[..., None], ni[..., None], *np.moveaxis(sites, -1, 0), pl])
    x, y = np.concatenate(xs, 2), np.concatenate(ys, 2)
    r, _ = cross_fitted(y, x[..., own, :].reshape(x.shape[:3] + (-1,)))
    print(f"\nplaquette source: its own four links ({len(own) * K} coefficients): Var[d_lam S]/Var[R] {ratios(y, r)}")
    r, _ = cross_fitted(y, x.reshape(x.shape[:3] + (-1,)))
    print(f"plaquette source: {x.shape[3]} link classes within r^2 = {args.r2} ({x.shape[3] * K} coefficients): "
          f"Var[d_lam S]/Var[R] {ratios(y, r)}")


if __name__ == "__main__":
    main()
