"""The Di4C distillation loss (Hayakawa et al. 2025): data, distillation and consistency terms for a lambda-mixture
student, with the control variate of the reference implementations.

`di4c_objective` is the deterministic part (the Di4C loss with every random input given), differentiated only
through the student's t-side log-probabilities; `di4c_loss` draws everything it needs (times by its recipe, x_t,
lambdas, teacher steps, composition samples) and calls it.

aux keys (every recipe; batch means):
  loss      the scalar minimised, = distil + data + consis (to float32 rounding)
  distil    the distillation term's share of `loss`: w_distil KL(teacher marginals || each student component) at
            the item's x_t (sdtt, maskgit), or the same KL on tauldr's separate small-time batch (weight 1)
  data      the data term's share: time_coeff (-(F - G)(x0)) + KL(teacher marginals || mixture marginals)
  consis    the consistency term's share: w_consis (-mean_m (F - G)(x_hat_m) + KL(composition || mixture marginals))
  data_cor, data_ind, consis_cor, consis_ind   the unweighted correlation (-(F - G), or -F without the control
            variate) and marginal-KL parts of the data and consistency terms (0 for the KLs without control variate)
F is the log mixture density, G the log product of its marginals; KLs are summed over D and K.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from di4c_jax.denoiser import Denoiser, draw_lam
from di4c_jax.losses.inputs import checked_batch
from di4c_jax.losses.mixture import kl_sum, mixture_log_likelihood, mixture_log_marginal, sample_components
from di4c_jax.losses.recipes import Di4CRecipe
from di4c_jax.processes.protocol import Process

sg = jax.lax.stop_gradient


def di4c_objective(*, logp_t, x0, logp_teacher_t, logp_u, x_hat, time_coeff, w_distil, w_consis,
                   control_variate: bool = True):
    """Di4C loss from precomputed log-probabilities.

    Args:
      logp_t: [B, N, D, K] student components at (x_t, t): the only input that carries gradient.
      x0: int[B, D], the data point that produced x_t.
      logp_teacher_t: [B, D, K] teacher x0 marginals at (x_t, t).
      logp_u: [B, M, D, K] student components at the M teacher-stepped x_u (composition components).
      x_hat: int[B, M, D], one draw of each composition component.
      time_coeff, w_consis: float32[B].  w_distil: float32[B], or None for no same-x_t distillation term.
      control_variate: subtract G (the product of the mixture marginals) and add the marginal KLs back.

    Returns:
      (scalar loss, aux): aux as in the module docstring (tauldr's `distil` is added by `di4c_loss`).
    """
    batch = _check_objective_shapes(logp_t, x0, logp_teacher_t, logp_u, x_hat)
    weights = (("time_coeff", time_coeff), ("w_consis", w_consis)) + (
        () if w_distil is None else (("w_distil", w_distil),))
    for name, w in weights:
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
    if w_distil is None:
        distil = jnp.zeros((batch,), logp_t.dtype)
    else:
        distil = w_distil * jnp.mean(kl_sum(logp_teacher_t[:, None], logp_t), axis=1)

    data = time_coeff * data_cor + data_ind
    consis = w_consis * (consis_cor + consis_ind)
    terms = dict(data=data, data_cor=data_cor, data_ind=data_ind, distil=distil, consis=consis,
                 consis_cor=consis_cor, consis_ind=consis_ind, loss=distil + data + consis)
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


def _teacher_marginal_and_steps(key, teacher: Denoiser, teacher_params, process, x_t, t, u, cond,
                                config: Di4CRecipe):
    """Teacher x0 marginals at (x_t, t) [B, D, K] (stop-gradient) and M teacher steps t -> u, int32[B, M, D].

    A mixture teacher (di4c^2) estimates its marginals from M fresh lambdas, and teacher step m uses component m."""
    batch, m = x_t.shape[0], config.num_samples_composition
    k_lam, k_step = jax.random.split(key)
    teacher_params = sg(teacher_params)
    if teacher.mixture:
        components = teacher.component_logprobs(k_lam, process, teacher_params, x_t, t, num=m, cond=cond)
        marginal, step_logp, step_axis = mixture_log_marginal(components), components, 1
    else:
        marginal = teacher.logprobs(process, teacher_params, x_t, t, None, cond)
        step_logp, step_axis = marginal, None

    def step(k, logp):
        return config.teacher_step(k, process, x_t, logp, t, u)

    x_u = jax.vmap(step, in_axes=(0, step_axis))(jax.random.split(k_step, m), sg(step_logp))  # [M, B, D]
    return sg(marginal), jnp.swapaxes(x_u, 0, 1)


def _small_time_distillation(key, student: Denoiser, student_params, teacher: Denoiser, teacher_params, process,
                             x0, cond, config):
    """tauldr: per (b, j) an independent x_t' ~ q(. | x0) at t' = min_time + Bern(1/2) U width and a fresh lambda;
    returns mean_j KL(teacher || student component j), float32[B]. A mixture teacher (di4c^2) is evaluated at the
    same lambda as the student component, so the term upper-bounds KL(teacher mixture || student mixture) (joint
    convexity of the KL), as the per-component KL does for a product teacher."""
    batch, n = x0.shape[0], config.num_lambda
    k_coin, k_u, k_x, k_lam, k_drop = jax.random.split(key, 5)
    coin = jax.random.bernoulli(k_coin, 0.5, (batch * n,))
    t_small = config.min_time + coin * jax.random.uniform(k_u, (batch * n,)) * config.small_time_width
    x_small = process.sample_xt(k_x, _repeat(x0, n), t_small)
    cond_rep = _repeat(cond, n)
    lam = draw_lam(k_lam, batch * n)
    teacher_logp = teacher.logprobs(process, sg(teacher_params), x_small, t_small,
                                    lam if teacher.mixture else None, cond_rep)
    rngs = k_drop if config.student_dropout else None
    student_logp = student.logprobs(process, student_params, x_small, t_small, lam if student.mixture else None,
                                    cond_rep, rngs=rngs)
    return jnp.mean(kl_sum(sg(teacher_logp), student_logp).reshape(batch, n), axis=1)


def di4c_loss(key: jax.Array, *, student: Denoiser, student_params: Any, teacher: Denoiser, teacher_params: Any,
              process: Process, x0: jax.Array, config: Di4CRecipe, cond: jax.Array | None = None):
    """One Di4C loss evaluation on a data batch.

    Draws per-sample times (by the recipe), x_t ~ q(. | x0), M teacher steps t -> u, the student's u-side pass
    (stop-gradient params, rngs=None) with one lambda and one composition sample x_hat per copy, and the student's
    t-side pass with N lambdas (gradient; rngs=key when config.student_dropout), then calls `di4c_objective`
    (tauldr adds its small-time distillation batch). Gradient reaches only `student_params`.

    Args:
      key: PRNG key.
      student, student_params: the mixture student (`Denoiser` with mixture=True) and its parameters.
      teacher, teacher_params: the frozen teacher (a product, or a mixture for di4c^2) and its parameters.
      process: the forward process.
      x0: int[B, D] data.
      config: a recipe (`TauLDRRecipe`, `SDTTRecipe`, `MaskGITRecipe`; `di4c_config(name, ...)`).
      cond: None or int32[B] labels (apply label dropout for classifier-free guidance before calling).

    Returns:
      (scalar loss, aux dict of batch means; keys in the module docstring).
    """
    x0 = checked_batch(process, x0, cond)
    config.check_process(process)
    batch, m, n = x0.shape[0], config.num_samples_composition, config.num_lambda
    k_time, k_xt, k_teacher, k_lam_u, k_hat, k_lam_t, k_drop, k_small = jax.random.split(key, 8)

    times = config.draw_times(k_time, batch)
    t, u = times.t, times.u
    x_t = process.sample_xt(k_xt, x0, t)
    logp_teacher_t, x_u = _teacher_marginal_and_steps(k_teacher, teacher, teacher_params, process, x_t, t, u, cond,
                                                      config)
    logp_u = student.logprobs(process, sg(student_params), x_u.reshape(batch * m, -1), _repeat(u, m),
                              student.draw_lam(k_lam_u, batch * m), _repeat(cond, m))
    logp_u = sg(logp_u.reshape(batch, m, *logp_u.shape[1:]))
    x_hat = sample_components(k_hat, logp=logp_u)

    rngs = k_drop if config.student_dropout else None
    logp_t = student.component_logprobs(k_lam_t, process, student_params, x_t, t, num=n, cond=cond, rngs=rngs)
    loss, aux = di4c_objective(logp_t=logp_t, x0=x0, logp_teacher_t=logp_teacher_t, logp_u=logp_u, x_hat=x_hat,
                               time_coeff=times.time_coeff, w_distil=times.w_distil, w_consis=times.w_consis,
                               control_variate=config.control_variate)
    if config.small_time_distillation:
        distil = jnp.mean(_small_time_distillation(k_small, student, student_params, teacher, teacher_params,
                                                   process, x0, cond, config))
        aux = {**aux, "distil": distil, "loss": aux["loss"] + distil}
        loss = aux["loss"]
    return loss, aux
