"""SDTT: per-token divergences by hand, target selection across the teacher's two steps, masked-only averaging."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from di4c_jax import Denoiser
from di4c_jax.losses.sdtt import (SDTT_MODES, SDTTConfig, sdtt_loss, sdtt_round_dt, sdtt_teacher_targets,
                                  token_divergence)
from di4c_jax.losses.times import stratified_times
from di4c_jax.processes import Masked, Uniform
from loss_contract import assert_jits_once_deterministic_and_teacher_frozen, mlp_denoiser

MASKED = Masked(vocab_size=3)  # K = 4, mask id 3


@functools.partial(jax.jit, static_argnums=(1, 2))
def init_mlp(key, num_states, dims, hidden=16):
    k1, k2, k3 = jax.random.split(key, 3)
    return dict(emb=jax.random.normal(k1, (num_states, 4)), w1=jax.random.normal(k2, (dims * 4 + 2, hidden)) / 2,
                w2=jax.random.normal(k3, (hidden, dims * num_states)))


def constant_apply(params, x, t, lam, cond, *, rngs=None):
    """Logits params [K] at every position, whatever x, t, lam."""
    return jnp.broadcast_to(params, (*x.shape, params.shape[-1]))


def time_apply(params, x, t, lam, cond, *, rngs=None):
    """Logits that reveal the time they were called at: class 0 has logit 10 t, the others 0."""
    logits = jnp.zeros((*x.shape, MASKED.num_states)).at[..., 0].set(10.0 * t[:, None])
    return logits + 0.0 * params


CONSTANT = Denoiser(constant_apply, num_states=MASKED.num_states)
TIME = Denoiser(time_apply, num_states=MASKED.num_states)


def test_divergences_by_hand():
    p = np.array([0.5, 0.3, 0.2, 0.0])
    q = np.array([0.25, 0.25, 0.5, 0.0])
    lp, lq = (jnp.asarray(np.where(v > 0, np.log(np.where(v > 0, v, 1)), -1e6), jnp.float32) for v in (p, q))
    s = slice(0, 3)
    want = {"kl-bwd": np.sum(p[s] * np.log(p[s] / q[s])), "kl-fwd": np.sum(q[s] * np.log(q[s] / p[s])),
            "tvd": 0.5 * (0.25 + 0.05 + 0.3), "mse": 0.0625 + 0.0025 + 0.09}
    for mode in SDTT_MODES:
        np.testing.assert_allclose(float(token_divergence(lp, lq, mode)), want[mode], rtol=1e-5)
        assert float(token_divergence(lp, lp, mode)) == 0.0


@pytest.mark.parametrize("mode", SDTT_MODES)
def test_loss_is_zero_iff_student_equals_target(mode):
    """A teacher that ignores its inputs gives the same target at every step; a student with the same logits has
    loss 0 in every mode, a different student the hand-computed per-token divergence."""
    teacher = jnp.array([1.0, -0.5, 0.3, 2.0])
    x0 = jax.random.randint(jax.random.key(0), (4, 16), 0, 3)
    config = SDTTConfig(dt=0.1, mode=mode, student_dropout=False)
    loss_fn = jax.jit(lambda key, s: sdtt_loss(key, student=CONSTANT, student_params=s, teacher=CONSTANT,
                                               teacher_params=teacher, process=MASKED, x0=x0, config=config))
    loss, aux = loss_fn(jax.random.key(1), teacher)
    assert abs(float(loss)) < 1e-6 and float(aux["num_masked"]) > 0
    student = jnp.array([0.0, 0.7, -0.2, 5.0])
    loss, _ = loss_fn(jax.random.key(1), student)
    lp = MASKED.x0_logprobs(student[None, None], jnp.array([[MASKED.mask_id]]))
    lq = MASKED.x0_logprobs(teacher[None, None], jnp.array([[MASKED.mask_id]]))
    np.testing.assert_allclose(float(loss), float(token_divergence(lp, lq, mode)[0, 0]), rtol=1e-5)
    assert float(loss) > 0


def test_only_masked_tokens_count():
    """Without SUBS, unmasked positions carry full distributions: a student that is wrong only there has loss 0,
    one that is wrong only at masked positions has loss > 0."""
    process = Masked(vocab_size=3, subs=False)
    target = jnp.array([1.0, -0.5, 0.3, 0.2])
    wrong = jnp.array([-3.0, 2.0, 0.0, 1.0])

    def student(params, x, t, lam, cond, *, rngs=None):
        at_mask = (x == process.mask_id)[..., None]
        return jnp.where(at_mask == params, target, wrong)

    x0 = jax.random.randint(jax.random.key(0), (4, 16), 0, 3)
    config = SDTTConfig(dt=0.1, student_dropout=False)
    loss_fn = jax.jit(lambda flag: sdtt_loss(jax.random.key(1), student=Denoiser(student, process.num_states),
                                             student_params=flag, teacher=CONSTANT, teacher_params=target,
                                             process=process, x0=x0, config=config))
    loss, aux = loss_fn(True)  # right at masked positions, wrong elsewhere
    assert abs(float(loss)) < 1e-6 and 0 < float(aux["num_masked"]) < x0.size
    loss, _ = loss_fn(False)  # wrong at masked positions
    want = token_divergence(jax.nn.log_softmax(wrong), jax.nn.log_softmax(target), "kl-bwd")
    np.testing.assert_allclose(float(loss), float(want), rtol=1e-5)


def test_target_is_prediction_at_unmasking_step_with_evenly_spaced_times():
    """Teacher predictions reveal their time: a token unmasked at step 1 gets f(t), every other masked token
    f(t - dt), in the proportion (m_t - m_{t-dt}) / m_t of step 1 (loglinear: dt / t)."""
    dims, t, dt = 4000, 0.75, 0.25
    x_t = jnp.full((1, dims), MASKED.mask_id, jnp.int32)
    target = jax.jit(lambda key: sdtt_teacher_targets(key, teacher=TIME, teacher_params=jnp.zeros(()),
                                                      process=MASKED, x_t=x_t, t=jnp.array([t]), dt=dt))(
        jax.random.key(0))

    def f(time):
        return MASKED.x0_logprobs(time_apply(0.0, x_t[:, :1], jnp.array([time]), None, None), x_t[:, :1])[0, 0]

    first, second = np.asarray(f(t)), np.asarray(f(t - dt))
    target = np.asarray(target[0])
    is_first = np.all(np.isclose(target, first, atol=1e-5), axis=-1)
    is_second = np.all(np.isclose(target, second, atol=1e-5), axis=-1)
    assert np.all(is_first ^ is_second)
    p1 = dt / t  # loglinear mask rate is proportional to t
    assert abs(is_first.mean() - p1) < 4 * np.sqrt(p1 * (1 - p1) / dims)


def test_steps_clamp_at_time_zero():
    """t < 2 dt: the second step starts at max(t - dt, 0); every token is unmasked by then, so all targets are
    step-1 predictions at time t."""
    x_t = jnp.full((1, 50), MASKED.mask_id, jnp.int32)
    target = sdtt_teacher_targets(jax.random.key(0), teacher=TIME, teacher_params=jnp.zeros(()), process=MASKED,
                                  x_t=x_t, t=jnp.array([0.2]), dt=0.25)
    want = MASKED.x0_logprobs(time_apply(0.0, x_t, jnp.array([0.2]), None, None), x_t)
    np.testing.assert_allclose(np.asarray(target), np.asarray(want), atol=1e-6)


@pytest.mark.parametrize("mixture, overrides", [(False, dict()), (True, dict(mode="kl-fwd"))])
def test_loss_jits_once_deterministic_and_teacher_gets_no_gradient(mixture, overrides):
    """mixture: a lambda-mixture student and a lambda-mixture teacher."""
    dims = 6
    teacher, student = init_mlp(jax.random.key(0), MASKED.num_states, dims), init_mlp(jax.random.key(1),
                                                                                      MASKED.num_states, dims)
    config = SDTTConfig(dt=0.05, **overrides)
    x0 = jax.random.randint(jax.random.key(2), (8, dims), 0, 3)
    net = mlp_denoiser(MASKED.num_states, mixture=mixture)
    assert_jits_once_deterministic_and_teacher_frozen(
        lambda key, s, t: sdtt_loss(key, student=net, student_params=s, teacher=net, teacher_params=t,
                                    process=MASKED, x0=x0, config=config)[0], student, teacher)


def test_stratified_times_and_round_dt():
    t = np.sort(np.asarray(stratified_times(jax.random.key(0), 64, 1e-5)))
    u = (t - 1e-5) / (1 - 1e-5)
    assert np.all((u >= np.arange(64) / 64 - 1e-6) & (u < np.arange(1, 65) / 64 + 1e-6))
    np.testing.assert_allclose(sdtt_round_dt(1), (1 - 1e-5) / 1024)
    np.testing.assert_allclose(sdtt_round_dt(7), 64 * (1 - 1e-5) / 1024)


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="mode"):
        SDTTConfig(mode="kl")
    with pytest.raises(ValueError, match="dt"):
        SDTTConfig(dt=0.0)
    x0 = jnp.zeros((2, 3), jnp.int32)
    nets = dict(student=CONSTANT, student_params=None, teacher=CONSTANT, teacher_params=None)
    with pytest.raises(TypeError, match="SDTT needs an absorbing"):
        sdtt_loss(jax.random.key(0), **nets, process=Uniform(num_states=3), x0=x0, config=SDTTConfig())
    with pytest.raises(ValueError, match="outside"):
        sdtt_loss(jax.random.key(0), **nets, process=MASKED, x0=np.full((2, 3), 9), config=SDTTConfig())
