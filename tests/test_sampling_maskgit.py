"""MaskGIT confidence sampler: reference schedule, exact reveal counts, guidance ramp, mixture lam, jit."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from di4c_jax import Denoiser
from di4c_jax.processes import Masked, Uniform, confidence_step
from di4c_jax.sampling import cfg_weights, gumbel_temperatures, make_maskgit_sampler, maskgit_sample, maskgit_schedule

VOCAB, MASK, DIMS, BATCH = 4, 4, 16, 6
PROCESS = Masked(vocab_size=VOCAB, subs=False)  # default_time_grid(n): t_i = 1 - i/n
assert PROCESS.mask_id == MASK
NULL = 10  # the null class of the class-conditional denoisers below (num_classes = 10)


def test_schedule_matches_reference():
    assert maskgit_schedule(4, 256) == (41, 44, 53, 118)
    assert maskgit_schedule(8, 256) == (20, 21, 22, 22, 25, 28, 36, 82)
    for n in (1, 2, 3, 12, 16, 64):
        k = maskgit_schedule(n, 256)
        assert len(k) == n and sum(k) == 256 and min(k) >= 1
    with pytest.raises(ValueError):
        maskgit_schedule(300, 256)


def test_ramps():
    np.testing.assert_allclose(cfg_weights(6.0, 4), [0, 2, 4, 6])
    np.testing.assert_allclose(cfg_weights(3.0, 1), [0])  # n = 1 guarded
    np.testing.assert_allclose(gumbel_temperatures(4.5, 4), [4.5, 3.0, 1.5, 0.0], atol=1e-6)


def _random_logits(params, x_t, t, lam, cond, *, rngs=None):
    """Logits that depend on x_t, t and (if given) lam, with a huge mask-class logit the sampler must ignore."""
    key = jax.random.fold_in(jax.random.key(0), jnp.sum(x_t) + jnp.int32(1000 * t[0]))
    logits = jax.random.normal(key, x_t.shape + (VOCAB + 1,))
    if lam is not None:
        logits = logits + lam[:, None, None]
    return logits.at[..., MASK].set(50.0)


def test_confidence_step_reveals_exactly_k_and_never_the_mask():
    x = jnp.full((BATCH, DIMS), MASK, jnp.int32).at[:, :3].set(1)  # 13 masked per row
    logits = _random_logits(None, x, jnp.zeros(BATCH), None, None)
    k = jnp.array([0, 1, 5, 13, 20, 7])
    out = confidence_step(jax.random.key(1), x_t=x, logits=logits, num_reveal=k, gumbel_temp=jnp.full(BATCH, 4.5),
                          mask_id=MASK)
    np.testing.assert_array_equal(np.sum(out != MASK, axis=1) - 3, np.minimum(k, 13))
    np.testing.assert_array_equal(out[:, :3], x[:, :3])  # revealed positions never change
    assert np.all(np.asarray(out) <= MASK)


def test_confidence_step_without_noise_reveals_the_most_confident_and_breaks_ties_by_position():
    x = jnp.full((BATCH, DIMS), MASK, jnp.int32)
    logits = 3.0 * _random_logits(None, x, jnp.zeros(BATCH), None, None)
    step = lambda k: np.asarray(confidence_step(jax.random.key(0), x_t=x, logits=logits,  # noqa: E731
                                                num_reveal=jnp.full(BATCH, k), gumbel_temp=jnp.zeros(BATCH),
                                                mask_id=MASK))
    drawn = step(DIMS)  # the same key draws the same tokens; revealing all of them shows every draw
    out = step(5)
    logp = np.asarray(jax.nn.log_softmax(logits.at[..., MASK].set(-1e6), axis=-1))
    conf = np.take_along_axis(logp, drawn[..., None], axis=-1)[..., 0]
    for row, row_drawn, row_conf in zip(out, drawn, conf):
        revealed = np.flatnonzero(row != MASK)
        assert set(revealed) == set(np.argsort(-row_conf)[:5])
        np.testing.assert_array_equal(row[revealed], row_drawn[revealed])
    tie = confidence_step(jax.random.key(0), x_t=x[:1, :6], logits=jnp.zeros((1, 6, VOCAB + 1)),
                          num_reveal=jnp.array([2]), gumbel_temp=jnp.zeros(1), mask_id=MASK)
    np.testing.assert_array_equal(np.asarray(tie[0]) != MASK, [1, 1, 0, 0, 0, 0])


def _recording(log, fn=_random_logits, **denoiser_kwargs):
    """A Denoiser around `fn` that logs (x_t, t, lam, cond) of every evaluation, in execution order."""
    def apply(params, x_t, t, lam, cond, *, rngs=None):
        lam_arr = jnp.full(t.shape, -1.0) if lam is None else lam
        cond_arr = jnp.full(t.shape, -1) if cond is None else cond
        jax.debug.callback(lambda *a: log.append(tuple(np.asarray(v) for v in a)), x_t, t, lam_arr, cond_arr,
                           ordered=True)
        return fn(params, x_t, t, lam, cond)
    return Denoiser(apply, num_states=VOCAB + 1, **denoiser_kwargs)


@pytest.mark.parametrize("num_steps", [1, 4, 8])
def test_sampler_reveals_schedule_and_ends_unmasked(num_steps):
    log = []
    sampler = make_maskgit_sampler(process=PROCESS, denoiser=_recording(log, mixture=True), shape=(BATCH, DIMS),
                                   num_steps=num_steps)
    out = sampler(jax.random.key(3), params=None)
    jax.effects_barrier()
    assert sampler.nfe == num_steps == len(log)
    assert out.dtype == jnp.int32 and np.all(np.asarray(out) < MASK)
    still_masked = [np.sum(entry[0] == MASK, axis=1) for entry in log]
    expected = DIMS - np.concatenate([[0], np.cumsum(maskgit_schedule(num_steps, DIMS))[:-1]])
    np.testing.assert_array_equal(still_masked, np.repeat(expected[:, None], BATCH, axis=1))
    np.testing.assert_allclose([entry[1][0] for entry in log], 1.0 - np.arange(num_steps) / num_steps)
    lams = np.stack([entry[2] for entry in log])
    assert len(np.unique(lams)) == lams.size and np.all((lams >= 0) & (lams < 1))


def test_shared_lam_is_one_per_sample_for_every_step():
    log = []
    make_maskgit_sampler(process=PROCESS, denoiser=_recording(log, mixture=True), shape=(BATCH, DIMS), num_steps=4,
                         share_lam=True)(jax.random.key(3), params=None)
    jax.effects_barrier()
    lams = np.stack([entry[2] for entry in log])  # [steps, B]
    np.testing.assert_array_equal(lams, np.broadcast_to(lams[0], lams.shape))
    assert len(np.unique(lams[0])) == BATCH and np.all((lams >= 0) & (lams < 1))


def _guided_pair(params, x_t, t, lam, cond, *, rngs=None):
    """Conditional rows prefer token 1 by 1 nat, unconditional (null class 10) rows by 2: the guided logit of
    token 1 is 1 - w_i, so token 1 is chosen exactly while w_i < 1 (at a sharp sm_temp)."""
    margin = jnp.where(cond == 10, 2.0, 1.0)[:, None, None]
    classes = jnp.arange(VOCAB + 1)
    logits = jnp.where(classes == 1, margin, jnp.where(classes == 0, 0.0, -100.0))  # tokens 2, 3: never
    return jnp.broadcast_to(logits, x_t.shape + (VOCAB + 1,))


@pytest.mark.parametrize("teacher_uncond", [False, True])
def test_guidance_ramp_and_shared_lam(teacher_uncond):
    log = []
    student = _recording(log, _guided_pair, mixture=True, num_classes=NULL)
    kwargs = dict(uncond=_recording(log, _guided_pair, num_classes=NULL)) if teacher_uncond else {}
    sampler = make_maskgit_sampler(process=PROCESS, denoiser=student, shape=(BATCH, DIMS), num_steps=4,
                                   guidance=6.0, sm_temp=50.0, **kwargs)
    assert student.null_class == NULL
    cond = jnp.arange(BATCH, dtype=jnp.int32)
    out = sampler(jax.random.key(0), params=None, teacher_params=None, cond=cond)
    jax.effects_barrier()
    # weights 0, 2, 4, 6: only the first step's k_0 = 4 tokens are 1s (schedule for D=16: 4 steps)
    np.testing.assert_array_equal(np.sum(np.asarray(out) == 1, axis=1), maskgit_schedule(4, DIMS)[0])
    assert np.all(np.isin(np.asarray(out), [0, 1]))
    if teacher_uncond:  # student (cond, lam) then teacher (null, no lam), per step
        assert sampler.teacher_nfe == 4 and len(log) == 8
        for student, teacher in zip(log[::2], log[1::2]):
            np.testing.assert_array_equal(student[3], cond)
            assert np.all(teacher[3] == 10) and np.all(teacher[2] == -1.0)
    else:  # one call of batch 2B per step: conditional half, null half, the same lam for both
        assert len(log) == 4
        for x, _, lam, c in log:
            assert x.shape == (2 * BATCH, DIMS)
            np.testing.assert_array_equal(c, np.concatenate([cond, np.full(BATCH, 10)]))
            np.testing.assert_array_equal(lam[:BATCH], lam[BATCH:])


def test_deterministic_and_compiles_once():
    traces = []

    def apply(params, x_t, t, lam, cond, *, rngs=None):
        traces.append(1)
        return _random_logits(params, x_t, t, lam, cond) * params

    sampler = make_maskgit_sampler(process=PROCESS, denoiser=Denoiser(apply, num_states=VOCAB + 1, mixture=True),
                                   shape=(BATCH, DIMS), num_steps=4)
    a = sampler(jax.random.key(1), params=jnp.float32(1.0))
    n_traces = len(traces)
    b = sampler(jax.random.key(1), params=jnp.float32(1.0))
    c = sampler(jax.random.key(2), params=jnp.float32(2.0))
    assert len(traces) == n_traces
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_guidance_needs_cond_and_a_class_conditional_denoiser():
    unconditional = Denoiser(_random_logits, num_states=VOCAB + 1)
    common = dict(process=PROCESS, params=None, shape=(2, DIMS), num_steps=2)
    with pytest.raises(ValueError, match="class-conditional denoiser"):  # no null class (num_classes = 0)
        maskgit_sample(jax.random.key(0), denoiser=unconditional, guidance=2.0, **common)
    with pytest.raises(ValueError, match="class-conditional denoiser"):  # a null class, but no cond
        maskgit_sample(jax.random.key(0), denoiser=dataclasses.replace(unconditional, num_classes=NULL),
                       guidance=2.0, **common)
    with pytest.raises(ValueError, match="schedule"):
        maskgit_sample(jax.random.key(0), denoiser=unconditional, schedule=(3, 3), **common)


def test_needs_an_absorbing_process_and_has_no_teacher_hybrid():
    net = Denoiser(_random_logits, num_states=VOCAB + 1)
    with pytest.raises(TypeError, match="MaskGIT"):
        make_maskgit_sampler(process=Uniform(num_states=VOCAB + 1), denoiser=net, shape=(2, DIMS), num_steps=2)
    with pytest.raises(TypeError, match="MaskGIT"):
        maskgit_sample(jax.random.key(0), process=Uniform(num_states=VOCAB + 1), denoiser=net, params=None,
                       shape=(2, DIMS), num_steps=2)
    with pytest.raises(ValueError, match="teacher_last_steps"):
        make_maskgit_sampler(process=PROCESS, denoiser=net, shape=(2, DIMS), num_steps=2, teacher=net,
                             teacher_last_steps=1)


@dataclasses.dataclass(frozen=True)
class _SquaredGridMasked(Masked):
    """A masked process with another time grid, t_i = 1 - (i/n)^2, to show where the sampler's times come from."""

    def default_time_grid(self, num_steps):
        return 1.0 - jnp.linspace(0.0, 1.0, num_steps + 1, dtype=jnp.float32) ** 2


def test_times_come_from_the_process_grid():
    log = []
    process = _SquaredGridMasked(vocab_size=VOCAB)
    sampler = make_maskgit_sampler(process=process, denoiser=_recording(log), shape=(BATCH, DIMS), num_steps=4)
    jax.block_until_ready(sampler(jax.random.key(0), params=None))
    jax.effects_barrier()
    np.testing.assert_allclose([entry[1][0] for entry in log], np.asarray(process.default_time_grid(4))[:-1],
                               rtol=1e-6)
    np.testing.assert_allclose([entry[1][0] for entry in log], 1.0 - (np.arange(4) / 4) ** 2, rtol=1e-6)
