"""SDTT: self-distillation through time (Deschenaux & Gulcehre 2025), masked processes only.

The student's one-step x0-prediction at (x_t, t) is matched, token by token, to the teacher's x0-predictions along
`num_teacher_steps` ancestral steps of size dt (`_teacher_logprobs_on_mask` in
sony/di4c:sdtt/src/sdtt/core/distill/multi_round_sdtt.py). The target of a token masked in x_t is
the teacher's log p(x0) from the step at which that token got unmasked, or the last step's prediction if it is
still masked after the last step. The target is per token (a product): SDTT has no joint target.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from di4c_jax.denoiser import Denoiser
from di4c_jax.losses.inputs import checked_batch
from di4c_jax.losses.times import stratified_times
from di4c_jax.processes.protocol import Process, require

sg = jax.lax.stop_gradient
SDTT_MODES = ("kl-bwd", "kl-fwd", "tvd", "mse")


@dataclasses.dataclass(frozen=True)
class SDTTConfig:
    """Static (hashable) settings of `sdtt_loss`.

    `dt`: teacher step size of the current round. Multi-round training is the caller's job (the experiment runner
    does it for `distill.rounds > 1`): round r (1-based) uses `sdtt_round_dt(r, dt_1)` = 2^(r-1) dt_1 and copies
    the student into the teacher between rounds, so round r's student takes one step of size 2^r dt_1
    (reference: dt_1 = (1 - 1e-5) / 1024).
    `mode`: per-token divergence between student p_s and target p_t, summed over classes:
      kl-bwd  sum p_s (log p_s - log p_t) = KL(student || teacher)   (reference default)
      kl-fwd  sum p_t (log p_t - log p_s) = KL(teacher || student)
      tvd     (1/2) sum |p_s - p_t|   (the reference takes sum |log p_s - log p_t| under this name)
      mse     sum (p_s - p_t)^2       (the reference takes the mean of (log p_s - log p_t)^2 over classes)
    tvd and mse are taken on probabilities here: the finite NEG_INF of impossible classes makes log-space
    differences there meaningless (two "impossible" log-probs differ by O(1) after normalisation).
    `min_time`: t ~ U[min_time, 1], antithetic (stratified) over the batch, as MDLM's `_sample_t`.
    A mixture student gets one lam ~ U[0, 1] per row and that component is matched to the (per-token) target,
    which trains every component towards the same product target; a mixture teacher draws a fresh lam per row at
    each step (as the sampler does).
    `student_dropout`: pass a PRNG key as `rngs` to the student (train mode).
    """

    dt: float = (1.0 - 1e-5) / 1024
    mode: str = "kl-bwd"
    num_teacher_steps: int = 2
    min_time: float = 1e-5
    student_dropout: bool = True

    def __post_init__(self):
        if self.mode not in SDTT_MODES:
            raise ValueError(f"unknown SDTT mode {self.mode!r}; choose one of {SDTT_MODES}")
        if not 0.0 < self.dt < 1.0:
            raise ValueError(f"dt must lie in (0, 1), got {self.dt}")
        if self.num_teacher_steps < 1:
            raise ValueError(f"num_teacher_steps must be >= 1, got {self.num_teacher_steps}")
        if not 0.0 <= self.min_time < 1.0:
            raise ValueError(f"min_time must lie in [0, 1), got {self.min_time}")


def sdtt_round_dt(round_index: int, first_dt: float = (1.0 - 1e-5) / 1024, num_teacher_steps: int = 2) -> float:
    """Teacher step size of SDTT round `round_index` (1-based): first_dt * num_teacher_steps^(r-1). The default
    first_dt is the reference's (1 - 1e-5) / 1024, whose 7 doubling rounds end at a 16-step student."""
    if round_index < 1:
        raise ValueError(f"round_index is 1-based, got {round_index}")
    return first_dt * num_teacher_steps ** (round_index - 1)


def token_divergence(logp_student: jax.Array, logp_target: jax.Array, mode: str) -> jax.Array:
    """Per-token divergence [..., K] x [..., K] -> [...] (see SDTTConfig.mode)."""
    p_s, p_t = jnp.exp(logp_student), jnp.exp(logp_target)
    if mode == "kl-bwd":
        return jnp.sum(p_s * (logp_student - logp_target), axis=-1)
    if mode == "kl-fwd":
        return jnp.sum(p_t * (logp_target - logp_student), axis=-1)
    if mode == "tvd":
        return 0.5 * jnp.sum(jnp.abs(p_s - p_t), axis=-1)
    if mode == "mse":
        return jnp.sum((p_s - p_t) ** 2, axis=-1)
    raise ValueError(f"unknown SDTT mode {mode!r}; choose one of {SDTT_MODES}")


