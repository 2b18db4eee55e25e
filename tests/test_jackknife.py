"""The jackknife estimate of the N-sample log mixture density: leave-one-out reductions, closed forms, bias."""
import dataclasses
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from di4c_jax.losses import di4c_config, di4c_loss, di4c_objective, mixture_log_likelihood
from di4c_jax.losses.mixture import leave_one_out_logsumexp, mixture_log_density_at
from test_di4c_loss import net, rbg_key, setup


def _brute_leave_one_out(a, axis):
    parts = [jax.nn.logsumexp(jnp.delete(a, i, axis=axis), axis=axis) for i in range(a.shape[axis])]
    return jnp.stack(parts, axis=axis)


@pytest.mark.parametrize("dominant", [False, True])
def test_leave_one_out_logsumexp_equals_deleting_each_entry_with_gradients(dominant):
    a = jax.random.normal(jax.random.key(0), (3, 5, 4)) * 3.0
    if dominant:  # one entry carries all the mass: its leave-one-out value is ~1e6 below the total
        a = a.at[:, 2].set(-1e6).at[:, 1].set(5.0)
        a = a.at[:, 0].set(-1e6).at[:, 3:].set(-1e6)
    got, want = leave_one_out_logsumexp(a, 1), _brute_leave_one_out(a, 1)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-4)
    weights = jax.random.normal(jax.random.key(1), a.shape)
    g_got = jax.grad(lambda x: jnp.sum(weights * leave_one_out_logsumexp(x, 1)))(a)
    g_want = jax.grad(lambda x: jnp.sum(weights * _brute_leave_one_out(x, 1)))(a)
    assert bool(jnp.all(jnp.isfinite(g_got)))
    np.testing.assert_allclose(g_got, g_want, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="at least 2 entries"):
        leave_one_out_logsumexp(a[:, :1], 1)


def _log_components(key, num, dims, classes, scale=2.5):
    return jax.nn.log_softmax(scale * jax.random.normal(key, (num, dims, classes)), axis=-1)


@pytest.mark.parametrize("control_variate", [False, True])
def test_jackknife_equals_its_definition_by_deleting_components(control_variate):
    logp = _log_components(jax.random.key(2), 6, 3, 4)[None]  # [1, N, D, K]
    x = jax.random.randint(jax.random.key(3), (1, 5, 3), 0, 4)
    full = mixture_log_likelihood(logp, x, control_variate)
    out = jnp.stack([mixture_log_likelihood(jnp.delete(logp, i, axis=1), x, control_variate) for i in range(6)])
    want = 6 * full - 5 * jnp.mean(out, axis=0)
    np.testing.assert_allclose(mixture_log_likelihood(logp, x, control_variate, jackknife=True), want, atol=2e-4)


def test_jackknife_of_equal_components_is_the_product_and_needs_two():
    comp = _log_components(jax.random.key(4), 1, 3, 4)
    logp = jnp.repeat(comp, 5, axis=0)[None]
    x = jax.random.randint(jax.random.key(5), (1, 7, 3), 0, 4)
    product = jnp.sum(jnp.take_along_axis(comp[0][None], jnp.swapaxes(x[0], 0, 1)[None], axis=-1)[0], axis=0)
    np.testing.assert_allclose(mixture_log_likelihood(logp, x, False, jackknife=True)[0], product, atol=1e-4)
    np.testing.assert_allclose(mixture_log_likelihood(logp, x, True, jackknife=True), 0.0, atol=1e-4)
    with pytest.raises(ValueError, match="N >= 2, got N = 1"):
        mixture_log_density_at(jnp.zeros((1, 1, 3, 2)), jackknife=True)
    with pytest.raises(ValueError, match="jackknife.*num_lambda >= 2, got 1"):
        di4c_config("tauldr", num_lambda=1, jackknife=True)


