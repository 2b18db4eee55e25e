"""The analytic few-step sampler: exact laws with an oracle denoiser, hybrids, mixtures, keys and jit."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from di4c_jax import Denoiser
from di4c_jax.processes import DiscreteGaussian, Masked, Uniform
from di4c_jax.sampling import analytic_sample, make_analytic_sampler
from sampling_oracle import (
    assert_matches_law, embed_data_law, empirical_law, exact_chain_law, exact_trajectory_law, oracle_denoiser,
    random_law, regimes, table_mixture, tv,
)

DIMS = 3
NUM_SAMPLES = 100_000
PROCESSES = {
    "masked": Masked(vocab_size=3),
    "uniform": Uniform(num_states=4),
    "gaussian": DiscreteGaussian(num_states=4),
}


@pytest.mark.parametrize("name,num_steps", [("masked", 1), ("masked", 3), ("uniform", 3),
                                            ("gaussian", 3)])
def test_oracle_sampler_law_equals_enumerated_chain(name, num_steps):
    process = PROCESSES[name]
    oracle = oracle_denoiser(process, random_law(0, process, DIMS), DIMS)
    sampler = make_analytic_sampler(process=process, denoiser=oracle, shape=(NUM_SAMPLES, DIMS), num_steps=num_steps)
    samples = sampler(jax.random.key(1), params=None)
    assert samples.shape == (NUM_SAMPLES, DIMS) and samples.dtype == jnp.int32
    assert_matches_law(samples, exact_chain_law(process, oracle, DIMS, num_steps), process.num_states)


def test_enumerated_chain_detects_a_wrong_law():
    """The comparison has power: a sampler of another p0 fails it."""
    process = PROCESSES["uniform"]
    oracle = oracle_denoiser(process, random_law(0, process, DIMS), DIMS)
    other = oracle_denoiser(process, random_law(5, process, DIMS), DIMS)
    samples = make_analytic_sampler(process=process, denoiser=other, shape=(20_000, DIMS),
                                    num_steps=3)(jax.random.key(1), params=None)
    with pytest.raises(AssertionError):
        assert_matches_law(samples, exact_chain_law(process, oracle, DIMS, 3), process.num_states)


@pytest.mark.parametrize("process", [Masked(vocab_size=3), Uniform(num_states=4, schedule="cosine")])
def test_one_step_law_is_product_of_marginals(process):
    p0 = random_law(0, process, DIMS)
    law = exact_chain_law(process, oracle_denoiser(process, p0, DIMS), DIMS, 1)
    p0_full = embed_data_law(process, p0, DIMS).reshape((process.num_states,) * DIMS)
    marginals = [p0_full.sum(axis=tuple(e for e in range(DIMS) if e != d)) for d in range(DIMS)]
    product = np.einsum("a,b,c->abc", *marginals).reshape(-1)
    np.testing.assert_allclose(law, product, atol=1e-5)
    assert tv(product, embed_data_law(process, p0, DIMS)) > 0.05  # p0 really is correlated


@pytest.mark.parametrize("name", ["masked", "uniform"])
def test_law_approaches_data_as_steps_grow(name):
    process = PROCESSES[name]
    p0 = random_law(0, process, DIMS)
    oracle = oracle_denoiser(process, p0, DIMS)
    target = embed_data_law(process, p0, DIMS)
    errors = [tv(exact_chain_law(process, oracle, DIMS, n), target) for n in (1, 2, 4, 16, 64)]
    assert all(b < a for a, b in zip(errors, errors[1:])), errors
    assert errors[-1] < 0.2 * errors[0] and errors[-1] < 0.03, errors
    samples = make_analytic_sampler(process=process, denoiser=oracle, shape=(10_000, DIMS),
                                    num_steps=16)(jax.random.key(3), params=None)
    assert tv(empirical_law(samples, process.num_states), target) < errors[3] + 0.04


def _recording_denoiser(name, log, num_states=4, mixture=False):
    """A constant Denoiser that logs (name, t, lam) of every evaluation, in execution order."""
    def apply(params, x_t, t, lam, cond, *, rngs=None):
        lam_arr = jnp.full(t.shape, -1.0) if lam is None else lam
        jax.debug.callback(lambda tt, ll: log.append((name, np.asarray(tt), np.asarray(ll))), t, lam_arr,
                           ordered=True)
        return jnp.zeros(x_t.shape + (num_states,)) + params
    return Denoiser(apply, num_states=num_states, mixture=mixture)


@pytest.mark.parametrize("num_steps,teacher_last_steps", [(5, 0), (5, 2), (5, 1), (5, 5), (1, 1), (1, 0)])
def test_hybrid_uses_teacher_exactly_at_the_last_steps(num_steps, teacher_last_steps):
    log = []
    process = Uniform(num_states=4)
    sampler = make_analytic_sampler(process=process, denoiser=_recording_denoiser("student", log, mixture=True),
                                    shape=(3, 2), num_steps=num_steps,
                                    teacher=_recording_denoiser("teacher", log), teacher_last_steps=teacher_last_steps)
    jax.block_until_ready(sampler(jax.random.key(0), params=0.0, teacher_params=0.0))
    jax.effects_barrier()
    assert (sampler.nfe, sampler.teacher_nfe) == (num_steps, teacher_last_steps)
    names = [entry[0] for entry in log]
    assert names == ["student"] * (num_steps - teacher_last_steps) + ["teacher"] * teacher_last_steps
    grid = np.asarray(process.default_time_grid(num_steps))
    np.testing.assert_allclose([entry[1][0] for entry in log], grid[:-1])
    for name, _, lam in log:  # the student is a mixture (lam in [0, 1)); the teacher a product (lam None)
        assert np.all(lam == -1.0) if name == "teacher" else np.all((lam >= 0) & (lam < 1))


def test_mixture_lam_fresh_per_sample_and_step():
    log = []
    make_analytic_sampler(process=Masked(vocab_size=3), denoiser=_recording_denoiser("student", log, mixture=True),
                          shape=(8, 2), num_steps=6)(jax.random.key(0), params=0.0)
    jax.effects_barrier()
    lams = np.stack([entry[2] for entry in log])  # [steps, B]
    assert lams.shape == (6, 8)
    assert len(np.unique(lams)) == lams.size  # all distinct: across samples and across steps


def test_shared_lam_is_one_per_sample_for_every_step():
    log = []
    make_analytic_sampler(process=Masked(vocab_size=3), denoiser=_recording_denoiser("student", log, mixture=True),
                          shape=(8, 2), num_steps=6, share_lam=True)(jax.random.key(0), params=0.0)
    jax.effects_barrier()
    lams = np.stack([entry[2] for entry in log])  # [steps, B]
    assert lams.shape == (6, 8)
    np.testing.assert_array_equal(lams, np.broadcast_to(lams[0], lams.shape))
    assert len(np.unique(lams[0])) == 8


@pytest.mark.parametrize("name", ["masked", "uniform"])
def test_shared_lam_samples_each_components_chain_and_fresh_lam_the_mixtures(name):
    """Two lambda regimes, exact laws by enumeration: one lambda per trajectory gives the mean of the two regimes'
    own chains, a fresh lambda per step the chain of their mean kernel; the two laws differ, each sampler hits its
    own."""
    process = {"masked": Masked(vocab_size=2), "uniform": Uniform(num_states=2)}[name]
    dims, num_steps = 2, 3
    denoiser, params = table_mixture(process, 4, dims)
    grid = np.asarray(process.default_time_grid(num_steps))
    components = regimes(process, denoiser, params)
    fresh = exact_trajectory_law(process, components, dims, grid)
    shared = np.mean([exact_trajectory_law(process, [fn], dims, grid) for fn in components], axis=0)
    assert tv(fresh, shared) > 0.02  # Monte-Carlo TV of NUM_SAMPLES draws on 4 states: about 0.003
    for share_lam, law in ((False, fresh), (True, shared)):
        samples = make_analytic_sampler(process=process, denoiser=denoiser, shape=(NUM_SAMPLES, dims),
                                        num_steps=num_steps, final="sample", share_lam=share_lam)(
            jax.random.key(5), params=params)
        assert_matches_law(samples, law, process.num_states)


def test_mixture_output_depends_on_lam():
    """A denoiser that predicts class 1 iff lam > 1/2: each sample's final token follows its own fresh lam."""
    process = Uniform(num_states=4)

    def apply(params, x_t, t, lam, cond, *, rngs=None):
        return jnp.broadcast_to(100.0 * jax.nn.one_hot((lam > 0.5).astype(jnp.int32), 4)[:, None], x_t.shape + (4,))

    out = analytic_sample(jax.random.key(0), process=process, denoiser=Denoiser(apply, num_states=4, mixture=True),
                          params=None, shape=(4000, 1), num_steps=1)
    assert set(np.unique(out)) == {0, 1}
    assert abs(np.mean(np.asarray(out) == 1) - 0.5) < 0.03


