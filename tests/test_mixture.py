"""Mixture helpers against brute-force numpy on tiny spaces."""
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from di4c_jax.losses import kl_sum, mixture_log_likelihood, mixture_log_marginal, sample_components
from di4c_jax.processes.base import NEG_INF

B, N, M, D, K = 2, 3, 5, 3, 4


def random_logp(rng, *shape, scale=1.5):
    logits = scale * rng.normal(size=shape)
    return logits - np.log(np.exp(logits).sum(-1, keepdims=True))


def brute_loglik(logp, x, control_variate):
    """log((1/N) sum_n prod_d p_n^d(x_d)) [- sum_d log pbar^d(x_d)], by explicit loops in float64."""
    p = np.exp(logp.astype(np.float64))
    out = np.zeros(x.shape[:2])
    for b, m in itertools.product(range(x.shape[0]), range(x.shape[1])):
        comp = [np.prod([p[b, n, d, x[b, m, d]] for d in range(p.shape[2])]) for n in range(p.shape[1])]
        out[b, m] = np.log(np.mean(comp))
        if control_variate:
            out[b, m] -= sum(np.log(p[b, :, d, x[b, m, d]].mean()) for d in range(p.shape[2]))
    return out


def test_marginal_matches_numpy():
    logp = random_logp(np.random.default_rng(0), B, N, D, K)
    want = np.log(np.exp(logp).mean(axis=1))
    np.testing.assert_allclose(mixture_log_marginal(jnp.asarray(logp, jnp.float32)), want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("control_variate", [True, False])
def test_likelihood_matches_numpy(control_variate):
    rng = np.random.default_rng(1)
    logp = random_logp(rng, B, N, D, K)
    x = rng.integers(0, K, size=(B, M, D))
    got = mixture_log_likelihood(jnp.asarray(logp, jnp.float32), jnp.asarray(x), control_variate)
    assert got.shape == (B, M)
    np.testing.assert_allclose(got, brute_loglik(logp, x, control_variate), rtol=1e-5, atol=1e-5)


def test_likelihood_is_exact_density_of_mixture():
    """Summing exp(F) over all K^D states gives 1 (F is a normalised density for fixed lambdas)."""
    logp = random_logp(np.random.default_rng(2), 1, N, D, K)
    states = np.array(list(itertools.product(range(K), repeat=D)))[None]  # [1, K^D, D]
    f = mixture_log_likelihood(jnp.asarray(logp, jnp.float32), jnp.asarray(states), control_variate=False)
    np.testing.assert_allclose(jnp.sum(jnp.exp(f)), 1.0, rtol=1e-5)


def test_control_variate_accurate_at_large_d():
    """With D = 3000 the log-densities are ~ -1e4; F - G stays accurate to float32 resolution of O(1) numbers."""
    rng = np.random.default_rng(3)
    logp = random_logp(rng, 1, 4, 3000, 8)
    x = rng.integers(0, 8, size=(1, 2, 3000))
    got = mixture_log_likelihood(jnp.asarray(logp, jnp.float32), jnp.asarray(x), control_variate=True)
    logp32 = logp.astype(np.float32).astype(np.float64)  # same inputs as the jax call, evaluated in float64
    g = np.take_along_axis(logp32, np.swapaxes(x, 1, 2)[:, None], axis=-1)  # [1, N, D, M]
    f = np.logaddexp.reduce(g.sum(2), axis=1) - np.log(4)
    g_marg = (np.logaddexp.reduce(g, axis=1) - np.log(4)).sum(1)
    np.testing.assert_allclose(got, f - g_marg, atol=2e-3)
    assert np.all(np.abs(f) > 5e3)


def test_kl_sum_with_neg_inf_entries_is_exact_and_finite():
    rng = np.random.default_rng(4)
    p = rng.dirichlet(np.ones(K), size=(B, D))
    q = rng.dirichlet(np.ones(K), size=(B, D))
    p[:, :, 0] = 0.0  # impossible under p
    p /= p.sum(-1, keepdims=True)
    q[:, 1, 0] = 0.0  # impossible under both p and q at d = 1
    q /= q.sum(-1, keepdims=True)
    to_log = lambda a: jnp.asarray(np.where(a > 0, np.log(np.where(a > 0, a, 1)), NEG_INF), jnp.float32)
    want = np.where(p > 0, p * (np.log(np.where(p > 0, p, 1)) - np.log(np.where(q > 0, q, 1))), 0).sum((1, 2))
    got = kl_sum(to_log(p), to_log(q))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    grad = jax.grad(lambda lq: kl_sum(to_log(p), lq).sum())(to_log(q))
    assert np.all(np.isfinite(grad))
    np.testing.assert_allclose(grad, -p, atol=1e-6)


def test_kl_sum_broadcasts_over_leading_axes():
    rng = np.random.default_rng(5)
    logp, logq = random_logp(rng, B, 1, D, K), random_logp(rng, B, N, D, K)
    got = kl_sum(jnp.asarray(logp), jnp.asarray(logq))
    assert got.shape == (B, N)
    np.testing.assert_allclose(got[:, 1], kl_sum(jnp.asarray(logp[:, 0]), jnp.asarray(logq[:, 1])), rtol=1e-6)


def test_sample_components_frequencies_and_support():
    rng = np.random.default_rng(6)
    logp = random_logp(rng, 1, 2, 2, K)
    logp[0, 1, 0, 2] = NEG_INF
    logp = logp - np.log(np.exp(logp).sum(-1, keepdims=True))
    draws = 20000
    x = sample_components(jax.random.key(0), logp=jnp.broadcast_to(jnp.asarray(logp, jnp.float32), (draws, 2, 2, K)))
    assert x.dtype == jnp.int32 and x.shape == (draws, 2, 2)
    freq = np.stack([(np.asarray(x) == k).mean(0) for k in range(K)], -1)
    np.testing.assert_allclose(freq, np.exp(logp[0]), atol=0.015)  # ~4 sigma at n = 20000
    assert freq[1, 0, 2] == 0.0
    # components and positions are drawn independently: correlation between two coordinates ~ 0
    corr = np.corrcoef(np.asarray(x[:, 0, 0]), np.asarray(x[:, 1, 1]))[0, 1]
    assert abs(corr) < 0.03


def test_likelihood_shape_errors():
    logp = jnp.zeros((B, N, D, K))
    with pytest.raises(ValueError, match="x must be"):
        mixture_log_likelihood(logp, jnp.zeros((B, D), jnp.int32))
    with pytest.raises(ValueError, match="x must be"):
        mixture_log_likelihood(logp, jnp.zeros((B, M, D + 1), jnp.int32))
    with pytest.raises(ValueError, match="logp must be"):
        mixture_log_likelihood(logp[0], jnp.zeros((B, M, D), jnp.int32))
