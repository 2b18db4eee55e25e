"""The categorical draw: the blocked two-stage draw has the law softmax(logp) (10 classes cut into blocks that do
not divide them, 200k draws), never draws an impossible class, and `sample_categorical` switches to it at
BLOCKED_DRAW_MIN_CLASSES classes and not below."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from di4c_jax.processes.base import (BLOCKED_DRAW_MIN_CLASSES, DRAW_BLOCK, NEG_INF, sample_categorical,
                                     sample_categorical_blocked)


@pytest.mark.parametrize("block", [1, 3, 4, 10, 13])
def test_blocked_draw_has_the_softmax_law(block):
    logp = 2.0 * jax.random.normal(jax.random.key(0), (10,))
    draws = sample_categorical_blocked(jax.random.key(1), jnp.broadcast_to(logp, (200_000, 10)), block=block)
    empirical = np.bincount(np.asarray(draws), minlength=10) / draws.size
    tv = 0.5 * np.abs(empirical - np.asarray(jax.nn.softmax(logp))).sum()
    assert draws.dtype == jnp.int32 and tv < 0.006, (block, tv)  # ~0.002 expected from 200k draws


def test_blocked_draw_never_draws_an_impossible_class_and_keeps_leading_axes():
    logp = jnp.zeros((3, 5, 11)).at[..., ::2].set(NEG_INF).at[..., 1].set(-jnp.inf)
    draws = np.asarray(sample_categorical_blocked(jax.random.key(2), logp, block=4))
    assert draws.shape == (3, 5) and set(np.unique(draws)) <= {3, 5, 7, 9}


def test_sample_categorical_switches_at_the_threshold():
    key = jax.random.key(3)
    small = jax.random.normal(key, (2, BLOCKED_DRAW_MIN_CLASSES - 1))
    large = jax.random.normal(key, (2, BLOCKED_DRAW_MIN_CLASSES))
    np.testing.assert_array_equal(sample_categorical(key, small), jax.random.categorical(key, small, axis=-1))
    np.testing.assert_array_equal(sample_categorical(key, large),
                                  sample_categorical_blocked(key, large, block=DRAW_BLOCK))


def test_block_must_be_positive():
    with pytest.raises(ValueError, match="block must be >= 1, got 0"):
        sample_categorical_blocked(jax.random.key(0), jnp.zeros((4,)), block=0)
