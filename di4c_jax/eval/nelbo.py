"""Held-out NELBO of a trained denoiser: the teacher objective's bound, per token, on data it was not trained on.

A mixture (student) denoiser enters through its lambda-marginal: p(x0^d | x_t) = mean_j p(x0^d | x_t, lam_j) at the
midpoints lam_j = (j + 1/2) / N, the per-position law the mixture implies. The continuous-time bounds of
`di4c_jax.losses.teacher_loss` read only these per-position laws, so this is the bound of the diffusion model
that runs on the student's marginals (its correlations, which the bound cannot see, are scored by the samples).
"""
from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from di4c_jax.denoiser import Denoiser
from di4c_jax.losses.teacher import TeacherLossConfig, resolve_objective, teacher_loss


def marginal_denoiser(denoiser: Denoiser, process, num_lambda: int = 16) -> Denoiser:
    """A product denoiser returning the mixture's lambda-marginal log p(x0 | x_t) [B, D, K] (a product denoiser is
    returned as it is)."""
    if not denoiser.mixture:
        return denoiser
    if num_lambda < 1:
        raise ValueError(f"num_lambda must be >= 1, got {num_lambda}")
    lams = (jnp.arange(num_lambda, dtype=jnp.float32) + 0.5) / num_lambda

    def apply(params, x_t, t, lam=None, cond=None, *, rngs=None):
        del lam
        batch = x_t.shape[0]
        rep = lambda a: None if a is None else jnp.repeat(a, num_lambda, axis=0)  # noqa: E731
        logp = denoiser.logprobs(process, params, rep(x_t), rep(t), jnp.tile(lams, batch), rep(cond), rngs=rngs)
        logp = logp.reshape(batch, num_lambda, *logp.shape[1:])
        return jax.nn.logsumexp(logp, axis=1) - math.log(num_lambda)

    return dataclasses.replace(denoiser, apply=apply, mixture=False)


def bound_name(process, config: TeacherLossConfig) -> str:
    """'nelbo' for the mdlm / ctmc bounds, 'x0_ce' for the plain cross-entropy objective (not a bound)."""
    return "x0_ce" if resolve_objective(process, config.objective) == "x0_ce" else "nelbo"


def heldout_nelbo(key: jax.Array, *, denoiser: Denoiser, params, process, x0, cond=None,
                  config: TeacherLossConfig = TeacherLossConfig(), repeats: int = 4, batch_size: int = 256,
                  num_lambda: int = 16) -> float:
    """Mean per-token value (nats) of the teacher objective on held-out tokens x0 int[n, D] (cond None or int[n]):
    `repeats` Monte-Carlo draws of (t, x_t) per row, no dropout; the full bound ('nelbo' of the objective's aux)
    where the objective reports one, the loss itself for x0_ce. Rows go in batches of `batch_size` (the last one
    smaller)."""
    x0 = np.asarray(x0)
    if x0.ndim != 2 or len(x0) == 0:
        raise ValueError(f"x0 must be int[n >= 1, D], got shape {x0.shape}")
    if repeats < 1 or batch_size < 1:
        raise ValueError(f"repeats and batch_size must be >= 1, got {repeats}, {batch_size}")
    config = dataclasses.replace(config, dropout=False)
    product = marginal_denoiser(denoiser, process, num_lambda)

    def bound(k, p, x, c):
        value, aux = teacher_loss(k, denoiser=product, params=p, process=process, x0=x, cond=c, config=config)
        return aux.get("nelbo", value)  # ctmc: the full bound (its loss omits the prior term, adds a CE term)

    loss = jax.jit(bound)
    total = 0.0
    for r in range(repeats):
        for start in range(0, len(x0), batch_size):
            rows = slice(start, start + batch_size)
            batch_cond = None if cond is None else jnp.asarray(cond[rows])
            value = loss(jax.random.fold_in(key, r * len(x0) + start), params, jnp.asarray(x0[rows]), batch_cond)
            total += float(value) * len(x0[rows])
    return total / (repeats * len(x0) * x0.shape[1])
