"""The Di4C distillation loss: data, distillation and consistency terms for a lambda-mixture student.

`di4c_objective` is the deterministic part (reference-masked.md D.8), differentiated only through the student's
t-side log-probabilities; `di4c_loss` draws everything it needs (times, x_t, lambdas, teacher steps, composition
samples) and calls it.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from di4c_jax.losses.config import Di4CConfig
from di4c_jax.losses.mixture import kl_sum, mixture_log_likelihood, mixture_log_marginal, sample_components
from di4c_jax.losses.inputs import checked_batch
from di4c_jax.sampling.maskgit import confidence_step

sg = jax.lax.stop_gradient


def di4c_objective(logp_t, x0, logp_teacher_t, logp_u, x_hat, time_coeff, w_distil, w_consis,
                   control_variate: bool = True):
    """Di4C loss from precomputed log-probabilities. Returns (scalar loss, aux: batch means of the unweighted terms
    data, data_cor, data_ind, distil, consis, consis_cor, consis_ind, and of the weighted total `loss`).

    logp_t [B, N, D, K]: student components at (x_t, t) (the only input that carries gradient).
    x0 int[B, D]: the data point that produced x_t.  logp_teacher_t [B, D, K]: teacher x0 marginals at (x_t, t).
    logp_u [B, M, D, K]: student components at the M teacher-stepped x_u (composition components).
    x_hat int[B, M, D]: one draw of each composition component.  time_coeff, w_distil, w_consis: float32[B].

    data   = time_coeff * (-(F - G)(x0)) + KL(teacher marginals || mixture marginals)
    distil = mean_n KL(teacher marginals || component n)
    consis = -mean_m (F - G)(x_hat_m) + KL(composition marginals || mixture marginals)
    loss   = mean_B(w_distil distil + data + w_consis consis)
    F is the log mixture density, G the log product of its marginals; with control_variate=False the data and
    consistency terms are time_coeff * (-F(x0)) and -mean_m F(x_hat_m) (no marginal KLs). KLs are summed over D, K.
    """
    batch = _check_objective_shapes(logp_t, x0, logp_teacher_t, logp_u, x_hat)
    for name, w in (("time_coeff", time_coeff), ("w_distil", w_distil), ("w_consis", w_consis)):
        if jnp.shape(w) != (batch,):
            raise ValueError(f"{name} must be float[B={batch}], got shape {jnp.shape(w)}")
    logp_teacher_t, logp_u = sg(logp_teacher_t), sg(logp_u)
    log_marginal = mixture_log_marginal(logp_t)

    data_cor = -mixture_log_likelihood(logp_t, x0[:, None, :], control_variate)[:, 0]
    consis_cor = -jnp.mean(mixture_log_likelihood(logp_t, x_hat, control_variate), axis=1)
    if control_variate:
        data_ind = kl_sum(logp_teacher_t, log_marginal)
        consis_ind = kl_sum(sg(mixture_log_marginal(logp_u)), log_marginal)
    else:
        data_ind = consis_ind = jnp.zeros((batch,), logp_t.dtype)
    distil = jnp.mean(kl_sum(logp_teacher_t[:, None], logp_t), axis=1)

    data = time_coeff * data_cor + data_ind
    consis = consis_cor + consis_ind
    per_item = w_distil * distil + data + w_consis * consis
    terms = dict(data=data, data_cor=data_cor, data_ind=data_ind, distil=distil, consis=consis,
                 consis_cor=consis_cor, consis_ind=consis_ind, loss=per_item)
    aux = {name: jnp.mean(v) for name, v in terms.items()}
    return aux["loss"], aux


def _check_objective_shapes(logp_t, x0, logp_teacher_t, logp_u, x_hat):
    if logp_t.ndim != 4:
        raise ValueError(f"logp_t must be [B, N, D, K], got shape {logp_t.shape}")
    batch, _, dims, classes = logp_t.shape
    expected = dict(x0=((batch, dims), x0.shape), logp_teacher_t=((batch, dims, classes), logp_teacher_t.shape))
    for name, (want, got) in expected.items():
        if tuple(got) != want:
            raise ValueError(f"{name} must have shape {want} (from logp_t {logp_t.shape}), got {tuple(got)}")
    if logp_u.ndim != 4 or (logp_u.shape[0], *logp_u.shape[2:]) != (batch, dims, classes):
        raise ValueError(f"logp_u must be [B={batch}, M, D={dims}, K={classes}], got {logp_u.shape}")
    if x_hat.shape != logp_u.shape[:3]:
        raise ValueError(f"x_hat must be int[B, M, D] = {logp_u.shape[:3]}, got {x_hat.shape}")
    return batch


def _repeat(x, n):
    """[B, ...] -> [B * n, ...], b-major (torch repeat_interleave); None stays None."""
    return None if x is None else jnp.repeat(x, n, axis=0)


def _draw_times(key, config: Di4CConfig, batch: int):
    """Per-sample t, u (student time after the teacher step), time_coeff, w_distil, w_consis, all float32[B]."""
    k1, k2, k3 = jax.random.split(key, 3)
    ones = jnp.ones((batch,), jnp.float32)
    if config.scheme == "tauldr":
        log_ratio = math.log(config.max_delta / config.min_delta)
        delta = config.min_delta * jnp.exp(jax.random.uniform(k1, (batch,)) * log_ratio)
        t = jax.random.uniform(k2, (batch,)) * (1.0 - config.min_time - delta) + config.min_time + delta
        u, w_distil = t - delta, 0.0 * ones  # distillation runs on its own small-time batch
    elif config.scheme == "sdtt":
        # One snap to the grid of `time_grid` points; the reference snaps a second time when it masks
        # (mask rate (1 - eps)(t + 1/T)), which is not reproduced here: x_t is drawn at the snapped t.
        small = jax.random.bernoulli(k1, config.distil_prob, (batch,))
        v = jax.random.uniform(k2, (batch,))
        t_raw = jnp.where(small, config.distil_time * v, config.distil_time + (1.0 - config.distil_time) * v)
        grid = config.time_grid
        t = (jnp.floor(grid * t_raw) + 1.0) / grid
        u = t - jnp.minimum(1.0 / grid, t / 2)
        w_distil = (t < config.distil_time).astype(jnp.float32)
    else:  # maskgit: progress r ~ U[0, 1), t = 1 - r; the confidence step moves r to min(r + r_delta, 1)
        r = jax.random.uniform(k3, (batch,))
        t, u = 1.0 - r, 1.0 - jnp.minimum(r + config.r_delta, 1.0)
        w_distil = (r >= 1.0 - config.r_delta).astype(jnp.float32) / config.r_delta
    w_consis = (ones if config.scheme == "tauldr" else (w_distil == 0).astype(jnp.float32))
    time_coeff = config.time_coeff_scale * jax.nn.sigmoid(20.0 * (t - 0.5))
    return t, u, time_coeff, w_distil, w_consis


def _teacher_marginal_and_steps(key, teacher_apply, teacher_params, process, x_t, t, u, cond, config):
    """Teacher x0 marginals at (x_t, t) [B, D, K] (stop-gradient) and M teacher steps t -> u, int32[B, M, D]."""
    batch, m = x_t.shape[0], config.num_samples_composition
    k_lam, k_step = jax.random.split(key)
    teacher_params = sg(teacher_params)
    if config.teacher_is_mixture:
        lam = jax.random.uniform(k_lam, (batch * m,))
        x_rep = _repeat(x_t, m)
        logits = teacher_apply(teacher_params, x_rep, _repeat(t, m), lam, _repeat(cond, m))
        components = process.x0_logprobs(logits, x_rep).reshape(batch, m, *x_t.shape[1:], -1)
        marginal, step_logp, step_axis = mixture_log_marginal(components), components, 1
    else:
        marginal = process.x0_logprobs(teacher_apply(teacher_params, x_t, t, None, cond), x_t)
        step_logp, step_axis = marginal, None

    if config.scheme == "maskgit":
        dims = x_t.shape[1]
        n_masked = jnp.sum(x_t == process.mask_id, axis=1)
        mask_next = process.mask_prob(u)
        num_reveal = jnp.clip(jnp.trunc((1.0 - mask_next) * dims - (dims - n_masked)), 0, n_masked)
        ratio = (1.0 - t) * config.teacher_steps / (config.teacher_steps - 1)
        gumbel_temp = config.r_temp * (1.0 - ratio)

        def step(k, logp):
            return confidence_step(k, x_t, logp, num_reveal.astype(jnp.int32), gumbel_temp, process.mask_id)
    else:
        def step(k, logp):
            return process.reverse_step(k, x_t, logp, t, u)

    x_u = jax.vmap(step, in_axes=(0, step_axis))(jax.random.split(k_step, m), sg(step_logp))  # [M, B, D]
    return sg(marginal), jnp.swapaxes(x_u, 0, 1)


def _student_logprobs(student_apply, params, process, x, t, lam, cond, rngs, batch):
    """Student log p(x0 | x, t, lam) for flattened rows [batch * n, D] -> [batch, n, D, K]."""
    logp = process.x0_logprobs(student_apply(params, x, t, lam, cond, rngs=rngs), x)
    return logp.reshape(batch, -1, *logp.shape[1:])


def _small_time_distillation(key, student_apply, student_params, teacher_apply, teacher_params, process, x0,
                             cond, config):
    """tauldr: per (b, j) an independent x_t' ~ q(. | x0) at t' = min_time + Bern(1/2) U width and a fresh lambda;
    returns mean_j KL(teacher || student component j), float32[B]. A mixture teacher (di4c^2) is evaluated at the
    same lambda as the student component, so the term upper-bounds KL(teacher mixture || student mixture)."""
    batch, n = x0.shape[0], config.num_lambda
    k_coin, k_u, k_x, k_lam, k_drop = jax.random.split(key, 5)
    coin = jax.random.bernoulli(k_coin, 0.5, (batch * n,))
    t_small = config.min_time + coin * jax.random.uniform(k_u, (batch * n,)) * config.small_time_width
    x_small = process.sample_xt(k_x, _repeat(x0, n), t_small)
    cond_rep = _repeat(cond, n)
    lam = jax.random.uniform(k_lam, (batch * n,))
    teacher_lam = lam if config.teacher_is_mixture else None
    teacher = process.x0_logprobs(teacher_apply(sg(teacher_params), x_small, t_small, teacher_lam, cond_rep),
                                  x_small)
    rngs = k_drop if config.student_dropout else None
    student = process.x0_logprobs(student_apply(student_params, x_small, t_small, lam, cond_rep, rngs=rngs), x_small)
    return jnp.mean(kl_sum(sg(teacher), student).reshape(batch, n), axis=1)


def di4c_loss(key, student_apply, student_params, teacher_apply, teacher_params, process, x0, config: Di4CConfig,
              cond=None):
    """One Di4C loss evaluation on a data batch x0 int[B, D]. Returns (scalar loss, aux dict of batch means).

    Draws per-sample times (config.scheme), x_t ~ q(. | x0), M teacher steps t -> u, the student's u-side pass
    (stop-gradient params, rngs=None) with one lambda and one composition sample x_hat per copy, and the student's
    t-side pass with N lambdas (gradient; rngs=key when config.student_dropout), then calls `di4c_objective`.
    `cond` is None or int32[B] labels (apply label dropout for classifier-free guidance before calling).
    Gradient reaches only `student_params`, through the t-side pass (and tauldr's small-time distillation pass).
    """
    x0 = checked_batch(process, x0, cond)
    batch, m, n = x0.shape[0], config.num_samples_composition, config.num_lambda
    if config.scheme == "maskgit" and not hasattr(process, "mask_prob"):
        raise ValueError(f"the maskgit scheme needs a masked process (arccos schedule), got {type(process).__name__}")
    k_time, k_xt, k_teacher, k_lam_u, k_hat, k_lam_t, k_drop, k_small = jax.random.split(key, 8)

    t, u, time_coeff, w_distil, w_consis = _draw_times(k_time, config, batch)
    x_t = process.sample_xt(k_xt, x0, t)
    logp_teacher_t, x_u = _teacher_marginal_and_steps(k_teacher, teacher_apply, teacher_params, process, x_t, t, u,
                                                      cond, config)

    logp_u = sg(_student_logprobs(student_apply, sg(student_params), process, x_u.reshape(batch * m, -1),
                                  _repeat(u, m), jax.random.uniform(k_lam_u, (batch * m,)), _repeat(cond, m),
                                  None, batch))
    x_hat = sample_components(k_hat, logp_u)

    rngs = k_drop if config.student_dropout else None
    logp_t = _student_logprobs(student_apply, student_params, process, _repeat(x_t, n), _repeat(t, n),
                               jax.random.uniform(k_lam_t, (batch * n,)), _repeat(cond, n), rngs, batch)
    loss, aux = di4c_objective(logp_t, x0, logp_teacher_t, logp_u, x_hat, time_coeff, w_distil, w_consis,
                               control_variate=config.control_variate)
    if config.scheme == "tauldr":
        distil = _small_time_distillation(k_small, student_apply, student_params, teacher_apply, teacher_params,
                                          process, x0, cond, config)
        aux = {**aux, "distil": jnp.mean(distil), "loss": aux["loss"] + jnp.mean(distil)}
        loss = aux["loss"]
    return loss, aux
