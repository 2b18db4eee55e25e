"""Local latents (DiT option `local_latents`): one latent per block of consecutive positions at a random offset,
besides or instead of the global lambda. The loss's density must be the law the samplers draw: checked by exact
enumeration of the latents and by the empirical law of one-step samples; both evaluation paths agree."""
import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from di4c_jax.denoiser import local_block_ids
from di4c_jax.losses import CDMConfig, cdm_loss, di4c_config, di4c_loss
from di4c_jax.losses.mixture import component_grid, component_log_likelihood
from di4c_jax.models import build_denoiser, init_student_from_teacher, model_config
from di4c_jax.processes import Masked
from di4c_jax.processes.base import sample_categorical

Z, BLOCK = 3, 2


def _student(num_positions, vocab, lam_style=None, seed=0):
    cfg = model_config("dit-tiny", num_states=vocab + 1, num_positions=num_positions, dropout=0.0,
                       lam_style=lam_style, lam_zero_init=False, local_latents=Z, local_block=BLOCK)
    denoiser, params = build_denoiser(cfg, jax.random.key(seed))
    leaves, tree = jax.tree.flatten(params)  # every parameter random: zero heads would make the laws trivial
    keys = jax.random.split(jax.random.key(seed + 1), len(leaves))
    return denoiser, jax.tree.unflatten(tree, [p + 0.5 * jax.random.normal(k, p.shape) for p, k in zip(leaves, keys)])


