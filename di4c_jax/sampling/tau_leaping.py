"""tau-leaping for processes with a generator (tauLDR's sampler, Campbell et al. 2022, Sec. 4.1;
sony/di4c:tauldr/lib/sampling/sampling.py).

Grid `concat(linspace(1, t_min, n), [0])`; at each of the n grid times t_i one Poisson leap of length
h = t_i - t_{i+1} with the model's reverse rates (`di4c_jax.processes.rates.reverse_rates`); the jumps are ordinal
(integer displacements summed, then clipped to [0, K-1]); finally x0 = argmax p(x0 | x, t_min). NFE = n + 1.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from di4c_jax.denoiser import Denoiser
from di4c_jax.processes.base import as_batch_times
from di4c_jax.processes.protocol import Process, require
from di4c_jax.processes.rates import reverse_rates
from di4c_jax.sampling.sampler import SAMPLERS, Sampler, check_networks, lam_drawer, reject_teacher_hybrid


def tau_leaping_grid(num_steps: int, t_min: float) -> jax.Array:
    """float32[num_steps + 1]: linspace(1, t_min, num_steps) followed by 0."""
    return jnp.concatenate([jnp.linspace(1.0, t_min, num_steps, dtype=jnp.float32), jnp.zeros((1,), jnp.float32)])


def tau_leap(key: jax.Array, *, x_t: jax.Array, rates: jax.Array, h: jax.Array) -> jax.Array:
    """One ordinal tau-leap: jumps ~ Poisson(rates h), x + sum_y jumps_y (y - x), clipped to [0, K-1].

    Args: x_t int32[B, D], rates float32[B, D, K], h float32[B].  Returns: int32[B, D].
    """
    num_states = rates.shape[-1]
    jumps = jax.random.poisson(key, rates * h[:, None, None]).astype(jnp.int32)
    displacement = jnp.sum(jumps * (jnp.arange(num_states, dtype=jnp.int32) - x_t[..., None]), axis=-1)
    return jnp.clip(x_t + displacement, 0, num_states - 1).astype(jnp.int32)


def tau_leaping_sample(key: jax.Array, *, process: Process, denoiser: Denoiser, params: Any, shape: tuple[int, int],
                       num_steps: int, t_min: float | None = None, cond: jax.Array | None = None,
                       share_lam: bool = False) -> jax.Array:
    """Draw samples with num_steps leaps plus a final argmax: num_steps + 1 network evaluations.

    Args:
      key: PRNG key; step i uses fold_in(loop_key, i).
      process: a process with a generator (`has_generator`), e.g. DiscreteGaussian.
      denoiser, params: the network; a mixture gets a fresh lam ~ U[0, 1] per sample per call, or one per sample
        for all its calls with `share_lam` (`di4c_jax.sampling.lam_drawer`).
      shape: (B, D).  num_steps: leaps.  t_min: last leap time (default `process.t_min`).  cond: int32[B] or None.

    Returns:
      int32[B, D] samples.
    """
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    require(process, "has_generator", "tau-leaping")
    t_min = process.t_min if t_min is None else t_min
    grid = tau_leaping_grid(num_steps, t_min)
    batch = shape[0]
    prior_key, loop_key = jax.random.split(key)
    draw_lam = lam_drawer(key, denoiser=denoiser, batch=batch, share_lam=share_lam)

    def logprobs(i, x, t):
        lam_key, step_key = jax.random.split(jax.random.fold_in(loop_key, i))
        return denoiser.logprobs(process, params, x, t, draw_lam(lam_key), cond), step_key

    def body(x, i):
        t = as_batch_times(grid[i], batch)
        logp, step_key = logprobs(i, x, t)
        h = as_batch_times(grid[i] - grid[i + 1], batch)
        return tau_leap(step_key, x_t=x, rates=reverse_rates(process, x, logp, t), h=h), None

    x = jax.lax.scan(body, process.sample_prior(prior_key, shape), jnp.arange(num_steps))[0]
    logp, _ = logprobs(num_steps, x, as_batch_times(t_min, batch))
    return jnp.argmax(logp, axis=-1).astype(jnp.int32)


@SAMPLERS.register("tau_leaping")
def make_tau_leaping_sampler(*, process: Process, denoiser: Denoiser, shape: tuple[int, int], num_steps: int,
                             teacher: Denoiser | None = None, teacher_last_steps: int = 0,
                             t_min: float | None = None, share_lam: bool = False) -> Sampler:
    """`tau_leaping_sample` jitted with everything but (key, params, cond) static; `sampler.nfe == num_steps + 1`.
    No teacher hybrid (`teacher_last_steps` must be 0)."""
    del teacher
    reject_teacher_hybrid("tau_leaping", teacher_last_steps)
    require(process, "has_generator", "tau-leaping")
    check_networks(process, shape, denoiser)
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")

    def run(key, params, teacher_params=None, cond=None):
        del teacher_params
        return tau_leaping_sample(key, process=process, denoiser=denoiser, params=params, shape=shape,
                                  num_steps=num_steps, t_min=t_min, cond=cond, share_lam=share_lam)

    return Sampler(jax.jit(run), nfe=num_steps + 1)
