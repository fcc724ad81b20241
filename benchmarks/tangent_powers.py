"""Powers of the relative rotation in the held-out smoothing field (issues 14/15): a negative result, kept runnable.

    python benchmarks/tangent_powers.py                          # 4D SU(3) 4^4, beta = 5.7, 4 x 100 heat bath
    python benchmarks/tangent_powers.py --beta 6.0 --powers 1,2,3

The held-out smoothing field ``v_k = P_TA(W_k)``, ``W_k = V_l(t_k) U_l^†`` (``corrflow.tangent.SmoothingField``,
``held_out=True``: ``V_l`` does not depend on ``U_l``), moves each link towards its flowed value by the first
"harmonic" of the relative rotation ``W``.  In 2D U(1) the ideal field moves each plaquette by a non-sinusoidal
function of its angle (6 sine harmonics, BENCHMARKS "Tangent-flow derivative estimators"); the 4D counterpart of the
higher harmonics is ``P_TA(W^n)``, the gradient in ``U_l`` of the class function ``Re tr W^n / n`` (at fixed
``V``), with the divergence in closed form per link (``Re tr W^2 = Re (χ_6 − χ_3̄)(W)``: ``Δ`` gives
``−C_2(6) Re χ_6 + C_2(3̄) Re χ_3̄``; computed here by forward-mode autodiff of the one-link map, 8 jvps per link).
The benchmark adds the powers ``n = 2, 3`` to the basis (3 x 4 coefficients instead of 4) and compares the
cross-fitted reduction of ``Var[∂S/∂β]`` and the variance reduction of ``d<P>/dβ`` with the plain field on the same
heat-bath configurations (the seed of ``benchmarks/tangent.py --su3``).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from benchmarks._machine import cpu_model  # noqa: E402
from corrflow import make_theory  # noqa: E402
from corrflow import tangent as tg  # noqa: E402
from corrflow.groups import dagger, matmul  # noqa: E402
from corrflow.heatbath import HeatbathConfig  # noqa: E402
from corrflow.tangent.core import lift  # noqa: E402
from corrflow.tangent.smoothing import SmoothingField  # noqa: E402


@dataclass(frozen=True)
class PowerSmoothingField(SmoothingField):
    """:class:`~corrflow.tangent.SmoothingField` (held out) with the basis ``P_TA(W_k^n)`` for ``n`` in ``powers``
    (time-major, then power); per-link divergence at fixed ``V`` by autodiff of the one-link map."""

    powers: tuple[int, ...] = (1, 2)

    @property
    def n_coef(self) -> int:
        return len(self.times) * len(self.powers)

    def describe(self) -> dict:
        return {**super().describe(), "powers": list(self.powers)}

    def _power_coords(self, w: jax.Array, g) -> jax.Array:  # noqa: ANN001
        """``(P, ..., n_gen)``: algebra coordinates of ``P_TA(w^n)`` for each power."""
        out, p = [], None
        for n in range(1, max(self.powers) + 1):
            p = w if p is None else matmul(p, w)
            if n in self.powers:
                out.append(g.algebra_coords(g.project_algebra(p)))
        return jnp.stack(out)

    def basis(self, v: jax.Array, u: jax.Array, theory) -> jax.Array:  # noqa: ANN001
        x = self._power_coords(matmul(v, dagger(u)), theory.group)  # (P, K, ..., n_gen)
        return jnp.swapaxes(x, 0, 1).reshape((-1,) + x.shape[2:])

    def link_divergence(self, v: jax.Array, u: jax.Array, theory) -> jax.Array:  # noqa: ANN001
        g = theory.group

        def one(vl: jax.Array, ul: jax.Array) -> jax.Array:
            zero = jnp.zeros((g.n_generators,), g.real_dtype(ul.dtype))
            jac = jax.jacfwd(lambda w: self._power_coords(matmul(vl, dagger(lift(w, ul, g))), g))(zero)
            return jnp.trace(jac, axis1=-2, axis2=-1)  # (P,)

        k = v.shape[0]
        vf = v.reshape((k, -1, g.N, g.N))
        uf = jnp.broadcast_to(u.reshape((1, -1, g.N, g.N)), vf.shape)
        d = jax.vmap(jax.vmap(one))(vf, uf)  # (K, links, P)
        return jnp.moveaxis(d, -1, 1).reshape((k * len(self.powers),) + u.shape[: u.ndim - 2])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--L", type=int, default=4)
    p.add_argument("--beta", type=float, default=5.7)
    p.add_argument("--n", type=int, default=100, help="configurations per chain (4 chains)")
    p.add_argument("--powers", default="1,2,3")
    args = p.parse_args()
    jax.config.update("jax_enable_x64", True)
    from benchmarks.tangent import timed_generate

    print(f"machine: {cpu_model()}, jax {jax.__version__}", flush=True)
    th = make_theory("su3", (args.L,) * 4, beta=args.beta)
    t0 = time.perf_counter()
    out, _ = timed_generate(jax.random.PRNGKey(58), th, HeatbathConfig(1, 4), n_chains=4, n_traj=args.n, n_therm=50,
                            block_size=min(args.n, 100))
    configs = out["configs"]
    print(f"4D SU(3) {args.L}^4, beta {args.beta}: heat bath 4 x {args.n}, {time.perf_counter() - t0:.0f} s", flush=True)
    powers = tuple(int(x) for x in args.powers.split(","))
    for pw in ((1,), powers):
        field = PowerSmoothingField(times=(0.1, 0.2, 0.4, 0.8), flow_eps=0.05, held_out=True, powers=pw)
        t0 = time.perf_counter()
        terms = tg.compute_terms(field, th, "beta", ("plaquette",), configs, jax.random.PRNGKey(1), batch=16)
        fits, coef = tg.cross_fit(terms.a, terms.ds, n_folds=2)
        res = tg.estimate(terms, coef, fits, field.describe())
        ofits, ocoef = tg.observable_cross_fit(terms, n_folds=2)
        res_o = tg.estimate(terms, ocoef, ofits, field.describe())
        print(f"  powers {','.join(map(str, pw)):6s} ({field.n_coef:2d} coefficients): Var[R] reduced "
              + " / ".join(f"{f.reduction:.2f}x" for f in fits)
              + f"  d<P>/dbeta {res.estimates['plaquette']['tangent']} reduction {res.reduction['plaquette']:.2f}x "
              f"(per-observable fit {res_o.reduction['plaquette']:.2f}x)  {time.perf_counter() - t0:.0f} s",
              flush=True)


if __name__ == "__main__":
    main()
