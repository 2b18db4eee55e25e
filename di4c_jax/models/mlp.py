"""Tiny MLP denoiser for tests and the exact small-space benchmarks.

Each position's token embedding plus a learned position embedding is flattened, concatenated with the time
sinusoid and passed through `num_layers` hidden layers; the last layer emits per-position logits. lambda enters the
first hidden layer additively through a Dense on its sinusoid features that is zero-initialised when
`lam_zero_init` (like `dense1` of the tauLDR Di4C student), so a fresh student equals its teacher exactly.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from di4c_jax.models.kinds import MODEL_KINDS
from di4c_jax.models.remat import check_remat, remat_call
from di4c_jax.models.lam import CheckedEmbed, lambda_features, time_features
from di4c_jax.models.precision import low_precision_backward_dot_general


def _hidden_layer(layer, dropout, rngs, h):
    return layer(dropout(jax.nn.gelu(h), deterministic=rngs is None, rngs=rngs))


@MODEL_KINDS.register("mlp")
class MLPDenoiser(nnx.Module):
    """(x_t int32[B, D], t f32[B], lam f32[B] | None, cond int32[B] | None) -> logits float32[B, D, K]."""

    def __init__(self, *, num_states: int, num_positions: int, embed_dim: int = 16, hidden: int = 128,
                 num_layers: int = 2, time_dim: int = 32, lam_style: str | None = None, lam_dim: int = 32,
                 lam_zero_init: bool = True, num_classes: int = 0, dropout: float = 0.0, compute_dtype=None,
                 remat: str = "none", rngs: nnx.Rngs):
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        if lam_style not in (None, "embed"):
            raise ValueError(f"mlp supports lam_style None or 'embed', got {lam_style!r}")
        self.num_states, self.num_positions, self.num_classes = num_states, num_positions, num_classes
        self.mixture, self.time_dim, self.lam_dim = lam_style is not None, time_dim, lam_dim
        self.dtype, self.remat = compute_dtype, check_remat(remat)
        self.tok_embed = CheckedEmbed(num_states, embed_dim, dtype=compute_dtype, rngs=rngs)
        self.pos_embed = nnx.Param(nnx.initializers.normal(0.02)(rngs.params(), (num_positions, embed_dim)))
        self.dense_in = nnx.Linear(num_positions * embed_dim + time_dim, hidden, dtype=compute_dtype, rngs=rngs)
        if self.mixture:
            init = nnx.initializers.zeros_init() if lam_zero_init else nnx.initializers.lecun_normal()
            self.lam_in = nnx.Linear(lam_dim, hidden, kernel_init=init, dtype=compute_dtype, rngs=rngs)
        if num_classes:
            self.class_embed = CheckedEmbed(num_classes + 1, hidden, dtype=compute_dtype, rngs=rngs)
        self.hidden_layers = nnx.List([nnx.Linear(hidden, hidden, dtype=compute_dtype, rngs=rngs)
                                       for _ in range(num_layers - 1)])
        self.dropout = nnx.Dropout(dropout)
        self.dense_out = nnx.Linear(hidden, num_positions * num_states, dtype=compute_dtype,
                                    preferred_element_type=jnp.float32,
                                    dot_general=low_precision_backward_dot_general, rngs=rngs)

    def __call__(self, x_t, t, lam, cond, *, rngs: nnx.Rngs | None = None) -> jax.Array:
        b = x_t.shape[0]
        pos = self.pos_embed[...] if self.dtype is None else self.pos_embed[...].astype(self.dtype)
        h = (self.tok_embed(x_t) + pos).reshape(b, -1)
        tf = time_features(t, self.time_dim).astype(h.dtype)
        h = self.dense_in(jnp.concatenate([h, tf], axis=-1))
        if self.mixture:
            h = h + self.lam_in(lambda_features(lam, self.lam_dim))
        if self.num_classes:
            h = h + self.class_embed(cond)
        for layer in self.hidden_layers:
            h = remat_call(self.remat, _hidden_layer, layer, self.dropout, rngs, h)
        h = self.dropout(jax.nn.gelu(h), deterministic=rngs is None, rngs=rngs)
        return self.dense_out(h).reshape(b, self.num_positions, self.num_states).astype(jnp.float32)
