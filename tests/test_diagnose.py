"""di4c_jax.eval.diagnostics: diagnose_point and one_step_denoise against closed forms on a tiny masked space."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from di4c_jax import Denoiser
from di4c_jax.eval.diagnostics import DIAGNOSTICS, diagnose_point, one_step_denoise
from di4c_jax.processes import Masked, Uniform

V, D, B = 3, 4, 5
PROCESS = Masked(vocab_size=V, schedule="linear")  # t = 1 masks every position


def table_denoiser(table, mixture=False):
    """(Denoiser, params): logits are the fixed [D, K] table (the params), whatever x_t, t and lambda."""
    def apply(params, x_t, t, lam, cond, *, rngs=None):
        return jnp.broadcast_to(params, (x_t.shape[0], *params.shape))
    return Denoiser(apply, num_states=V + 1, num_positions=D, mixture=mixture), jnp.asarray(table, jnp.float32)


def two_sequence_denoiser(sharp):
    """A mixture Denoiser whose lambda halves use the two [D, K] tables of the params [2, D, K]."""
    def apply(params, x_t, t, lam, cond, *, rngs=None):
        return jnp.where((lam < 0.5)[:, None, None], params[0], params[1])
    return Denoiser(apply, num_states=V + 1, num_positions=D, mixture=True), jnp.asarray(sharp, jnp.float32)


def normalised(table):
    logp = table[:, :V] - np.log(np.exp(table[:, :V]).sum(-1, keepdims=True))
    return logp


@pytest.mark.parametrize("student_mixture", [False, True])  # a product student, or a mixture that ignores lam
@pytest.mark.parametrize("num_lambda", [1, 7])
def test_product_student_against_closed_form(num_lambda, student_mixture):
    rng = np.random.default_rng(0)
    teacher_table, student_table = rng.normal(size=(D, V + 1)), rng.normal(size=(D, V + 1))
    x0 = jnp.asarray(rng.integers(0, V, size=(B, D)), jnp.int32)
    teacher, teacher_params = table_denoiser(teacher_table)
    student, student_params = table_denoiser(student_table, mixture=student_mixture)
    out = diagnose_point(jax.random.key(0), process=PROCESS, teacher=teacher, teacher_params=teacher_params,
                         student=student, student_params=student_params, x0=x0, t=1.0, num_lambda=num_lambda)
    assert set(out) == set(DIAGNOSTICS)
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
    teacher, teacher_params = table_denoiser(sharp[0])
    student, student_params = two_sequence_denoiser(sharp)
    x0 = jnp.zeros((B, D), jnp.int32)
    out = diagnose_point(jax.random.key(1), process=PROCESS, teacher=teacher, teacher_params=teacher_params,
                         student=student, student_params=student_params, x0=x0, t=1.0, num_lambda=64)
    assert out["correlation"] > 0.5 * (D - 1) * np.log(2)  # ~ (D - 1) log 2 for an even split
    assert out["student_loglik"] < out["teacher_loglik"]  # the mixture spends half its mass elsewhere


def test_one_step_denoise_keeps_clean_data_and_draws_the_model_at_full_noise():
    rng = np.random.default_rng(2)
    table = rng.normal(size=(D, V + 1))
    x0 = jnp.asarray(rng.integers(0, V, size=(20_000, D)), jnp.int32)
    denoiser, params = table_denoiser(table)
    at_zero = one_step_denoise(jax.random.key(0), process=PROCESS, denoiser=denoiser, params=params, x0=x0, t=0.0)
    np.testing.assert_array_equal(at_zero, x0)  # nothing masked: the carry-over keeps every token
    at_one = np.asarray(one_step_denoise(jax.random.key(1), process=PROCESS, denoiser=denoiser, params=params, x0=x0,
                                         t=1.0))
    freq = np.stack([np.bincount(at_one[:, d], minlength=V) for d in range(D)]) / len(at_one)
    np.testing.assert_allclose(freq, np.exp(normalised(table)), atol=0.015)  # ~4 sigma of 20k draws


def test_one_step_denoise_draws_one_lambda_per_sequence():
    """A student whose two lambda halves are two constant sequences returns those sequences, half each."""
    sharp = np.full((2, D, V + 1), -9.0)
    sharp[0, :, 0] = sharp[1, :, 1] = 9.0
    student, params = two_sequence_denoiser(sharp)
    x0 = jnp.zeros((4_000, D), jnp.int32)
    out = np.asarray(one_step_denoise(jax.random.key(3), process=PROCESS, denoiser=student, params=params, x0=x0,
                                      t=1.0))
    constant = (out == out[:, :1]).all(axis=1)
    assert constant.mean() > 0.99
    assert abs((out[:, 0] == 0).mean() - 0.5) < 0.04


@pytest.mark.parametrize("process", [Masked(vocab_size=V, schedule="linear"), Uniform(num_states=V)],
                         ids=["masked", "uniform"])
def test_exact_posterior_loglik_is_bayes_rule(process):
    """log q(x0 | x_t) from the enumeration equals Bayes' rule done by hand, item by item."""
    from di4c_jax.eval.diagnostics import exact_posterior_loglik
    from di4c_jax.eval.exact import all_states

    dims, t = 3, 0.6
    states = all_states(dims, V)
    probs = np.random.default_rng(1).dirichlet(np.ones(len(states)))
    q = np.asarray(process.transition(jnp.asarray([t])))[0].astype(np.float64)
    x0 = states[np.random.default_rng(2).choice(len(states), 400, p=probs)]
    x_t = np.asarray(process.sample_xt(jax.random.key(3), jnp.asarray(x0), jnp.full((400,), t)))
    got = np.asarray(exact_posterior_loglik(process, jnp.asarray(x0), jnp.asarray(x_t), t, states=jnp.asarray(states),
                                            log_probs=jnp.log(jnp.asarray(probs, jnp.float32))))
    lik = lambda x, y: np.prod(q[x, y])  # noqa: E731
    want = [np.log(probs[np.all(states == a, 1)][0] * lik(a, b) / sum(p * lik(s, b) for s, p in zip(states, probs)))
            for a, b in zip(x0, x_t)]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_student_evaluated_in_blocks_gives_the_same_diagnostics():
    """max_rows splits the B x N components into blocks of sequences with the same lambdas: same values, and no
    block holds more than max_rows rows."""
    sharp = np.full((2, D, V + 1), -4.0)
    sharp[0, :, 0] = sharp[1, :, 1] = 4.0
    teacher, teacher_params = table_denoiser(sharp[0])
    student, student_params = two_sequence_denoiser(sharp)
    seen = []

    def counting_apply(params, x_t, t, lam, cond, *, rngs=None):
        seen.append(x_t.shape[0])
        return student.apply(params, x_t, t, lam, cond)

    counting = student.with_apply(counting_apply)
    x0 = jnp.asarray(np.random.default_rng(2).integers(0, 2, size=(B, D)), jnp.int32)
    kwargs = dict(process=PROCESS, teacher=teacher, teacher_params=teacher_params, student_params=student_params,
                  x0=x0, t=0.7, num_lambda=6)
    whole = diagnose_point(jax.random.key(3), student=student, **kwargs)
    blocks = diagnose_point(jax.random.key(3), student=counting, max_rows=13, **kwargs)
    assert seen == [12, 12, 6]  # 2 sequences x 6 lambdas per block, the last one left over
    for name in DIAGNOSTICS:
        np.testing.assert_allclose(blocks[name], whole[name], rtol=1e-6, atol=1e-6)
    assert abs(whole["correlation"]) > 0.1  # lambda matters, so equal values need the same lambdas per sequence
