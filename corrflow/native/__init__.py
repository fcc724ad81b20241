"""Native CPU kernels through the XLA FFI, with the pure-JAX kernels as reference and fallback (issue 16).

Why.  XLA:CPU runs a 3x3 complex product of two site fields at ~22 GFLOP/s on two cores and materialises each of
the staple force's 40 products as its own pass through memory; its SU(3) exponential, the heat bath's gathers and
draws and the layers' 8x8 Jacobian algebra stay far from the hardware in every form tried (BENCHMARKS.md).
``kernels.cc`` holds seven kernels written below XLA, each the algorithm of a JAX function of corrflow:

* ``corrflow_staple_force`` -- :func:`staple_force`, ``P_TA[U_mu(x) Sigma_mu(x)]`` of 4D SU(3) links
  (:func:`corrflow.lattice.staple_force`): every product of a site stays in registers, 8 (else 4) sites per SIMD
  vector ("virtual nodes": the lanes hold sites ``L / W`` apart along one axis, so every shift is a whole vector,
  across the edge of a lane's range a rotation of the lanes); the links are read once, only the force is written.
* ``corrflow_exp_left`` -- :func:`exp_left`, ``exp(X) U`` of SU(3) (:meth:`corrflow.groups.SUN.exp_left`; the
  formula and polynomials of ``matrices.exp_su3``), 8 matrices per vector.
* ``corrflow_overrelax`` / ``corrflow_heatbath`` -- :func:`overrelax_sweep` / :func:`heatbath_sweep`, the sweeps
  of :mod:`corrflow.heatbath` on the virtual nodes, in place; the heat bath with its own Threefry-2x32 stream.
* ``corrflow_algebra_logj`` -- :func:`algebra_and_logj`, the residual layers' ``(g, log J)`` per link
  (:func:`corrflow.flows.jacobian.algebra_and_logj`).
* ``corrflow_path_sums`` -- :func:`path_sums`, the layers' staple sums at their active sites (products of links along
  the paths of a gather plan, :func:`corrflow.flows.staples.gathered_staple_sums`), every loop shape in one pass, 8
  sites per vector: each distinct link of the staples fetched once per site with the CPU's vector gathers, the link
  indices computed in the kernel from the active sites.
* ``corrflow_u1_force`` -- :func:`u1_force`, the force of the U(1) Wilson action in any dimension
  (:meth:`corrflow.theories.WilsonGaugeAction.force`; the sine polynomial of :mod:`corrflow.fastmath`): the angles
  into planar rows with halos, the plaquette sines and the force as contiguous vector loops, a chain per work item.

Measured against the issue's own code (``benchmarks/kernels_vs_baseline.py``; the U(1) force in
``benchmarks/hmc_throughput.py`` against plain NumPy): BENCHMARKS.md, "Native CPU kernels".

Build.  The C++ source (``kernels.cc`` and its headers) ships with the package and is compiled once per machine on
first use (``c++ -O3 -march=native``, the XLA FFI headers of the installed jaxlib; 5-15 s) into the user's cache
(``$CORRFLOW_NATIVE_CACHE``, else ``$XDG_CACHE_HOME/corrflow`` or ``~/.cache/corrflow``), named by a hash of the
source, the compiler, the flags, jaxlib's version and the CPU's model and instruction sets (so that nodes of a
cluster with other CPUs never load each other's build from a shared home); a failed build falls back to the JAX
kernels with one warning.  One translation unit: its time is the kernels' own code (force.h 7.5 s, sweeps.h 9 s of
the 15 s on a 2-core AMD EPYC; the FFI headers 0.8 s), so compiling the seven handlers as separate units in parallel
would cost 28 s of CPU for 9 s of wall time on many cores and save nothing on two (measured 2026-12-07).  Results are
bitwise reproducible on one machine and independent of batching and threads (nothing is summed across sites); they
differ from the JAX kernels' at the rounding level (the heat bath: same distribution, other random numbers).

Choice (environment ``CORRFLOW_NATIVE``, read when a program is traced): ``auto`` (default) on CPUs with one device
wherever a kernel applies and builds, ``0`` never, ``1`` wherever it applies (an error if it cannot be built).  The
force and the sweeps apply to 4D SU(3) links with an extent that is a multiple of 4 (the sweeps: even extents),
the exponential, the layer Jacobian and the staple sums to SU(3) matrices of any shape; complex64 or complex128.
The U(1) force applies to float32 / float64 angles in 2 to 8 dimensions.
Derivatives through any of them (Wilson-flowed observables, smoothing fields, flow training) are those of the JAX
kernels (``custom_jvp``), as for the Pallas force.
"""
from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Callable
from typing import Any
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
Array = jax.Array

