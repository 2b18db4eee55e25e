"""GPT-2 in Flax NNX: the evaluator LM of generative perplexity (GPT-2-large in MDLM, SDTT and Di4C).

Same computation as Hugging Face's `GPT2LMHeadModel` (huggingface/transformers:src/transformers/models/gpt2/
modeling_gpt2.py): token + learned position embeddings, pre-LayerNorm blocks (causal self-attention, MLP with the
tanh GELU 'gelu_new'), final LayerNorm, output head tied to the token embedding. Dropout is left out (evaluation
only). Weights come from a Hugging Face checkpoint through `di4c_jax.interop.gpt2.load_gpt2`.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

ACTIVATIONS = {"gelu_new": True, "gelu_pytorch_tanh": True, "gelu": False}  # name -> tanh approximation


@dataclasses.dataclass(frozen=True)
class GPT2Config:
    """Hugging Face GPT2Config fields (defaults: GPT-2 small; GPT-2-large is 36 layers, 1280 wide, 20 heads)."""

    vocab_size: int = 50257
    n_positions: int = 1024
    n_embd: int = 768
    n_layer: int = 12
    n_head: int = 12
    n_inner: int | None = None  # None: 4 * n_embd
    layer_norm_epsilon: float = 1e-5
    activation_function: str = "gelu_new"
    scale_attn_weights: bool = True
    scale_attn_by_inverse_layer_idx: bool = False

    def __post_init__(self):
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd {self.n_embd} is not divisible by n_head {self.n_head}")
        if self.activation_function not in ACTIVATIONS:
            raise ValueError(f"activation_function {self.activation_function!r} is not supported; "
                             f"supported: {sorted(ACTIVATIONS)}")

    @property
    def inner(self) -> int:
        return self.n_inner or 4 * self.n_embd


def _linear(d_in: int, d_out: int, rngs: nnx.Rngs) -> nnx.Linear:
    return nnx.Linear(d_in, d_out, kernel_init=nnx.initializers.normal(0.02), rngs=rngs)


def _norm(d: int, eps: float, rngs: nnx.Rngs) -> nnx.LayerNorm:
    return nnx.LayerNorm(d, epsilon=eps, use_fast_variance=False, rngs=rngs)


class GPT2Block(nnx.Module):
    """x + attn(ln_1(x)), then x + mlp(ln_2(x)); HF names (c_attn, c_proj, c_fc, mlp_proj = mlp.c_proj)."""

    def __init__(self, config: GPT2Config, layer_idx: int, *, rngs: nnx.Rngs):
        d = config.n_embd
        self.n_head = config.n_head
        scale = (d // config.n_head) ** -0.5 if config.scale_attn_weights else 1.0
        self.scale = scale / (layer_idx + 1) if config.scale_attn_by_inverse_layer_idx else scale
        self.approximate = ACTIVATIONS[config.activation_function]
        self.ln_1, self.ln_2 = _norm(d, config.layer_norm_epsilon, rngs), _norm(d, config.layer_norm_epsilon, rngs)
        self.c_attn, self.c_proj = _linear(d, 3 * d, rngs), _linear(d, d, rngs)
        self.c_fc, self.mlp_proj = _linear(d, config.inner, rngs), _linear(config.inner, d, rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        """x float32[B, L, d] -> float32[B, L, d]."""
        b, length, d = x.shape
        qkv = self.c_attn(self.ln_1(x)).reshape(b, length, 3, self.n_head, d // self.n_head)
        q, k, v = qkv.transpose(2, 0, 3, 1, 4)                                      # each [B, heads, L, hd]
        scores = jnp.einsum("bhqd,bhkd->bhqk", q, k) * self.scale
        causal = jnp.tril(jnp.ones((length, length), bool))
        scores = jnp.where(causal, scores, jnp.finfo(scores.dtype).min)
        attn = jnp.einsum("bhqk,bhkd->bhqd", jax.nn.softmax(scores, axis=-1), v)
        x = x + self.c_proj(attn.transpose(0, 2, 1, 3).reshape(b, length, d))
        h = jax.nn.gelu(self.c_fc(self.ln_2(x)), approximate=self.approximate)
        return x + self.mlp_proj(h)


class GPT2(nnx.Module):
    """tokens int[B, L] (L <= n_positions) -> next-token logits float32[B, L, V] (position j predicts j + 1)."""

    def __init__(self, config: GPT2Config, *, rngs: nnx.Rngs):
        init = nnx.initializers.normal(0.02)
        self.wte = nnx.Embed(config.vocab_size, config.n_embd, embedding_init=init, rngs=rngs)
        self.wpe = nnx.Embed(config.n_positions, config.n_embd, embedding_init=init, rngs=rngs)
        self.h = nnx.List([GPT2Block(config, i, rngs=rngs) for i in range(config.n_layer)])
        self.ln_f = _norm(config.n_embd, config.layer_norm_epsilon, rngs)

    def __call__(self, tokens: jax.Array) -> jax.Array:
        x = self.wte(tokens) + self.wpe(jnp.arange(tokens.shape[1]))[None]
        for block in self.h:
            x = block(x)
        return self.wte.attend(self.ln_f(x))


def gpt2_graph(config: GPT2Config):
    """(graphdef, abstract params) of GPT2(config), without allocating weights."""
    model = nnx.eval_shape(lambda: GPT2(config, rngs=nnx.Rngs(0)))
    return nnx.split(model, nnx.Param)


def make_apply(config: GPT2Config):
    """apply(params, tokens int[B, L]) -> logits float32[B, L, V]; L <= n_positions is checked (static).

    `apply.vocab_size` and `apply.context` (n_positions) let callers check ids on the host: under jit an id
    outside the vocabulary would be clamped silently by the embedding lookup.
    """
    graphdef, _ = gpt2_graph(config)

    def apply(params, tokens):
        if tokens.shape[-1] > config.n_positions:
            raise ValueError(f"GPT-2 context is {config.n_positions} tokens, got sequences of {tokens.shape[-1]}")
        return nnx.merge(graphdef, params)(tokens)

    apply.vocab_size, apply.context = config.vocab_size, config.n_positions
    return apply


def init_gpt2(key, config: GPT2Config):
    """Random weights (normal(0.02), as HF's init): -> (apply, params)."""
    _, params = nnx.split(GPT2(config, rngs=nnx.Rngs(params=key)), nnx.Param)
    return make_apply(config), params
