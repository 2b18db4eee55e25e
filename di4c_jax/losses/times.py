"""Training-time draws and the per-token negative log-likelihood shared by the losses."""
from __future__ import annotations

import jax
import jax.numpy as jnp


def sample_train_times(key: jax.Array, batch: int, t_min: float, antithetic: bool = True) -> jax.Array:
    """float32[B] times on [t_min, 1].

    Antithetic draws u_b = (u_0 + b / B) mod 1 share one uniform u_0, so every u_b is still U[0, 1) but the batch
    covers [0, 1) evenly; then t = t_min + (1 - t_min) u (the affine map MDLM uses, which keeps t uniform on
    [t_min, 1] instead of piling mass on t_min as a clip would).
    """
    if not 0.0 <= t_min < 1.0:
        raise ValueError(f"t_min must lie in [0, 1), got {t_min}")
    if antithetic:
        u = jnp.mod(jax.random.uniform(key, ()) + jnp.arange(batch, dtype=jnp.float32) / batch, 1.0)
    else:
        u = jax.random.uniform(key, (batch,))
    return (t_min + (1.0 - t_min) * u).astype(jnp.float32)


def stratified_times(key: jax.Array, batch: int, t_min: float) -> jax.Array:
    """float32[B]: t_i = t_min + (1 - t_min) ((u_i + i) / B mod 1) with independent u_i ~ U[0, 1) (SDTT's draw)."""
    u = (jax.random.uniform(key, (batch,)) + jnp.arange(batch)) / batch
    return t_min + (1.0 - t_min) * jnp.mod(u, 1.0)


def token_nll(logp_x0: jax.Array, x0: jax.Array) -> jax.Array:
    """-log p(x0^d | x_t) as float32[B, D] from normalised log-probs [B, D, K] and x0 int[B, D]."""
    return -jnp.take_along_axis(logp_x0, x0[..., None].astype(jnp.int32), axis=-1)[..., 0]