def _enumerated_log_density(logp, x, num_latents, block):
    """log (1/N) sum_n (1/block) sum_o prod_g (1/Z) sum_z prod_{d in g} p_{nZ+z}^d(x_d), term by term (float64)."""
    logp, x = np.asarray(logp, np.float64), np.asarray(x)
    batch, nz, dims, _ = logp.shape
    ids = local_block_ids(dims, block)
    out = np.zeros(x.shape[:2])
    for b, m in itertools.product(range(batch), range(x.shape[1])):
        total = 0.0
        for n, o in itertools.product(range(nz // num_latents), range(block)):
            blocks = ids[o].max() + 1
            for zs in itertools.product(range(num_latents), repeat=blocks):
                comp = [n * num_latents + zs[ids[o][d]] for d in range(dims)]
                total += math.exp(sum(logp[b, comp[d], d, x[b, m, d]] for d in range(dims))) / num_latents ** blocks
        out[b, m] = math.log(total / (nz // num_latents * block))
    return out


@pytest.mark.parametrize("lam_style", [None, "token"])
def test_density_is_the_enumerated_mixture_and_both_paths_agree(lam_style):
    dims, vocab = 5, 4
    process = Masked(vocab)
    student, params = _student(dims, vocab, lam_style)
    assert student.local_latents == (Z, BLOCK, lam_style is not None)
    x_t = jnp.array([[4, 1, 4, 4, 2], [0, 4, 4, 3, 4]])
    t = jnp.array([0.5, 0.7])
    grid = component_grid(jax.random.key(2), denoiser=student, batch=2, num=2)
    assert grid.shape == (2, 2 if lam_style else 1)
    logp = student.component_logprobs_at(process, params, x_t, t, grid)
    assert logp.shape == (2, grid.shape[1] * Z, dims, vocab + 1)
    # the one-pass `components` and the rows of `apply` (what a jitted copy without `components` evaluates)
    rows = student.with_apply(student.apply).component_logprobs_at(process, params, x_t, t, grid)
    np.testing.assert_allclose(rows, logp, rtol=1e-5, atol=1e-5)
    x = jax.random.randint(jax.random.key(3), (2, 3, dims), 0, vocab)
    x = jnp.where(x_t[:, None] != process.mask_id, x_t[:, None], x)
    want = _enumerated_log_density(logp, x, Z, BLOCK)
    np.testing.assert_allclose(component_log_likelihood(student, logp, x, control_variate=False), want, atol=1e-4)
    log_marginal = np.log(np.exp(np.asarray(logp, np.float64)).mean(axis=1) + 1e-300)  # [B, D, K]
    g = np.take_along_axis(log_marginal[:, None], np.asarray(x)[..., None], axis=-1)[..., 0].sum(-1)
    np.testing.assert_allclose(component_log_likelihood(student, logp, x), want - g, atol=1e-4)


def test_one_step_samples_follow_the_density():
    """x0 ~ p(. | x_t = all masked) through `draw_lam` and `apply` (what every sampler does) has the law that
    `component_log_likelihood` gives, over all vocab^D sequences (chi-square)."""
    dims, vocab, num = 4, 2, 40_000
    process = Masked(vocab)
    student, params = _student(dims, vocab)
    x_t = jnp.full((1, dims), process.mask_id, jnp.int32)
    t = jnp.ones((1,))
    states = np.array(list(itertools.product(range(vocab), repeat=dims)), np.int32)
    grid = component_grid(None, denoiser=student, batch=1, num=1)
    logp = student.component_logprobs_at(process, params, x_t, t, grid)
    law = np.exp(np.asarray(component_log_likelihood(student, logp, jnp.asarray(states)[None], False),
                            np.float64))[0]
    np.testing.assert_allclose(law.sum(), 1.0, atol=1e-5)
    k_lam, k_x = jax.random.split(jax.random.key(4))
    lam = student.draw_lam(k_lam, num)
    assert lam.shape == (num, 1 + dims)
    x0 = sample_categorical(k_x, student.logprobs(process, params, jnp.repeat(x_t, num, 0), jnp.ones((num,)), lam))
    counts = np.bincount(np.asarray(x0) @ vocab ** np.arange(dims - 1, -1, -1), minlength=len(states))
    assert scipy.stats.chisquare(counts, num * law / law.sum()).pvalue > 1e-3
    # the law is not the product of its marginals, nor one latent for all positions
    marginals = np.exp(np.asarray(logp, np.float64)).mean(axis=1)[0]  # [D, K]
    product = np.prod([marginals[d, states[:, d]] for d in range(dims)], axis=0)
    assert np.abs(law - product).sum() > 0.05


def test_cdm_trains_a_local_student_and_other_objectives_refuse_it():
    dims, vocab = 6, 5
    process = Masked(vocab)
    teacher_cfg = model_config("dit-tiny", num_states=vocab + 1, num_positions=dims, dropout=0.0)
    teacher, teacher_params = build_denoiser(teacher_cfg, jax.random.key(0))
    student, fresh = _student(dims, vocab, "token")
    params = init_student_from_teacher(teacher_params, fresh)  # local_out is the student's own
    x0 = jax.random.randint(jax.random.key(5), (4, dims), 0, vocab)
    config = CDMConfig(num_teacher_steps=4, num_samples=2, num_lambda=3, student_dropout=False)

    def loss(p, key):
        return cdm_loss(key, student=student, student_params=p, teacher=teacher, teacher_params=teacher_params,
                        process=process, x0=x0, config=config)[0]

    value, grads = jax.jit(jax.value_and_grad(loss))(params, jax.random.key(6))
    assert np.isfinite(value)
    assert float(jnp.abs(grads["local_out"]["kernel"]).max()) > 0
    with pytest.raises(ValueError, match="di4c objective does not take a local-latent student"):
        di4c_loss(jax.random.key(0), student=student, student_params=params, teacher=teacher,
                  teacher_params=teacher_params, process=process, x0=x0, config=di4c_config("tauldr"))


def test_bad_settings_and_inputs_are_named():
    with pytest.raises(ValueError, match="local_latents >= 2"):
        build_denoiser(model_config("dit-tiny", num_states=5, num_positions=4, local_latents=1), jax.random.key(0))
    with pytest.raises(ValueError, match="local_block"):
        build_denoiser(model_config("dit-tiny", num_states=5, num_positions=4, local_latents=2, local_block=5),
                       jax.random.key(0))
    student, params = _student(4, 4)
    with pytest.raises(ValueError, match=r"float\[B, 1 \+ D\]"):
        student(params, jnp.zeros((2, 4), jnp.int32), jnp.ones((2,)), jnp.zeros((2,)))
