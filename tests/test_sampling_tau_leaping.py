"""tau-leaping on a tiny discretised-Gaussian process with an oracle denoiser."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from di4c_jax import Denoiser
from di4c_jax.processes import DiscreteGaussian, Masked
from di4c_jax.processes.rates import reverse_rates
from di4c_jax.sampling import make_tau_leaping_sampler, tau_leap, tau_leaping_grid, tau_leaping_sample
from sampling_oracle import all_states, empirical_law, oracle_denoiser, random_law, state_index, tv

PROCESS = DiscreteGaussian(num_states=4)
DIMS = 2


def test_grid_and_nfe_and_jit_once():
    np.testing.assert_allclose(tau_leaping_grid(3, 0.01), [1.0, 0.505, 0.01, 0.0], rtol=1e-6)
    log, traces = [], []

    def apply(params, x_t, t, lam, cond, *, rngs=None):
        traces.append(1)
        jax.debug.callback(lambda tt: log.append(float(tt[0])), t, ordered=True)
        return jnp.zeros(x_t.shape + (4,)) + params

    sampler = make_tau_leaping_sampler(process=PROCESS, denoiser=Denoiser(apply, num_states=4), shape=(5, DIMS),
                                       num_steps=3)
    out = sampler(jax.random.key(0), params=jnp.float32(0.0))
    n_traces = len(traces)
    again = sampler(jax.random.key(0), params=jnp.float32(0.0))
    jax.effects_barrier()
    assert len(traces) == n_traces
    np.testing.assert_array_equal(out, again)
    assert sampler.nfe == 4 and len(log) == 8  # two runs of n + 1 evaluations
    np.testing.assert_allclose(log[:4], [1.0, 0.505, 0.01, 0.01], rtol=1e-6)  # final argmax at t_min
    assert out.dtype == jnp.int32 and np.all((np.asarray(out) >= 0) & (np.asarray(out) < 4))


@pytest.mark.parametrize("share_lam", [False, True])
def test_mixture_lam_per_call_or_per_trajectory(share_lam):
    log = []

    def apply(params, x_t, t, lam, cond, *, rngs=None):
        jax.debug.callback(lambda ll: log.append(np.asarray(ll)), lam, ordered=True)
        return jnp.zeros(x_t.shape + (4,))

    make_tau_leaping_sampler(process=PROCESS, denoiser=Denoiser(apply, num_states=4, mixture=True), shape=(6, DIMS),
                             num_steps=3, share_lam=share_lam)(jax.random.key(0), params=None)
    jax.effects_barrier()
    lams = np.stack(log)  # [n + 1 calls, B]
    assert lams.shape == (4, 6)
    if share_lam:
        np.testing.assert_array_equal(lams, np.broadcast_to(lams[0], lams.shape))
        assert len(np.unique(lams[0])) == 6
    else:
        assert len(np.unique(lams)) == lams.size


def test_reverse_rates_match_the_formula():
    key = jax.random.key(0)
    x = jax.random.randint(key, (2, DIMS), 0, 4)
    logp = jax.nn.log_softmax(jax.random.normal(jax.random.fold_in(key, 1), (2, DIMS, 4)), axis=-1)
    t = jnp.array([0.3, 0.7])
    got = np.asarray(reverse_rates(PROCESS, x, logp, t))
    q, rate, p = (np.asarray(a, np.float64) for a in (PROCESS.transition(t), PROCESS.rate(t), jnp.exp(logp)))
    for b in range(2):
        for d in range(DIMS):
            xi = int(x[b, d])
            for y in range(4):
                want = 0.0 if y == xi else rate[b, y, xi] * sum(
                    p[b, d, x0] * q[b, x0, y] / (q[b, x0, xi] + 1e-9) for x0 in range(4))
                np.testing.assert_allclose(got[b, d, y], want, rtol=1e-4)


def test_tau_leap_is_ordinal_and_clipped():
    x = jnp.array([[0, 3, 1]])
    rates = jnp.zeros((1, 3, 4)).at[0, 0, 2].set(1e3).at[0, 1, 2].set(1e3).at[0, 2, 1].set(1e-9)
    out = np.asarray(tau_leap(jax.random.key(0), x_t=x, rates=rates, h=jnp.ones(1)))
    np.testing.assert_array_equal(out, [[3, 0, 1]])  # ~1000 jumps of +2 / -1 clip to the ends; no rate, no move


def test_needs_a_rate_matrix_and_has_no_teacher_hybrid():
    net = Denoiser(lambda params, x_t, t, lam, cond, *, rngs=None: jnp.zeros(x_t.shape + (4,)), num_states=4)
    with pytest.raises(TypeError, match="rate"):
        make_tau_leaping_sampler(process=Masked(vocab_size=3), denoiser=net, shape=(2, 2), num_steps=2)
    with pytest.raises(TypeError, match="rate"):
        tau_leaping_sample(jax.random.key(0), process=Masked(vocab_size=3), denoiser=net, params=None, shape=(2, 2),
                           num_steps=2)
    with pytest.raises(ValueError, match="teacher_last_steps"):
        make_tau_leaping_sampler(process=PROCESS, denoiser=net, shape=(2, 2), num_steps=2, teacher=net,
                                 teacher_last_steps=1)


def _argmax_limit_law(process, p0, denoiser, dims, t_min):
    """Law of argmax p(x0 | x_{t_min}) with x_{t_min} drawn from the exact forward marginal (the n -> inf limit)."""
    states = all_states(process.num_states, dims)
    q = np.asarray(process.transition(jnp.array([t_min])), np.float64)[0]
    p_t = np.array([np.dot(p0, np.prod(q[states, x], axis=1)) for x in states])
    logp = denoiser(None, jnp.asarray(states), jnp.full((len(states),), t_min))
    mode = state_index(np.asarray(jnp.argmax(logp, -1)), process.num_states)
    return np.bincount(mode, weights=p_t, minlength=len(states))


def test_law_approaches_the_limit_as_steps_grow():
    p0 = random_law(0, PROCESS, DIMS)
    oracle = oracle_denoiser(PROCESS, p0, DIMS)
    target = _argmax_limit_law(PROCESS, p0, oracle, DIMS, PROCESS.t_min)
    errors = []
    for n in (4, 128):
        samples = make_tau_leaping_sampler(process=PROCESS, denoiser=oracle, shape=(4000, DIMS),
                                           num_steps=n)(jax.random.key(n), params=None)
        errors.append(tv(empirical_law(samples, 4), target))
    assert errors[1] < 0.5 * errors[0] and errors[1] < 0.1, errors
