"""Classifier-free-guidance label dropout (Ho & Salimans 2022): train one network for both branches."""
from __future__ import annotations

import jax
import jax.numpy as jnp


def drop_labels(key: jax.Array, *, labels: jax.Array, null_class: int, rate: float) -> jax.Array:
    """labels int[B] with each one replaced by `null_class` w.p. `rate`: int32[B]."""
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"label dropout rate must lie in [0, 1), got {rate}")
    drop = jax.random.bernoulli(key, rate, jnp.shape(labels))
    return jnp.where(drop, null_class, labels).astype(jnp.int32)
