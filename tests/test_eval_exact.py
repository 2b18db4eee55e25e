"""Exact small-space metrics and the test laws: hand-made laws, convergence, noise floor, exact samplers."""
import itertools
import math

import jax
import numpy as np
import pytest

from di4c_jax.eval.exact import all_states, empirical_law, kl_divergence, mc_noise_floor, state_index, tv_distance
from di4c_jax.eval.laws import IsingChain, ParityLaw, ProductMixture


def test_state_index_is_base_k_first_dim_most_significant():
    x = np.array([[0, 0], [0, 2], [1, 0], [2, 1]])
    np.testing.assert_array_equal(state_index(x, 3), [0, 2, 3, 7])
    np.testing.assert_array_equal(all_states(2, 3)[7], [2, 1])


def test_tv_and_kl_on_hand_made_laws():
    p, q = np.array([0.5, 0.5, 0.0]), np.array([0.25, 0.25, 0.5])
    assert tv_distance(p, q) == pytest.approx(0.5)
    assert kl_divergence(p, q) == pytest.approx(math.log(2))
    assert kl_divergence(q, p) == math.inf
    # smoothing mixes q with the uniform law: q_s = (1 - a) q + a / 3
    a = 0.3
    ps = 0.7 * p + 0.1
    assert kl_divergence(q, p, smoothing=a) == pytest.approx(float(np.sum(q * np.log(q / ps))))
    assert tv_distance(p, p) == 0 and kl_divergence(p, p) == 0


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="range"):
        empirical_law(np.array([[0, 3]]), 3)
    with pytest.raises(ValueError, match="probability vector"):
        tv_distance(np.array([0.5, 0.6]), np.array([0.5, 0.5]))
    with pytest.raises(ValueError, match="int\\[n, D\\]"):
        empirical_law(np.array([0, 1]), 2)


def test_empirical_law_converges_within_noise_floor():
    law = ProductMixture.random(jax.random.key(0), 3, 4, 3)
    p, n = law.probs(), 100_000
    q = empirical_law(law.sample(jax.random.key(1), n), 3)
    floor = mc_noise_floor(p, n)
    assert tv_distance(p, q) < 3 * floor
    assert floor < 0.02


def test_empirical_law_handles_a_million_samples():
    x = np.random.default_rng(0).integers(0, 4, size=(1_000_000, 8))
    q = empirical_law(x, 4)
    assert q.shape == (4**8,) and q.sum() == pytest.approx(1.0)


@pytest.mark.parametrize("n", [50, 2000])
def test_mc_noise_floor_matches_simulation(n):
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.full(30, 0.5))
    sims = [0.5 * np.abs(rng.multinomial(n, p) / n - p).sum() for _ in range(2000)]
    assert mc_noise_floor(p, n) == pytest.approx(np.mean(sims), rel=0.05)
    normal_approx = np.sum(np.sqrt(p * (1 - p) / (2 * np.pi * n)))
    if n == 2000:
        assert mc_noise_floor(p, n) == pytest.approx(normal_approx, rel=0.2)


LAWS = [
    ProductMixture.random(jax.random.key(3), 4, 5, 3),
    ParityLaw.uniform(5, 2),
    ParityLaw(np.random.default_rng(1).uniform(0.2, 1.0, size=(4, 3))),
    IsingChain(6, 2, coupling=0.8, field=0.3),
    IsingChain(4, 4, coupling=-0.7, field=0.2),
]


@pytest.mark.parametrize("law", LAWS, ids=lambda l: type(l).__name__)
def test_law_probs_sum_to_one_and_sampler_matches(law):
    p = law.probs()
    assert p.shape == (law.num_states**law.num_dims,)
    assert p.sum() == pytest.approx(1.0)
    n = 200_000
    x = np.asarray(law.sample(jax.random.key(7), n))
    assert x.shape == (n, law.num_dims) and x.dtype == np.int32
    assert tv_distance(p, empirical_law(x, law.num_states)) < 3 * mc_noise_floor(p, n)


def test_parity_law_has_no_odd_mass():
    law = ParityLaw(np.random.default_rng(2).uniform(0.2, 1.0, size=(5, 3)))
    p = law.probs()
    odd = all_states(5, 3).sum(1) % 2 == 1
    assert np.all(p[odd] == 0) and np.all(p[~odd] > 0)
    assert np.all(np.asarray(law.sample(jax.random.key(0), 10_000)).sum(1) % 2 == 0)


def test_ising_matches_brute_force_boltzmann_weights():
    D, K, J, h = 5, 3, 0.9, -0.4
    s = np.linspace(-1, 1, K)
    w = {}
    for x in itertools.product(range(K), repeat=D):
        w[x] = math.exp(J * sum(s[x[i]] * s[x[i + 1]] for i in range(D - 1)) + h * sum(s[v] for v in x))
    z = sum(w.values())
    expected = np.array([w[tuple(x)] / z for x in all_states(D, K)])
    np.testing.assert_allclose(IsingChain(D, K, coupling=J, field=h).probs(), expected, rtol=1e-10)
