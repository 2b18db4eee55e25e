"""Analytic (ancestral) few-step sampler for any forward process, with mixture students and teacher hybrids.

Time grid `1 = t_0 > ... > t_n` (n + 1 points), exactly n network evaluations (design.md, Samplers): step i < n-1
draws x_{t_{i+1}} ~ prod_d p(x^d_{t_{i+1}} | x_{t_i}) with `process.reverse_step`; step n-1 maps x_{t_{n-1}} to x0
with `process.denoise(..., mode=final)` ('sample' or 'argmax'). A hybrid runs the student for the first
n - k steps and the teacher for the last k (its k evaluations include the final denoise), as
`scripts/distil_sample.py -n n -l k` in the reference (reference-tauldr.md 6).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from di4c_jax.processes.base import as_batch_times

FINAL_MODES = ("sample", "argmax")


@dataclasses.dataclass(frozen=True)
class Sampler:
    """A jitted sampler with its exact cost.

    `sample(key, params, teacher_params=None, cond=None) -> int32[B, D]`; calling the Sampler calls `sample`.
    `nfe` counts every network evaluation of one trajectory (student + teacher); `teacher_nfe` the teacher's
    share. Both are Python ints fixed by the static step counts, so they cost nothing to read.
    """

    sample: Callable[..., jax.Array]
    nfe: int
    teacher_nfe: int = 0

    def __call__(self, key, params, teacher_params=None, cond=None) -> jax.Array:
        return self.sample(key, params, teacher_params, cond)


def draw_lam(key: jax.Array, batch: int, mixture: bool) -> jax.Array | None:
    """lam ~ U[0, 1] as float32[B] for a mixture denoiser (one per sample), None for a product denoiser."""
    return jax.random.uniform(key, (batch,), jnp.float32) if mixture else None


def x0_logprobs(process, apply, params, x_t, t, lam, cond) -> jax.Array:
    """Normalised log p(x0 | x_t) [B, D, K] from a denoiser (the only way logits become log-probs)."""
    return process.x0_logprobs(apply(params, x_t, t, lam, cond), x_t)


def _check_config(process, num_steps, teacher_steps, teacher_apply, final, time_grid):
    """Validate the static configuration; returns (final mode, float32[num_steps + 1] grid)."""
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    if not 0 <= teacher_steps <= num_steps:
        raise ValueError(f"teacher_steps must be in [0, num_steps={num_steps}], got {teacher_steps}")
    if teacher_steps > 0 and teacher_apply is None:
        raise ValueError("teacher_steps > 0 needs a teacher_apply")
    final = process.default_final if final is None else final
    if final not in FINAL_MODES:
        raise ValueError(f"final must be one of {FINAL_MODES}, got {final!r}")
    grid = jnp.asarray(process.default_time_grid(num_steps) if time_grid is None else time_grid, jnp.float32)
    if grid.shape != (num_steps + 1,):
        raise ValueError(f"time grid must have num_steps + 1 = {num_steps + 1} points, got shape {grid.shape}")
    if not isinstance(grid, jax.core.Tracer):
        values = np.asarray(grid)
        if not (np.all(np.diff(values) < 0) and values[0] <= 1.0 and values[-1] >= 0.0):
            raise ValueError(f"time grid must decrease strictly within [0, 1], got {values}")
    return final, grid


def analytic_sample(key: jax.Array, process, apply: Callable, params: Any, *, shape: tuple[int, int],
                    num_steps: int, cond: jax.Array | None = None, mixture: bool = False,
                    time_grid: jax.Array | None = None, final: str | None = None,
                    teacher_apply: Callable | None = None, teacher_params: Any = None, teacher_steps: int = 0,
                    teacher_mixture: bool = False) -> jax.Array:
    """Draw int32[B, D] samples (shape = (B, D)) with `num_steps` network evaluations.

    `apply` is the student denoiser (design.md); with `mixture=True` it gets a fresh lam ~ U[0, 1] per sample per
    step. `time_grid` (float32[num_steps + 1], decreasing from 1) defaults to `process.default_time_grid`;
    `final` ('sample' | 'argmax') to `process.default_final`. The last `teacher_steps` steps (including the final
    denoise) use `teacher_apply(teacher_params, ...)`, itself a mixture if `teacher_mixture`.
    Step i uses the key `fold_in(loop_key, i)` whichever network runs it. `cond` (int32[B] or None) is passed
    to every call. Jit with everything but key, params, teacher_params and cond static (see `make_analytic_sampler`).
    """
    final, grid = _check_config(process, num_steps, teacher_steps, teacher_apply, final, time_grid)
    batch = shape[0]
    prior_key, loop_key = jax.random.split(key)
    x = process.sample_prior(prior_key, shape)
    student = (apply, params, mixture)
    teacher = (teacher_apply, teacher_params, teacher_mixture)

    def logprobs(net, i, x_t, t):
        net_apply, net_params, net_mixture = net
        lam_key, step_key = jax.random.split(jax.random.fold_in(loop_key, i))
        lam = draw_lam(lam_key, batch, net_mixture)
        return x0_logprobs(process, net_apply, net_params, x_t, t, lam, cond), step_key

    def transitions(net, x_t, start, stop):
        if stop <= start:
            return x_t

        def body(x_cur, i):
            t, s = as_batch_times(grid[i], batch), as_batch_times(grid[i + 1], batch)
            logp, step_key = logprobs(net, i, x_cur, t)
            return process.reverse_step(step_key, x_cur, logp, t, s), None

        return jax.lax.scan(body, x_t, jnp.arange(start, stop))[0]

    first_teacher = num_steps - teacher_steps
    x = transitions(student, x, 0, min(first_teacher, num_steps - 1))
    x = transitions(teacher, x, first_teacher, num_steps - 1)
    last = teacher if teacher_steps > 0 else student
    logp, final_key = logprobs(last, num_steps - 1, x, as_batch_times(grid[num_steps - 1], batch))
    return process.denoise(final_key, x, logp, mode=final)


def make_analytic_sampler(process, apply: Callable, *, shape: tuple[int, int], num_steps: int,
                          mixture: bool = False, time_grid=None, final: str | None = None,
                          teacher_apply: Callable | None = None, teacher_steps: int = 0,
                          teacher_mixture: bool = False) -> Sampler:
    """`analytic_sample` jitted once with the process, networks, grid and step counts closed over (static).

    Returns a `Sampler`: `sampler(key, params, teacher_params=None, cond=None) -> int32[B, D]`, with
    `sampler.nfe == num_steps` and `sampler.teacher_nfe == teacher_steps`.
    """
    def run(key, params, teacher_params=None, cond=None):
        return analytic_sample(key, process, apply, params, shape=shape, num_steps=num_steps, cond=cond,
                               mixture=mixture, time_grid=time_grid, final=final, teacher_apply=teacher_apply,
                               teacher_params=teacher_params, teacher_steps=teacher_steps,
                               teacher_mixture=teacher_mixture)

    _check_config(process, num_steps, teacher_steps, teacher_apply, final, time_grid)  # fail before tracing
    return Sampler(jax.jit(run), nfe=num_steps, teacher_nfe=teacher_steps)
