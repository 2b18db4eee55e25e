"""tauLDR U-Net denoiser for pixel grids (andrew-cr/tauLDR:lib/networks/networks.py `UNet` with the head of
lib/models/models.py `ImageX0PredBase`; the Di4C student of sony/di4c:tauldr/lib/networks/networks.py): the DDPM
U-Net of score_sde with a truncated discretised logistic output head.

x_t int32[B, D] holds sub-pixel levels in [0, S) with D = C*H*W flattened in (C, H, W) order; the network works
in NHWC on the centred input `2 x / (S - 1) - 1` and returns logits float32[B, D, S] in the same order. With
`data_min_max = (0, S - 1)` it is the reference forward pass, its float32 steps where rounding matters (centring,
`(1000 t) * freq`, the bin centres, two-pass GroupNorm variance, the pooled mean) taken as the reference takes them;
only summation order and XLA's transcendentals' last ulp differ. The reference's `time_embed_dim` (sinusoid width E;
time MLP E -> 4E -> 4E) is ours, None meaning E = ch.

lambda (Di4C student, `lam_style='embed'`): every ResBlock adds `dense1(silu(lemb))` after the time embedding, with
`dense1` zero-initialised when `lam_zero_init`, so a fresh student equals its teacher exactly. As in the reference,
the down path uses `lemb = MLP(silu(Dense([sin(1000 lam); sin(1000 t)])))` (raw sinusoids, E wide each; MLP
E -> 4E -> 4E) and the middle and up path mix in the spatial mean of the bottleneck feature map instead
(`lam_hidden_mix=True`, the reference; False uses the down-path embedding everywhere).
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from di4c_jax.models.kinds import MODEL_KINDS
from di4c_jax.models.remat import check_remat, remat_call
from di4c_jax.models.lam import lambda_features, time_features


def _init(scale: float = 1.0):
    """score_sde `default_init` (used by tauLDR's 1x1 NiN layers): variance scaling (fan_avg, uniform); 0 -> 1e-10."""
    return nnx.initializers.variance_scaling(scale or 1e-10, "fan_avg", "uniform")


# PyTorch's default Conv2d/Linear weight init (tauLDR's 3x3 convs and dense layers): U(+-1/sqrt(fan_in)).
_torch_init = nnx.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def _group_norm(ch: int, rngs) -> nnx.GroupNorm:
    """The reference GroupNorm: min(C // 4, 32) groups, eps 1e-6, two-pass (not E[x^2] - E[x]^2) variance."""
    return nnx.GroupNorm(ch, num_groups=min(ch // 4, 32), epsilon=1e-6, use_fast_variance=False, rngs=rngs)


def _skip(x, h, rescale: bool):
    return (x + h) / math.sqrt(2.0) if rescale else x + h


def truncated_logistic_logits(mu: jax.Array, log_scale: jax.Array, num_levels: int) -> jax.Array:
    """Truncated discretised logistic (andrew-cr/tauLDR:lib/models/models.py): mu, log_scale [...] -> logits float32[..., S].

    Bin k covers [c_k - w/2, c_k + w/2] with w = 2/S and centres c_k = -1 + w/2 + k w (computed in float64, then
    rounded: the values of the reference's float32 torch.linspace); the logit is log(sigmoid(r) - sigmoid(l))
    computed as logsigmoid(r) + log1p(-exp(logsigmoid(l) - logsigmoid(r)) + 1e-6) with inverse scale
    exp(2 - log_scale). Mass outside [-1, 1] is dropped; softmax renormalises.
    """
    mu = mu.astype(jnp.float32)[..., None]
    inv_scale = jnp.exp(-(log_scale.astype(jnp.float32)[..., None] - 2.0))
    width = 2.0 / num_levels
    centres = jnp.asarray((-1.0 + width / 2 + width * np.arange(num_levels)).astype(np.float32))
    log_right = jax.nn.log_sigmoid((centres + width / 2 - mu) * inv_scale)
    log_left = jax.nn.log_sigmoid((centres - width / 2 - mu) * inv_scale)
    return log_right + jnp.log1p(-jnp.exp(log_left - log_right) + 1e-6)


class ResBlock(nnx.Module):
    def __init__(self, in_ch, out_ch, temb_dim, *, dropout, skip_rescale, mixture, lam_zero_init, dtype, rngs):
        self.skip_rescale, self.mixture = skip_rescale, mixture
        self.norm0, self.norm1 = _group_norm(in_ch, rngs), _group_norm(out_ch, rngs)
        self.conv0 = nnx.Conv(in_ch, out_ch, (3, 3), kernel_init=_torch_init, dtype=dtype, rngs=rngs)
        self.dense0 = nnx.Linear(temb_dim, out_ch, kernel_init=_torch_init, dtype=dtype, rngs=rngs)
        if mixture:
            init = nnx.initializers.zeros_init() if lam_zero_init else _torch_init
            self.dense1 = nnx.Linear(temb_dim, out_ch, kernel_init=init, dtype=dtype, rngs=rngs)
        self.dropout = nnx.Dropout(dropout)
        self.conv1 = nnx.Conv(out_ch, out_ch, (3, 3), kernel_init=_torch_init, dtype=dtype, rngs=rngs)
        self.nin = (nnx.Conv(in_ch, out_ch, (1, 1), kernel_init=_init(0.1), dtype=dtype, rngs=rngs)
                    if in_ch != out_ch else None)

    def __call__(self, x, temb, lemb, rngs):
        h = self.conv0(jax.nn.silu(self.norm0(x)))
        h = h + self.dense0(jax.nn.silu(temb))[:, None, None, :]
        if self.mixture:
            h = h + self.dense1(jax.nn.silu(lemb))[:, None, None, :]
        h = self.dropout(jax.nn.silu(self.norm1(h)), deterministic=rngs is None, rngs=rngs)
        h = self.conv1(h)
        return _skip(x if self.nin is None else self.nin(x), h, self.skip_rescale)


class AttnBlock(nnx.Module):
    def __init__(self, ch, *, skip_rescale, dtype, rngs):
        self.skip_rescale = skip_rescale
        self.norm = _group_norm(ch, rngs)
        self.q, self.k, self.v = (nnx.Conv(ch, ch, (1, 1), kernel_init=_init(0.1), dtype=dtype, rngs=rngs)
                                  for _ in range(3))
        self.out = nnx.Conv(ch, ch, (1, 1), kernel_init=_init(0.0), dtype=dtype, rngs=rngs)

    def __call__(self, x):
        b, hh, ww, c = x.shape
        h = self.norm(x)
        q, k, v = (f(h).reshape(b, hh * ww, c) for f in (self.q, self.k, self.v))
        w = jnp.einsum("bqc,bkc->bqk", q, k, preferred_element_type=jnp.float32) * c ** -0.5
        h = jnp.einsum("bqk,bkc->bqc", jax.nn.softmax(w, axis=-1).astype(v.dtype), v)
        return _skip(x, self.out(h.reshape(b, hh, ww, c)), self.skip_rescale)


class LamEmbedding(nnx.Module):
    """[sin(1000 lam); sin(1000 t) (; extra)] -> Dense -> silu -> Dense -> silu -> Dense: the reference lemb.

    (lam f32[B], t f32[B], extra f32[B, extra_dim] | None) -> f32[B, out_dim]; the sinusoids are `dim` wide each.
    Reference names: `mix` = tlam_mix / h_t_lam_mix, `dense0`, `dense1` = (h)lemb_modules.0, .1.
    """

    def __init__(self, dim, extra_dim, out_dim, *, rngs):
        self.dim = dim
        self.mix = nnx.Linear(2 * dim + extra_dim, dim, rngs=rngs)
        self.dense0, self.dense1 = nnx.Linear(dim, out_dim, rngs=rngs), nnx.Linear(out_dim, out_dim, rngs=rngs)

    def __call__(self, lam, t, extra=None):
        parts = [lambda_features(lam, self.dim), time_features(t, self.dim)] + ([] if extra is None else [extra])
        e = jax.nn.silu(self.mix(jnp.concatenate(parts, axis=-1)))
        return self.dense1(jax.nn.silu(self.dense0(e)))


@MODEL_KINDS.register("unet")
class UNetDenoiser(nnx.Module):
    """(x_t int32[B, C*H*W], t f32[B], lam f32[B] | None, cond None) -> logits float32[B, C*H*W, S]."""

    def __init__(self, *, num_states: int, channels: int, resolution: int, ch: int = 128,
                 ch_mult=(1, 2, 2, 2), num_res_blocks: int = 2, attn_resolutions=(16,), dropout: float = 0.1,
                 skip_rescale: bool = True, lam_style: str | None = None, lam_zero_init: bool = True,
                 lam_hidden_mix: bool = True, time_embed_dim: int | None = None, compute_dtype=None,
                 remat: str = "none", rngs: nnx.Rngs):
        if lam_style not in (None, "embed"):
            raise ValueError(f"unet supports lam_style None or 'embed', got {lam_style!r}")
        mixture = lam_style is not None
        levels = len(ch_mult)
        if resolution % 2 ** (levels - 1):
            raise ValueError(f"resolution {resolution} is not divisible by 2^(len(ch_mult)-1) = {2 ** (levels - 1)}")
        self.num_states, self.channels, self.resolution = num_states, channels, resolution
        self.num_positions, self.num_classes = channels * resolution * resolution, 0
        self.mixture, self.lam_hidden_mix, self.ch, self.levels = mixture, lam_hidden_mix, ch, levels
        self.num_res_blocks, self.dtype, self.remat = num_res_blocks, compute_dtype, check_remat(remat)
        self.embed_dim = embed_dim = ch if time_embed_dim is None else time_embed_dim
        temb_dim = 4 * embed_dim
        self.temb0 = nnx.Linear(embed_dim, temb_dim, rngs=rngs)
        self.temb1 = nnx.Linear(temb_dim, temb_dim, rngs=rngs)
        kw = dict(dropout=dropout, skip_rescale=skip_rescale, mixture=mixture, lam_zero_init=lam_zero_init,
                  dtype=compute_dtype, rngs=rngs)
        attn = lambda c: AttnBlock(c, skip_rescale=skip_rescale, dtype=compute_dtype, rngs=rngs)  # noqa: E731
        conv3 = lambda i, o, s=1, pad="SAME": nnx.Conv(  # noqa: E731
            i, o, (3, 3), strides=s, padding=pad, kernel_init=_torch_init, dtype=compute_dtype, rngs=rngs)
        self.conv_in = conv3(channels, ch)
        skips, in_ch, res = [ch], ch, resolution
        down, up = [], []
        for level, mult in enumerate(ch_mult):
            for _ in range(num_res_blocks):
                down.append(ResBlock(in_ch, ch * mult, temb_dim, **kw))
                in_ch = ch * mult
                down.append(attn(in_ch) if res in attn_resolutions else None)
                skips.append(in_ch)
            if level != levels - 1:
                down.append(conv3(in_ch, in_ch, 2, "VALID"))
                skips.append(in_ch)
                res //= 2
        self.down = nnx.List(down)
        self.mid = nnx.List([ResBlock(in_ch, in_ch, temb_dim, **kw), attn(in_ch),
                             ResBlock(in_ch, in_ch, temb_dim, **kw)])
        if mixture:
            self.lam_down = LamEmbedding(embed_dim, 0, temb_dim, rngs=rngs)
            if lam_hidden_mix:
                self.lam_up = LamEmbedding(embed_dim, in_ch, temb_dim, rngs=rngs)
        for level in reversed(range(levels)):
            for _ in range(num_res_blocks + 1):
                up.append(ResBlock(in_ch + skips.pop(), ch * ch_mult[level], temb_dim, **kw))
                in_ch = ch * ch_mult[level]
                up.append(attn(in_ch) if res in attn_resolutions else None)
            if level != 0:
                up.append(conv3(in_ch, in_ch))
                res *= 2
        self.up = nnx.List(up)
        self.norm_out = _group_norm(in_ch, rngs)
        self.conv_out = nnx.Conv(in_ch, 2 * channels, (3, 3), kernel_init=_torch_init, dtype=compute_dtype,
                                 preferred_element_type=jnp.float32, rngs=rngs)

    def _res(self, block, h, temb, lemb, rngs):
        return remat_call(self.remat, lambda blk, *a: blk(*a), block, h, temb, lemb, rngs)

    def _attn(self, block, h):
        return h if block is None else remat_call(self.remat, lambda blk, x: blk(x), block, h)

    def __call__(self, x_t, t, lam, cond, *, rngs: nnx.Rngs | None = None) -> jax.Array:
        b, c, r, s = x_t.shape[0], self.channels, self.resolution, self.num_states
        centred = (2.0 * x_t.reshape(b, c, r, r).transpose(0, 2, 3, 1).astype(jnp.float32) / (s - 1) - 1.0)
        temb = self.temb1(jax.nn.silu(self.temb0(time_features(t, self.embed_dim))))
        lemb = self.lam_down(lam, t) if self.mixture else None
        h = self.conv_in(centred if self.dtype is None else centred.astype(self.dtype))
        hs, blocks = [h], iter(self.down)
        for level in range(self.levels):
            for _ in range(self.num_res_blocks):
                h = self._res(next(blocks), h, temb, lemb, rngs)
                h = self._attn(next(blocks), h)
                hs.append(h)
            if level != self.levels - 1:
                h = next(blocks)(jnp.pad(h, ((0, 0), (0, 1), (0, 1), (0, 0))))
                hs.append(h)
        if self.mixture and self.lam_hidden_mix:
            pooled = jnp.mean(jnp.mean(h.astype(jnp.float32), axis=2), axis=1)  # over W, then H (the reference)
            lemb = self.lam_up(lam, t, pooled)
        h = self._res(self.mid[0], h, temb, lemb, rngs)
        h = self._res(self.mid[2], self._attn(self.mid[1], h), temb, lemb, rngs)
        blocks = iter(self.up)
        for level in reversed(range(self.levels)):
            for _ in range(self.num_res_blocks + 1):
                h = self._res(next(blocks), jnp.concatenate([h, hs.pop()], axis=-1), temb, lemb, rngs)
                h = self._attn(next(blocks), h)
            if level != 0:
                h = jnp.repeat(jnp.repeat(h, 2, axis=1), 2, axis=2)
                h = next(blocks)(h)
        h = self.conv_out(jax.nn.silu(self.norm_out(h))).astype(jnp.float32)
        mu = jnp.tanh(centred + h[..., :c])
        logits = truncated_logistic_logits(mu, h[..., c:], s)          # [B, H, W, C, S]
        return logits.transpose(0, 3, 1, 2, 4).reshape(b, c * r * r, s)
