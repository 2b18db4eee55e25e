"""MaskGIT confidence sampler (reference-masked.md B2 'Sampler', B6, C.9-10, C.20).

Per step i of n: logits (classifier-free guided with the ramped weight w_i = w i / (n-1)), times `sm_temp`; draw
pred ~ Cat(softmax) at every position; confidence = log p(pred) + r_temp (1 - i/(n-1)) Gumbel; reveal the
k_i most confident masked positions (arccos schedule `maskgit_schedule`). Unlike the reference, the mask class is
never drawn (its logit is removed before sampling), so a revealed position always holds a real token.
n = 1 uses ratio i/(n-1) := 0 (no guidance, full Gumbel noise) where the reference divides by zero.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from di4c_jax.processes.base import NEG_INF, sample_categorical
from di4c_jax.sampling.analytic import Sampler, draw_lam

DEFAULT_R_TEMP = 4.5  # reference `r_temp` (randomize="linear", hard-coded in sample_and_eval.py)


def maskgit_schedule(num_steps: int, num_dims: int) -> tuple[int, ...]:
    """Tokens revealed per step, the reference's modified `adap_sche` (arccos):
    r_i = linspace(0, 1, n+1), v_i = round(D (2/pi) arccos(r_i)), k_i = v_i - v_{i+1}; zeros become 1 and the
    last step absorbs D - sum(k). Computed in float32 like the torch original. n=4, D=256: (41, 44, 53, 118)."""
    if not 1 <= num_steps <= num_dims:
        raise ValueError(f"num_steps must be in [1, num_dims={num_dims}], got {num_steps}")
    r = np.linspace(0.0, 1.0, num_steps + 1, dtype=np.float32)
    v = np.round(np.float32(num_dims) * (np.arccos(r) / np.float32(math.pi * 0.5))).astype(np.int64)
    k = v[:-1] - v[1:]
    k[k == 0] = 1
    k[-1] += num_dims - k.sum()
    if k[-1] < 1:
        raise ValueError(f"{num_steps} steps cannot reveal {num_dims} tokens with the arccos schedule")
    return tuple(int(c) for c in k)


def _ramp(num_steps: int) -> np.ndarray:
    """i / (n - 1) for i < n, with n = 1 giving [0]."""
    return np.arange(num_steps, dtype=np.float32) / max(num_steps - 1, 1)


def cfg_weights(guidance: float, num_steps: int) -> np.ndarray:
    """Linearly ramped guidance weights w_i = w i / (n-1), float32[n]; (6, 4) -> [0, 2, 4, 6]."""
    return np.float32(guidance) * _ramp(num_steps)


def gumbel_temperatures(r_temp: float, num_steps: int) -> np.ndarray:
    """Confidence-noise scales r_temp (1 - i/(n-1)), float32[n]: from r_temp down to 0 at the last step."""
    return np.float32(r_temp) * (1.0 - _ramp(num_steps))


def confidence_step(key: jax.Array, x_t: jax.Array, logits: jax.Array, num_reveal: jax.Array,
                    gumbel_temp: jax.Array, mask_id: int) -> jax.Array:
    """One MaskGIT reveal step: x_t int32[B, D] -> x_next int32[B, D].

    logits: float32[B, D, K] (already guided / temperature-scaled); num_reveal: int[B] (or scalar), clipped to the
    number of masked positions of each row; gumbel_temp: float[B] (or scalar). pred ~ Cat(logits) with the mask
    class (if mask_id < K) excluded; confidence = log p(pred) + gumbel_temp * Gumbel(0, 1); exactly
    min(num_reveal, #masked) masked positions are set to pred, the most confident ones. Ties in confidence are
    broken by position (lower index first), so the count is exact (the reference may write more on ties, C.20).
    Unmasked positions are never changed.
    """
    if x_t.ndim != 2 or logits.ndim != 3 or logits.shape[:2] != x_t.shape:
        raise ValueError(f"need x_t [B, D] and logits [B, D, K], got {x_t.shape} and {logits.shape}")
    batch, dims, num_classes = logits.shape
    logits = logits.astype(jnp.float32)
    if mask_id < num_classes:
        logits = logits.at[..., mask_id].set(NEG_INF)
    logp = jax.nn.log_softmax(logits, axis=-1)
    pred_key, gumbel_key = jax.random.split(key)
    pred = sample_categorical(pred_key, logp)
    log_conf = jnp.take_along_axis(logp, pred[..., None], axis=-1)[..., 0]
    temp = jnp.broadcast_to(jnp.asarray(gumbel_temp, jnp.float32), (batch,))
    conf = log_conf + temp[:, None] * jax.random.gumbel(gumbel_key, (batch, dims), jnp.float32)
    masked = x_t == mask_id
    conf = jnp.where(masked, conf, -jnp.inf)  # a ranking, not a probability: unmasked positions rank last
    order = jnp.argsort(conf, axis=-1, descending=True, stable=True)
    rank = jnp.argsort(order, axis=-1)
    k = jnp.broadcast_to(jnp.asarray(num_reveal, jnp.int32), (batch,))
    reveal = masked & (rank < k[:, None])
    return jnp.where(reveal, pred, x_t).astype(jnp.int32)


def maskgit_sample(key: jax.Array, apply: Callable, params: Any, *, shape: tuple[int, int], mask_id: int,
                   num_steps: int, cond: jax.Array | None = None, guidance: float = 0.0,
                   null_class: int | None = None, sm_temp: float = 1.0, r_temp: float = DEFAULT_R_TEMP,
                   mixture: bool = False, uncond_apply: Callable | None = None, uncond_params: Any = None,
                   schedule: Sequence[int] | None = None) -> jax.Array:
    """MaskGIT sampling from all-mask to int32[B, D] (shape = (B, D)) in `num_steps` steps.

    `apply(params, x, t, lam, cond)` gets t = 1 - i/n (the masked-time of progress r = i/n). Guidance
    (`guidance` = w > 0, static) needs `cond` int32[B] and `null_class`: logit = (1 + w_i) l_c - w_i l_u with
    l_u = apply(..., cond=null_class), both halves in one call of batch 2B sharing lam (mixture: fresh
    lam ~ U[0, 1] per sample per step), or l_u = uncond_apply(uncond_params, x, t, None, null) when a teacher
    provides the unconditional branch (reference --lfg). `schedule` overrides `maskgit_schedule(n, D)`.
    """
    batch, dims = shape
    reveal = tuple(maskgit_schedule(num_steps, dims) if schedule is None else schedule)
    if len(reveal) != num_steps or sum(reveal) != dims or min(reveal) < 0:
        raise ValueError(f"schedule must be {num_steps} non-negative counts summing to D={dims}, got {reveal}")
    if guidance != 0 and (cond is None or null_class is None):
        raise ValueError("classifier-free guidance needs cond (int32[B]) and null_class")
    xs = (jnp.arange(num_steps), jnp.asarray(reveal, jnp.int32), jnp.asarray(cfg_weights(guidance, num_steps)),
          jnp.asarray(gumbel_temperatures(r_temp, num_steps)))

    def step(x, inputs):
        i, k, w, temp = inputs
        lam_key, conf_key = jax.random.split(jax.random.fold_in(key, i))
        lam = draw_lam(lam_key, batch, mixture)
        t = jnp.full((batch,), 1.0 - i / num_steps, jnp.float32)
        if guidance == 0:
            logits = apply(params, x, t, lam, cond)
        else:
            null = jnp.full((batch,), null_class, jnp.int32)
            if uncond_apply is None:
                pair = lambda a: jnp.concatenate([a, a], axis=0)
                both = apply(params, pair(x), pair(t), None if lam is None else pair(lam),
                             jnp.concatenate([jnp.asarray(cond, jnp.int32), null], axis=0))
                logit_c, logit_u = both[:batch], both[batch:]
            else:
                logit_c = apply(params, x, t, lam, cond)
                logit_u = uncond_apply(uncond_params, x, t, None, null)
            logits = (1.0 + w) * logit_c - w * logit_u
        return confidence_step(conf_key, x, sm_temp * logits, k, temp, mask_id), None

    x = jnp.full(shape, mask_id, jnp.int32)
    return jax.lax.scan(step, x, xs)[0]


def make_maskgit_sampler(apply: Callable, *, shape: tuple[int, int], mask_id: int, num_steps: int,
                         guidance: float = 0.0, null_class: int | None = None, sm_temp: float = 1.0,
                         r_temp: float = DEFAULT_R_TEMP, mixture: bool = False,
                         uncond_apply: Callable | None = None, schedule: Sequence[int] | None = None) -> Sampler:
    """`maskgit_sample` jitted with everything but (key, params, teacher_params, cond) static.

    `sampler(key, params, teacher_params=None, cond=None)`; teacher_params feed `uncond_apply`. `nfe == num_steps`
    sequential network evaluations (with guidance each one scores the conditional and unconditional halves, as
    one batch of 2B or, with `uncond_apply`, one student plus one teacher call: `teacher_nfe == num_steps`).
    """
    if schedule is None:
        maskgit_schedule(num_steps, shape[1])  # fail before tracing on impossible step counts

    def run(key, params, teacher_params=None, cond=None):
        return maskgit_sample(key, apply, params, shape=shape, mask_id=mask_id, num_steps=num_steps, cond=cond,
                              guidance=guidance, null_class=null_class, sm_temp=sm_temp, r_temp=r_temp,
                              mixture=mixture, uncond_apply=uncond_apply, uncond_params=teacher_params,
                              schedule=schedule)

    teacher_nfe = num_steps if (uncond_apply is not None and guidance != 0) else 0
    return Sampler(jax.jit(run), nfe=num_steps, teacher_nfe=teacher_nfe)
