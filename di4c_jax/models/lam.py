"""Shared conditioning pieces: sinusoidal time/lambda features, the lambda projection MLP, checked embeddings.

The sinusoid is the reference `transformer_timestep_embedding` (sony/di4c:sdtt/src/sdtt/models/dit_orig.py,
andrew-cr/tauLDR:lib/networks/network_utils.py):
`[sin(x f_j)]_j ++ [cos(x f_j)]_j`, sin first, `f_j = exp(-j ln(1e4) / (half - 1))`, applied to `1000 * t` or
`1000 * lam`.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

TIME_SCALE = 1000.0  # times and lambdas enter the sinusoid as 1000 * value (both references)


def sinusoidal_features(x: jax.Array, dim: int, max_period: float = 1e4) -> jax.Array:
    """float[R] -> float32[R, dim]: sin-first sinusoid, frequencies exp(-j ln(max_period) / (dim/2 - 1))."""
    if dim % 2 or dim < 4:
        raise ValueError(f"sinusoid dim must be even and >= 4, got {dim}")
    half = dim // 2
    # The reference's float32 `exp(arange(half) * -(ln(max_period) / (half - 1)))` with a correctly rounded exp
    # (torch's nearly always is, XLA's often is not): a 1-ulp frequency error is up to 6e-5 at 1000 radians.
    exponents = np.arange(half, dtype=np.float32) * np.float32(-math.log(max_period) / (half - 1))
    freqs = jnp.asarray(np.exp(exponents.astype(np.float64)).astype(np.float32))
    args = jnp.asarray(x, jnp.float32)[:, None] * freqs[None, :]
    return jnp.concatenate([jnp.sin(args), jnp.cos(args)], axis=-1)


def lambda_features(lam: jax.Array, dim: int = 128) -> jax.Array:
    """float[R] in [0, 1] -> float32[R, dim]: the sinusoid of 1000 * lam (reference: dim 128)."""
    return sinusoidal_features(TIME_SCALE * lam, dim)


def time_features(t: jax.Array, dim: int) -> jax.Array:
    """float[R] in [0, 1] -> float32[R, dim]: the sinusoid of 1000 * t."""
    return sinusoidal_features(TIME_SCALE * t, dim)


class LambdaProjection(nnx.Module):
    """lambda_features(lam) -> Dense(feat, hidden) -> exact GELU -> Dense(hidden, out): float[R] -> [R, out].

    The reference `latent_projection` (Dense 128 -> 512 -> H). `zero_init=True` zero-initialises the last layer so
    that the projection starts at exactly 0 for every lambda.
    """

    def __init__(self, out_features: int, *, feature_dim: int = 128, hidden: int = 512, zero_init: bool = False,
                 dtype=None, rngs: nnx.Rngs):
        self.feature_dim = feature_dim
        self.dense_in = nnx.Linear(feature_dim, hidden, dtype=dtype, rngs=rngs)
        last_init = nnx.initializers.zeros_init() if zero_init else nnx.initializers.lecun_normal()
        self.dense_out = nnx.Linear(hidden, out_features, kernel_init=last_init, dtype=dtype, rngs=rngs)

    def __call__(self, lam: jax.Array) -> jax.Array:
        h = self.dense_in(lambda_features(lam, self.feature_dim))
        return self.dense_out(jax.nn.gelu(h, approximate=False))


class CheckedEmbed(nnx.Module):
    """Embedding table float32[num, features]; ids outside [0, num) give NaN rows (never a silent wrap or clip).

    Token values are data, so they cannot be checked at trace time; NaN makes a bad id visible in every loss.
    """

    def __init__(self, num: int, features: int, *, dtype=None, rngs: nnx.Rngs):
        self.num = num
        self.dtype = dtype
        self.table = nnx.Param(nnx.initializers.normal(0.02)(rngs.params(), (num, features), jnp.float32))

    def __call__(self, ids: jax.Array) -> jax.Array:
        ids = jnp.where(ids < 0, self.num, ids)  # jnp.take wraps negative ids; send them out of range instead
        out = jnp.take(self.table[...], ids, axis=0, mode="fill", fill_value=jnp.nan)
        return out if self.dtype is None else out.astype(self.dtype)
