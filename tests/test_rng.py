"""corrflow.rng.normal draws jax.random.normal's numbers bit for bit (the unrolled Threefry hash is the same hash and
the counter layout is JAX's), on the fast path for legacy and typed Threefry keys, under jit and vmap; other
key implementations are passed to JAX."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from corrflow import rng


@pytest.mark.parametrize("shape", [(1,), (7,), (3, 5, 2), (2, 4, 4, 4, 4, 8)])
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64, jnp.bfloat16])
def test_normal_equals_jax_random_normal(shape, dtype):
    for key in (jax.random.PRNGKey(5), jax.random.key(9)):
        assert rng._applies(key)  # the fast path, not the fallback
        want = np.asarray(jax.random.normal(key, shape, dtype))
        got = np.asarray(rng.normal(key, shape, dtype))
        jitted = np.asarray(jax.jit(rng.normal, static_argnums=(1, 2))(key, shape, dtype))
        assert got.dtype == want.dtype and got.shape == shape
        assert got.tobytes() == want.tobytes() and jitted.tobytes() == want.tobytes()
    # negative control: another key gives other numbers
    assert not np.array_equal(rng.normal(jax.random.PRNGKey(6), shape, dtype), want)


def test_normal_under_vmap_and_split_keys():
    keys = jax.random.split(jax.random.PRNGKey(1), 4)
    want = jax.vmap(lambda k: jax.random.normal(k, (16, 3), jnp.float64))(keys)
    got = jax.vmap(lambda k: rng.normal(k, (16, 3), jnp.float64))(keys)
    np.testing.assert_array_equal(got, want)


def test_threefry_hash_matches_jax_bits():
    """The hash itself against JAX's (32-bit draws are the XOR of the two words of counter ``(0, i)``)."""
    key = jax.random.PRNGKey(123)
    lo = jnp.arange(1000, dtype=jnp.uint32)
    b1, b2 = rng.threefry2x32(key[0], key[1], jnp.zeros_like(lo), lo)
    np.testing.assert_array_equal(b1 ^ b2, jax.random.bits(key, (1000,), jnp.uint32))


def test_other_implementations_are_passed_to_jax():
    key = jax.random.key(3, impl="rbg")
    assert not rng._applies(key)
    np.testing.assert_array_equal(rng.normal(key, (5,), jnp.float32), jax.random.normal(key, (5,), jnp.float32))
