"""Shared numerics of the forward processes: finite log-zero, safe logs, categorical draws, time broadcasting."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

# Log-probability of an impossible class. Finite on purpose: 0 * (NEG_INF - NEG_INF) = 0 in every KL, where
# -inf would give NaN (the sdtt reference uses the same -1e6: sony/di4c:sdtt/src/sdtt/core/distill/multi_round_sdtt.py).
NEG_INF = -1e6


def safe_log(p: jax.Array) -> jax.Array:
    """log(p) with log(0) = NEG_INF (also for tiny negative round-off)."""
    return jnp.where(p > 0, jnp.log(jnp.where(p > 0, p, 1.0)), NEG_INF)


# From this many classes on, a draw is two Gumbel-max draws over blocks of DRAW_BLOCK classes (below it, the plain
# draw keeps the random streams of the small-vocabulary benchmarks as they were).
BLOCKED_DRAW_MIN_CLASSES = 4096
DRAW_BLOCK = 256


def sample_categorical(key: jax.Array, logp: jax.Array) -> jax.Array:
    """One draw per leading index from normalised or unnormalised log-probabilities [..., K] -> int32[...].

    From K = BLOCKED_DRAW_MIN_CLASSES on it is `sample_categorical_blocked`: the same law from ceil(K / 256) + 256
    uniforms per draw instead of K (at K = 50258 the [8, 1024, K] Gumbel noise was 6% of a GPU training step)."""
    if logp.shape[-1] >= BLOCKED_DRAW_MIN_CLASSES:
        return sample_categorical_blocked(key, logp, block=DRAW_BLOCK)
    return jax.random.categorical(key, logp, axis=-1).astype(jnp.int32)


def sample_categorical_blocked(key: jax.Array, logp: jax.Array, *, block: int) -> jax.Array:
    """Exact draw from Cat(softmax(logp)) over the last axis [..., K] -> int32[...], by blocks of `block` classes.

    The classes are cut into ceil(K / block) blocks (the last padded with -inf); a Gumbel-max draw over the blocks'
    log-masses (logsumexp within each) picks a block with probability p(block), a second one a class within it
    with probability p_k / p(block); the product is p_k. Random numbers per draw: ceil(K / block) + block instead of
    K; the logits are read once (the block log-masses) plus one gathered block.
    """
    if block < 1:
        raise ValueError(f"block must be >= 1, got {block}")
    classes = logp.shape[-1]
    num_blocks = -(-classes // block)
    pad = [(0, 0)] * (logp.ndim - 1) + [(0, num_blocks * block - classes)]
    blocks = jnp.pad(logp, pad, constant_values=-jnp.inf).reshape(*logp.shape[:-1], num_blocks, block)
    block_key, class_key = jax.random.split(key)
    which = jax.random.categorical(block_key, jax.nn.logsumexp(blocks, axis=-1), axis=-1)
    rows = jnp.take_along_axis(blocks, which[..., None, None], axis=-2)[..., 0, :]
    within = jax.random.categorical(class_key, rows, axis=-1)
    return (which * block + within).astype(jnp.int32)


def as_batch_times(t, batch: int) -> jax.Array:
    """Broadcast a scalar or [B] time to float32[B]."""
    t = jnp.asarray(t, jnp.float32)
    return jnp.broadcast_to(t, (batch,)) if t.ndim == 0 else t


def check_tokens(x: jax.Array, num_states: int, name: str = "x") -> None:
    """Shape/dtype check usable at trace time; for a host (numpy) array the ids too, in [0, num_states) (device
    arrays are not pulled back to check: their ids are the data pipeline's to check)."""
    if x.ndim != 2:
        raise ValueError(f"{name} must be int[B, D], got shape {x.shape}")
    if not jnp.issubdtype(x.dtype, jnp.integer):
        raise TypeError(f"{name} must hold integer token ids, got dtype {x.dtype}")
    if isinstance(x, np.ndarray) and x.size:
        bad = (x < 0) | (x >= num_states)
        if bad.any():
            index = tuple(int(i) for i in np.unravel_index(int(np.argmax(bad)), x.shape))
            raise ValueError(f"{name} holds ids outside [0, {num_states}): id {int(x[index])} at index {index} "
                             f"({int(bad.sum())} in total)")


class ProductKernelSampling:
    """`reverse_step` for any process with `reverse_step_logprobs`: one draw of the per-dimension kernel."""

    def reverse_step(self, key, x_t, logp_x0, t, s) -> jax.Array:
        """int32[B, D] ~ prod_d p(x_s^d | x_t)."""
        return sample_categorical(key, self.reverse_step_logprobs(x_t, logp_x0, t, s))


def denoise_x0(key, logp_x0: jax.Array, mode: str) -> jax.Array:
    """x0 int32[B, D] from log p(x0 | x_t) [B, D, K]: its mode ('argmax') or a draw ('sample')."""
    if mode == "argmax":
        return jnp.argmax(logp_x0, -1).astype(jnp.int32)
    return sample_categorical(key, logp_x0)
