"""Reverse jump rates of an x0-parameterised model on a process with a generator (tauLDR, Campbell et al. 2022,
eq. 9): for a state x and a new value y != x^d in dimension d,

    Rhat_d(x -> y) = R_t[y, x^d] * r_d(x, y),   r_d(x, y) = sum_a p(x0^d = a | x) q_t[a, y] / q_t[a, x^d].

Used by the CTMC ELBO and by tau-leaping. The reference's ratio_eps (1e-9) is added to every q_t[., x]
denominator. Memory: [B, D, K] per tensor, no [B, D, K, K].
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from di4c_jax.processes.base import safe_log

RATIO_EPS = 1e-9


def rows(mat: jax.Array, idx: jax.Array) -> jax.Array:
    """mat[b, idx[b, d], :] for mat [B, K, K] and idx int[B, D] -> [B, D, K]."""
    return jnp.take_along_axis(mat, idx[:, :, None].astype(jnp.int32), axis=1)


def log_posterior_ratio(logp_x0: jax.Array, x: jax.Array, qt0: jax.Array, ratio_eps: float = RATIO_EPS) -> jax.Array:
    """log r_d(x, y) = log sum_a p(a|x)_d q[a, y] / (q[a, x^d] + eps) as [B, D, K] (max-shifted, O(B D K^2) time,
    [B, D, K] memory). logp_x0: [B, D, K], x: int[B, D], qt0: [B, K, K] = q_{t|0}[x0, x]."""
    log_w = logp_x0 - jnp.log(rows(jnp.swapaxes(qt0, 1, 2), x) + ratio_eps)
    shift = jax.lax.stop_gradient(jnp.max(log_w, axis=-1, keepdims=True))
    return shift + safe_log(jnp.einsum("bda,bay->bdy", jnp.exp(log_w - shift), qt0))


def reverse_rates(process, x_t: jax.Array, logp_x0: jax.Array, t: jax.Array,
                  ratio_eps: float = RATIO_EPS) -> jax.Array:
    """Model reverse rates Rhat_d(x_t -> y) as float32[B, D, K], zero at y = x_t^d.

    process: has a generator (`rate`, `transition`); x_t: int[B, D]; logp_x0: [B, D, K] normalised
    log p(x0 | x_t); t: float32[B].
    """
    rate_in = rows(jnp.swapaxes(process.rate(t), 1, 2), x_t)  # R[y, x^d]
    rates = rate_in * jnp.exp(log_posterior_ratio(logp_x0, x_t, process.transition(t), ratio_eps))
    return jnp.where(jax.nn.one_hot(x_t, process.num_states, dtype=bool), 0.0, rates)
