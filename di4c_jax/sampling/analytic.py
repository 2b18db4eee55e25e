"""Analytic (ancestral) few-step sampler for any forward process, with mixture students and teacher hybrids.

Time grid `1 = t_0 > ... > t_n` (n + 1 points), exactly n network evaluations (docs/design.md, Samplers): step
i < n-1 draws x_{t_{i+1}} ~ prod_d p(x^d_{t_{i+1}} | x_{t_i}) with `process.reverse_step`; step n-1 maps x_{t_{n-1}}
to x0 with `process.denoise(..., mode=final)` ('sample' or 'argmax'). A hybrid runs the student for the first
n - k steps and the teacher for the last k (its k evaluations include the final denoise), as the tauLDR fork of
sony/di4c does in `scripts/distil_sample.py -n n -l k`.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from di4c_jax.denoiser import Denoiser
from di4c_jax.processes.base import as_batch_times
from di4c_jax.processes.protocol import Process
from di4c_jax.sampling.sampler import SAMPLERS, Sampler, check_networks, lam_drawer
from di4c_jax.sampling.time_warps import warp_time_grid

FINAL_MODES = ("sample", "argmax")


def _check_config(process, num_steps, teacher_last_steps, teacher, final, time_grid, time_warp):
    """Validate the static configuration; returns (final mode, float32[num_steps + 1] grid after the warp)."""
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    if not 0 <= teacher_last_steps <= num_steps:
        raise ValueError(f"teacher_last_steps must be in [0, num_steps={num_steps}], got {teacher_last_steps}")
    if teacher_last_steps > 0 and teacher is None:
        raise ValueError("teacher_last_steps > 0 needs a teacher Denoiser")
    final = process.default_final if final is None else final
    if final not in FINAL_MODES:
        raise ValueError(f"final must be one of {FINAL_MODES}, got {final!r}")
    grid = jnp.asarray(process.default_time_grid(num_steps) if time_grid is None else time_grid, jnp.float32)
    grid = warp_time_grid(grid, time_warp)
    if grid.shape != (num_steps + 1,):
        raise ValueError(f"time grid must have num_steps + 1 = {num_steps + 1} points, got shape {grid.shape}")
    if not isinstance(grid, jax.core.Tracer):
        values = np.asarray(grid)
        if not (np.all(np.diff(values) < 0) and values[0] <= 1.0 and values[-1] >= 0.0):
            raise ValueError(f"time grid must decrease strictly within [0, 1], got {values}")
    return final, grid


def analytic_sample(key: jax.Array, *, process: Process, denoiser: Denoiser, params: Any, shape: tuple[int, int],
                    num_steps: int, cond: jax.Array | None = None, time_grid: jax.Array | None = None,
                    final: str | None = None, teacher: Denoiser | None = None, teacher_params: Any = None,
                    teacher_last_steps: int = 0, time_warp: str = "none", share_lam: bool = False) -> jax.Array:
    """Draw samples with `num_steps` network evaluations.

    Args:
      key: PRNG key. Step i uses `fold_in(loop_key, i)` whichever network runs it.
      process: the forward process (`Process`).
      denoiser, params: the (student) denoiser; a mixture gets a fresh lam ~ U[0, 1] per sample per step, or one
        per sample for all its steps with `share_lam` (`di4c_jax.sampling.lam_drawer`).
      shape: (B, D).
      num_steps: n, the number of network evaluations.
      cond: int32[B] labels or None, passed to every call.
      time_grid: float32[n + 1] decreasing from 1 (default `process.default_time_grid(n)`).
      time_warp: a named warp of that grid (`di4c_jax.sampling.time_warps`): 'none', 'sine' or 'power:<p>'.
      final: 'sample' | 'argmax' for the last step (default `process.default_final`).
      teacher, teacher_params, teacher_last_steps: the last `teacher_last_steps` steps (including the final
        denoise) use the teacher (a hybrid).

    Returns:
      int32[B, D] samples.
    """
    final, grid = _check_config(process, num_steps, teacher_last_steps, teacher, final, time_grid, time_warp)
    batch = shape[0]
    prior_key, loop_key = jax.random.split(key)
    x = process.sample_prior(prior_key, shape)
    student = (denoiser, params, lam_drawer(key, denoiser=denoiser, batch=batch, share_lam=share_lam))
    teacher_draw = None if teacher is None else lam_drawer(key, denoiser=teacher, batch=batch, share_lam=False)
    teacher_net = (teacher, teacher_params, teacher_draw)

    def logprobs(net, i, x_t, t):
        net_denoiser, net_params, draw_lam = net
        lam_key, step_key = jax.random.split(jax.random.fold_in(loop_key, i))
        return net_denoiser.logprobs(process, net_params, x_t, t, draw_lam(lam_key), cond), step_key

    def transitions(net, x_t, start, stop):
        if stop <= start:
            return x_t

        def body(x_cur, i):
            t, s = as_batch_times(grid[i], batch), as_batch_times(grid[i + 1], batch)
            logp, step_key = logprobs(net, i, x_cur, t)
            return process.reverse_step(step_key, x_cur, logp, t, s), None

        return jax.lax.scan(body, x_t, jnp.arange(start, stop))[0]

    first_teacher = num_steps - teacher_last_steps
    x = transitions(student, x, 0, min(first_teacher, num_steps - 1))
    x = transitions(teacher_net, x, first_teacher, num_steps - 1)
    last = teacher_net if teacher_last_steps > 0 else student
    logp, final_key = logprobs(last, num_steps - 1, x, as_batch_times(grid[num_steps - 1], batch))
    return process.denoise(final_key, x, logp, mode=final)


@SAMPLERS.register("analytic")
def make_analytic_sampler(*, process: Process, denoiser: Denoiser, shape: tuple[int, int], num_steps: int,
                          teacher: Denoiser | None = None, teacher_last_steps: int = 0, time_grid=None,
                          final: str | None = None, time_warp: str = "none", share_lam: bool = False) -> Sampler:
    """`analytic_sample` jitted once with the process, networks, grid and step counts closed over (static).

    Returns a `Sampler` with `nfe == num_steps` and `teacher_nfe == teacher_last_steps`; call it as
    `sampler(key, params=..., teacher_params=..., cond=...)`.
    """
    def run(key, params, teacher_params=None, cond=None):
        return analytic_sample(key, process=process, denoiser=denoiser, params=params, shape=shape,
                               num_steps=num_steps, cond=cond, time_grid=time_grid, final=final, teacher=teacher,
                               teacher_params=teacher_params, teacher_last_steps=teacher_last_steps,
                               time_warp=time_warp, share_lam=share_lam)

    _check_config(process, num_steps, teacher_last_steps, teacher, final, time_grid, time_warp)  # fail early
    check_networks(process, shape, denoiser, teacher)
    return Sampler(jax.jit(run), nfe=num_steps, teacher_nfe=teacher_last_steps)
