"""The elementwise reductions equal jnp's in value and gradient, also at -inf and the finite NEG_INF."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from di4c_jax.losses.reduce import logsumexp_axis
from di4c_jax.processes.base import NEG_INF


def _inputs(shape, seed=0):
    x = 4.0 * jax.random.normal(jax.random.key(seed), shape)
    # an all-impossible column, an all -inf column, and single impossible entries
    x = x.at[0, :, 0].set(NEG_INF).at[1, :, 1].set(-jnp.inf).at[0, 1, 2].set(NEG_INF)
    return x


@pytest.mark.parametrize("num", [1, 2, 5, 16])
@pytest.mark.parametrize("axis", [1, -2, 0])
def test_logsumexp_axis_matches_jax(num, axis):
    x = _inputs((3, num, 4)) if axis != 0 else jnp.moveaxis(_inputs((3, num, 4)), 1, 0)
    np.testing.assert_allclose(logsumexp_axis(x, axis), jax.nn.logsumexp(x, axis=axis), rtol=1e-6, atol=1e-6)


def test_logsumexp_axis_gradient_matches_jax():
    x = _inputs((3, 7, 4, 5))
    w = jax.random.normal(jax.random.key(1), (3, 4, 5))
    finite = lambda f: lambda a: jnp.sum(jnp.where(jnp.isfinite(f(a)), f(a), 0.0) * w)  # noqa: E731
    ours = jax.jit(jax.grad(finite(lambda a: logsumexp_axis(a, 1))))(x)
    ref = jax.grad(finite(lambda a: jax.nn.logsumexp(a, axis=1)))(x)
    # Column 0 of item 0 is NEG_INF for every component: there the weights carry lse's rounding (1/16 at 1e6).
    np.testing.assert_allclose(ours[1:], ref[1:], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ours[0, :, 1:], ref[0, :, 1:], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ours[0, :, 0], ref[0, :, 0], rtol=0.07)
    assert bool(jnp.all(jnp.isfinite(ours[:, :, 2:])))


def test_logsumexp_axis_under_vmap_and_checkpoint():
    x = jax.random.normal(jax.random.key(2), (4, 3, 6, 2))
    f = jax.checkpoint(lambda a: jnp.sum(logsumexp_axis(a, 1) ** 2))
    ours = jax.vmap(jax.grad(f))(x)
    ref = jax.vmap(jax.grad(lambda a: jnp.sum(jax.nn.logsumexp(a, axis=1) ** 2)))(x)
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-6)