@pytest.mark.parametrize("control_variate", [False, True])
def test_jackknife_removes_most_of_the_finite_n_bias(control_variate):
    """lambda uniform over a pool of 4 product components: the exact F (- G) by enumeration against the means of
    the plain and jackknife N = 4 estimates over 40000 independent draws of the N components. The components differ
    moderately (logit scale 0.8), where the bias's 1/N expansion holds; with one rare component carrying most of the
    density at a point (scale 2.5) the jackknife removes about half of the bias and can overshoot."""
    pool = _log_components(jax.random.key(6), 4, 3, 3, scale=0.8)  # [P, D, K]
    points = jnp.asarray(list(itertools.product(range(3), repeat=3)))[:6]  # 6 points x, D = 3
    comp_at = jnp.sum(jnp.take_along_axis(pool[:, None], jnp.swapaxes(points, 0, 1)[None, None], axis=-1)[:, 0],
                      axis=1)  # [P, points]: log prod_d p_j(x_d)
    exact = jax.nn.logsumexp(comp_at, axis=0) - np.log(4)
    if control_variate:
        marginal = jax.nn.logsumexp(pool, axis=0) - np.log(4)  # [D, K]
        exact = exact - jnp.sum(jnp.take_along_axis(marginal, jnp.swapaxes(points, 0, 1), axis=-1), axis=0)
    draws, num = 40000, 4
    picks = jax.random.randint(jax.random.key(7), (draws, num), 0, 4)
    logp = pool[picks]  # [draws, N, D, K]
    x = jnp.broadcast_to(points[None], (draws, *points.shape))
    plain = mixture_log_likelihood(logp, x, control_variate)
    jack = mixture_log_likelihood(logp, x, control_variate, jackknife=True)
    bias_plain, bias_jack = jnp.mean(plain, 0) - exact, jnp.mean(jack, 0) - exact
    se_jack = jnp.std(jack, 0) / np.sqrt(draws)
    assert float(jnp.max(jnp.abs(bias_plain))) > 0.1  # the N = 4 estimate's bias is material here
    assert bool(jnp.all(bias_plain < 0)) or control_variate  # Jensen: F alone is biased low
    # the jackknife's bias is a small fraction of the plain one's, up to Monte-Carlo noise
    assert float(jnp.max(jnp.abs(bias_jack) - 4 * se_jack)) < 0.15 * float(jnp.max(jnp.abs(bias_plain)))
    assert float(jnp.mean(jnp.abs(bias_jack))) < 0.2 * float(jnp.mean(jnp.abs(bias_plain)))


@pytest.mark.parametrize("preset", ["tauldr", "sdtt"])
def test_the_recipe_field_jackknifes_the_loss_and_nothing_else(preset):
    """With the same key, jackknife=True changes only the correlation terms (data_cor, consis_cor); the marginal KLs
    and the distillation term are the default's bit for bit, and the gradient is finite."""
    process, config, student, teacher, x0, cond = setup(preset, student_dropout=False)

    def run(jackknife):
        recipe = dataclasses.replace(config, jackknife=jackknife)
        loss = lambda p: di4c_loss(rbg_key(3), student=net(process, True), student_params=p,  # noqa: E731
                                   teacher=net(process, False), teacher_params=teacher, process=process, x0=x0,
                                   config=recipe, cond=cond)
        return jax.jit(jax.value_and_grad(loss, has_aux=True))(student)

    (_, aux), _ = run(False)
    (jack, aux_j), grad_j = run(True)
    for name in ("data_ind", "consis_ind", "distil"):
        np.testing.assert_array_equal(aux[name], aux_j[name])
    assert float(aux["data_cor"]) != float(aux_j["data_cor"]) and float(aux["consis_cor"]) != float(aux_j["consis_cor"])
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grad_j))
    np.testing.assert_allclose(jack, aux_j["loss"], rtol=1e-6)


def test_objective_correlation_terms_are_the_jackknifed_densities():
    k = jax.random.split(jax.random.key(8), 4)
    logp_t = jax.nn.log_softmax(jax.random.normal(k[0], (2, 5, 3, 4)), -1)
    logp_u = jax.nn.log_softmax(jax.random.normal(k[1], (2, 3, 3, 4)), -1)
    x0, x_hat = jax.random.randint(k[2], (2, 3), 0, 4), jax.random.randint(k[3], (2, 3, 3), 0, 4)
    ones = jnp.ones((2,))
    _, aux = di4c_objective(logp_t=logp_t, x0=x0, logp_teacher_t=logp_u[:, 0], logp_u=logp_u, x_hat=x_hat,
                            time_coeff=ones, w_distil=None, w_consis=ones, jackknife=True)
    np.testing.assert_allclose(aux["data_cor"], -jnp.mean(mixture_log_likelihood(logp_t, x0[:, None], jackknife=True)),
                               rtol=1e-6)
    np.testing.assert_allclose(aux["consis_cor"], -jnp.mean(mixture_log_likelihood(logp_t, x_hat, jackknife=True)),
                               rtol=1e-6)
