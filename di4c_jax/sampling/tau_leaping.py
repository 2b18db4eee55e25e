"""tau-leaping for processes with a rate matrix (tauLDR's teacher baseline, reference-tauldr.md 2.5, 8.15).

Grid `concat(linspace(1, t_min, n), [0])`; at each of the n grid times t_i one Poisson leap of length
h = t_i - t_{i+1} with the reverse rates R^_t(x -> y) = R_t(y -> x) sum_{x0} p(x0|x) q_t(y|x0) / q_t(x|x0);
the jumps are ordinal (integer displacements summed, then clipped to [0, K-1]); finally x0 = argmax p(x0 | x, t_min).
NFE = n + 1.
"""
from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

from di4c_jax.processes.base import as_batch_times
from di4c_jax.sampling.analytic import Sampler, draw_lam, x0_logprobs

RATIO_EPS = 1e-9  # added to q_t(x|x0) in the ratio, as the reference does


def tau_leaping_grid(num_steps: int, t_min: float) -> jax.Array:
    """float32[num_steps + 1]: linspace(1, t_min, num_steps) followed by 0."""
    return jnp.concatenate([jnp.linspace(1.0, t_min, num_steps, dtype=jnp.float32), jnp.zeros((1,), jnp.float32)])


def reverse_rates(process, x_t: jax.Array, logp_x0: jax.Array, t: jax.Array) -> jax.Array:
    """Reverse jump rates R^_t(x_t -> y) as float32[B, D, K], zero at y = x_t.

    x_t: int32[B, D], logp_x0: normalised float32[B, D, K], t: float32[B]. The x0-sum is a [B,D,K]x[B,K,K]
    contraction (no [B, D, K, K] tensor), in linear space like the reference: p(x0|x) / (q_t(x|x0) + eps) is
    bounded by 1/eps and every term is non-negative.
    """
    num_states = process.num_states
    q_t = process.transition(t)  # [B, x0, x]
    rate = process.rate(t)  # [B, from, to]
    q_at_xt = jnp.take_along_axis(jnp.swapaxes(q_t, 1, 2), x_t[:, :, None], axis=1)  # [B, D, x0] = q_t(x_t|x0)
    ratio = jnp.exp(logp_x0) / (q_at_xt + RATIO_EPS)
    inner = jnp.einsum("bdx,bxy->bdy", ratio, q_t)  # sum_x0 p(x0|x_t) q_t(y|x0) / q_t(x_t|x0)
    rate_into_xt = jnp.take_along_axis(jnp.swapaxes(rate, 1, 2), x_t[:, :, None], axis=1)  # [B, D, y] = R(y->x_t)
    rates = rate_into_xt * inner
    return jnp.where(jax.nn.one_hot(x_t, num_states, dtype=bool), 0.0, rates)


def tau_leap(key: jax.Array, x_t: jax.Array, rates: jax.Array, h: jax.Array) -> jax.Array:
    """One ordinal tau-leap: jumps ~ Poisson(rates h), x + sum_y jumps_y (y - x), clipped to [0, K-1].
    x_t int32[B, D], rates float32[B, D, K], h float32[B] -> int32[B, D]."""
    num_states = rates.shape[-1]
    jumps = jax.random.poisson(key, rates * h[:, None, None]).astype(jnp.int32)
    displacement = jnp.sum(jumps * (jnp.arange(num_states, dtype=jnp.int32) - x_t[..., None]), axis=-1)
    return jnp.clip(x_t + displacement, 0, num_states - 1).astype(jnp.int32)


def tau_leaping_sample(key: jax.Array, process, apply: Callable, params: Any, *, shape: tuple[int, int],
                       num_steps: int, t_min: float | None = None, cond: jax.Array | None = None,
                       mixture: bool = False) -> jax.Array:
    """Draw int32[B, D] samples with num_steps leaps plus a final argmax: num_steps + 1 network evaluations.

    `process` needs `rate(t)` and `transition(t)` (DiscreteGaussian); `t_min` defaults to `process.t_min`.
    Step i uses the key fold_in(loop_key, i); with `mixture=True` lam ~ U[0, 1] is fresh per sample per call.
    """
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    if not hasattr(process, "rate"):
        raise TypeError(f"tau-leaping needs a process with rate(t); {type(process).__name__} has none")
    t_min = process.t_min if t_min is None else t_min
    grid = tau_leaping_grid(num_steps, t_min)
    batch = shape[0]
    prior_key, loop_key = jax.random.split(key)

    def logprobs(i, x, t):
        lam_key, step_key = jax.random.split(jax.random.fold_in(loop_key, i))
        return x0_logprobs(process, apply, params, x, t, draw_lam(lam_key, batch, mixture), cond), step_key

    def body(x, i):
        t = as_batch_times(grid[i], batch)
        logp, step_key = logprobs(i, x, t)
        h = as_batch_times(grid[i] - grid[i + 1], batch)
        return tau_leap(step_key, x, reverse_rates(process, x, logp, t), h), None

    x = jax.lax.scan(body, process.sample_prior(prior_key, shape), jnp.arange(num_steps))[0]
    logp, _ = logprobs(num_steps, x, as_batch_times(t_min, batch))
    return jnp.argmax(logp, axis=-1).astype(jnp.int32)


def make_tau_leaping_sampler(process, apply: Callable, *, shape: tuple[int, int], num_steps: int,
                             t_min: float | None = None, mixture: bool = False) -> Sampler:
    """`tau_leaping_sample` jitted with everything but (key, params, cond) static; `sampler.nfe == num_steps + 1`.
    Called as `sampler(key, params, None, cond)` (no teacher)."""
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")

    def run(key, params, teacher_params=None, cond=None):
        del teacher_params
        return tau_leaping_sample(key, process, apply, params, shape=shape, num_steps=num_steps, t_min=t_min,
                                  cond=cond, mixture=mixture)

    return Sampler(jax.jit(run), nfe=num_steps + 1)
