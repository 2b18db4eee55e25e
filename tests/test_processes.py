"""Forward processes against closed forms, scipy expm and brute-force Bayes on tiny state spaces."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

from di4c_jax.processes import NEG_INF, DiscreteGaussian, Masked, Uniform

PROCESSES = [
    Masked(vocab_size=3),
    Masked(vocab_size=3, schedule="arccos"),
    Masked(vocab_size=3, schedule="cosine"),
    Uniform(num_states=4),
    Uniform(num_states=4, schedule="cosine"),
    DiscreteGaussian(num_states=4, rate_sigma=2.0, q_sigma=4.0),
]


def test_gaussian_reference_values():
    p = DiscreteGaussian()
    q = np.asarray(p.transition(jnp.array([0.01]))[0])
    np.testing.assert_allclose(q[0, :4], [0.4612, 0.0774, 0.0734, 0.0673], atol=1e-4)
    np.testing.assert_allclose(q[128, 126:131], [0.0501, 0.0515, 0.2193, 0.0515, 0.0501], atol=1e-4)
    np.testing.assert_allclose(np.asarray(p.transition(jnp.array([1.0]))[0, 0, :4]),
                               [0.003843, 0.003845, 0.003847, 0.003848], atol=2e-6)
    np.testing.assert_allclose(float(p.integral_rate(0.5)), 27.0, rtol=1e-5)
    np.testing.assert_allclose(float(p.rate_scalar(1.0)), 1381.6, rtol=1e-4)
    assert int((p.rate_matrix - np.diag(np.diag(p.rate_matrix)) > 0).sum()) == 56908


def test_gaussian_batched_transition_equals_expm():
    p = DiscreteGaussian()
    t = jnp.array([0.01, 0.3, 0.9])
    q = np.asarray(p.transition(t))
    assert q.shape == (3, 256, 256)
    for i, ti in enumerate(np.asarray(t)):
        ref = scipy.linalg.expm(float(p.integral_rate(ti)) * p.rate_matrix)
        np.testing.assert_allclose(q[i], ref, atol=2e-6)
    np.testing.assert_allclose(p.stationary @ p.rate_matrix, 0.0, atol=1e-15)


@pytest.mark.parametrize("proc", PROCESSES, ids=repr)
def test_transitions_stochastic_and_chapman_kolmogorov(proc):
    t, s = jnp.array([0.7, 0.4]), jnp.array([0.3, 0.1])
    q_t, q_s, q_ts = proc.transition(t), proc.transition(s), proc.transition(t, s)
    for q in (q_t, q_s, q_ts):
        np.testing.assert_allclose(np.asarray(q).sum(-1), 1.0, atol=1e-5)
        assert (np.asarray(q) >= 0).all()
    np.testing.assert_allclose(np.asarray(q_s @ q_ts), np.asarray(q_t), atol=1e-5)


def test_uniform_equals_expm_of_generator():
    proc = Uniform(num_states=4)
    k = 4
    gen = np.ones((k, k)) / k - np.eye(k)  # jump rate 1, uniform destination
    for t in (0.2, 0.9):
        sigma = -np.log(float(proc.keep_prob(t)))
        np.testing.assert_allclose(np.asarray(proc.transition(jnp.array([t]))[0]),
                                   scipy.linalg.expm(sigma * gen), atol=1e-6)


def test_uniform_rate_is_derivative_of_transition():
    proc = Uniform(num_states=4)
    for t in (0.2, 0.7):
        h = 1e-3
        dq = (np.asarray(proc.transition(jnp.array([t + h]), jnp.array([t]))[0]) - np.eye(4)) / h
        np.testing.assert_allclose(dq, np.asarray(proc.rate(jnp.array([t]))[0]), atol=5e-3)


def test_masked_closed_form():
    proc = Masked(vocab_size=3)
    q = np.asarray(proc.transition(jnp.array([0.5]))[0])
    m = 0.5 * (1 - 1e-3)
    expected = np.array([[1 - m, 0, 0, m], [0, 1 - m, 0, m], [0, 0, 1 - m, m], [0, 0, 0, 1]])
    np.testing.assert_allclose(q, expected, atol=1e-6)
    r = 0.3  # arccos: progress r = 1 - t, mask prob (2/pi) arccos(r)
    np.testing.assert_allclose(float(Masked(3, schedule="arccos").mask_prob(1 - r)),
                               2 / np.pi * np.arccos(r), atol=1e-6)


def _brute_force_reverse(proc, x_t, p_x0, t, s):
    """p(x_s^d | x_t) = sum_x0 q(x_t|x_s) q(x_s|x0) / q(x_t|x0) p(x0|x_t), float64, one (t, s) pair."""
    qt0 = np.asarray(proc.transition(jnp.array([t]))[0], np.float64)
    qs0 = np.asarray(proc.transition(jnp.array([s]))[0], np.float64)
    qts = np.asarray(proc.transition(jnp.array([t]), jnp.array([s]))[0], np.float64)
    out = np.zeros(p_x0.shape)
    for d, xt in enumerate(x_t):
        for x0 in range(p_x0.shape[-1]):
            if p_x0[d, x0] == 0 or qt0[x0, xt] == 0:
                continue
            out[d] += p_x0[d, x0] * qs0[x0] * qts[:, xt] / qt0[x0, xt]
    return out


@pytest.mark.parametrize("proc", PROCESSES, ids=repr)
def test_reverse_step_logprobs_equals_bayes(proc):
    rng = np.random.default_rng(0)
    k = proc.num_states
    d = 3
    x_t = rng.integers(0, k, size=(d,)).astype(np.int32)
    logits = rng.normal(size=(d, k)).astype(np.float32)
    logp_x0 = np.asarray(proc.x0_logprobs(jnp.asarray(logits)[None], jnp.asarray(x_t)[None])[0])
    p_x0 = np.where(logp_x0 <= NEG_INF / 2, 0.0, np.exp(logp_x0.astype(np.float64)))
    for t, s in [(0.8, 0.5), (0.5, 0.05), (0.3, 0.0)]:
        got = np.exp(np.asarray(proc.reverse_step_logprobs(
            jnp.asarray(x_t)[None], jnp.asarray(logp_x0)[None], jnp.array([t]), jnp.array([s]))[0], np.float64))
        ref = _brute_force_reverse(proc, x_t, p_x0, t, s)
        ref = ref / ref.sum(-1, keepdims=True)
        np.testing.assert_allclose(got, ref, atol=2e-5)


@pytest.mark.parametrize("proc", PROCESSES, ids=repr)
def test_sample_xt_matches_transition_rows(proc):
    k, n = proc.num_states, 200_000
    x0 = jnp.tile(jnp.arange(proc.num_states - proc.absorbing, dtype=jnp.int32), (n, 1))  # data states only
    t = 0.4
    x_t = np.asarray(proc.sample_xt(jax.random.key(1), x0, jnp.full((n,), t)))
    q = np.asarray(proc.transition(jnp.array([t]))[0])
    for col in range(x0.shape[1]):
        freq = np.bincount(x_t[:, col], minlength=k) / n
        np.testing.assert_allclose(freq, q[col], atol=5 / np.sqrt(n))


def test_priors():
    assert (np.asarray(Masked(5).sample_prior(jax.random.key(0), (2, 3))) == 5).all()
    g = DiscreteGaussian()
    x = np.asarray(g.sample_prior(jax.random.key(0), (200_000,)))
    np.testing.assert_allclose(np.bincount(x, minlength=256) / x.size, g.stationary, atol=6e-4)
    u = np.asarray(Uniform(4).sample_prior(jax.random.key(0), (100_000,)))
    np.testing.assert_allclose(np.bincount(u, minlength=4) / u.size, 0.25, atol=0.01)


def test_subs_parameterisation():
    proc = Masked(vocab_size=3)
    x_t = jnp.array([[3, 1]])
    logp = np.asarray(proc.x0_logprobs(jnp.zeros((1, 2, 4)), x_t))[0]
    np.testing.assert_allclose(np.exp(logp[0]), [1 / 3, 1 / 3, 1 / 3, 0], atol=1e-6)
    assert logp[0, 3] == pytest.approx(NEG_INF, rel=1e-3)   # finite, not -inf
    np.testing.assert_array_equal(logp[1], [NEG_INF, 0.0, NEG_INF, NEG_INF])
    assert np.isfinite(logp).all()


def test_masked_reverse_step_final_unmasks_everything_and_copies():
    proc = Masked(vocab_size=3)
    x_t = jnp.array([[3, 3, 0, 2]] * 64)
    logp = proc.x0_logprobs(jnp.zeros((64, 4, 4)), x_t)
    x_s = np.asarray(proc.reverse_step(jax.random.key(0), x_t, logp, jnp.full((64,), 0.5), jnp.zeros((64,))))
    assert (x_s != 3).all() and (x_s[:, 2] == 0).all() and (x_s[:, 3] == 2).all()
    x0 = np.asarray(proc.denoise(jax.random.key(0), x_t, logp, "argmax"))
    assert (x0 != 3).all() and (x0[:, 2:] == [0, 2]).all()


@pytest.mark.parametrize("proc", PROCESSES, ids=repr)
def test_jit_and_time_grid(proc):
    grid = np.asarray(proc.default_time_grid(4))
    assert grid.shape == (5,) and grid[0] == 1.0 and (np.diff(grid) < 0).all() and grid[-1] == 0.0
    fn = jax.jit(lambda key, x, lp, t, s: proc.reverse_step(key, x, lp, t, s))
    x = jnp.zeros((2, 3), jnp.int32)
    lp = jnp.full((2, 3, proc.num_states), -np.log(proc.num_states))
    out = fn(jax.random.key(0), x, lp, jnp.array([0.5, 0.5]), jnp.array([0.2, 0.2]))
    assert out.shape == (2, 3) and out.dtype == jnp.int32


def test_processes_are_hashable_static_args():
    assert hash(Masked(3)) == hash(Masked(3)) and Masked(3) != Masked(3, schedule="cosine")
    assert hash(DiscreteGaussian()) == hash(DiscreteGaussian())
    with pytest.raises(ValueError, match="schedule"):
        Masked(3, schedule="nope")
