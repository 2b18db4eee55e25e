"""Registries and the Process protocol: di4c_jax.registry.Registry, SAMPLERS, PROCESSES / build_process,
capability flags with `require`, and `prior_logprobs` as the law of `sample_prior`."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from di4c_jax import Denoiser
from di4c_jax.processes import PROCESSES, DiscreteGaussian, Masked, Process, Uniform, build_process, require
from di4c_jax.registry import Registry
from di4c_jax.sampling import SAMPLERS, Sampler

# --- Registry ------------------------------------------------------------------------------------------------


def test_registry_register_get_and_decorator():
    reg = Registry("widget")
    assert reg.register("a", 1) == 1  # direct registration returns the entry

    @reg.register("b")
    def make_b():
        return "b"

    assert reg.get("a") == 1 and reg.get("b") is make_b and make_b() == "b"  # the decorator returns its function
    assert reg.names() == ["a", "b"] and list(reg) == ["a", "b"]
    assert "a" in reg and "c" not in reg


def test_registry_unknown_name_lists_the_registered_ones():
    reg = Registry("widget")
    reg.register("zeta", 1)
    reg.register("alpha", 2)
    with pytest.raises(ValueError, match="unknown widget 'nope'") as info:
        reg.get("nope")
    assert "['alpha', 'zeta']" in str(info.value)


def test_registry_duplicate_name_is_an_error_unless_replaced():
    reg = Registry("widget")
    reg.register("a", 1)
    with pytest.raises(ValueError, match="widget named 'a' is already registered"):
        reg.register("a", 2)
    with pytest.raises(ValueError, match="already registered"):
        reg.register("a")(lambda: None)
    assert reg.get("a") == 1  # the failed registrations changed nothing
    reg.register("a", 3, replace=True)
    assert reg.get("a") == 3


def test_registry_unregister():
    reg = Registry("widget")
    reg.register("a", 1)
    reg.register("b", 2)
    reg.unregister("a")
    assert reg.names() == ["b"] and "a" not in reg
    with pytest.raises(ValueError, match="registered: \\['b'\\]"):
        reg.get("a")
    reg.unregister("a")  # unregistering a missing name is a no-op
    reg.register("a", 4)  # the name is free again
    assert reg.get("a") == 4


# --- SAMPLERS ------------------------------------------------------------------------------------------------


def _constant(num_states):
    return Denoiser(lambda params, x_t, t, lam, cond, *, rngs=None: jnp.zeros(x_t.shape + (num_states,)),
                    num_states=num_states)


SAMPLER_CASES = {  # name -> a process it runs on
    "analytic": Uniform(num_states=4),
    "maskgit": Masked(vocab_size=3),
    "tau_leaping": DiscreteGaussian(num_states=4),
}


def test_samplers_registry_names():
    assert set(SAMPLER_CASES) <= set(SAMPLERS.names())
    with pytest.raises(ValueError, match="unknown sampler 'nope'.*analytic.*maskgit.*tau_leaping"):
        SAMPLERS.get("nope")


@pytest.mark.parametrize("name", sorted(SAMPLER_CASES))
def test_sampler_factories_run_and_only_analytic_has_a_teacher_hybrid(name):
    process = SAMPLER_CASES[name]
    net = _constant(process.num_states)
    factory = SAMPLERS.get(name)
    sampler = factory(process=process, denoiser=net, shape=(2, 3), num_steps=2)
    assert isinstance(sampler, Sampler)
    out = sampler(jax.random.key(0), params=None)
    assert out.shape == (2, 3) and out.dtype == jnp.int32
    if name == "analytic":
        hybrid = factory(process=process, denoiser=net, shape=(2, 3), num_steps=2, teacher=net, teacher_last_steps=1)
        assert (hybrid.nfe, hybrid.teacher_nfe) == (2, 1)
    else:
        with pytest.raises(ValueError, match="no teacher hybrid.*teacher_last_steps=1"):
            factory(process=process, denoiser=net, shape=(2, 3), num_steps=2, teacher=net, teacher_last_steps=1)
    with pytest.raises(TypeError):  # keyword-only factories
        factory(process, net, (2, 3), 2)


# --- the Process protocol ------------------------------------------------------------------------------------

PROCESS_CASES = {
    "masked": (Masked(vocab_size=3), dict(absorbing=True, has_generator=False)),
    "uniform": (Uniform(num_states=5), dict(absorbing=False, has_generator=True)),
    "gaussian": (DiscreteGaussian(num_states=8, q_sigma=2.0),  # a stationary law far from uniform
                 dict(absorbing=False, has_generator=True)),
}


@pytest.mark.parametrize("name", sorted(PROCESS_CASES))
def test_processes_implement_the_protocol_with_their_capabilities(name):
    process, flags = PROCESS_CASES[name]
    assert isinstance(process, Process)
    assert dict(absorbing=process.absorbing, has_generator=process.has_generator) == flags
    assert name in PROCESSES and PROCESSES.get(name) is type(process)
    for capability, has in flags.items():
        if has:
            require(process, capability, "the test")
        else:
            with pytest.raises(TypeError, match="the test"):
                require(process, capability, "the test")


def test_non_processes_fail_the_protocol():
    assert not isinstance(object(), Process)
    assert not isinstance(_constant(3), Process)


@pytest.mark.parametrize("name", sorted(PROCESS_CASES))
def test_prior_logprobs_is_normalised_and_is_the_law_of_sample_prior(name):
    process, _ = PROCESS_CASES[name]
    k = process.num_states
    logp = process.prior_logprobs()
    assert logp.shape == (k,) and logp.dtype == jnp.float32
    np.testing.assert_allclose(jax.nn.logsumexp(logp), 0.0, atol=1e-6)
    p = np.exp(np.asarray(logp, np.float64))
    n = 200_000
    samples = np.asarray(process.sample_prior(jax.random.key(0), (n // 4, 4)))
    assert samples.dtype == np.int32 and samples.shape == (n // 4, 4)
    freq = np.bincount(samples.reshape(-1), minlength=k) / n
    np.testing.assert_allclose(freq, p, atol=4 * np.sqrt(0.25 / n))  # 4 sigma of n draws
    if name == "masked":  # all mass on the mask
        np.testing.assert_array_equal(p, np.eye(k)[process.mask_id])
        assert np.all(samples == process.mask_id)
    elif name == "uniform":
        np.testing.assert_allclose(p, np.full(k, 1.0 / k), rtol=1e-6)
    else:  # the stationary law of the base rate: pi R = 0
        np.testing.assert_allclose(p, process.stationary, rtol=1e-5)
        np.testing.assert_allclose(p @ process.rate_matrix, 0.0, atol=1e-6)


def test_build_process():
    masked = build_process("masked", 5, schedule="arccos")
    assert masked == Masked(vocab_size=5, schedule="arccos") and masked.num_states == 6 and masked.mask_id == 5
    assert build_process("uniform", 4) == Uniform(num_states=4)
    assert build_process("gaussian", 8, q_sigma=4.0) == DiscreteGaussian(num_states=8, q_sigma=4.0)
    with pytest.raises(ValueError, match="no_such_option"):
        build_process("masked", 5, no_such_option=1)
    with pytest.raises(ValueError, match="vocab_size"):  # the data's state count is not an option
        build_process("masked", 5, vocab_size=7)
    with pytest.raises(ValueError, match="unknown process 'nope'.*gaussian.*masked.*uniform"):
        build_process("nope", 5)


def test_require_names_who_needs_the_capability():
    with pytest.raises(TypeError, match="X needs an absorbing") as info:
        require(Uniform(num_states=4), "absorbing", "X")
    assert "Uniform" in str(info.value)
    with pytest.raises(TypeError, match="tau-leaping needs a process with a generator"):
        require(Masked(vocab_size=3), "has_generator", "tau-leaping")
    require(Masked(vocab_size=3), "absorbing", "X")  # no error
