"""A tiny causal transformer as the evaluator LM for generative perplexity (a stand-in for GPT-2-large).

Score samples with `eval.gen_ppl.generative_perplexity(apply=..., params=..., samples=...)` (the SDTT protocol:
the ids as they are, per-sample mean NLL, PPL = exp(mean over samples)). Only numbers from one evaluator are
comparable.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from di4c_jax.eval.fitting import fit
from di4c_jax.eval.gen_ppl import token_nll


@dataclasses.dataclass(frozen=True)
class LMConfig:
    vocab_size: int
    max_len: int = 128
    d_model: int = 64
    num_heads: int = 4
    num_layers: int = 2
    mlp_ratio: int = 4


class CausalBlock(nnx.Module):
    """Pre-norm causal self-attention + MLP."""

    def __init__(self, config: LMConfig, *, rngs: nnx.Rngs):
        d = config.d_model
        self.num_heads = config.num_heads
        self.norm1, self.norm2 = nnx.LayerNorm(d, rngs=rngs), nnx.LayerNorm(d, rngs=rngs)
        self.qkv = nnx.Linear(d, 3 * d, rngs=rngs)
        self.out = nnx.Linear(d, d, rngs=rngs)
        self.up = nnx.Linear(d, config.mlp_ratio * d, rngs=rngs)
        self.down = nnx.Linear(config.mlp_ratio * d, d, rngs=rngs)

    def __call__(self, h):  # h: [n, L, d]
        n, length, d = h.shape
        q, k, v = jnp.split(self.qkv(self.norm1(h)).reshape(n, length, 3 * self.num_heads, -1), 3, axis=2)
        causal = jnp.tril(jnp.ones((length, length), bool))
        attn = jax.nn.dot_product_attention(q, k, v, mask=causal[None, None])
        h = h + self.out(attn.reshape(n, length, d))
        return h + self.down(jax.nn.gelu(self.up(self.norm2(h))))


class CausalLM(nnx.Module):
    """tokens int[n, L] -> next-token logits float32[n, L, V] (position j predicts token j + 1)."""

    def __init__(self, config: LMConfig, *, rngs: nnx.Rngs):
        if config.d_model % config.num_heads:
            raise ValueError(f"d_model {config.d_model} is not divisible by num_heads {config.num_heads}")
        self.tok = nnx.Embed(config.vocab_size, config.d_model, rngs=rngs)
        self.pos = nnx.Embed(config.max_len, config.d_model, rngs=rngs)
        self.blocks = nnx.List([CausalBlock(config, rngs=rngs) for _ in range(config.num_layers)])
        self.norm = nnx.LayerNorm(config.d_model, rngs=rngs)
        self.head = nnx.Linear(config.d_model, config.vocab_size, rngs=rngs)

    def __call__(self, tokens):
        h = self.tok(tokens) + self.pos(jnp.arange(tokens.shape[1]))[None]
        for block in self.blocks:
            h = block(h)
        return self.head(self.norm(h))


def _check_sequences(config: LMConfig, tokens) -> jax.Array:
    x = jnp.asarray(tokens)
    if x.ndim != 2 or not jnp.issubdtype(x.dtype, jnp.integer) or not 2 <= x.shape[1] <= config.max_len:
        raise ValueError(f"tokens must be int[n, 2 <= L <= {config.max_len}], got {x.shape} {x.dtype}")
    if x.min() < 0 or x.max() >= config.vocab_size:
        raise ValueError(f"token ids must lie in [0, {config.vocab_size}), got [{x.min()}, {x.max()}]")
    return x.astype(jnp.int32)


def init_lm(key, config: LMConfig):
    """-> (apply, params); apply(params, tokens int[n, L <= max_len]) -> logits float32[n, L, V]. apply carries
    `vocab_size` and `context` (= max_len), which `gen_ppl.generative_perplexity` checks samples against."""
    graphdef, params = nnx.split(CausalLM(config, rngs=nnx.Rngs(params=key)), nnx.Param)

    def apply(params, tokens):
        return nnx.merge(graphdef, params)(tokens)

    apply.vocab_size, apply.context = config.vocab_size, config.max_len
    return apply, params


def train_lm(key, config: LMConfig, sequences, *, num_steps: int = 1000, batch_size: int = 32,
             learning_rate: float = 1e-3, weight_decay: float = 0.01):
    """Next-token cross-entropy on training rows int[n, L] (see `chunk_stream`) -> (apply, params)."""
    x = _check_sequences(config, sequences)
    k_init, k_fit = jax.random.split(key)
    apply, params = init_lm(k_init, config)
    loss_fn = lambda params, batch: token_nll(apply, params, batch).mean()
    params, _ = fit(k_fit, loss_fn, params, (x,), num_steps=num_steps, batch_size=batch_size,
                    learning_rate=learning_rate, weight_decay=weight_decay)
    return apply, params


def chunk_stream(stream, length: int) -> np.ndarray:
    """1-D token stream int[N] -> non-overlapping rows int32[N // length, length] (the tail is dropped)."""
    s = np.asarray(stream, np.int32).reshape(-1)
    if s.size < length:
        raise ValueError(f"stream of {s.size} tokens is shorter than one row of {length}")
    return s[: s.size // length * length].reshape(-1, length)
