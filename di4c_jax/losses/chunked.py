"""The student's N-component statistics that the Di4C objective needs, with memory flat in N.

The objective reads the N components' log-probabilities logp [B, N, D, K] only through three statistics:
  log_marginal [B, D, K]   log (1/N) sum_n p_n          (mixture marginals: control variate, marginal KLs)
  values       [B, N, D, P] logp gathered at P points   (x0 and the M composition samples: F and F - G)
  cross        [B, N]       sum_{d,k} tau logp_n         (tau: teacher marginals; the distillation KL)
`chunked_component_stats` computes them `chunk` components at a time: the forward pass streams the logsumexp over
chunks, and a custom VJP recomputes each chunk's network pass in the backward pass (d log_marginal / d logp_n =
exp(logp_n - logsumexp_n logp_n) is applied per chunk), so at most one chunk of [B, chunk, D, K] log-probabilities
and of the network's activations lives at once. Values and gradients equal those of the unchunked computation up to
float rounding (dropout masks are drawn per chunk, so with dropout on they differ in which units drop). At impossible
classes (log-prob NEG_INF = -1e6, where float32 resolves only 1/16) the streamed weights are coarse; no loss term
puts a cotangent there (every KL weighs them by a probability of 0).
"""
from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from di4c_jax.denoiser import Denoiser
from di4c_jax.losses.mixture import gather_points, mixture_log_marginal
from di4c_jax.losses.reduce import logsumexp_axis
from di4c_jax.processes.protocol import Process


def _split_first(out):
    """(a, b, c) -> (a, (b, c))."""
    return out[0], out[1:]


class ComponentStats(NamedTuple):
    log_marginal: jax.Array  # [B, D, K]
    values: jax.Array  # [B, N, D, P]
    cross: jax.Array  # [B, N]


def component_stats(logp: jax.Array, points: jax.Array, tau: jax.Array) -> ComponentStats:
    """The statistics from materialised components: logp [B, N, D, K], points int[B, P, D], tau [B, D, K]."""
    return ComponentStats(mixture_log_marginal(logp), gather_points(logp, points),
                          jnp.einsum("bndk,bdk->bn", logp, tau))


def scan_chunks(fn, count: int, combine, init):
    """Run fn(c) -> (acc_c, out_c) for c = 0..count-1 in a `lax.scan`: returns (combine(...combine(init, acc_0)...),
    outs stacked on a new leading axis). Inside `jax.shard_map`, `init` must vary over the same mesh axes as the
    accumulated values (derive it from the sharded inputs, e.g. `like_batch`)."""
    def body(carry, c):
        acc_c, out_c = fn(c)
        return combine(carry, acc_c), out_c

    return jax.lax.scan(body, init, jnp.arange(count))


def like_batch(x: jax.Array, shape, value) -> jax.Array:
    """A float32 array of `shape` filled with `value` that has the (sharding) type of the batch array `x`."""
    anchor = jnp.zeros((), jnp.float32) * jnp.sum(x.reshape(-1)[:1]).astype(jnp.float32)
    return jnp.full(shape, value, jnp.float32) + anchor


# Bytes of [B, chunk, D, K] float32 log-probabilities one student call may make, by backend. On an accelerator
# memory is what a chunk costs; on XLA's CPU backend smaller working sets are also faster (`experiments.bench_step`'s
# step: 1394 / 1480 / 1641 / 1978 ms at chunk 2 / 4 / 8 / 16, with 2 MiB per component).
CHUNK_BUDGET_BYTES = {"cpu": 4 << 20}
ACCELERATOR_CHUNK_BUDGET_BYTES = 64 << 20


