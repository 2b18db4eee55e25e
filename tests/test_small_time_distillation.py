"""The tauldr recipe's small-time distillation batch: component-to-component KL for a mixture teacher (di4c^2), and
its copy count (`num_small_time`) changes the estimate's variance, not its expectation."""
import dataclasses

import jax
import numpy as np
import pytest

from di4c_jax.losses.di4c import _small_time_distillation
from test_di4c_loss import BATCH, net, rbg_key, setup


def test_tauldr_mixture_teacher_distils_component_to_component():
    """di4c^2 with the tauldr recipe: teacher and student components share lambda in the small-time batch, so a
    student equal to its mixture teacher has distillation term exactly 0; a different student has a positive one."""
    process, config, student, teacher, x0, cond = setup("tauldr", student_dropout=False)
    mixture = net(process, True)
    assert mixture.mixture
    distil = jax.jit(lambda k, s: _small_time_distillation(k, mixture, s, mixture, teacher, process, x0, cond,
                                                           config))
    np.testing.assert_allclose(np.asarray(distil(rbg_key(4), teacher)), 0.0, atol=1e-6)
    assert float(np.min(np.asarray(distil(rbg_key(4), student)))) > 1e-3


def test_small_time_copies_change_the_variance_not_the_expectation():
    """tauldr's num_small_time: None is N's copies bit for bit; any copy count is an unbiased estimate of the same
    expected KL (means over 4000 keys agree within 4 standard errors), and fewer copies spread more."""
    process, config, student, teacher, x0, cond = setup("tauldr", student_dropout=False)
    mixture, product = net(process, True), net(process, False)

    def term(copies, keys):
        recipe = dataclasses.replace(config, num_small_time=copies)
        one = lambda k: _small_time_distillation(k, mixture, student, product, teacher, process, x0, cond, recipe)
        return np.asarray(jax.jit(jax.vmap(one))(keys), np.float64)  # [keys, B]

    keys = jax.random.split(rbg_key(7), 4000)
    np.testing.assert_array_equal(term(None, keys[:8]), term(config.num_lambda, keys[:8]))
    one_copy, three = term(1, keys), term(3, keys)
    for got in (one_copy, three):
        assert got.shape == (4000, BATCH)
    se = np.sqrt(one_copy.var(0) / 4000 + three.var(0) / 4000)
    assert np.all(np.abs(one_copy.mean(0) - three.mean(0)) < 4 * se), (one_copy.mean(0), three.mean(0), se)
    assert np.all(three.std(0) < one_copy.std(0))
    with pytest.raises(ValueError, match="num_small_time must be None or >= 1, got 0"):
        dataclasses.replace(config, num_small_time=0)
