"""Where does a distilled student depart from its teacher? x0 | x_t diagnostics at one noise level.

For data x0 and x_t ~ q(. | x0) at time t, with the student's mixture estimated from N lambdas:
  teacher_loglik  log p_teacher(x0 | x_t), the teacher's product density (nats per sequence)
  student_loglik  F = log (1/N) sum_n prod_d p_n(x0_d | x_t): the student mixture's density of the data
  correlation     F - G, G the log product of the mixture's marginals: what the mixture adds over its marginals
  marginal_kl     sum_d KL(teacher marginal || mixture marginal): how far the student's marginals have moved
  exact_loglik    log q(x0 | x_t) under the true law (when the caller can compute it): the ceiling of both
                  logliks in expectation; its batch mean estimates -H(x0 | x_t)
`one_step_denoise` is one network evaluation from the data's own x_t: at t = 1 the 1-step sampler, at t < 1 the
last step of a sampler whose earlier steps were perfect.
"""
from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

from di4c_jax.denoiser import Denoiser
from di4c_jax.losses.mixture import component_grid, component_log_likelihood, kl_sum, mixture_log_marginal
from di4c_jax.losses.times import token_nll
from di4c_jax.processes.base import safe_log
from di4c_jax.processes.protocol import Process

DIAGNOSTICS = ("teacher_loglik", "student_loglik", "correlation", "marginal_kl")


def diagnose_point(key: jax.Array, *, process: Process, teacher: Denoiser, teacher_params: Any, student: Denoiser,
                   student_params: Any, x0: jax.Array, t: float, num_lambda: int, cond=None,
                   exact_posterior: Callable[[jax.Array, jax.Array, float], jax.Array] | None = None,
                   max_rows: int = 16384) -> dict:
    """Batch means of DIAGNOSTICS at one noise level.

    Args: key; process; teacher / student Denoisers and params; x0 int[B, D]; t the noise level; num_lambda N;
      cond None or int[B]; exact_posterior None or (x0, x_t, t) -> float[B], log q(x0 | x_t) under the true law
      (`exact_posterior_loglik`, `eval.hmm.hmm_masked_posterior_loglik`); max_rows: the most rows (sequences x N)
      one student call takes (the B x N components are evaluated in blocks of sequences, same lambdas, so memory
      stays bounded at any N).
    Returns: {name: float} for every name in DIAGNOSTICS, and exact_loglik when `exact_posterior` is given.
    """
    batch = x0.shape[0]
    k_xt, k_lam = jax.random.split(key)
    tt = jnp.full((batch,), t, jnp.float32)
    x_t = process.sample_xt(k_xt, x0, tt)
    teacher_logp = teacher.logprobs(process, teacher_params, x_t, tt, None, cond)  # [B, D, K]
    lam = component_grid(k_lam, denoiser=student, batch=batch, num=num_lambda)
    block = max(1, max_rows // lam.shape[1])
    logp = jnp.concatenate([
        student.component_logprobs_at(process, student_params, x_t[i:i + block], tt[i:i + block],
                                      lam[i:i + block], None if cond is None else cond[i:i + block])
        for i in range(0, batch, block)])
    points = x0[:, None, :]
    values = {
        "teacher_loglik": -jnp.sum(token_nll(teacher_logp, x0), axis=1),
        "student_loglik": component_log_likelihood(student, logp, points, control_variate=False)[:, 0],
        "correlation": component_log_likelihood(student, logp, points, control_variate=True)[:, 0],
        "marginal_kl": kl_sum(teacher_logp, mixture_log_marginal(logp)),
    }
    if exact_posterior is not None:
        values["exact_loglik"] = exact_posterior(x0, x_t, t)
    return {name: float(jnp.mean(v)) for name, v in values.items()}


def exact_posterior_loglik(process: Process, x0: jax.Array, x_t: jax.Array, t: float, *, states: jax.Array,
                           log_probs: jax.Array) -> jax.Array:
    """log q(x0 | x_t) by enumerating the law's S states: log p(x0) q(x_t | x0) - log sum_s p(s) q(x_t | s).

    Args: process; x0, x_t int[B, D]; t the noise level; states int[S, D] (every state of positive probability,
      x0's among them); log_probs float[S].
    Returns: float32[B].
    """
    log_q = safe_log(process.transition(jnp.asarray([t], jnp.float32))[0])  # [K_from, K_to]
    d = jnp.arange(x_t.shape[1])
    log_lik = jax.vmap(lambda x: jnp.sum(log_q[states[:, d], x[None, d]], axis=1))(x_t)  # [B, S]
    log_joint = log_probs[None, :] + log_lik
    is_x0 = jnp.all(states[None, :, :] == x0[:, None, :], axis=2)
    return (jax.nn.logsumexp(jnp.where(is_x0, log_joint, -jnp.inf), axis=1)
            - jax.nn.logsumexp(log_joint, axis=1))


def one_step_denoise(key: jax.Array, *, process: Process, denoiser: Denoiser, params: Any, x0: jax.Array, t: float,
                     cond=None) -> jax.Array:
    """x_t ~ q(. | x0) at time t, then one draw x0' ~ p(. | x_t) (one lambda per row for a mixture).

    Args: key; process; denoiser, params; x0 int32[B, D]; t the noise level; cond None or int[B].
    Returns: x0' int32[B, D].
    """
    batch = x0.shape[0]
    k_xt, k_lam, k_x0 = jax.random.split(key, 3)
    tt = jnp.full((batch,), t, jnp.float32)
    x_t = process.sample_xt(k_xt, x0, tt)
    logp = denoiser.logprobs(process, params, x_t, tt, denoiser.draw_lam(k_lam, batch), cond)
    return process.denoise(k_x0, x_t, logp)
