"""Consistency per component (the recipe field consis_coupling): the objective's identity per item, and in
di4c_loss the pairing of each composition sample with the t-side component of the lambda that drew it."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from di4c_jax import Denoiser
from di4c_jax.losses import di4c_config, di4c_loss, di4c_objective
from di4c_jax.processes import DiscreteGaussian
from test_di4c_loss import D, K, M, log_softmax_np, random_objective_inputs, rbg_key


def test_consis_coupling_mixes_the_mixture_kl_with_each_samples_own_component():
    """consis_comp = -mean_m sum_d logp_t[b, m, d, x_hat[b, m, d]] (component m scores the sample it is paired with),
    and consis = mean_B w_consis ((1 - a) (consis_cor + consis_ind) + a consis_comp); a = 0 is the mixture loss."""
    batch = 3
    logp_t, logp_u, logp_teacher, x0, x_hat = random_objective_inputs(np.random.default_rng(5), batch)
    w_consis = np.array([1.0, 0.0, 0.3])

    def run(a, items=slice(None), w=w_consis):
        n_items = len(range(batch)[items])
        one = lambda v: jnp.broadcast_to(jnp.asarray(v, jnp.float32), (n_items,))  # noqa: E731
        arrays = [jnp.asarray(v[items]) for v in (logp_t, x0, logp_teacher, logp_u, x_hat)]
        return jax.jit(functools.partial(di4c_objective, consis_coupling=a))(
            logp_t=arrays[0], x0=arrays[1], logp_teacher_t=arrays[2], logp_u=arrays[3], x_hat=arrays[4],
            time_coeff=one(0.5), w_distil=one(1.0), w_consis=one(w[items]))[1]

    own = -np.array([np.mean([logp_t[b, m, np.arange(D), x_hat[b, m]].sum() for m in range(M)])
                     for b in range(batch)])
    per_item_mixture = np.array([float(run(0.0, slice(i, i + 1), np.ones(batch))["consis"]) for i in range(batch)])
    base = run(0.0)
    assert float(base["consis_comp"]) == 0.0
    np.testing.assert_allclose(base["consis"], np.mean(w_consis * per_item_mixture), rtol=1e-5)
    for a in (0.5, 1.0):
        aux = run(a)
        np.testing.assert_allclose(aux["consis_comp"], own.mean(), rtol=1e-5)
        for name in ("consis_cor", "consis_ind", "data", "distil"):
            np.testing.assert_allclose(aux[name], base[name], rtol=1e-6)
        np.testing.assert_allclose(aux["consis"], np.mean(w_consis * ((1 - a) * per_item_mixture + a * own)),
                                   rtol=1e-5)
        np.testing.assert_allclose(aux["loss"], aux["distil"] + aux["data"] + aux["consis"], rtol=1e-6)
    common = dict(logp_t=jnp.asarray(logp_t), x0=jnp.asarray(x0), logp_teacher_t=jnp.asarray(logp_teacher),
                  time_coeff=jnp.ones(batch), w_distil=None, w_consis=jnp.ones(batch))
    with pytest.raises(ValueError, match=r"consis_coupling must be in \[0, 1\], got 1.5"):
        di4c_objective(**common, logp_u=jnp.asarray(logp_u), x_hat=jnp.asarray(x_hat), consis_coupling=1.5)
    with pytest.raises(ValueError, match="needs M <= N, got M = 4 > N = 3"):
        di4c_objective(**common, logp_u=jnp.zeros((batch, 4, D, K)), x_hat=jnp.zeros((batch, 4, D), jnp.int32),
                       consis_coupling=0.5)


def test_consis_coupling_scores_each_composition_sample_under_the_lambda_that_drew_it():
    """A student whose component depends on lambda only (not on x_t or t): its u-side and t-side components at the
    same lambda are one law, so with the lambdas paired consis_comp is an unbiased estimate of D E_lam H(p_lam)
    (0.589 nats per dimension here); unpaired lambdas would give the cross-entropy D E_{lam, lam'} CE(p_lam, p_lam')
    (3.30 per dimension)."""
    classes, dims, batch, scale = 4, 3, 256, 8.0
    process = DiscreteGaussian(num_states=classes)
    lam_only = lambda p, x, t, lam, c, *, rngs=None: jnp.broadcast_to(  # noqa: E731
        (p * (lam - 0.5))[:, None, None] * jnp.arange(classes), (x.shape[0], dims, classes))
    student = Denoiser(lam_only, num_states=classes, mixture=True)
    teacher = Denoiser(lambda p, x, t, lam, c, *, rngs=None: jnp.zeros((x.shape[0], dims, classes)),
                       num_states=classes)
    config = di4c_config("tauldr", num_lambda=4, consis_coupling=1.0, student_dropout=False)
    x0 = jnp.zeros((batch, dims), jnp.int32)
    loss = jax.jit(lambda k: di4c_loss(k, student=student, student_params=jnp.float32(scale), teacher=teacher,
                                       teacher_params=None, process=process, x0=x0, config=config)[1])
    estimates = np.array([float(loss(rbg_key(seed))["consis_comp"]) for seed in range(8)])
    lam = (np.arange(4000) + 0.5) / 4000
    logp = log_softmax_np(scale * (lam[:, None] - 0.5) * np.arange(classes))
    entropy_mean = -np.sum(np.exp(logp) * logp, axis=1).mean()
    # 8 x 256 items x 4 samples x 3 dims, per-dimension std 0.82: standard error ~0.02 for the sum over dims
    np.testing.assert_allclose(estimates.mean(), dims * entropy_mean, atol=0.08)
    with pytest.raises(ValueError, match="product"):
        di4c_loss(rbg_key(0), student=teacher, student_params=None, teacher=teacher, teacher_params=None,
                  process=process, x0=x0, config=config)
    with pytest.raises(ValueError, match="needs num_composition <= num_lambda, got 8 > 4"):
        di4c_config("sdtt", num_lambda=4, num_composition=8, consis_coupling=0.5)
    with pytest.raises(ValueError, match=r"consis_coupling must be in \[0, 1\], got -0.1"):
        di4c_config("maskgit", consis_coupling=-0.1)
