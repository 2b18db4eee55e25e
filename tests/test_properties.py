"""Property-based tests (hypothesis) of the core's invariants over random inputs: the mixture likelihood, the KL,
the forward kernels and the reverse kernels. Shapes are fixed per test so each compiles once; hypothesis varies the
values (seeds, times, temperatures)."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from di4c_jax.losses.mixture import kl_sum, mixture_log_likelihood
from di4c_jax.processes.registry import build_process

B, N, D, K, M = 2, 5, 3, 4, 6
SETTINGS = settings(max_examples=30, deadline=None, derandomize=True)
seeds = st.integers(0, 2**31 - 1)
temperatures = st.floats(0.1, 5.0)


def _logp(seed, temperature, shape):
    """Normalised log-probabilities over the last axis, sharp (small temperature) to flat."""
    logits = np.random.default_rng(seed).normal(size=shape) / temperature
    return np.asarray(jax.nn.log_softmax(jnp.asarray(logits, jnp.float32), axis=-1))


def _points(seed, shape, k):
    return np.random.default_rng(seed + 1).integers(0, k, size=shape).astype(np.int32)


@SETTINGS
@given(seed=seeds, temperature=temperatures, control_variate=st.booleans())
def test_mixture_likelihood_is_invariant_to_the_order_of_components(seed, temperature, control_variate):
    logp, x = _logp(seed, temperature, (B, N, D, K)), _points(seed, (B, M, D), K)
    perm = np.random.default_rng(seed + 2).permutation(N)
    a = mixture_log_likelihood(jnp.asarray(logp), jnp.asarray(x), control_variate)
    b = mixture_log_likelihood(jnp.asarray(logp[:, perm]), jnp.asarray(x), control_variate)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


@SETTINGS
@given(seed=seeds, temperature=temperatures)
def test_mixture_likelihood_equals_its_definition(seed, temperature):
    """F(x) = log (1/N) sum_n prod_d p_n^d(x_d) and, with the control variate, F(x) - sum_d log pbar^d(x_d)."""
    logp, x = _logp(seed, temperature, (B, N, D, K)), _points(seed, (B, M, D), K)
    p = np.exp(logp.astype(np.float64))
    at = np.stack([p[b][:, np.arange(D), x[b]] for b in range(B)])          # [B, N, M, D]
    f = np.log(np.prod(at, axis=-1).mean(axis=1))                              # [B, M]
    g = np.log(at.mean(axis=1)).sum(axis=-1)
    np.testing.assert_allclose(mixture_log_likelihood(jnp.asarray(logp), jnp.asarray(x), False), f, atol=2e-4)
    np.testing.assert_allclose(mixture_log_likelihood(jnp.asarray(logp), jnp.asarray(x), True), f - g, atol=2e-4)


@SETTINGS
@given(seed=seeds, temperature=temperatures)
def test_one_component_or_equal_components_reduce_to_the_product(seed, temperature):
    logp, x = _logp(seed, temperature, (B, 1, D, K)), _points(seed, (B, M, D), K)
    product = np.stack([logp[b, 0][np.arange(D), x[b]].sum(-1) for b in range(B)])
    repeated = np.repeat(logp, N, axis=1)
    for comps in (logp, repeated):
        np.testing.assert_allclose(mixture_log_likelihood(jnp.asarray(comps), jnp.asarray(x), False), product,
                                   atol=1e-4)
        np.testing.assert_allclose(mixture_log_likelihood(jnp.asarray(comps), jnp.asarray(x), True), 0.0, atol=1e-4)


@SETTINGS
@given(seed=seeds, t1=temperatures, t2=temperatures)
def test_kl_is_nonnegative_and_zero_only_at_equality(seed, t1, t2):
    logp, logq = _logp(seed, t1, (B, D, K)), _logp(seed + 7, t2, (B, D, K))
    kl = np.asarray(kl_sum(jnp.asarray(logp), jnp.asarray(logq)))
    assert np.all(kl >= -1e-5)
    exact = (np.exp(logp.astype(np.float64)) * (logp - logq)).sum(axis=(-2, -1))
    np.testing.assert_allclose(kl, exact, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(kl_sum(jnp.asarray(logp), jnp.asarray(logp)), 0.0, atol=1e-6)


PROCESSES = [("masked", {}), ("uniform", {}), ("gaussian", {"rate_sigma": 2.0, "q_sigma": 8.0})]


def _process(kind, options):
    return build_process(kind, K if kind != "gaussian" else 9, **options)


times = st.floats(0.02, 0.98)


@pytest.mark.parametrize("kind, options", PROCESSES, ids=[p[0] for p in PROCESSES])
@SETTINGS
@given(t=times, frac=st.floats(0.05, 0.95))
def test_forward_kernels_are_stochastic_and_compose(kind, options, t, frac):
    """q_{t|s} rows are distributions, and q_{t|0} = q_{s|0} q_{t|s} (Chapman-Kolmogorov)."""
    process = _process(kind, options)
    s = t * frac
    ts, ss = jnp.full((1,), t, jnp.float32), jnp.full((1,), s, jnp.float32)
    q_ts = np.asarray(process.transition(ts, ss), np.float64)[0]
    assert np.all(q_ts >= -1e-6)
    np.testing.assert_allclose(q_ts.sum(-1), 1.0, atol=2e-5)
    q_t0 = np.asarray(process.transition(ts), np.float64)[0]
    q_s0 = np.asarray(process.transition(ss), np.float64)[0]
    np.testing.assert_allclose(q_s0 @ q_ts, q_t0, atol=2e-4)


@pytest.mark.parametrize("kind, options", PROCESSES, ids=[p[0] for p in PROCESSES])
@SETTINGS
@given(seed=seeds, temperature=temperatures, t=times, frac=st.floats(0.0, 0.95))
def test_reverse_kernels_normalise(kind, options, seed, temperature, t, frac):
    """sum_{x_s} sum_{x0} q(x_s | x_t, x0) p(x0 | x_t) = 1 at every dimension, for x_t drawn from the process."""
    process = _process(kind, options)
    k = process.num_states
    x0 = jnp.asarray(_points(seed, (B, D), k if kind != "masked" else k - 1))
    ts = jnp.full((B,), t, jnp.float32)
    x_t = process.sample_xt(jax.random.key(seed % 1000), x0, ts)
    logits = jnp.asarray(np.random.default_rng(seed).normal(size=(B, D, k)) / temperature, jnp.float32)
    logp_x0 = process.x0_logprobs(logits, x_t)
    out = process.reverse_step_logprobs(x_t, logp_x0, ts, ts * frac)
    np.testing.assert_allclose(jax.nn.logsumexp(out, axis=-1), 0.0, atol=5e-5)
    assert math.isfinite(float(jnp.max(out)))