__all__ = ["ENV", "algebra_and_logj", "applies", "build", "exp_applies", "exp_left", "heatbath_sweep",
           "overrelax_sweep", "path_sums", "staple_force", "sweeps_apply", "u1_force", "use_native", "use_native_exp",
           "use_native_jacobian", "use_native_paths", "use_native_sweeps", "use_native_u1"]

ENV = "CORRFLOW_NATIVE"
SOURCE = Path(__file__).with_name("kernels.cc")
FLAGS = ("-O3", "-march=native", "-std=c++17", "-fno-math-errno", "-shared", "-fPIC")
_TARGETS = {"corrflow_staple_force": "CorrflowStapleForce", "corrflow_exp_left": "CorrflowExpLeft",
            "corrflow_overrelax": "CorrflowOverrelax", "corrflow_heatbath": "CorrflowHeatbath",
            "corrflow_algebra_logj": "CorrflowAlgebraLogj", "corrflow_path_sums": "CorrflowPathSums",
            "corrflow_u1_force": "CorrflowU1Force"}


def _mode() -> str:
    mode = os.environ.get(ENV, "auto").strip().lower()
    if mode in ("", "auto"):
        return "auto"
    if mode in ("1", "true", "yes", "on"):
        return "on"
    if mode in ("0", "false", "no", "off"):
        return "off"
    raise ValueError(f"{ENV}={mode!r}: use auto (the default), 1 (always where it applies) or 0 (never)")