def test_deterministic_for_a_key_and_jit_compiles_once():
    traces = []
    process = Masked(vocab_size=3)
    base = oracle_denoiser(process, random_law(0, process, DIMS), DIMS)

    def apply(params, x_t, t, lam, cond, *, rngs=None):
        traces.append(1)
        return base(params, x_t, t, lam, cond) + params

    student = Denoiser(apply, num_states=process.num_states, mixture=True)
    sampler = make_analytic_sampler(process=process, denoiser=student, shape=(64, DIMS), num_steps=4)
    a = sampler(jax.random.key(7), params=jnp.float32(0.0))
    n_traces = len(traces)
    b = sampler(jax.random.key(7), params=jnp.float32(1.0))  # new params value: no retrace
    c = sampler(jax.random.key(8), params=jnp.float32(0.0))
    assert len(traces) == n_traces
    np.testing.assert_array_equal(a, b)  # a constant logit shift changes nothing: same key, same draw
    assert not np.array_equal(a, c)
    assert np.all(np.asarray(a) < 3)  # no mask left
    np.testing.assert_array_equal(sampler.sample(jax.random.key(7), jnp.float32(0.0), None, None), a)  # raw fn


def test_bad_configuration_errors():
    process = Uniform(num_states=4)
    net = _recording_denoiser("s", [])
    common = dict(process=process, denoiser=net, shape=(2, 2))
    with pytest.raises(ValueError, match="needs a teacher"):
        make_analytic_sampler(**common, num_steps=3, teacher_last_steps=1)
    with pytest.raises(ValueError, match="teacher_last_steps"):
        make_analytic_sampler(**common, num_steps=3, teacher=net, teacher_last_steps=4)
    with pytest.raises(ValueError, match="num_steps \\+ 1"):
        make_analytic_sampler(**common, num_steps=3, time_grid=np.linspace(1, 0, 3))
    with pytest.raises(ValueError, match="decrease"):
        make_analytic_sampler(**common, num_steps=2, time_grid=np.array([1.0, 0.0, 0.5]))
    with pytest.raises(ValueError, match="final"):
        make_analytic_sampler(**common, num_steps=2, final="mode")
    with pytest.raises(TypeError):  # everything after key is keyword-only
        make_analytic_sampler(process, net, shape=(2, 2), num_steps=2)
