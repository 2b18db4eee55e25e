"""The generic evaluator (a user's data, no known law): closed-form values on tiny arrays, and the held-out NELBO of
denoisers whose bound is known."""
import math

import jax.numpy as jnp
from jax import random
import numpy as np
import pytest

from di4c_jax import Denoiser
from di4c_jax.eval import generic
from di4c_jax.eval.nelbo import heldout_nelbo, marginal_denoiser
from di4c_jax.processes import build_process


def test_two_sample_tv_of_empirical_laws():
    a = np.array([[0, 0], [0, 1]])
    assert generic.two_sample_tv(a, np.array([[0, 0], [0, 0]]), 2) == pytest.approx(0.5)
    assert generic.two_sample_tv(a, a[::-1], 2) == 0.0
    assert generic.two_sample_tv(a, np.array([[1, 1]]), 2) == 1.0
    # {00: 1/2, 01: 1/2} against {00: 1/4, 01: 1/4, 10: 1/2}: 1/2 (1/4 + 1/4 + 1/2)
    assert generic.two_sample_tv(a, np.array([[0, 0], [0, 1], [1, 0], [1, 0]]), 2) == pytest.approx(0.5)


def test_two_sample_tv_floor():
    assert generic.two_sample_tv_floor(np.zeros((5, 3), int), 10, 7, 2) == 0.0  # one state: no noise
    # two equally likely states, one draw each: TV is 0 (same state) or 1, each with probability 1/2
    law = np.array([[0], [1]])
    assert generic.two_sample_tv_floor(law, 1, 1, 2, repeats=20_000) == pytest.approx(0.5, abs=0.02)
    # n = m = 2: TV = |B1 - B2| / 2 with B ~ Binomial(2, 1/2): E = 3/8
    assert generic.two_sample_tv_floor(law, 2, 2, 2, repeats=20_000) == pytest.approx(3 / 8, abs=0.02)


def test_marginals_and_marginal_kl():
    x = np.array([[0, 2], [1, 2], [0, 0], [0, 2]])
    np.testing.assert_allclose(generic.marginals(x, 3), [[0.75, 0.25, 0.0], [0.25, 0.0, 0.75]])
    # reference (1/2, 1/2); samples [0, 0] smoothed to (2.5 / 3, 0.5 / 3)
    kl = generic.marginal_kl(np.array([[0], [1]]), np.array([[0], [0]]), 2)
    assert kl == pytest.approx(0.5 * math.log(0.5 / (5 / 6)) + 0.5 * math.log(0.5 / (1 / 6)))
    assert generic.marginal_kl(x, np.repeat(x, 1000, axis=0), 3) < 1e-3  # the same laws: KL near 0


def test_pair_mutual_information_with_the_miller_madow_correction():
    n = 8
    copy = np.stack([np.arange(n) % 2, np.arange(n) % 2], axis=1)  # x_j = x_i, uniform bits
    independent = np.stack([np.arange(n) % 2, (np.arange(n) // 2) % 2], axis=1)  # all four pairs equally often
    # I = H_i + H_j - H_ij, each + (bins - 1) / 2n: copy ln2 + 1/2n; independent 0 + (1 + 1 - 3) / 2n
    assert generic.pair_mutual_information(copy, [(0, 1)], 2)[0] == pytest.approx(math.log(2) + 1 / (2 * n))
    assert generic.pair_mutual_information(independent, [(0, 1)], 2)[0] == pytest.approx(-1 / (2 * n))
    assert generic.mutual_information_error(copy, independent, 2, [(0, 1)]) == pytest.approx(math.log(2) + 1 / n)
    assert generic.mutual_information_error(copy, copy, 2, [(0, 1)]) == 0.0


def test_position_pairs():
    np.testing.assert_array_equal(generic.position_pairs(3), [[0, 1], [0, 2], [1, 2]])
    pairs = generic.position_pairs(40, max_pairs=10, seed=3)
    assert pairs.shape == (10, 2) and (pairs[:, 0] < pairs[:, 1]).all() and len({tuple(p) for p in pairs}) == 10
    assert ((pairs[:, 1] - pairs[:, 0]) == 1).sum() == 5  # half the budget on neighbours
    np.testing.assert_array_equal(pairs, generic.position_pairs(40, max_pairs=10, seed=3))


def _constant_denoiser(logits_fn, num_states, mixture=False):
    def apply(params, x_t, t, lam=None, cond=None, *, rngs=None):
        return logits_fn(x_t, lam)

    return Denoiser(apply, num_states=num_states, mixture=mixture)


def test_marginal_denoiser_averages_the_components():
    process = build_process("uniform", 2)
    # lam < 1/2: all mass on state 0; lam >= 1/2: on state 1 -> the lambda-marginal is (1/2, 1/2)
    sharp = lambda x_t, lam: jnp.where((lam[:, None, None] < 0.5) == (jnp.arange(2) == 0), 0.0, -1e9) \
        * jnp.ones(x_t.shape + (2,))  # noqa: E731
    mixture = _constant_denoiser(sharp, 2, mixture=True)
    logp = marginal_denoiser(mixture, process, num_lambda=4)(None, jnp.zeros((3, 5), jnp.int32), jnp.ones(3))
    np.testing.assert_allclose(np.exp(logp), 0.5, atol=1e-6)


def test_heldout_nelbo_of_a_uniform_denoiser_is_log_vocab():
    """MDLM with a constant uniform p(x0 | x_t) over V states: the bound is ln V (1 - eps)(1 - t_eps) per token."""
    vocab = 5
    process = build_process("masked", vocab)
    uniform = _constant_denoiser(lambda x_t, lam: jnp.zeros(x_t.shape + (vocab + 1,)), vocab + 1)
    x0 = np.random.default_rng(0).integers(0, vocab, (64, 8))
    value = heldout_nelbo(random.key(0), denoiser=uniform, params=None, process=process, x0=x0, repeats=8,
                          batch_size=48)
    assert value == pytest.approx(math.log(vocab), rel=0.03)
    as_mixture = _constant_denoiser(lambda x_t, lam: jnp.zeros(x_t.shape + (vocab + 1,)), vocab + 1, mixture=True)
    assert heldout_nelbo(random.key(0), denoiser=as_mixture, params=None, process=process, x0=x0, repeats=8,
                         batch_size=48, num_lambda=3) == pytest.approx(value, rel=1e-5)
