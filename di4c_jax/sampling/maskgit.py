"""MaskGIT confidence sampler (Chang et al. 2022; as in sony/di4c:maskgit-pytorch/Trainer/vit.py).

Per step i of n: logits (classifier-free guided with the ramped weight w_i = w i / (n-1)), times `sm_temp`; draw
pred ~ Cat(softmax) at every position; confidence = log p(pred) + r_temp (1 - i/(n-1)) Gumbel; reveal the
k_i most confident masked positions (arccos schedule `maskgit_schedule`). Unlike the reference, the mask class is
never drawn (its logit is removed before sampling), so a revealed position always holds a real token.
n = 1 uses ratio i/(n-1) := 0 (no guidance, full Gumbel noise) where the reference divides by zero.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from di4c_jax.denoiser import Denoiser
from di4c_jax.processes.confidence import confidence_step
from di4c_jax.processes.protocol import Process, require
from di4c_jax.sampling.sampler import SAMPLERS, Sampler, check_networks, lam_drawer, reject_teacher_hybrid

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


def maskgit_sample(key: jax.Array, *, process: Process, denoiser: Denoiser, params: Any, shape: tuple[int, int],
                   num_steps: int, cond: jax.Array | None = None, guidance: float = 0.0, sm_temp: float = 1.0,
                   r_temp: float = DEFAULT_R_TEMP, uncond: Denoiser | None = None, uncond_params: Any = None,
                   schedule: Sequence[int] | None = None, share_lam: bool = False) -> jax.Array:
    """MaskGIT sampling from all-mask in `num_steps` steps on an absorbing process.

    Args:
      key: PRNG key; step i uses `fold_in(key, i)`.
      process: an absorbing process (its `mask_id` and time grid `default_time_grid(n)`: t_i = 1 - i/n, the
        masked-time of progress r = i/n).
      denoiser, params: the network; a mixture gets a fresh lam ~ U[0, 1] per sample per step, or one per sample
        for all its steps with `share_lam` (`di4c_jax.sampling.lam_drawer`).
      shape: (B, D).
      num_steps: n (network evaluations).
      cond: int32[B] labels (needed for guidance) or None.
      guidance: w >= 0 (static): logit = (1 + w_i) l_c - w_i l_u with the ramped w_i = w i / (n - 1) and
        l_u the logits at the null class `denoiser.null_class`, both halves in one call of batch 2B sharing lam,
        or l_u from `uncond(uncond_params, x, t, None, null)` when a teacher provides the unconditional branch.
      sm_temp: softmax temperature multiplier of the logits.  r_temp: Gumbel confidence noise at the first step.
      schedule: tokens revealed per step (default `maskgit_schedule(n, D)`).

    Returns:
      int32[B, D] samples with no mask left.
    """
    require(process, "absorbing", "the MaskGIT sampler")
    batch, dims = shape
    reveal = tuple(maskgit_schedule(num_steps, dims) if schedule is None else schedule)
    if len(reveal) != num_steps or sum(reveal) != dims or min(reveal) < 0:
        raise ValueError(f"schedule must be {num_steps} non-negative counts summing to D={dims}, got {reveal}")
    if guidance != 0 and (cond is None or not denoiser.num_classes):
        raise ValueError("classifier-free guidance needs cond (int32[B]) and a class-conditional denoiser "
                         f"(num_classes={denoiser.num_classes})")
    grid = process.default_time_grid(num_steps)
    xs = (jnp.arange(num_steps), jnp.asarray(grid[:-1], jnp.float32), jnp.asarray(reveal, jnp.int32),
          jnp.asarray(cfg_weights(guidance, num_steps)), jnp.asarray(gumbel_temperatures(r_temp, num_steps)))

    draw_lam = lam_drawer(key, denoiser=denoiser, batch=batch, share_lam=share_lam)

    def step(x, inputs):
        i, t_i, k, w, temp = inputs
        lam_key, conf_key = jax.random.split(jax.random.fold_in(key, i))
        lam = draw_lam(lam_key)
        t = jnp.full((batch,), t_i, jnp.float32)
        if guidance == 0:
            logits = denoiser(params, x, t, lam, cond)
        else:
            null = jnp.full((batch,), denoiser.null_class, jnp.int32)
            if uncond is None:
                pair = lambda a: jnp.concatenate([a, a], axis=0)  # noqa: E731
                both = denoiser(params, pair(x), pair(t), None if lam is None else pair(lam),
                                jnp.concatenate([jnp.asarray(cond, jnp.int32), null], axis=0))
                logit_c, logit_u = both[:batch], both[batch:]
            else:
                logit_c = denoiser(params, x, t, lam, cond)
                logit_u = uncond(uncond_params, x, t, None, null)
            logits = (1.0 + w) * logit_c - w * logit_u
        return confidence_step(conf_key, x_t=x, logits=sm_temp * logits, num_reveal=k, gumbel_temp=temp,
                               mask_id=process.mask_id), None

    x = jnp.full(shape, process.mask_id, jnp.int32)
    return jax.lax.scan(step, x, xs)[0]


@SAMPLERS.register("maskgit")
def make_maskgit_sampler(*, process: Process, denoiser: Denoiser, shape: tuple[int, int], num_steps: int,
                         teacher: Denoiser | None = None, teacher_last_steps: int = 0, guidance: float = 0.0,
                         sm_temp: float = 1.0, r_temp: float = DEFAULT_R_TEMP, uncond: Denoiser | None = None,
                         schedule: Sequence[int] | None = None, share_lam: bool = False) -> Sampler:
    """`maskgit_sample` jitted with everything but (key, params, teacher_params, cond) static.

    `teacher_params` feed `uncond`. `nfe == num_steps` sequential network evaluations (with guidance each one
    scores the conditional and unconditional halves, as one batch of 2B or, with `uncond`, one student plus one
    teacher call: `teacher_nfe == num_steps`). MaskGIT has no teacher hybrid (`teacher_last_steps` must be 0).
    """
    del teacher
    reject_teacher_hybrid("maskgit", teacher_last_steps)
    require(process, "absorbing", "the MaskGIT sampler")
    check_networks(process, shape, denoiser, uncond)
    if schedule is None:
        maskgit_schedule(num_steps, shape[1])  # fail before tracing on impossible step counts

    def run(key, params, teacher_params=None, cond=None):
        return maskgit_sample(key, process=process, denoiser=denoiser, params=params, shape=shape,
                              num_steps=num_steps, cond=cond, guidance=guidance, sm_temp=sm_temp, r_temp=r_temp,
                              uncond=uncond, uncond_params=teacher_params, schedule=schedule, share_lam=share_lam)

    teacher_nfe = num_steps if (uncond is not None and guidance != 0) else 0
    return Sampler(jax.jit(run), nfe=num_steps, teacher_nfe=teacher_nfe)
