"""MaskGIT v1 `MaskTransformer` (valeoai/Maskgit-pytorch:Network/transformer.py at 32062fa, the version the released
`MaskGIT_ImageNet_256.pth` runs) and its Di4C student (sony/di4c:maskgit-pytorch/Network/transformer.py,
`is_student=True`), computed exactly: registered as the model kind 'maskgit_v1'.

Vocabulary of the shared table `tok_emb` [V, H], V = num_states + num_classes + 1, with codes = num_states - 1:
ids 0..codes-1 are VQ codes, `codes` is the mask, codes + 1 + c is class c, and codes + 1 + num_classes is the
dropped label (classifier-free guidance). Forward:

  x = tok_emb([x_t; codes + 1 + cond]) + pos_emb               [B, T + 1, H], the class token last
  [x; z] with z = latent_projection(lam), no pos_emb            [B, T + 2, H] (Di4C student only)
  first_layer: LN(1e-12) -> Dropout -> Linear -> GELU -> LN(1e-12) -> Dropout -> Linear
  depth x pre-norm blocks: x += MHA(LN(x)) (dropout on the attention probabilities),
                           x += Dropout(Linear(Dropout(GELU(Linear(LN(x))))))
  last_layer: LN(1e-12) -> Dropout -> Linear -> GELU -> LN(1e-12); the lambda token dropped
  logits = x @ tok_emb.T + bias, sliced to [B, T, num_states]  (tied head, position-dependent bias [T + 1, V])

GELUs are exact (erf); the blocks' LayerNorms use eps 1e-5. MaskGIT has no time input: `t` is ignored. Dropout
(p = `dropout`, 0.1 in the reference) runs only when `rngs` is given.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from di4c_jax.models.kinds import MODEL_KINDS
from di4c_jax.models.lam import CheckedEmbed, LambdaProjection
from di4c_jax.models.remat import check_remat, remat_call

LAM_STYLES = (None, "token")  # 'token': the Di4C latent_projection token appended after the positional embedding


def _layer_norm(features: int, eps: float, rngs: nnx.Rngs) -> nnx.LayerNorm:
    """PyTorch nn.LayerNorm: affine, biased variance (two-pass, for float32 parity)."""
    return nnx.LayerNorm(features, epsilon=eps, use_fast_variance=False, rngs=rngs)


def _gelu(x: jax.Array) -> jax.Array:
    return jax.nn.gelu(x, approximate=False)


def _norm(norm: nnx.LayerNorm, x: jax.Array, dtype) -> jax.Array:
    """LayerNorm in float32, output in the compute dtype."""
    y = norm(x.astype(jnp.float32))
    return y if dtype is None else y.astype(dtype)


def multi_head_attention(qkv: nnx.Linear, out: nnx.Linear, x: jax.Array, heads: int, dropout: nnx.Dropout,
                         rngs: nnx.Rngs | None) -> jax.Array:
    """PyTorch nn.MultiheadAttention(x, x, x), no mask: x [B, N, H] -> [B, N, H].

    `qkv` is `in_proj` (columns [0, H) = q, [H, 2H) = k, [2H, 3H) = v; head h owns features h*hd .. h*hd + hd - 1),
    `out` is `out_proj`; dropout acts on the attention probabilities, as in PyTorch.
    """
    b, n, hidden = x.shape
    hd = hidden // heads
    q, k, v = qkv(x).reshape(b, n, 3, heads, hd).transpose(2, 0, 3, 1, 4)        # [B, heads, N, hd] each
    s = jnp.einsum("bhqd,bhkd->bhqk", q * (1.0 / hd) ** 0.5, k, preferred_element_type=jnp.float32)
    p = dropout(jax.nn.softmax(s, axis=-1), deterministic=rngs is None, rngs=rngs)
    att = jnp.einsum("bhqk,bhkd->bhqd", p.astype(v.dtype), v, preferred_element_type=jnp.float32)
    return out(att.astype(v.dtype).transpose(0, 2, 1, 3).reshape(b, n, hidden))


class MaskGITBlock(nnx.Module):
    """`transformer.layers.{i}`: [PreNorm(Attention), PreNorm(FeedForward)], x [B, N, H] -> [B, N, H]."""

    def __init__(self, hidden: int, heads: int, mlp_dim: int, dropout: float, *, dtype, rngs: nnx.Rngs):
        if hidden % heads:
            raise ValueError(f"hidden size {hidden} is not divisible by num_heads {heads}")
        self.heads, self.dtype = heads, dtype
        self.attn_norm = _layer_norm(hidden, 1e-5, rngs)
        self.qkv = nnx.Linear(hidden, 3 * hidden, dtype=dtype, rngs=rngs)
        self.attn_out = nnx.Linear(hidden, hidden, dtype=dtype, rngs=rngs)
        self.mlp_norm = _layer_norm(hidden, 1e-5, rngs)
        self.mlp_in = nnx.Linear(hidden, mlp_dim, dtype=dtype, rngs=rngs)
        self.mlp_out = nnx.Linear(mlp_dim, hidden, dtype=dtype, rngs=rngs)
        self.dropout = nnx.Dropout(dropout)

    def __call__(self, x: jax.Array, rngs: nnx.Rngs | None = None) -> jax.Array:
        drop = lambda y: self.dropout(y, deterministic=rngs is None, rngs=rngs)  # noqa: E731
        h = _norm(self.attn_norm, x, self.dtype)
        x = x + multi_head_attention(self.qkv, self.attn_out, h, self.heads, self.dropout, rngs).astype(x.dtype)
        h = _norm(self.mlp_norm, x, self.dtype)
        return x + drop(self.mlp_out(drop(_gelu(self.mlp_in(h))))).astype(x.dtype)


@MODEL_KINDS.register("maskgit_v1")
class MaskGITv1Denoiser(nnx.Module):
    """(x_t int32[B, T], t (ignored), lam f32[B] | None, cond int32[B] | None) -> logits float32[B, T, num_states].

    num_states = codes + 1 (the mask id is num_states - 1); cond in [0, num_classes], num_classes = the dropped
    label (None: dropped). Out-of-range ids of x_t or cond give NaN logits. lam_style None: the teacher;
    'token': the Di4C student (latent_projection = LambdaProjection(hidden, feature_dim=lam_feature_dim,
    hidden=lam_hidden), 128 and 512 in the reference).
    """

    def __init__(self, *, num_states: int = 1025, num_positions: int = 256, num_classes: int = 1000,
                 hidden: int = 768, depth: int = 24, num_heads: int = 16, mlp_dim: int = 3072, dropout: float = 0.1,
                 lam_style: str | None = None, lam_feature_dim: int = 128, lam_hidden: int = 512,
                 compute_dtype=None, remat: str = "none", rngs: nnx.Rngs):
        if lam_style not in LAM_STYLES:
            raise ValueError(f"maskgit_v1 lam_style must be one of {LAM_STYLES}, got {lam_style!r}")
        if num_states < 2 or num_classes < 0:
            raise ValueError(f"maskgit_v1 needs num_states >= 2 (codes + mask) and num_classes >= 0, got "
                             f"num_states={num_states}, num_classes={num_classes}")
        self.num_states, self.num_positions, self.num_classes = num_states, num_positions, num_classes
        self.mixture, self.lam_style = lam_style is not None, lam_style
        self.vocab = num_states + num_classes + 1
        self.dtype, self.remat = compute_dtype, check_remat(remat)
        self.tok_emb = CheckedEmbed(self.vocab, hidden, dtype=compute_dtype, rngs=rngs)
        trunc = nnx.initializers.truncated_normal(0.02)
        self.pos_emb = nnx.Param(trunc(rngs.params(), (num_positions + 1, hidden), jnp.float32))
        self.bias = nnx.Param(jnp.zeros((num_positions + 1, self.vocab), jnp.float32))
        linear = lambda: nnx.Linear(hidden, hidden, dtype=compute_dtype, rngs=rngs)  # noqa: E731
        self.first_norm_in, self.first_dense_in = _layer_norm(hidden, 1e-12, rngs), linear()
        self.first_norm_mid, self.first_dense_out = _layer_norm(hidden, 1e-12, rngs), linear()
        self.blocks = nnx.List([MaskGITBlock(hidden, num_heads, mlp_dim, dropout, dtype=compute_dtype, rngs=rngs)
                                for _ in range(depth)])
        self.last_norm_in, self.last_dense = _layer_norm(hidden, 1e-12, rngs), linear()
        self.last_norm_out = _layer_norm(hidden, 1e-12, rngs)
        self.dropout = nnx.Dropout(dropout)
        if lam_style is not None:
            self.lam_proj = LambdaProjection(hidden, feature_dim=lam_feature_dim, hidden=lam_hidden, rngs=rngs)

    def _drop(self, x, rngs):
        return self.dropout(x, deterministic=rngs is None, rngs=rngs)

    def _tokens(self, x_t: jax.Array, cond: jax.Array | None) -> jax.Array:
        """[x_t; class token] int32[B, T + 1], every invalid id sent to V (a NaN row of tok_emb)."""
        b = x_t.shape[0]
        codes, v = self.num_states - 1, self.vocab
        img = jnp.where((x_t >= 0) & (x_t <= codes), x_t, v)
        cond = jnp.full((b,), self.num_classes, jnp.int32) if cond is None else jnp.asarray(cond)
        cls = jnp.where((cond >= 0) & (cond <= self.num_classes), codes + 1 + cond, v)
        return jnp.concatenate([img, cls[:, None]], axis=1).astype(jnp.int32)

    def __call__(self, x_t, t, lam, cond, *, rngs: nnx.Rngs | None = None) -> jax.Array:
        del t  # MaskGIT has no time input
        b, n = x_t.shape
        x = self.tok_emb(self._tokens(x_t, cond)).astype(jnp.float32) + self.pos_emb[...][None]
        if self.lam_style == "token":
            x = jnp.concatenate([x, self.lam_proj(lam).astype(jnp.float32)[:, None, :]], axis=1)
        h = _norm(self.first_norm_in, x, self.dtype)
        h = _gelu(self.first_dense_in(self._drop(h, rngs)))
        h = _norm(self.first_norm_mid, h, self.dtype)
        x = self.first_dense_out(self._drop(h, rngs)).astype(jnp.float32)
        for block in self.blocks:
            x = remat_call(self.remat, lambda blk, y, r: blk(y, r), block, x, rngs)
        h = _norm(self.last_norm_in, x, self.dtype)
        h = _gelu(self.last_dense(self._drop(h, rngs)))
        h = _norm(self.last_norm_out, h, self.dtype)[:, :n]                # image tokens only
        table = self.tok_emb.table[...][: self.num_states]
        logits = jnp.einsum("bnh,vh->bnv", h, table.astype(h.dtype), preferred_element_type=jnp.float32)
        return logits + self.bias[...][:n, : self.num_states]