def default_chunk(batch: int, dims: int, classes: int, num: int, budget_bytes: int | None = None, *,
                  backend: str | None = None) -> int:
    """The most components whose float32 [B, chunk, D, K] log-probabilities fit `budget_bytes`, >= 1.

    The budget defaults to the backend's (`backend`, default `jax.default_backend()`): 4 MiB on CPU, 64 MiB on
    GPU and TPU. The network's activations per component are not known here and can dominate (a deep model at
    small K): set the recipe's `chunk` then."""
    if budget_bytes is None:
        budget_bytes = CHUNK_BUDGET_BYTES.get(backend or jax.default_backend(), ACCELERATOR_CHUNK_BUDGET_BYTES)
    return int(max(1, min(num, budget_bytes // max(1, 4 * batch * dims * classes))))


def chunked_component_stats(params: Any, *, student: Denoiser, process: Process, x_t, t, lam, cond, rngs, points,
                            tau, chunk: int) -> ComponentStats:
    """`component_stats` of the student's components at (x_t, t), `chunk` lambdas at a time.

    Args:
      params: the student's params (the only differentiated input).
      student, process: the mixture student and the forward process.
      x_t: int[B, D].  t: float[B].  lam: float[B, N], component n of row b at lam[b, n].  cond: None or int[B].
      rngs: dropout key or None (chunk c uses fold_in(rngs, c)).
      points: int[B, P, D] where the values are gathered.  tau: [B, D, K] (stop-gradient) for the cross term.
      chunk: components per network call, 1 <= chunk; N need not be a multiple of it.

    Returns:
      ComponentStats(log_marginal [B, D, K], values [B, N, D, P], cross [B, N]).
    """
    batch, num = lam.shape
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    chunk = min(chunk, num)
    full, rest = divmod(num, chunk)
    sg = jax.lax.stop_gradient
    tau = sg(tau)

    def chunk_stats(p, lam_c, c):
        """(logsumexp over the chunk [B, D, K], values [B, n_c, D, P], cross [B, n_c]) of lambdas lam_c [B, n_c]."""
        key = None if rngs is None else jax.random.fold_in(rngs, c)
        logp = student.component_logprobs_at(process, p, x_t, t, lam_c, cond, rngs=key)
        return (logsumexp_axis(logp, 1), gather_points(logp, points), jnp.einsum("bndk,bdk->bn", logp, tau))

    lam_full = jnp.moveaxis(lam[:, :full * chunk].reshape(batch, full, chunk), 1, 0)  # [C, B, chunk]
    lam_rest = lam[:, full * chunk:]

    def forward(p):
        lse, (values, cross) = scan_chunks(lambda c: _split_first(chunk_stats(p, lam_full[c], c)), full,
                                           jnp.logaddexp, jnp.full_like(tau, -jnp.inf))
        values = jnp.moveaxis(values, 0, 1).reshape(batch, full * chunk, *values.shape[3:])
        cross = jnp.moveaxis(cross, 0, 1).reshape(batch, full * chunk)
        if rest:
            lse_r, values_r, cross_r = chunk_stats(p, lam_rest, full)
            lse = jnp.logaddexp(lse, lse_r)
            values, cross = jnp.concatenate([values, values_r], 1), jnp.concatenate([cross, cross_r], 1)
        return lse, values, cross

    @jax.custom_vjp
    def stats(p):
        lse, values, cross = forward(p)
        return ComponentStats(lse - math.log(num), values, cross)

    def stats_fwd(p):
        lse, values, cross = forward(p)
        return ComponentStats(lse - math.log(num), values, cross), (p, lse)

    def stats_bwd(res, cotangent):
        p, lse = res
        d_marginal, d_values, d_cross = cotangent

        def chunk_grad(lam_c, c, d_values_c, d_cross_c):
            out, vjp = jax.vjp(lambda q: chunk_stats(q, lam_c, c), p)
            # d log_marginal / d lse_c = exp(lse_c - lse): the chunk's share of the streamed logsumexp
            return vjp((d_marginal * jnp.exp(out[0] - lse), d_values_c, d_cross_c))[0]

        split = lambda a: jnp.moveaxis(a[:, :full * chunk].reshape(batch, full, chunk, *a.shape[2:]), 1, 0)  # noqa
        d_values_full, d_cross_full = split(d_values), split(d_cross)
        grad, _ = scan_chunks(lambda c: (chunk_grad(lam_full[c], c, d_values_full[c], d_cross_full[c]), None), full,
                              lambda a, b: jax.tree.map(jnp.add, a, b), jax.tree.map(jnp.zeros_like, p))
        if rest:
            grad_r = chunk_grad(lam_rest, full, d_values[:, full * chunk:], d_cross[:, full * chunk:])
            grad = jax.tree.map(jnp.add, grad, grad_r)
        return (grad,)

    stats.defvjp(stats_fwd, stats_bwd)
    return stats(params)
