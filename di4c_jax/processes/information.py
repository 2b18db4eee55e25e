"""How much of x0 a noise level leaves: the per-dimension mutual information I(x0^d; x_t^d) of a process.

A schedule suits a state space when this falls over the whole time axis. Where it reaches 0 early, the steps of a
uniform sampling grid above that t do nothing, and the training times drawn there teach nothing but the prior.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from di4c_jax.processes.base import safe_log
from di4c_jax.processes.protocol import Process


def mutual_information(process: Process, t: jax.Array, *, x0_probs: jax.Array) -> jax.Array:
    """I(x0^d; x_t^d) in nats for every time and dimension, from the process's transition q_{t|0}.

    Args:
      process: any `Process` (its `transition(t)` gives q_{t|0}[from, to]).
      t: float[T] times.
      x0_probs: float[K] or float[D, K], the law of x0^d (rows sum to 1; for a masked process the mask class
        has probability 0).

    Returns:
      float32[T, D] (D = 1 for a [K] law). Non-increasing in t (x0 -> x_s -> x_t is a Markov chain); at t = 0 it
      is the entropy of x0^d. Clipped at 0 (float32 rounding leaves ~-1e-7 where x_t has forgotten x0).
    """
    p0 = jnp.atleast_2d(jnp.asarray(x0_probs, jnp.float32))  # [D, K]
    if p0.shape[-1] != process.num_states:
        raise ValueError(f"x0_probs must end in K = {process.num_states} (the process's states), got shape "
                         f"{jnp.shape(x0_probs)}")
    q = process.transition(jnp.atleast_1d(jnp.asarray(t, jnp.float32)))  # [T, K, K]
    joint = p0[None, :, :, None] * q[:, None, :, :]  # [T, D, K_from, K_to]
    p_xt = jnp.sum(joint, axis=2, keepdims=True)  # [T, D, 1, K_to]
    # safe_log's finite NEG_INF makes the terms with joint = 0 exactly 0.
    return jnp.maximum(jnp.sum(joint * (safe_log(q)[:, None] - safe_log(p_xt)), axis=(2, 3)), 0.0)
