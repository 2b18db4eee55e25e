"""DiT-style bidirectional transformer denoiser (MDLM/sdtt `DIT`, sony/di4c:sdtt/src/sdtt/models/dit_orig.py; class
conditioning for the MaskGIT-size configuration, as in sony/di4c:maskgit-pytorch/Network/transformer.py).

Token embedding, rotary positions (GPT-NeoX rotate-half, base 1e4), adaLN-zero conditioning on
`c = silu(time_mlp(sinusoid(1000 t))) [+ class_embed(cond)] [+ lam_embed(lam)]`, pre-LayerNorm blocks without
LayerNorm bias, untied output layer, dropout on the attention and MLP branches.

lambda conditioning, `lam_style`:
- `'embed'`: `LambdaProjection(lam)` is added to `c` (tauLDR style). `lam_zero_init` zero-initialises its last
  layer, so `c` is unchanged and a fresh student equals its teacher exactly.
- `'token'`: `LambdaProjection(lam)` is an extra token (the sdtt/MaskGIT reference) that gets no rotary and is
  dropped at the output. Exactness design: the extra token is kept as a separate array `z[B, 1, H]`, so the D
  regular tokens run through exactly the teacher's ops. Softmax over the D + 1 keys equals
  `att_D + p_z (v_z - att_D)` with `p_z = sigmoid(s_z - logsumexp(s_D))`; each block adds this term times a learned
  per-head gate. Gate 1 is the reference's extra-token attention; `lam_zero_init` starts the gates at 0, so the
  lambda token changes nothing until the gates learn (the sdtt reference instead starts from a random projection).
  A zero gate is slow to leave: the token's parameters get no gradient while it is 0 and the few gates only see a
  random token, so a 2-layer student on the HMM benchmark had no lambda dependence for ~800 of its 1000 Di4C steps;
  with `lam_zero_init=False` (gate 1) it had it from the first 100 and sampled better at every step count
  (the experiment configs use that).
  Op by op the zero-gate student is bitwise its teacher; under jit XLA fuses the shared intermediates (q, k, v,
  logsumexp) differently, which moves the logits by float rounding only (~1e-6 relative).
  `lam_token_gate=False` drops the gate parameter (fixed at 1): the reference's function and parameters exactly.
  `lam_blocks=k` gives the token to the last k blocks only (None: all, the references): the first depth - k blocks
  are the teacher's blocks on the D tokens, independent of lambda, so `components` runs them once per row for
  any number of lambdas (a cheaper large N; the first block of such a student is its teacher's function).

Local latents, `local_latents=Z` with `local_block=b` (a student option, ours): besides the global lambda (or
instead of it, `lam_style=None`), an offset o ~ U{0..b-1} cuts the D positions into blocks of b consecutive ones and
each block draws its own latent z ~ U{0..Z-1}; position d's logits are `final_out(h_d) + local_out(h_d)[z]`, with
`local_out` a small random head (the student's only new parameters besides lambda's). Still a mixture of products
(lambda = the global lambda, o and the z's), but one whose law is a product over blocks of Z-mixtures: one global
lambda drawn N times cannot hold the independent local choices of many far-apart places at once, and the Z^blocks x
b local combinations are enumerated exactly by `losses.mixture.local_mixture_log_likelihood` from one pass of the
blocks per global lambda. lam is float32[B, 1 + D] (`Denoiser.draw_lam`): the global lambda, then each position's
latent id.

Options for the released MDLM/sdtt checkpoints (kuleshov-group/mdlm:models/dit.py, di4c_jax.interop.mdlm):
- `time_embedding='mdlm'`: the network sees the log-linear total noise sigma(t) = -log1p(-(1 - 1e-3) t)
  (kuleshov-group/mdlm:noise_schedule.py), embedded by `TimestepEmbedder`: cos-first sinusoid of the raw sigma with
  frequencies exp(-ln(1e4) k / half); sigma is 0 when `time_conditioning` is False. The default `'sinusoid'` is the
  sin-first sinusoid of 1000 t of `lam.time_features`.
- `fast_variance=False`: LayerNorm variance as mean((x - mean)^2), PyTorch's two-pass form (Flax's default
  E[x^2] - E[x]^2 loses float32 digits when |mean| >> std), for float32 parity.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from di4c_jax.models.kinds import MODEL_KINDS
from di4c_jax.models.lam import CheckedEmbed, LambdaProjection, time_features
from di4c_jax.models.precision import low_precision_backward_dot_general
from di4c_jax.models.remat import REMAT_POLICIES, check_remat

LAM_STYLES = (None, "token", "embed")
# 'einsum': the heads-major attention below; 'xla' / 'cudnn': jax.nn.dot_product_attention with that implementation
# ('cudnn' is the fused flash-attention kernel: GPUs, bf16 / fp16 only)
ATTENTIONS = ("einsum", "xla", "cudnn")
TIME_EMBEDDINGS = ("sinusoid", "mdlm")
MDLM_EPS = 1e-3  # the log-linear schedule's epsilon (kuleshov-group/mdlm:noise_schedule.py, LogLinearNoise)


def loglinear_sigma(t: jax.Array) -> jax.Array:
    """float[B] times in [0, 1] -> float32[B] total noise sigma(t) = -log1p(-(1 - eps) t), eps = 1e-3."""
    return -jnp.log1p(-(1 - MDLM_EPS) * jnp.asarray(t, jnp.float32))


def mdlm_sigma_features(sigma: jax.Array, dim: int = 256, max_period: float = 1e4) -> jax.Array:
    """float[B] -> float32[B, dim]: `TimestepEmbedder.timestep_embedding` of kuleshov-group/mdlm:models/dit.py,
    `[cos(sigma f_k)]_k ++ [sin(sigma f_k)]_k`, f_k = exp(-ln(max_period) k / half), sigma unscaled.

    The frequencies are the reference's float32 exponents with a correctly rounded exp (host constants)."""
    if dim % 2:
        raise ValueError(f"sigma sinusoid dim must be even, got {dim}")
    half = dim // 2
    exponents = np.float32(-math.log(max_period)) * np.arange(half, dtype=np.float32) / np.float32(half)
    freqs = jnp.asarray(np.exp(exponents.astype(np.float64)).astype(np.float32))
    args = jnp.asarray(sigma, jnp.float32)[:, None] * freqs[None, :]
    return jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)


