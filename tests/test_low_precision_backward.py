"""The output layers' low-precision backward: forward values are lax.dot_general's, and the gradient is that of the
same product with the output cotangent first rounded to the operands' dtype (float32 operands: plain autodiff,
bit for bit)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from di4c_jax.models.precision import low_precision_backward_dot_general

DIMS = (((1,), (0,)), ((), ()))


def _loss(dot, lhs, rhs, weights):
    return (dot(lhs, rhs, DIMS, preferred_element_type=jnp.float32) * weights).sum()


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float32])
def test_values_and_gradient(dtype):
    k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
    lhs = jax.random.normal(k1, (16, 8)).astype(dtype)
    rhs = jax.random.normal(k2, (8, 300)).astype(dtype)
    weights = jax.random.normal(k3, (16, 300)) * 1e-3
    ours = jax.value_and_grad(lambda a, b: _loss(low_precision_backward_dot_general, a, b, weights), (0, 1))
    plain = jax.value_and_grad(lambda a, b: _loss(jax.lax.dot_general, a, b, weights), (0, 1))
    rounded = jax.value_and_grad(lambda a, b: _loss(jax.lax.dot_general, a, b, weights.astype(dtype)), (0, 1))
    (value, grads), (plain_value, _), (_, rounded_grads) = ours(lhs, rhs), plain(lhs, rhs), rounded(lhs, rhs)
    assert value == plain_value
    for ours_g, want in zip(grads, rounded_grads):
        assert ours_g.dtype == dtype
        np.testing.assert_allclose(np.asarray(ours_g, np.float32), np.asarray(want, np.float32), rtol=1e-6)
    if dtype == jnp.float32:
        for ours_g, want in zip(grads, plain(lhs, rhs)[1]):
            np.testing.assert_array_equal(ours_g, want)


def test_other_products_are_plain_dot_general():
    lhs, rhs = jax.random.normal(jax.random.key(1), (2, 3, 4)), jax.random.normal(jax.random.key(2), (2, 4, 5))
    dims = (((2,), (1,)), ((0,), (0,)))
    ours = jax.grad(lambda a: low_precision_backward_dot_general(a, rhs, dims).sum())(lhs)
    np.testing.assert_array_equal(ours, jax.grad(lambda a: jax.lax.dot_general(a, rhs, dims).sum())(lhs))
