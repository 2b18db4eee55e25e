"""HMM synthetic language: forward algorithm vs enumeration of hidden paths, sampler, entropy rate."""
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from di4c_jax.eval.exact import all_states, empirical_law, mc_noise_floor, state_index, tv_distance
from di4c_jax.eval.hmm import (hmm_entropy_rate, hmm_log_likelihood, hmm_prefix_log_likelihood, hmm_window_law,
                               random_hmm, sample_hmm, window_tokens)

H, V, L = 3, 4, 4


@pytest.fixture(scope="module")
def hmm():
    return random_hmm(jax.random.key(0), H, V, trans_sharpness=1.0, emit_sharpness=1.0)


def brute_force_law(log_init, log_trans, log_emit):
    """p(x) for every x in V^L by summing over all H^L hidden paths; index = base-V, first token most significant."""
    pi, A, B = (np.exp(np.asarray(a, np.float64)) for a in (log_init, log_trans, log_emit))
    p = np.zeros(V**L)
    for i, x in enumerate(itertools.product(range(V), repeat=L)):
        for z in itertools.product(range(H), repeat=L):
            w = pi[z[0]] * B[z[0], x[0]]
            for j in range(1, L):
                w *= A[z[j - 1], z[j]] * B[z[j], x[j]]
            p[i] += w
    return p


def test_log_likelihood_equals_path_enumeration(hmm):
    p = brute_force_law(*hmm)
    assert p.sum() == pytest.approx(1.0, abs=1e-5)
    x = np.stack(np.unravel_index(np.arange(V**L), (V,) * L), axis=1).astype(np.int32)
    np.testing.assert_allclose(np.exp(np.asarray(hmm_log_likelihood(x, *hmm), np.float64)), p, rtol=1e-4, atol=1e-9)


def test_prefix_likelihoods_are_marginals(hmm):
    x = np.asarray(sample_hmm(jax.random.key(1), 8, 6, *hmm)[0])
    prefix = hmm_prefix_log_likelihood(x, *hmm)
    np.testing.assert_allclose(prefix[:, 2], hmm_log_likelihood(x[:, :3], *hmm), rtol=1e-5)


def test_sampler_matches_exact_law(hmm):
    p = brute_force_law(*hmm)
    n = 100_000
    x, z = sample_hmm(jax.random.key(2), n, L, *hmm)
    assert x.shape == z.shape == (n, L)
    assert tv_distance(p, empirical_law(x, V)) < 3 * mc_noise_floor(p, n)


def test_entropy_rate_of_iid_hmm_is_emission_entropy():
    # one hidden state: i.i.d. tokens, entropy rate = H(emission), zero variance per token position
    emit = jnp.log(jnp.array([[0.5, 0.25, 0.125, 0.125]]))
    rate, stderr = hmm_entropy_rate(jax.random.key(3), jnp.zeros(1), jnp.zeros((1, 1)), emit,
                                    num_samples=256, length=256, burn_in=16)
    assert rate == pytest.approx(1.75 * np.log(2), abs=4 * stderr + 1e-3)


def test_bad_tokens_are_named(hmm):
    with pytest.raises(ValueError, match=rf"ids outside \[0, {V}\): id {V} at index \(0, 1\)"):
        hmm_log_likelihood(np.array([[0, V]]), *hmm)  # host array: check_tokens
    with pytest.raises(ValueError, match=rf"must lie in \[0, {V}\), got range \[0, {V}\]"):
        hmm_log_likelihood(jnp.array([[0, V]]), *hmm)  # device array: the likelihood's own check


@pytest.mark.parametrize("window", [1, 2, 4])
def test_window_law_equals_enumerated_marginal_averaged_over_positions(window):
    hmm = random_hmm(jax.random.key(3), 3, 3, trans_sharpness=2.0, emit_sharpness=2.0)
    length, v = 4, 3
    seqs = all_states(length, v)
    p = np.exp(np.asarray(hmm_log_likelihood(seqs, *hmm), np.float64))
    expected = np.zeros(v ** window)
    for start in range(length - window + 1):
        np.add.at(expected, state_index(seqs[:, start:start + window], v), p)
    expected /= length - window + 1
    np.testing.assert_allclose(hmm_window_law(*hmm, length=length, window=window), expected, atol=1e-6)


def test_window_tokens_pools_every_run_of_consecutive_tokens():
    x = np.array([[0, 1, 2], [3, 4, 5]])
    np.testing.assert_array_equal(window_tokens(x, 2), [[0, 1], [1, 2], [3, 4], [4, 5]])
    with pytest.raises(ValueError, match="window"):
        window_tokens(x, 4)


def test_masked_posterior_is_bayes_rule_over_the_completions(hmm):
    """log q(x0 | x_t) = log p(x0) - log sum of p over every completion of x_t's masked positions (enumerated)."""
    from di4c_jax.eval.hmm import hmm_masked_posterior_loglik

    x0 = np.asarray(sample_hmm(jax.random.key(5), 6, L, *hmm)[0])
    masks = np.random.default_rng(0).random(x0.shape) < 0.5
    masks[0] = False  # nothing masked: log q = 0
    masks[1] = True  # everything masked: log q = log p(x0)
    x_t = np.where(masks, V, x0)
    got = np.asarray(hmm_masked_posterior_loglik(jnp.asarray(x0), jnp.asarray(x_t), V, *hmm))
    every = all_states(L, V)
    log_p = np.asarray(hmm_log_likelihood(jnp.asarray(every), *hmm), np.float64)
    for i in range(len(x0)):
        fits = np.all((every == x_t[i]) | masks[i], axis=1)
        want = log_p[state_index(x0[i][None], V)[0]] - np.log(np.exp(log_p[fits]).sum())
        assert got[i] == pytest.approx(want, abs=1e-4)
    assert got[0] == pytest.approx(0.0, abs=1e-5)
    with pytest.raises(ValueError, match="mask_id must be the vocabulary size 4"):
        hmm_masked_posterior_loglik(jnp.asarray(x0), jnp.asarray(x_t), 7, *hmm)


def test_masked_posterior_samples_follow_the_posterior(hmm):
    """Draws of `hmm_masked_posterior_sample` keep x_t's tokens and follow q(x0 | x_t) (chi-square against the
    enumerated posterior), for a partly and a fully masked x_t."""
    import scipy.stats

    from di4c_jax.eval.hmm import hmm_masked_posterior_loglik, hmm_masked_posterior_sample

    x_t = np.array([[V, 2, V, V], [V, V, V, V]])
    num = 20_000
    draws = np.asarray(hmm_masked_posterior_sample(jax.random.key(3), jnp.asarray(x_t), V, *hmm, num=num))
    assert draws.shape == (2, num, L)
    every = all_states(L, V)
    for i in range(len(x_t)):
        fits = every[np.all((every == x_t[i]) | (x_t[i] == V), axis=1)]
        assert np.all(np.isin(state_index(draws[i], V), state_index(fits, V)))
        law = np.exp(np.asarray(hmm_masked_posterior_loglik(jnp.asarray(fits), jnp.repeat(jnp.asarray(x_t[i:i + 1]),
                                                                                           len(fits), 0), V, *hmm),
                                np.float64))
        counts = np.array([np.sum(state_index(draws[i], V) == j) for j in state_index(fits, V)])
        assert scipy.stats.chisquare(counts, num * law / law.sum()).pvalue > 1e-3
    with pytest.raises(ValueError, match="mask_id must be the vocabulary size 4"):
        hmm_masked_posterior_sample(jax.random.key(0), jnp.asarray(x_t), 7, *hmm)
