"""Log-space helpers for the N-sample lambda mixture p(x) = (1/N) sum_n prod_d p_n^d(x_d).

`logp[B, N, D, K]` holds the normalised per-dimension log-probabilities of the N product components; impossible
classes carry the finite NEG_INF (-1e6), never -inf.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from di4c_jax.losses.reduce import logsumexp_axis
from di4c_jax.processes.base import sample_categorical


def mixture_log_marginal(logp: jax.Array) -> jax.Array:
    """Per-dimension marginals of the mixture: log (1/N) sum_n p_n^d. [B, N, D, K] -> [B, D, K]."""
    return logsumexp_axis(logp, 1) - math.log(logp.shape[1])


def mixture_log_likelihood(logp: jax.Array, x: jax.Array, control_variate: bool = True) -> jax.Array:
    """Log of the N-sample mixture density at M points per item. logp [B, N, D, K], x int[B, M, D] -> [B, M].

    F(x) = logsumexp_n sum_d logp[b, n, d, x_d] - log N. With `control_variate`, returns F(x) - G(x) where
    G(x) = sum_d log pbar^d(x_d) is the log-density of the product of the mixture marginals. F - G is summed as
    sum_d (g_nd - log pbar^d) inside the logsumexp: each summand is <= log N, so no cancellation between two sums of
    order -1e4 (same value as the reference's F - G, better float32 accuracy).
    The N values are gathered at the M points ([B, N, D, M]); nothing of size [B, M, N, D, K] is built.
    """
    if logp.ndim != 4:
        raise ValueError(f"logp must be [B, N, D, K], got shape {logp.shape}")
    if x.ndim != 3 or x.shape[0] != logp.shape[0] or x.shape[2] != logp.shape[2]:
        raise ValueError(f"x must be int[B, M, D] with B={logp.shape[0]}, D={logp.shape[2]}, got shape {x.shape}")
    return mixture_log_density_at(gather_points(logp, x), control_variate)


def gather_points(logp: jax.Array, x: jax.Array) -> jax.Array:
    """The components' per-dimension log-probabilities at M points: logp [B, N, D, K], x int[B, M, D] ->
    [B, N, D, M] (a gather, never a one-hot)."""
    index = jnp.swapaxes(x, 1, 2)[:, None].astype(jnp.int32)  # [B, 1, D, M]
    return jnp.take_along_axis(logp, index, axis=-1)


def mixture_log_density_at(values: jax.Array, control_variate: bool = True) -> jax.Array:
    """`mixture_log_likelihood` from the gathered values [B, N, D, M] (`gather_points`) -> [B, M]."""
    log_n = math.log(values.shape[1])
    if control_variate:
        values = values - (jax.nn.logsumexp(values, axis=1, keepdims=True) - log_n)
    return jax.nn.logsumexp(jnp.sum(values, axis=2), axis=1) - log_n


def kl_sum(logp: jax.Array, logq: jax.Array) -> jax.Array:
    """sum_{d,k} p (log p - log q) with p = exp(logp). [..., D, K] x [..., D, K] (broadcasting) -> [...].

    Finite NEG_INF entries give exp(NEG_INF) = 0 exactly, so impossible classes of p contribute 0.
    """
    return jnp.sum(jnp.exp(logp) * (logp - logq), axis=(-2, -1))


def sample_components(key: jax.Array, *, logp: jax.Array) -> jax.Array:
    """One joint draw per component: x[b, n, d] ~ p_n^d independently. [B, N, D, K] -> int32[B, N, D]."""
    return sample_categorical(key, logp)