def sdtt_teacher_targets(key: jax.Array, *, teacher: Denoiser, teacher_params: Any, process: Process, x_t, t, dt: float,
                         num_steps: int = 2, cond=None):
    """Teacher target log-probs [B, D, K] (stop-gradient) from `num_steps` ancestral steps of size dt.

    Step k (k = 0..num_steps-1) goes from max(t - k dt, 0) to max(t - (k+1) dt, 0): evenly spaced, unlike the
    reference, whose step start times are [t, (1 - t)(t - 2 dt)] (`_teacher_logprobs_on_mask` in
    sony/di4c:sdtt/src/sdtt/core/distill/multi_round_sdtt.py, inherited from jdeschena/sdtt). Per token: the
    teacher's log p(x0) at the step where the token got unmasked, else the last step's. Tokens unmasked in x_t
    get the teacher's (SUBS) copy distribution; callers ignore them. Cost: num_steps teacher evaluations.
    x_t int32[B, D], t float32[B].
    """
    batch = x_t.shape[0]
    teacher_params = sg(teacher_params)
    x, decided, target = x_t, x_t != process.mask_id, None
    for k, key_k in enumerate(jax.random.split(key, num_steps)):
        k_lam, k_step = jax.random.split(key_k)
        t_from = jnp.maximum(t - k * dt, 0.0)
        t_to = jnp.maximum(t - (k + 1) * dt, 0.0)
        logp = teacher.logprobs(process, teacher_params, x, t_from, teacher.draw_lam(k_lam, batch), cond)
        target = logp if target is None else jnp.where(decided[..., None], target, logp)
        x = process.reverse_step(k_step, x, logp, t_from, t_to)
        decided = decided | (x != process.mask_id)
    return sg(target)


def sdtt_loss(key: jax.Array, *, student: Denoiser, student_params: Any, teacher: Denoiser, teacher_params: Any,
              process: Process, x0: jax.Array, config: SDTTConfig, cond: jax.Array | None = None):
    """SDTT loss on a data batch (absorbing processes only: "the step at which a token got unmasked" has no
    meaning elsewhere).

    Draws stratified t ~ U[min_time, 1] per row and x_t ~ q(. | x0); the loss is the mean, over all tokens of the
    batch that are masked in x_t, of the per-token divergence between the student's x0 log-probs at (x_t, t)
    and `sdtt_teacher_targets` (tokens unmasked in x_t do not count). Only `student_params` get gradient.
    Cost per example: num_teacher_steps teacher evaluations + 1 student evaluation (with gradient).

    Args:
      key: PRNG key.  student, student_params / teacher, teacher_params: Denoisers (product or mixture) and params.
      process: an absorbing process.  x0: int[B, D].  config: `SDTTConfig`.  cond: None or int32[B].

    Returns:
      (scalar loss, aux) with aux: loss, num_masked (masked tokens in the batch), t_mean.
    """
    require(process, "absorbing", "SDTT")
    x0 = checked_batch(process, x0, cond)
    batch = x0.shape[0]
    k_t, k_xt, k_teacher, k_lam, k_drop = jax.random.split(key, 5)

    t = stratified_times(k_t, batch, config.min_time)
    x_t = process.sample_xt(k_xt, x0, t)
    target = sdtt_teacher_targets(k_teacher, teacher=teacher, teacher_params=teacher_params, process=process,
                                  x_t=x_t, t=t, dt=config.dt, num_steps=config.num_teacher_steps, cond=cond)
    rngs = k_drop if config.student_dropout else None
    logp_student = student.logprobs(process, student_params, x_t, t, student.draw_lam(k_lam, batch), cond,
                                    rngs=rngs)

    masked = x_t == process.mask_id
    num_masked = jnp.sum(masked.astype(jnp.float32))
    per_token = token_divergence(logp_student, target, config.mode)
    loss = jnp.sum(jnp.where(masked, per_token, 0.0)) / jnp.maximum(num_masked, 1.0)
    return loss, dict(loss=loss, num_masked=num_masked, t_mean=jnp.mean(t))
