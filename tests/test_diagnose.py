"""experiments.diagnose: diagnose_point and one_step_denoise against closed forms on a tiny masked space."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from di4c_jax.processes import Masked
from experiments.diagnose import diagnose_point, one_step_denoise

V, D, B = 3, 4, 5
PROCESS = Masked(vocab_size=V, schedule="linear")  # t = 1 masks every position


def table_apply(table):
    """A denoiser whose logits are the fixed [D, K] table, whatever x_t, t and lambda."""
    def apply(params, x_t, t, lam, cond, rngs=None):
        return jnp.broadcast_to(params, (x_t.shape[0], *params.shape))
    return apply, jnp.asarray(table, jnp.float32)


def normalised(table):
    logp = table[:, :V] - np.log(np.exp(table[:, :V]).sum(-1, keepdims=True))
    return logp


@pytest.mark.parametrize("num_lambda", [1, 7])
def test_product_student_against_closed_form(num_lambda):
    rng = np.random.default_rng(0)
    teacher_table, student_table = rng.normal(size=(D, V + 1)), rng.normal(size=(D, V + 1))
    x0 = jnp.asarray(rng.integers(0, V, size=(B, D)), jnp.int32)
    out = diagnose_point(jax.random.key(0), PROCESS, table_apply(teacher_table), table_apply(student_table), x0,
                         1.0, num_lambda)
    log_t, log_s = normalised(teacher_table), normalised(student_table)
    rows = np.arange(D)
    np.testing.assert_allclose(out["teacher_loglik"], np.mean([log_t[rows, x].sum() for x in np.asarray(x0)]),
                               rtol=1e-5)
    np.testing.assert_allclose(out["student_loglik"], np.mean([log_s[rows, x].sum() for x in np.asarray(x0)]),
                               rtol=1e-5)
    np.testing.assert_allclose(out["marginal_kl"], (np.exp(log_t) * (log_t - log_s)).sum(), rtol=1e-5)
    assert abs(out["correlation"]) < 1e-5  # identical components: the mixture is its marginals' product


def test_lambda_dependent_student_has_positive_correlation():
    """Two product components that each put most mass on one constant sequence: F - G > 0 on those sequences."""
    sharp = np.full((2, D, V + 1), -4.0)
    sharp[0, :, 0] = sharp[1, :, 1] = 4.0

    def apply(params, x_t, t, lam, cond, rngs=None):
        return jnp.where((lam < 0.5)[:, None, None], params[0], params[1])

    x0 = jnp.zeros((B, D), jnp.int32)
    out = diagnose_point(jax.random.key(1), PROCESS, table_apply(sharp[0]), (apply, jnp.asarray(sharp)), x0, 1.0, 64)
    assert out["correlation"] > 0.5 * (D - 1) * np.log(2)  # ~ (D - 1) log 2 for an even split
    assert out["student_loglik"] < out["teacher_loglik"]  # the mixture spends half its mass elsewhere


def test_one_step_denoise_keeps_clean_data_and_draws_the_model_at_full_noise():
    rng = np.random.default_rng(2)
    table = rng.normal(size=(D, V + 1))
    x0 = jnp.asarray(rng.integers(0, V, size=(20_000, D)), jnp.int32)
    apply, params = table_apply(table)
    at_zero = one_step_denoise(jax.random.key(0), PROCESS, apply, params, x0, 0.0, False)
    np.testing.assert_array_equal(at_zero, x0)  # nothing masked: the carry-over keeps every token
    at_one = np.asarray(one_step_denoise(jax.random.key(1), PROCESS, apply, params, x0, 1.0, False))
    freq = np.stack([np.bincount(at_one[:, d], minlength=V) for d in range(D)]) / len(at_one)
    np.testing.assert_allclose(freq, np.exp(normalised(table)), atol=0.015)  # ~4 sigma of 20k draws


def test_one_step_denoise_draws_one_lambda_per_sequence():
    """A student whose two lambda halves are two constant sequences returns those sequences, half each."""
    sharp = np.full((2, D, V + 1), -9.0)
    sharp[0, :, 0] = sharp[1, :, 1] = 9.0

    def apply(params, x_t, t, lam, cond, rngs=None):
        return jnp.where((lam < 0.5)[:, None, None], params[0], params[1])

    x0 = jnp.zeros((4_000, D), jnp.int32)
    out = np.asarray(one_step_denoise(jax.random.key(3), PROCESS, apply, jnp.asarray(sharp), x0, 1.0, True))
    constant = (out == out[:, :1]).all(axis=1)
    assert constant.mean() > 0.99
    assert abs((out[:, 0] == 0).mean() - 0.5) < 0.04
