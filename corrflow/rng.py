"""Random numbers identical to ``jax.random``'s, drawn by a fusable Threefry hash.

JAX lowers the Threefry-2x32 hash behind every ``jax.random`` draw on CPU as a *rolled* loop (five iterations of
four rounds): each iteration writes the whole array of counters, and nothing fuses with the draw.  On other
platforms it emits the 20 rounds written out.  :func:`normal` draws the same numbers as
``jax.random.normal(key, shape, dtype)`` — bit for bit, with the default ``threefry2x32`` implementation and JAX's
partitionable counter layout (tests/test_rng.py compares them) — through a PRNG implementation whose bits come
from :func:`threefry2x32` written out here, so that XLA fuses the hash with the Gaussian transform and its
consumer.  HMC momenta use it: a 64x64 U(1) trajectory of 16 chains is ~1.4x faster on a 2-core CPU
(BENCHMARKS.md).  Not used where one draw feeds several fusions (the heat bath's six uniforms per site): XLA then
recomputes the hash in each of them, which measured slower than the rolled loop.

The hash (Salmon, Moraes, Dror & Shaw, SC'11): 20 rounds of ``x += y; y = rotl(y, r) ^ x`` with rotations
13, 15, 26, 6 / 17, 29, 16, 24, and the key words ``k0, k1, k0 ^ k1 ^ 0x1BD11BDA`` injected every four rounds.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.extend.random
import jax.numpy as jnp
import numpy as np
from jax import lax

Array = jax.Array

__all__ = ["threefry2x32", "normal", "check_key"]

_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))


def check_key(key: Any, name: str = "key") -> None:
    """``TypeError`` (one line) unless ``key`` is one JAX PRNG key: ``jax.random.PRNGKey(seed)`` (``uint32``, shape
    ``(2,)``) or ``jax.random.key(seed)`` (a typed key, shape ``()``).  Tracers pass (shapes are checked)."""
    dtype = getattr(key, "dtype", None)
    shape = tuple(getattr(key, "shape", ()))
    typed = dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key)
    raw = dtype is not None and not typed and np.dtype(dtype) == np.uint32
    if (typed and shape == ()) or (raw and shape == (2,)):
        return
    if dtype is None:
        what = f"{type(key).__name__} {key!r}"
    elif typed or (raw and len(shape) >= 2 and shape[-1] == 2):
        what = f"a batch of keys of shape {shape} (pass one: per-chain keys are derived from it)"
    else:
        what = f"an array of dtype {dtype} and shape {shape}"
    raise TypeError(f"{name} must be one JAX PRNG key, e.g. jax.random.PRNGKey(0) or jax.random.key(0); got {what}")


def threefry2x32(key1: Array, key2: Array, x1: Array, x2: Array) -> tuple[Array, Array]:
    """Threefry-2x32 (20 rounds) of the counter words ``(x1, x2)`` (uint32 arrays of one shape) under the key words
    ``(key1, key2)`` (uint32 scalars); returns the two hashed words (the same as JAX's ``threefry2x32``)."""
    ks = (key1, key2, key1 ^ key2 ^ np.uint32(0x1BD11BDA))
    x, y = x1 + ks[0], x2 + ks[1]
    for i in range(5):
        for r in _ROTATIONS[i % 2]:
            x = x + y
            y = lax.shift_left(y, np.uint32(r)) | lax.shift_right_logical(y, np.uint32(32 - r))
            y = x ^ y
        x = x + ks[(i + 1) % 3]
        y = y + ks[(i + 2) % 3] + np.uint32(i + 1)
    return x, y


def _random_bits(key: Array, bit_width: int, shape: tuple[int, ...]) -> Array:
    """JAX's partitionable Threefry bits: the counter of element ``i`` (C order) is the 64-bit ``i`` split into a
    high and a low word; 32-bit draws are the XOR of the two hashed words, 64-bit ones their concatenation."""
    n = math.prod(shape)
    if n >= 2**32:
        raise NotImplementedError("corrflow.rng: draws of 2**32 numbers or more")
    lo = lax.iota(np.uint32, n).reshape(shape)
    hi = jnp.zeros(shape, np.uint32)
    b1, b2 = threefry2x32(key[0], key[1], hi, lo)
    if bit_width == 64:
        return lax.shift_left(b1.astype(np.uint64), np.uint64(32)) | b2.astype(np.uint64)
    bits = b1 ^ b2
    return bits if bit_width == 32 else bits.astype({8: np.uint8, 16: np.uint16}[bit_width])


_TF = jax.extend.random.threefry_prng_impl
_IMPL = jax.extend.random.define_prng_impl(key_shape=_TF.key_shape, seed=_TF.seed, split=_TF.split,
                                           random_bits=_random_bits, fold_in=_TF.fold_in,
                                           name="threefry2x32_unrolled", tag="tfu")


def _applies(key: Array) -> bool:
    """Whether ``key`` draws with JAX's default partitionable Threefry (else :func:`normal` defers to JAX)."""
    if not (jax.config.jax_threefry_partitionable and jax.config.jax_default_prng_impl == "threefry2x32"):
        return False
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        return str(jax.random.key_impl(key)) == "threefry2x32"
    return key.shape[-1:] == (2,) and key.dtype == jnp.uint32


def normal(key: Array, shape: tuple[int, ...], dtype: Any = jnp.float64) -> Array:
    """``jax.random.normal(key, shape, dtype)`` bit for bit, with the hash written out (module docstring).

    ``key``: a legacy ``uint32[2]`` key or a typed Threefry key (other implementations are passed to JAX).
    """
    if not _applies(key):
        return jax.random.normal(key, shape, dtype)
    data = jax.random.key_data(key) if jnp.issubdtype(key.dtype, jax.dtypes.prng_key) else key
    return jax.random.normal(jax.random.wrap_key_data(data, impl=_IMPL), shape, dtype)