def _cache_dir() -> Path:
    env = os.environ.get("CORRFLOW_NATIVE_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "corrflow"


def _cpu_identity() -> str:
    """The CPU's model and instruction-set flags (``-march=native`` compiles for them): a library built on one node
    of a cluster must not be loaded on another with a different CPU from a shared home directory."""
    import platform

    try:
        with open("/proc/cpuinfo") as fh:
            lines = [ln for ln in fh if ln.startswith(("model name", "flags", "Features", "CPU part"))]
        return "".join(sorted(set(lines)))
    except OSError:
        return f"{platform.machine()} {platform.processor()}"


def _compiler() -> str | None:
    for name in (os.environ.get("CXX"), "c++", "g++", "clang++"):
        if name and shutil.which(name):
            return name
    return None


@functools.lru_cache(maxsize=1)
def build() -> tuple[Path | None, str]:
    """``(path of the shared library, "")``, compiled now if the cache lacks it, or ``(None, why)``."""
    cxx = _compiler()
    if cxx is None:
        return None, "no C++ compiler (set CXX)"
    import jaxlib

    include = jax.ffi.include_dir()
    try:
        version = subprocess.run([cxx, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError) as err:
        return None, f"{cxx} --version failed: {err}"
    sources = "".join(f.read_text() for f in sorted(SOURCE.parent.glob("*.[ch]*")) if f.suffix in (".cc", ".h"))
    key = hashlib.sha256("\0".join([sources, version, " ".join(FLAGS), jaxlib.__version__,
                                    sys.platform, _cpu_identity()]).encode()).hexdigest()[:16]
    for cache in (_cache_dir(), Path(tempfile.gettempdir()) / "corrflow-native"):
        lib = cache / f"corrflow_native_{key}.so"
        if lib.exists():
            return lib, ""
        try:
            cache.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(suffix=".so", dir=cache)
            os.close(fd)
        except OSError:
            continue
        cmd = [cxx, *FLAGS, f"-I{include}", str(SOURCE), "-o", tmp]
        try:
            run = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        except (OSError, subprocess.SubprocessError) as err:
            os.unlink(tmp)
            return None, f"{' '.join(cmd)} failed: {err}"
        if run.returncode != 0:
            os.unlink(tmp)
            last = (run.stderr.strip().splitlines() or ["?"])[-1]
            return None, f"{' '.join(cmd)} failed: {last}"
        os.replace(tmp, lib)  # atomic: concurrent builds (test workers) leave one complete library
        return lib, ""
    return None, f"no writable cache directory ({_cache_dir()})"


@functools.lru_cache(maxsize=1)
def _registered() -> str:
    """``""`` once the kernels are registered with XLA, else why not."""
    lib, why = build()
    if lib is None:
        return why
    try:
        handle = ctypes.cdll.LoadLibrary(str(lib))
        for target, symbol in _TARGETS.items():
            jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(getattr(handle, symbol)), platform="cpu")
    except (OSError, AttributeError, RuntimeError) as err:
        return f"loading {lib} failed: {err}"
    return ""


def _su3(group, *arrays: Array) -> bool:  # noqa: ANN001
    """SU(3), and every array non-empty ``(..., 3, 3)`` complex64 or complex128."""
    return not group.is_abelian and group.N == 3 and all(
        a.ndim >= 2 and a.shape[-2:] == (3, 3) and a.size > 0 and a.dtype in (jnp.complex64, jnp.complex128)
        for a in arrays)


def applies(u: Array, group) -> bool:  # noqa: ANN001 - a corrflow.groups.Group
    """Whether the kernel computes this force: 4D SU(3) link fields ``(*batch, L0, L1, L2, L3, 4, 3, 3)``, one
    extent a multiple of 4, complex64 or complex128."""
    return _su3(group, u) and u.ndim >= 7 and u.shape[-3] == 4 and any(n % 4 == 0 for n in u.shape[-7:-3])


def exp_applies(x: Array, u: Array, group) -> bool:  # noqa: ANN001
    """Whether the kernel computes ``exp(X) U``: SU(3), ``X`` and ``U`` of one shape ``(..., 3, 3)`` and one dtype,
    complex64 or complex128."""
    return _su3(group, x, u) and x.shape == u.shape and x.dtype == u.dtype


def sweeps_apply(u: Array, group) -> bool:  # noqa: ANN001
    """Whether the kernels run heat-bath and over-relaxation sweeps: as :func:`applies`, with even extents."""
    return applies(u, group) and all(n % 2 == 0 for n in u.shape[-7:-3])


def use_native(u: Array, group) -> bool:  # noqa: ANN001
    """Whether :func:`corrflow.lattice.staple_force` uses the native kernel for ``u`` (``CORRFLOW_NATIVE``; module
    docstring).  Never with several local devices: the kernel has no sharding rule, and XLA would gather a field
    split over devices (``corrflow.sharding``) onto each of them.  ``auto`` warns once and falls back when the
    kernel cannot be built; ``1`` raises ``RuntimeError``."""
    return _use(applies(u, group))


def use_native_jacobian(w: Array, group) -> bool:  # noqa: ANN001
    """Whether :func:`corrflow.flows.jacobian.algebra_and_logj` uses the native kernel: SU(3) matrices ``W``
    ``(..., 3, 3)``, complex64 or complex128 (as :func:`use_native`)."""
    return _use(_su3(group, w))


def use_native_paths(u_flat: Array, group) -> bool:  # noqa: ANN001
    """Whether :func:`corrflow.flows.staples.gathered_staple_sums` uses the native kernel: SU(3) links of a flat
    field ``(*batch, M, 3, 3)``, complex64 or complex128 (as :func:`use_native`)."""
    return _use(_su3(group, u_flat) and u_flat.ndim >= 3)


def use_native_exp(x: Array, u: Array, group) -> bool:  # noqa: ANN001
    """Whether ``group.exp_left(x, u)`` uses the native kernel (as :func:`use_native`)."""
    return _use(exp_applies(x, u, group))


def use_native_sweeps(u: Array, group) -> bool:  # noqa: ANN001
    """Whether the sweeps of :mod:`corrflow.heatbath` (heat bath and over-relaxation, in every update) use the
    native kernels (as :func:`use_native`)."""
    return _use(sweeps_apply(u, group))


def use_native_u1(u: Array, group) -> bool:  # noqa: ANN001
    """Whether the U(1) Wilson action's force (:meth:`corrflow.theories.WilsonGaugeAction.force`) uses the native
    kernel: U(1) angles ``(*batch, L_0, ..., L_{d-1}, d)``, ``2 <= d <= 8``, float32 or float64 (as
    :func:`use_native`)."""
    d = u.shape[-1] if u.ndim else 0
    ok = (getattr(group, "is_abelian", False) and u.dtype in (jnp.float32, jnp.float64) and 2 <= d <= 8
          and u.ndim >= d + 1)
    return _use(ok)


def _use(applicable: bool) -> bool:
    mode = _mode()
    if mode == "off" or jax.default_backend() != "cpu" or jax.local_device_count() > 1 or not applicable:
        return False
    why = _registered()
    if not why:
        return True
    if mode == "on":
        raise RuntimeError(f"{ENV}=1 but the native kernels are unavailable: {why}")
    _warn_once(why)
    return False


@functools.lru_cache(maxsize=1)
def _warn_once(why: str) -> None:
    warnings.warn(f"corrflow: native CPU kernels unavailable ({why}); using the JAX kernels (slower). "
                  f"Set {ENV}=0 to silence this.", RuntimeWarning, stacklevel=3)


def _call(target: str, *args: Array, out: Any = None, vmap_method: str = "broadcast_all", **attributes: Any) -> Any:
    """The kernel ``target`` on ``args`` (results ``out``, default: one array like ``args[0]``).  ``broadcast_all``
    under ``vmap`` for kernels that take batch prefixes of their extra inputs, ``expand_dims`` for those that take
    one shared copy."""
    why = _registered()
    if why:
        raise RuntimeError(f"the native kernels are unavailable: {why}")
    out = jax.ShapeDtypeStruct(args[0].shape, args[0].dtype) if out is None else out
    return jax.ffi.ffi_call(target, out, vmap_method=vmap_method)(*args, **attributes)


def staple_force(u: Array, group, weights: Array | None = None,  # noqa: ANN001
                 derivative: Callable[..., Array] | None = None) -> Array:
    """``P_TA[U_mu(x) Sigma_mu(x)]`` for every link (:func:`corrflow.lattice.staple_force`) by the native kernel;
    ``derivative(u, group, weights)`` gives the derivatives (``custom_jvp``; the XLA kernel)."""
    if derivative is None:
        from ..lattice import staple_force_xla as derivative
    w = jnp.ones((4, 4), jnp.float64) if weights is None else jnp.asarray(weights)
    w = w.astype(jnp.float64)  # the kernel reads float64 weights (corrflow runs with x64 enabled)

    @jax.custom_jvp
    def force(u: Array, w: Array) -> Array:
        return _call("corrflow_staple_force", u, w)

    force.defjvp(lambda primals, tangents: jax.jvp(lambda a, b: derivative(a, group, b), primals, tangents))
    return force(u, w)


def exp_left(x: Array, u: Array, derivative: Callable[[Array, Array], Array]) -> Array:
    """``exp(X) U`` for su(3) elements ``X`` and SU(3) matrices ``U`` (``(..., 3, 3)``, one shape) by the native
    kernel: the formula of :func:`corrflow.matrices.exp_su3` (same polynomials) on 8 matrices per vector;
    ``derivative(x, u)`` (the JAX kernel) gives the derivatives (``custom_jvp``)."""

    @jax.custom_jvp
    def f(x: Array, u: Array) -> Array:
        return _call("corrflow_exp_left", x, u)

    f.defjvp(lambda primals, tangents: jax.jvp(derivative, primals, tangents))
    return f(x, u)


def overrelax_sweep(u: Array, couplings: Array) -> Array:
    """One over-relaxation sweep of 4D SU(3) links ``(*batch, L0, L1, L2, L3, 4, 3, 3)`` with plane couplings
    ``couplings`` (``(4, 4)``, the weights of the staple sums) by the native kernel, re-unitarised: the algorithm
    and order of :func:`corrflow.heatbath.overrelax_sweep` (directions, parities, SU(2) subgroups), equal to it to
    rounding.  Not differentiable (nothing differentiates a Markov update)."""
    return _call("corrflow_overrelax", u, jnp.asarray(couplings).astype(jnp.float64))


def heatbath_sweep(u: Array, couplings: Array, key: Array, max_rounds: int) -> Array:
    """One Cabibbo–Marinari heat-bath sweep of 4D SU(3) links by the native kernel, re-unitarised: the algorithm,
    order and exactness of :func:`corrflow.heatbath.heatbath_sweep` (Kennedy–Pendleton / Creutz, at most
    ``max_rounds`` accept/reject rounds), with the kernel's own random numbers: Threefry-2x32 keyed by ``key`` (one
    per batch, or one per chain under ``vmap``), counters from the chain, the site and the draw, so the numbers of
    a link depend on neither the SIMD layout nor the threads.  Same distribution as the JAX sweep, not the same
    numbers."""
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        key = jax.random.key_data(key)
    return _call("corrflow_heatbath", u, jnp.asarray(couplings).astype(jnp.float64), key.astype(jnp.uint32),
                 max_rounds=np.int64(max_rounds))


def algebra_and_logj(w: Array, constants: tuple[np.ndarray, np.ndarray, np.ndarray],
                     derivative: Callable[[Array], tuple[Array, Array]]) -> tuple[Array, Array]:
    """``(P_TA(W), log det(1 + F(ad g) M))`` per SU(3) matrix ``W`` ``(..., 3, 3)`` by the native kernel: the
    algorithm of :func:`corrflow.flows.jacobian.algebra_and_logj` (its real linear maps ``constants`` =
    ``(k_m, k_x, k_ad)``, the same Taylor degree and unpivoted LU), 8 matrices per vector; ``derivative(w)`` (the
    JAX function) gives the derivatives (``custom_jvp``), so training differentiates through JAX as before."""
    k_m, k_x, k_ad = (jnp.asarray(np.asarray(c, np.float64)) for c in constants)

    @jax.custom_jvp
    def f(w: Array) -> tuple[Array, Array]:
        out = (jax.ShapeDtypeStruct(w.shape, w.dtype), jax.ShapeDtypeStruct(w.shape[:-2], w.real.dtype))
        return tuple(_call("corrflow_algebra_logj", w, k_m, k_x, k_ad, out=out, vmap_method="expand_dims"))

    f.defjvp(lambda primals, tangents: jax.jvp(derivative, primals, tangents))
    return f(w)


def path_sums(u_flat: Array, sites: Array, factors: Array, extents: np.ndarray, program: np.ndarray,
              derivative: Callable[[Array, Array, Array], Array]) -> Array:
    """The staple sums of the residual layers (:func:`corrflow.flows.staples.gathered_staple_sums`) by the native
    kernel, every loop shape in one pass: ``(*batch, K, n, 3, 3)`` from the flat SU(3) field ``u_flat``
    ``(*batch, V d, 3, 3)`` of a lattice with ``extents`` ``(d,)``, at the active sites ``sites`` ``(n,)``.  The
    factors ``U_nu(x + offset)`` of the staples are the rows ``(offset, nu)`` of ``factors`` ``(F, d + 1)`` (each
    link fetched once per site); ``program`` ``(P, 1 + L)`` (static) lists per staple its shape ``k`` and its
    factors as ``2 id + dagger`` (``-1`` past its end).  ``derivative(u_flat, sites, factors)`` (the JAX function)
    gives the derivatives (``custom_jvp``, in ``u_flat`` only)."""
    prog = jnp.asarray(np.asarray(program, np.int32))
    ext = jnp.asarray(np.asarray(extents, np.int32))
    n_shapes = int(np.max(np.asarray(program)[:, 0])) + 1

    @jax.custom_jvp
    def f(u: Array, st: Array, fac: Array) -> Array:
        out = jax.ShapeDtypeStruct(u.shape[:-3] + (n_shapes, st.shape[-1], 3, 3), u.dtype)
        return _call("corrflow_path_sums", u, st, fac, ext, prog, out=out, vmap_method="expand_dims")

    f.defjvp(lambda primals, tangents: jax.jvp(lambda u: derivative(u, *primals[1:]), (primals[0],), (tangents[0],)))
    return f(u_flat, jnp.asarray(sites, jnp.int32), jnp.asarray(factors, jnp.int32))


def u1_force(u: Array, couplings: Array, derivative: Callable[[Array, Array], Array]) -> Array:
    """The force of the U(1) Wilson action, ``F_m(x) = sum_n b_mn (s_mn(x) - s_mn(x - n))`` over the planes through
    the link (``s_mn = -s_nm`` the sine of the plaquette angle by :func:`corrflow.fastmath.sin_poly`'s polynomial),
    by the native kernel for angles ``u`` ``(*batch, L_0, ..., L_{d-1}, d)`` and plane couplings ``couplings``
    ``(d, d)``; ``derivative(u, couplings)`` (the JAX force) gives the derivatives (``custom_jvp``, in both)."""

    @jax.custom_jvp
    def f(u: Array, b: Array) -> Array:
        return _call("corrflow_u1_force", u, b.astype(jnp.float64), vmap_method="expand_dims")

    f.defjvp(lambda primals, tangents: jax.jvp(derivative, primals, tangents))
    return f(u, jnp.asarray(couplings))
