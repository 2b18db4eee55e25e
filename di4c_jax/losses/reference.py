"""Reference distributions r_t of the Di4C consistency loss and of CDM: where each item's x_t comes from.

Hayakawa et al. (2025) write the consistency loss as an expectation over x_t ~ r_t, where r_t may be the data's
q_t = E_{x0} q(x_t | x0) or the law of x_t reached by multi-step denoising. A student trained only on the data's x_t
never sees the states its own few-step sampler visits; drawing some x_t from the teacher's or the student's own
trajectory covers them. Per item, one categorical draw picks the source with the config's probabilities
(data: 1 - reference_teacher - reference_student); each trajectory is drawn for the whole batch (only when its
probability is > 0, a check on the static config) and selected per item.

A trajectory runs from x_1 ~ `process.sample_prior` down the item's own grid s_i = 1 - (1 - t) i / S, i = 0..S
(s_S = t exactly), each step the config's `teacher_step` (the analytic / ancestral step, or MaskGIT's confidence
step) from the network's log p(x0 | x_{s_i}, s_i); a mixture network takes a fresh lambda per item per step.
"""
from __future__ import annotations

from typing import Any, NamedTuple, Protocol

import jax
import jax.numpy as jnp

from di4c_jax.denoiser import Denoiser
from di4c_jax.processes.protocol import Process

sg = jax.lax.stop_gradient


class ReferenceSettings(Protocol):
    """What a loss config gives `draw_reference_xt` (Di4C recipes, `CDMConfig`)."""

    reference_teacher: float  # probability that an item's x_t comes from the teacher's own trajectory
    reference_student: float  # ... from the student's own (on-policy) trajectory; the data gets the rest
    reference_teacher_steps: int  # S of each trajectory, from t = 1 down to the item's t
    reference_student_steps: int

    def teacher_step(self, key, process, x_t, logp, t, u) -> jax.Array: ...


def check_reference_settings(config: ReferenceSettings, prefix: str = "") -> None:
    """Raise ValueError (message starting with `prefix`) unless both weights lie in [0, 1] with sum <= 1 and both
    step counts are >= 1."""
    for field in ("reference_teacher", "reference_student"):
        if not 0.0 <= getattr(config, field) <= 1.0:
            raise ValueError(f"{prefix}{field} must be in [0, 1], got {getattr(config, field)}")
    if config.reference_teacher + config.reference_student > 1.0 + 1e-9:
        raise ValueError(f"{prefix}reference_teacher + reference_student must be <= 1, got "
                         f"{config.reference_teacher} + {config.reference_student}")
    for field in ("reference_teacher_steps", "reference_student_steps"):
        if getattr(config, field) < 1:
            raise ValueError(f"{prefix}{field} must be >= 1, got {getattr(config, field)}")


class ReferenceDraw(NamedTuple):
    """x_t int32[B, D] and from_data bool[B]: True where x_t was drawn from q(. | x0) (x0 is its source)."""

    x_t: jax.Array
    from_data: jax.Array


def draw_reference_xt(key: jax.Array, *, config: ReferenceSettings, process: Process, x0: jax.Array, t: jax.Array,
                      teacher: Denoiser, teacher_params: Any, student: Denoiser, student_params: Any,
                      cond: jax.Array | None = None) -> ReferenceDraw:
    """x_t ~ r_t per item: the data's q(. | x0), or the teacher's or the student's own trajectory down to t.

    The data path is `process.sample_xt(key, x0, t)` with `key` itself, so with both reference weights 0 the draw
    is the plain data draw, bit for bit; the source choice and the trajectories use keys folded in from `key`.
    Everything returned is stop-gradient (both networks run on stop-gradient params, the student with rngs=None).

    Args:
      key: PRNG key.
      config: the loss config (a Di4C recipe or `CDMConfig`): reference_teacher / reference_student (source
        probabilities), reference_teacher_steps / reference_student_steps (S of each trajectory) and its
        `teacher_step`.
      process: the forward process.
      x0: int[B, D] data.  t: float32[B] the items' times.
      teacher, teacher_params: the teacher (product, or a mixture for di4c^2).
      student, student_params: the mixture student.
      cond: None or int32[B] labels, passed to every network call.

    Returns:
      ReferenceDraw(x_t int32[B, D], from_data bool[B]). Callers drop the data correlation term of items with
      from_data False: their x_t did not come from x0.
    """
    x_t = process.sample_xt(key, x0, t)
    batch = x0.shape[0]
    if config.reference_teacher <= 0 and config.reference_student <= 0:
        return ReferenceDraw(x_t, jnp.ones((batch,), bool))
    v = jax.random.uniform(jax.random.fold_in(key, 1), (batch,))  # the categorical draw, by inversion
    use_teacher = v < config.reference_teacher
    use_student = ~use_teacher & (v < config.reference_teacher + config.reference_student)
    sources = ((use_teacher, config.reference_teacher, teacher, teacher_params, config.reference_teacher_steps),
               (use_student, config.reference_student, student, student_params, config.reference_student_steps))
    for index, (chosen, weight, denoiser, params, num_steps) in enumerate(sources, start=2):
        if weight > 0:
            x_ref = denoising_trajectory(jax.random.fold_in(key, index), config=config, process=process,
                                         denoiser=denoiser, params=params, t=t, num_steps=num_steps,
                                         shape=x0.shape, cond=cond)
            x_t = jnp.where(chosen[:, None], x_ref, x_t)
    return ReferenceDraw(sg(x_t), ~(use_teacher | use_student))


def denoising_trajectory(key: jax.Array, *, config: ReferenceSettings, process: Process, denoiser: Denoiser,
                         params: Any, t: jax.Array, num_steps: int, shape: tuple[int, int],
                         cond: jax.Array | None = None) -> jax.Array:
    """x_t of `num_steps` `config.teacher_step`s from x_1 ~ the prior along s_i = 1 - (1 - t) i / num_steps.

    Args:
      key: PRNG key (prior draw; step i uses fold_in(loop key, i) for its lambda and its step).
      config: the loss config whose `teacher_step` is taken.  process: the forward process.
      denoiser, params: the network (params stop-gradient, rngs=None; a mixture draws a fresh lambda per row per
        step).
      t: float32[B] each row's end time.  num_steps: S >= 1.  shape: (B, D).  cond: None or int32[B].

    Returns:
      int32[B, D], stop-gradient.
    """
    batch = shape[0]
    k_prior, k_loop = jax.random.split(key)
    params = sg(params)

    def time(i):
        return jnp.where(i == num_steps, t, 1.0 - (1.0 - t) * (i / num_steps))

    def step(i, x):
        k_lam, k_step = jax.random.split(jax.random.fold_in(k_loop, i))
        s, s_next = time(i), time(i + 1)
        logp = denoiser.logprobs(process, params, x, s, denoiser.draw_lam(k_lam, batch), cond)
        return config.teacher_step(k_step, process, x, logp, s, s_next).astype(jnp.int32)

    return sg(jax.lax.fori_loop(0, num_steps, step, process.sample_prior(k_prior, shape)))