def rotary_tables(length: int, head_dim: int, base: float = 1e4) -> tuple[jax.Array, jax.Array]:
    """cos, sin float32[length, head_dim] of the GPT-NeoX rotary embedding."""
    inv_freq = 1.0 / base ** (jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim)
    freqs = jnp.outer(jnp.arange(length, dtype=jnp.float32), inv_freq)
    emb = jnp.concatenate([freqs, freqs], axis=-1)
    return jnp.cos(emb), jnp.sin(emb)


def apply_rotary(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
    """x [..., head_dim] rotated by position: x cos + rotate_half(x) sin, cos and sin broadcast against x
    ([L, head_dim] for heads-major x [B, heads, L, head_dim], [L, 1, head_dim] for tokens-major [B, L, heads, ...])."""
    x1, x2 = jnp.split(x, 2, axis=-1)
    rotated = jnp.concatenate([-x2, x1], axis=-1)
    return (x * cos + rotated * sin).astype(x.dtype)


def attention(q, k, v, scale: float) -> tuple[jax.Array, jax.Array]:
    """Softmax attention, q [B, heads, Lq, head_dim], k, v [B, heads, L, head_dim] -> (out [B, heads, Lq, head_dim],
    lse f32[B, heads, Lq]).

    Heads-major, so both products are batched matmuls with no transposes. The normalisation is applied after the
    value product (exp(s - max) v / sum exp(s - max)): on XLA CPU this runs about twice as fast as normalising the
    [B, heads, L, L] probabilities first. `lse` (logsumexp of the scores, differentiable) is what the lambda token's
    gate needs.
    """
    s = jnp.einsum("bhqd,bhkd->bhqk", q, k, preferred_element_type=jnp.float32) * scale
    m = jax.lax.stop_gradient(s.max(axis=-1, keepdims=True))
    p = jnp.exp(s - m)
    total = p.sum(axis=-1)                                                    # [B, heads, Lq]
    out = jnp.einsum("bhqk,bhkd->bhqd", p.astype(v.dtype), v, preferred_element_type=jnp.float32)
    return (out / total[..., None]).astype(v.dtype), m[..., 0] + jnp.log(total)


def dense(layer: nnx.Linear, x: jax.Array) -> jax.Array:
    """`layer` on x [..., in] as one [rows, in] matmul: XLA's CPU backend computes the weight gradient of a
    dense layer on [B, D, in] inputs about 4x slower than on the same rows flattened (same values)."""
    return layer(x.reshape(-1, x.shape[-1])).reshape(*x.shape[:-1], -1)


def _take_latent(logits: jax.Array, ids: jax.Array, axis: int) -> jax.Array:
    """logits gathered at latent ids along `axis`; ids outside [0, Z) give NaN (never a silent clip)."""
    ids = jnp.where(ids < 0, logits.shape[axis], ids)
    return jnp.take_along_axis(logits, ids, axis=axis, mode="fill", fill_value=jnp.nan)


def _modulate(x, shift, scale):
    return x * (1 + scale) + shift


class DiTBlock(nnx.Module):
    def __init__(self, hidden: int, heads: int, mlp_dim: int, cond_dim: int, dropout: float, *,
                 lam_token: bool, gate_init: float, dtype, rngs: nnx.Rngs, gated: bool = True,
                 fast_variance: bool = True, attention: str = "einsum"):
        if hidden % heads:
            raise ValueError(f"hidden size {hidden} is not divisible by num_heads {heads}")
        if attention not in ATTENTIONS:
            raise ValueError(f"attention must be one of {ATTENTIONS}, got {attention!r}")
        self.heads, self.dtype, self.attention = heads, dtype, attention
        self.norm1 = nnx.LayerNorm(hidden, use_bias=False, epsilon=1e-5, use_fast_variance=fast_variance, rngs=rngs)
        self.norm2 = nnx.LayerNorm(hidden, use_bias=False, epsilon=1e-5, use_fast_variance=fast_variance, rngs=rngs)
        self.qkv = nnx.Linear(hidden, 3 * hidden, use_bias=False, dtype=dtype, rngs=rngs)
        self.attn_out = nnx.Linear(hidden, hidden, use_bias=False, dtype=dtype, rngs=rngs)
        self.mlp_in = nnx.Linear(hidden, mlp_dim, dtype=dtype, rngs=rngs)
        self.mlp_out = nnx.Linear(mlp_dim, hidden, dtype=dtype, rngs=rngs)
        zeros = nnx.initializers.zeros_init()
        self.adaln = nnx.Linear(cond_dim, 6 * hidden, kernel_init=zeros, dtype=dtype, rngs=rngs)
        self.dropout = nnx.Dropout(dropout)
        self.gated = lam_token and gated
        if self.gated:
            self.lam_gate = nnx.Param(jnp.full((heads,), gate_init, jnp.float32))

    def _norm(self, norm, x):
        y = norm(x.astype(jnp.float32))
        return y if self.dtype is None else y.astype(self.dtype)

    def _qkv_tokens_major(self, x, shift, scale):
        """x [B, n, H] -> q, k, v stacked tokens-major [B, n, 3, heads, head_dim]."""
        b, n, hidden = x.shape
        qkv = dense(self.qkv, _modulate(self._norm(self.norm1, x), shift, scale))
        return qkv.reshape(b, n, 3, self.heads, hidden // self.heads)

    def _qkv(self, x, shift, scale):
        """x [B, n, H] -> q, k, v [B, heads, n, head_dim] (one transpose for the three)."""
        qkv = self._qkv_tokens_major(x, shift, scale).transpose(2, 0, 3, 1, 4)
        return qkv[0], qkv[1], qkv[2]

    def _branch(self, x, gate, y, rngs):
        return x + gate * self.dropout(y, deterministic=rngs is None, rngs=rngs)

    def _mlp(self, x, shift, scale, gate, rngs):
        h = dense(self.mlp_in, _modulate(self._norm(self.norm2, x), shift, scale))
        return self._branch(x, gate, dense(self.mlp_out, jax.nn.gelu(h, approximate=True)), rngs)

    def __call__(self, x, c, cos, sin, z=None, *, rngs=None):
        """x [B, D, H], c [B, cond], z [B, 1, H] or None -> (x, z)."""
        shift1, scale1, gate1, shift2, scale2, gate2 = jnp.split(self.adaln(c)[:, None, :], 6, axis=-1)
        attend = self._einsum_attention if self.attention == "einsum" else self._fused_attention
        att, att_z = attend(x, z, shift1, scale1, cos, sin)
        x = self._branch(x, gate1, dense(self.attn_out, att), rngs)
        x = self._mlp(x, shift2, scale2, gate2, rngs)
        if z is not None:
            z = self._branch(z, gate1, dense(self.attn_out, att_z), rngs)
            z = self._mlp(z, shift2, scale2, gate2, rngs)
        return x, z

    def _fused_attention(self, x, z, shift, scale_mod, cos, sin):
        """`_einsum_attention` by jax.nn.dot_product_attention, which returns no log-sum-exp: with gate g the
        x-queries' output att_D + g p_z (v_z - att_D) is (1 - g) att_D + g att_{D+1}, the attention over the D keys
        and over the D + 1 keys with z's (one call when the gate is fixed at 1, none over D + 1 without z)."""
        b, d, hidden = x.shape

        def qkv(y):  # [B, n, H] -> q, k, v tokens-major [B, n, heads, head_dim], no transpose
            out = self._qkv_tokens_major(y, shift, scale_mod)
            return out[:, :, 0], out[:, :, 1], out[:, :, 2]

        q, k, v = qkv(x)
        q, k = apply_rotary(q, cos[:, None], sin[:, None]), apply_rotary(k, cos[:, None], sin[:, None])

        def attend(query, keys, values, implementation=self.attention):
            return jax.nn.dot_product_attention(query, keys, values, scale=(hidden // self.heads) ** -0.5,
                                                implementation=implementation)

        if z is None:
            return attend(q, k, v).reshape(b, d, hidden), None
        qz, kz, vz = qkv(z)
        keys, values = jnp.concatenate([k, kz], axis=1), jnp.concatenate([v, vz], axis=1)
        att = attend(q, keys, values)
        if self.gated:
            att_d = attend(q, k, v)
            att = att_d + (self.lam_gate[...][None, None, :, None] * (att - att_d)).astype(att_d.dtype)
        # the token's single query: XLA's attention (a fused kernel buys nothing for one query)
        return att.reshape(b, d, hidden), attend(qz, keys, values, implementation="xla").reshape(b, 1, hidden)

    def _einsum_attention(self, x, z, shift1, scale1, cos, sin):
        """Attention outputs tokens-major (att [B, D, H], att_z [B, 1, H] or None) of the heads-major einsums."""
        b, d, hidden = x.shape
        q, k, v = self._qkv(x, shift1, scale1)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        scale = q.shape[-1] ** -0.5
        att, lse = attention(q, k, v, scale)                                   # [B, heads, D, hd], [B, heads, D]
        if z is not None:
            qz, kz, vz = self._qkv(z, shift1, scale1)                           # [B, heads, 1, hd]
            s_z = jnp.einsum("bhqd,bhkd->bhq", q, kz, preferred_element_type=jnp.float32) * scale
            p_z = jax.nn.sigmoid(s_z - lse)[..., None]                          # [B, heads, D, 1]
            if self.gated:
                share = self.lam_gate[...][None, :, None, None] * p_z * (vz - att)
            else:  # gate 1: the reference's extra token
                share = p_z * (vz - att)
            att = att + share.astype(att.dtype)
            # The lambda token's own query attends to all D + 1 keys (keys of z carry no rotary): its softmax over
            # [k; kz] as attention over k plus z's share, without copying k and v into a D + 1 concatenation.
            att_zx, lse_zx = attention(qz, k, v, scale)                         # [B, heads, 1, hd], [B, heads, 1]
            s_self = jnp.einsum("bhqd,bhkd->bhq", qz, kz, preferred_element_type=jnp.float32) * scale
            p_self = jax.nn.sigmoid(s_self - lse_zx)[..., None]                 # [B, heads, 1, 1]
            att_z = att_zx + (p_self * (vz - att_zx)).astype(att_zx.dtype)
        tokens_major = lambda a: a.transpose(0, 2, 1, 3).reshape(b, a.shape[2], hidden)  # noqa: E731
        return tokens_major(att), None if z is None else tokens_major(att_z)


def run_blocks(blocks, x, c, cos, sin, z, *, remat: str, rngs: nnx.Rngs | None):
    """The blocks applied in order as one `lax.scan` over their parameters, stacked on the fly.

    With a remat policy a rolled scan: its backward pass visits the blocks one at a time, so the policy bounds what
    is live (an unrolled loop leaves the recomputation's placement to the scheduler, which on CPU hoists it into
    the forward pass and saves nothing), and a 24-block model compiles one block. The params tree keeps one entry
    per block (checkpoints and converters see `blocks/<i>/...`); the stack is a copy inside the step. Dropout
    draws one key per block.
    """
    graphdef = nnx.graphdef(blocks[0])
    stacked = jax.tree.map(lambda *a: jnp.stack(a), *[nnx.state(b) for b in blocks])
    keys = None if rngs is None else jax.random.split(rngs.dropout(), len(blocks))

    def body(carry, per_block):
        state, key = per_block
        block = nnx.merge(graphdef, state)
        return block(*carry[:1], c, cos, sin, carry[1], rngs=None if key is None else nnx.Rngs(dropout=key)), None

    if remat == "none":  # unrolled: without remat a rolled scan keeps more (its stacked residuals) and runs slower
        return jax.lax.scan(body, (x, z), (stacked, keys), unroll=len(blocks))[0]
    return jax.lax.scan(jax.checkpoint(body, policy=REMAT_POLICIES[remat]), (x, z), (stacked, keys))[0]


@MODEL_KINDS.register("dit")
class DiTDenoiser(nnx.Module):
    """(x_t int32[B, D], t f32[B], lam f32[B] | None, cond int32[B] | None) -> logits float32[B, D, K]."""

    def __init__(self, *, num_states: int, num_positions: int, hidden: int = 768, depth: int = 12,
                 num_heads: int = 12, mlp_dim: int | None = None, cond_dim: int = 128, time_freq_dim: int = 256,
                 time_conditioning: bool = True, num_classes: int = 0, dropout: float = 0.1,
                 lam_style: str | None = None, lam_zero_init: bool = True, lam_feature_dim: int = 128,
                 lam_hidden: int = 512, rotary_base: float = 1e4, compute_dtype=None, remat: str = "none",
                 lam_token_gate: bool = True, time_embedding: str = "sinusoid", fast_variance: bool = True,
                 attention: str = "einsum", lam_blocks: int | None = None, local_latents: int = 0,
                 local_block: int = 8, rngs: nnx.Rngs):
        if lam_style not in LAM_STYLES:
            raise ValueError(f"lam_style must be one of {LAM_STYLES}, got {lam_style!r}")
        if lam_blocks is not None and (lam_style != "token" or not 1 <= lam_blocks <= depth):
            raise ValueError(f"lam_blocks must be None or in [1, depth={depth}] with lam_style='token', got "
                             f"lam_blocks={lam_blocks!r} with lam_style={lam_style!r}")
        if local_latents and (local_latents < 2 or not 1 <= local_block <= num_positions):
            raise ValueError(f"local_latents needs local_latents >= 2 and 1 <= local_block <= num_positions="
                             f"{num_positions}; got local_latents={local_latents}, local_block={local_block}")
        self.local_latents, self.local_block = local_latents, local_block
        self.trunk_depth = 0 if lam_blocks is None else depth - lam_blocks
        if time_embedding not in TIME_EMBEDDINGS:
            raise ValueError(f"time_embedding must be one of {TIME_EMBEDDINGS}, got {time_embedding!r}")
        self.time_embedding = time_embedding
        self.num_states, self.num_positions, self.num_classes = num_states, num_positions, num_classes
        self.mixture, self.lam_style = lam_style is not None or bool(local_latents), lam_style
        self.time_conditioning, self.time_freq_dim = time_conditioning, time_freq_dim
        self.head_dim, self.rotary_base, self.dtype = hidden // num_heads, rotary_base, compute_dtype
        self.remat = check_remat(remat)
        self.tok_embed = CheckedEmbed(num_states, hidden, dtype=compute_dtype, rngs=rngs)
        self.time_in = nnx.Linear(time_freq_dim, cond_dim, rngs=rngs)
        self.time_out = nnx.Linear(cond_dim, cond_dim, rngs=rngs)
        if num_classes:
            self.class_embed = CheckedEmbed(num_classes + 1, cond_dim, rngs=rngs)  # index num_classes = null
        if lam_style is not None:
            out = hidden if lam_style == "token" else cond_dim
            self.lam_proj = LambdaProjection(out, feature_dim=lam_feature_dim, hidden=lam_hidden,
                                             zero_init=lam_zero_init and lam_style == "embed", rngs=rngs)
        self.blocks = nnx.List([
            DiTBlock(hidden, num_heads, mlp_dim or 4 * hidden, cond_dim, dropout,
                     lam_token=lam_style == "token" and i >= self.trunk_depth,
                     gate_init=0.0 if lam_zero_init else 1.0, dtype=compute_dtype, gated=lam_token_gate,
                     fast_variance=fast_variance, attention=attention, rngs=rngs)
            for i in range(depth)])
        zeros = nnx.initializers.zeros_init()
        self.final_norm = nnx.LayerNorm(hidden, use_bias=False, epsilon=1e-5, use_fast_variance=fast_variance,
                                        rngs=rngs)
        self.final_adaln = nnx.Linear(cond_dim, 2 * hidden, kernel_init=zeros, dtype=compute_dtype, rngs=rngs)
        # bf16 operands, float32 accumulation and output: the [B, D, K] logits are never rounded to bf16.
        self.final_out = nnx.Linear(hidden, num_states, kernel_init=zeros, dtype=compute_dtype,
                                    preferred_element_type=jnp.float32,
                                    dot_general=low_precision_backward_dot_general, rngs=rngs)
        if local_latents:  # latent z's logits: the shared head plus its own small, random (symmetry-breaking) one
            self.local_out = nnx.Linear(hidden, local_latents * num_states, use_bias=False,
                                        kernel_init=nnx.initializers.normal(0.02), dtype=compute_dtype,
                                        preferred_element_type=jnp.float32,
                                        dot_general=low_precision_backward_dot_general, rngs=rngs)

    @property
    def shares_trunk(self) -> bool:
        """True if some leading blocks do not see lambda (`lam_blocks` < depth, or local latents, which no block
        sees): `components` is cheaper then."""
        return self.trunk_depth > 0 or bool(self.local_latents)

    def __call__(self, x_t, t, lam, cond, *, rngs: nnx.Rngs | None = None) -> jax.Array:
        if self.local_latents:  # lam float32[B, 1 + D]: the global lambda, then each position's latent id
            logits = self._local_logits(x_t, t, lam[:, :1] if self.lam_style else None, cond, rngs)[:, 0]
            return _take_latent(logits, lam[:, 1:].astype(jnp.int32)[:, :, None, None], axis=2)[:, :, 0]
        return self.components(x_t, t, None if lam is None else lam[:, None], cond, rngs=rngs)[:, 0]

    def _local_logits(self, x_t, t, lam, cond, rngs) -> jax.Array:
        """float32[B, N, D, Z, K]: every local latent's logits at N global lambdas lam [B, N] (None: N = 1)."""
        h = self._head_input(x_t, t, lam, cond, rngs)
        local = dense(self.local_out, h).astype(jnp.float32).reshape(*h.shape[:2], self.local_latents, -1)
        logits = dense(self.final_out, h).astype(jnp.float32)[:, :, None] + local
        return logits.reshape(x_t.shape[0], -1, *logits.shape[1:])

    def components(self, x_t, t, lam, cond, *, rngs: nnx.Rngs | None = None) -> jax.Array:
        """x_t int32[B, D], t f32[B], lam f32[B, N] | None (N = 1), cond int32[B] | None -> logits f32[B, N, D, K],
        the blocks before the first that sees lambda run once per row. With local latents: [B, N Z, D, K],
        component n Z + z the global lam[b, n] (ignored without a lambda input) with latent z at every position."""
        if self.local_latents:
            logits = self._local_logits(x_t, t, lam if self.lam_style else None, cond, rngs)
            logits = jnp.moveaxis(logits, 3, 2)  # [B, N, Z, D, K]
            return logits.reshape(x_t.shape[0], -1, *logits.shape[3:])
        h = self._head_input(x_t, t, lam, cond, rngs)
        logits = dense(self.final_out, h).astype(jnp.float32)
        return logits.reshape(x_t.shape[0], -1, *logits.shape[1:])

    def _head_input(self, x_t, t, lam, cond, rngs):
        """h [B N, D, H] in the compute dtype at the output layer, rows repeated b-major for N lambdas."""
        cast = lambda a: a if self.dtype is None else a.astype(self.dtype)  # noqa: E731
        c = self._conditioning(t, cond)  # float32 until lambda is in
        x = self.tok_embed(x_t)
        cos, sin = rotary_tables(x_t.shape[1], self.head_dim, self.rotary_base)
        blocks = list(self.blocks)
        if self.trunk_depth:
            x, _ = run_blocks(blocks[:self.trunk_depth], x, cast(c), cos, sin, None, remat=self.remat, rngs=rngs)
        num = 1 if lam is None else lam.shape[1]
        if num > 1:  # rows repeated b-major from here on
            x, c = jnp.repeat(x, num, axis=0), jnp.repeat(c, num, axis=0)
        lam = None if lam is None else lam.reshape(-1)
        if self.lam_style == "embed":
            c = c + self.lam_proj(lam)
        c = cast(c)
        z = self.lam_proj(lam)[:, None, :].astype(x.dtype) if self.lam_style == "token" else None
        x, z = run_blocks(blocks[self.trunk_depth:], x, c, cos, sin, z, remat=self.remat, rngs=rngs)
        shift, scale = jnp.split(self.final_adaln(c)[:, None, :], 2, axis=-1)
        h = self.final_norm(x.astype(jnp.float32))
        return _modulate(cast(h), shift, scale)

    def _conditioning(self, t, cond):
        """float32 c [B, cond_dim] from the time and the class (lambda is added where the blocks need it)."""
        t_in = t if self.time_conditioning else jnp.zeros_like(t)
        if self.time_embedding == "mdlm":
            sigma = loglinear_sigma(t) if self.time_conditioning else jnp.zeros(t.shape, jnp.float32)
            feats = mdlm_sigma_features(sigma, self.time_freq_dim)
        else:
            feats = time_features(t_in, self.time_freq_dim)
        c = jax.nn.silu(self.time_out(jax.nn.silu(self.time_in(feats))))
        return c + self.class_embed(cond) if self.num_classes else c
