"""The MaskGIT confidence step on an absorbing process: reveal the most confident masked positions.

Shared by the MaskGIT sampler and the Di4C MaskGIT recipe's teacher step (Chang et al. 2022, MaskGIT, Sec. 3.2;
sony/di4c's MaskGIT fork samples this way).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from di4c_jax.processes.base import NEG_INF, sample_categorical


def confidence_step(key: jax.Array, *, x_t: jax.Array, logits: jax.Array, num_reveal: jax.Array,
                    gumbel_temp: jax.Array, mask_id: int) -> jax.Array:
    """One MaskGIT reveal step: x_t int32[B, D] -> x_next int32[B, D].

    logits: float32[B, D, K] (already guided / temperature-scaled); num_reveal: int[B] (or scalar), clipped to the
    number of masked positions of each row; gumbel_temp: float[B] (or scalar). pred ~ Cat(logits) with the mask
    class (if mask_id < K) excluded; confidence = log p(pred) + gumbel_temp * Gumbel(0, 1); exactly
    min(num_reveal, #masked) masked positions are set to pred, the most confident ones. Ties in confidence are
    broken by position (lower index first), so the count is exact (the reference may write more on ties, C.20).
    Unmasked positions are never changed.
    """
    if x_t.ndim != 2 or logits.ndim != 3 or logits.shape[:2] != x_t.shape:
        raise ValueError(f"need x_t [B, D] and logits [B, D, K], got {x_t.shape} and {logits.shape}")
    batch, dims, num_classes = logits.shape
    logits = logits.astype(jnp.float32)
    if mask_id < num_classes:
        logits = logits.at[..., mask_id].set(NEG_INF)
    logp = jax.nn.log_softmax(logits, axis=-1)
    pred_key, gumbel_key = jax.random.split(key)
    pred = sample_categorical(pred_key, logp)
    log_conf = jnp.take_along_axis(logp, pred[..., None], axis=-1)[..., 0]
    temp = jnp.broadcast_to(jnp.asarray(gumbel_temp, jnp.float32), (batch,))
    conf = log_conf + temp[:, None] * jax.random.gumbel(gumbel_key, (batch, dims), jnp.float32)
    masked = x_t == mask_id
    conf = jnp.where(masked, conf, -jnp.inf)  # a ranking, not a probability: unmasked positions rank last
    order = jnp.argsort(conf, axis=-1, descending=True, stable=True)
    rank = jnp.argsort(order, axis=-1)
    k = jnp.broadcast_to(jnp.asarray(num_reveal, jnp.int32), (batch,))
    reveal = masked & (rank < k[:, None])
    return jnp.where(reveal, pred, x_t).astype(jnp.int32)
