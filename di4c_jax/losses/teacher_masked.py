"""MDLM continuous-time NELBO for masked (absorbing) processes, for any mask schedule m(t).

With keep probability alpha_t = 1 - m(t), the continuous-time negative ELBO of an absorbing process with an x0
(SUBS) denoiser is (Sahoo et al. 2024, eq. 10; Shi et al. 2024)

    NELBO(x0) = int_0^1 (m'(t) / m(t)) E_{x_t ~ q_t(.|x0)} [ sum_{d: x_t^d = mask} -log p(x0^d | x_t, t) ] dt,

plus a prior term KL(q_1 || all-mask) that is 0 when m(1) = 1 (the `linear`, `arccos` and `cosine` schedules; the
`loglinear` schedule stops at m(1) = 1 - eps and, as in MDLM, the term is ignored). m'(t) comes from `jax.jvp` of
`process.mask_prob`, so every schedule works (loglinear: m'/m = 1/t).
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from di4c_jax.denoiser import Denoiser
from di4c_jax.losses.times import sample_train_times, token_nll
from di4c_jax.processes.base import check_tokens
from di4c_jax.processes.protocol import Process, require


def mdlm_weight(process, t: jax.Array) -> jax.Array:
    """m'(t) / m(t) as float32[B] (the ELBO weight of each masked token's cross-entropy). Where m(t) rounds to 0
    nothing is masked and the weight is set to 0 (m'(0) may be infinite, e.g. arccos), so weight * 0 stays 0."""
    t = jnp.asarray(t, jnp.float32)
    m, dm = jax.jvp(process.mask_prob, (t,), (jnp.ones_like(t),))
    return jnp.where(m > 0, dm / jnp.where(m > 0, m, 1.0), 0.0)


def mdlm_nelbo_terms(process, logp_x0: jax.Array, x0: jax.Array, x_t: jax.Array, t: jax.Array):
    """Per-row pieces of the MDLM NELBO integrand at (x_t, t).

    logp_x0: [B, D, K] normalised (from `process.x0_logprobs`), x0/x_t: int[B, D], t: [B].
    Returns (nelbo [B] = (m'/m) * sum_{masked d} -log p(x0^d|x_t), masked_nll_sum [B], num_masked [B]).
    """
    masked = (x_t == process.mask_id).astype(jnp.float32)
    masked_nll = jnp.sum(masked * token_nll(logp_x0, x0), axis=-1)
    return mdlm_weight(process, t) * masked_nll, masked_nll, jnp.sum(masked, axis=-1)


def mdlm_loss(key: jax.Array, *, denoiser: Denoiser, params: Any, process: Process, x0: jax.Array, cond=None,
              t_eps: float = 1e-3, antithetic: bool = True, dropout: bool = True):
    """Monte-Carlo MDLM NELBO: one (t, x_t) per row, t on [t_eps, 1]; sum over D, mean over B.

    Args:
      key: PRNG key.
      denoiser, params: the (product) denoiser being trained.
      process: an absorbing process.
      x0: int[B, D] in {0..vocab_size-1}.  cond: None or int[B].
      t_eps: smallest training time.  antithetic: stratified times.  dropout: pass a PRNG key as `rngs`.

    Returns:
      (loss scalar, aux) with aux = {'nelbo': mean NELBO per sequence (nats), 'nelbo_per_token': the same / D,
      'masked_ce': mean -log p(x0|x_t) over the masked tokens of the batch}.
    """
    require(process, "absorbing", "mdlm_loss")
    check_tokens(x0, process.vocab_size, "x0")
    if not 0.0 < t_eps < 1.0:
        raise ValueError(f"t_eps must lie in (0, 1): the weight m'(t)/m(t) diverges at t = 0; got {t_eps}")
    k_t, k_x, k_drop = jax.random.split(key, 3)
    batch, dims = x0.shape
    t = sample_train_times(k_t, batch, t_eps, antithetic)
    x_t = process.sample_xt(k_x, x0, t)
    logp = denoiser.logprobs(process, params, x_t, t, None, cond, rngs=k_drop if dropout else None)
    nelbo, masked_nll, num_masked = mdlm_nelbo_terms(process, logp, x0, x_t, t)
    loss = jnp.mean(nelbo)
    aux = {"nelbo": loss, "nelbo_per_token": loss / dims,
           "masked_ce": jnp.sum(masked_nll) / jnp.maximum(jnp.sum(num_masked), 1.0)}
    return loss, aux
