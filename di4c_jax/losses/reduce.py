"""Reductions over a non-minor axis (the N mixture components of [B, N, D, K]) written as elementwise ops.

XLA's CPU backend lowers a reduction over a middle axis to a strided loop that vectorises poorly: on
`experiments.bench_step`'s objective shape, `jax.nn.logsumexp(logp, axis=1)` and its gradient took most of the
objective's time. The same reduction as a pairwise tree of elementwise `maximum` / `add` over the axis's slices is
one fused elementwise kernel on every backend. `logsumexp_axis` has a custom VJP whose backward pass is
elementwise too (g exp(x - lse)) and whose residuals are its input and output: no [B, N, D, K] weights are kept,
and the forward pass stays one fused kernel (keeping the max and the sum apart for the backward pass splits it in
two and doubled the gradient's time).

Precision: the weights exp(x - lse) carry the rounding of lse, one float32 ulp of |lse|. At the finite NEG_INF
(-1e6) that is 1/16, so where every component gives a class NEG_INF its weights sum to e^(+-1/16), not 1. The
mixture marginals only meet this at impossible classes, whose cotangent is 0 in every loss (each KL weighs them by
a probability of 0); `mixture_log_density_at`, where it could matter, uses jax.nn.logsumexp on its small array.
"""
from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp


def _tree(op, x: jax.Array, axis: int) -> jax.Array:
    """op folded pairwise over the slices of `axis` (removed). Rounding error grows like log n, not n."""
    parts = [jax.lax.index_in_dim(x, i, axis, keepdims=False) for i in range(x.shape[axis])]
    while len(parts) > 1:
        parts = [op(parts[i], parts[i + 1]) if i + 1 < len(parts) else parts[i] for i in range(0, len(parts), 2)]
    return parts[0]


def _shift_and_total(x, axis):
    """(m, sum_n exp(x_n - m)) with m the max over `axis` (0 where it is not finite: all -inf gives -inf, not nan)."""
    m = _tree(jnp.maximum, x, axis)
    m = jnp.where(jnp.isfinite(m), m, 0.0)
    return m, _tree(jnp.add, jnp.exp(x - jnp.expand_dims(m, axis)), axis)


@partial(jax.custom_vjp, nondiff_argnums=(1,))
def _logsumexp(x, axis):
    m, total = _shift_and_total(x, axis)
    return m + jnp.log(total)


def _fwd(x, axis):
    out = _logsumexp(x, axis)
    return out, (x, out)


def _bwd(axis, res, g):
    x, out = res
    return (jnp.expand_dims(g, axis) * jnp.exp(x - jnp.expand_dims(out, axis)),)


_logsumexp.defvjp(_fwd, _bwd)


def logsumexp_axis(x: jax.Array, axis: int) -> jax.Array:
    """jax.nn.logsumexp(x, axis) (axis removed), elementwise on every backend; reverse-mode differentiable.

    Args:
      x: float array (finite or -inf entries).
      axis: the reduced axis.

    Returns:
      x.shape without `axis`, the same dtype.
    """
    return _logsumexp(x, axis % x.ndim)
