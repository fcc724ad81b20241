import jax.numpy as jnp
import numpy as np
import pytest

from corrflow.fastmath import cos_poly, sin_poly


@pytest.mark.parametrize("dtype,tol", [(np.float64, 5e-16), (np.float32, 3e-7)])
@pytest.mark.parametrize("fn,ref", [(sin_poly, np.sin), (cos_poly, np.cos)])
def test_polynomials_match_libm(fn, ref, dtype, tol):
    """Dense grid over |x| <= 64 (MD plaquette angles stay well inside), the reduction boundaries, and a shape."""
    x = np.concatenate([np.linspace(-64, 64, 400_001), np.pi / 2 * np.arange(-40, 41), [0.0, 1e-30, -1e-30]])
    x = x.astype(dtype)
    y = np.asarray(fn(jnp.asarray(x)))
    assert y.dtype == dtype
    err = np.abs(y.astype(np.float64) - ref(x.astype(np.float64)))
    assert err.max() < tol, (err.max(), x[err.argmax()])
    # and not better than it should be: a 1e-3 shift of the argument is seen (the comparison is not vacuous)
    assert np.abs(np.asarray(fn(jnp.asarray(x + 1e-3))) - y).max() > 1e-4
    assert fn(jnp.zeros((2, 3), dtype)).shape == (2, 3)
