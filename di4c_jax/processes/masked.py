"""Masked (absorbing-state) diffusion: each position is independently replaced by the mask token."""
from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

from di4c_jax.processes.base import NEG_INF, ProductKernelSampling, as_batch_times, denoise_x0, safe_log
from di4c_jax.processes.registry import PROCESSES

MASK_SCHEDULES = ("loglinear", "arccos", "cosine", "linear")


@PROCESSES.register("masked")
@dataclasses.dataclass(frozen=True)
class Masked(ProductKernelSampling):
    """Absorbing process on {0..vocab_size-1} plus the mask id `vocab_size`.

    `mask_prob(t)` is the probability that a position is masked at time t:
      loglinear (MDLM/SDTT): (1 - eps) t;  arccos (MaskGIT, progress r = 1 - t): (2/pi) arccos(1 - t);
      cosine: 1 - cos(pi t / 2);  linear: t.
    `subs=True` applies the SUBS parameterisation in `x0_logprobs` (mask class excluded, unmasked positions
    copied); `subs=False` is a plain log-softmax over all K classes (MaskGIT teachers predict the mask class too).
    """

    vocab_size: int
    schedule: str = "loglinear"
    eps: float = 1e-3
    subs: bool = True

    def __post_init__(self):
        if self.schedule not in MASK_SCHEDULES:
            raise ValueError(f"unknown mask schedule {self.schedule!r}; choose one of {MASK_SCHEDULES}")
        if self.vocab_size < 1:
            raise ValueError(f"vocab_size must be >= 1, got {self.vocab_size}")

    @property
    def num_states(self) -> int:
        return self.vocab_size + 1

    @property
    def mask_id(self) -> int:
        return self.vocab_size

    default_final = "sample"
    absorbing = True
    has_generator = False
    data_states_field = "vocab_size"

    def prior_logprobs(self) -> jax.Array:
        """All mass on the mask state: float32[K]."""
        return jnp.full((self.num_states,), NEG_INF, jnp.float32).at[self.mask_id].set(0.0)

    def mask_prob(self, t: jax.Array) -> jax.Array:
        t = jnp.asarray(t, jnp.float32)
        if self.schedule == "loglinear":
            return (1.0 - self.eps) * t
        # arccos(1 - t) = 2 arcsin(sqrt(t / 2)) and 1 - cos(x) = 2 sin^2(x / 2): exact near t = 0 in float32.
        if self.schedule == "arccos":
            return (4.0 / math.pi) * jnp.arcsin(jnp.sqrt(jnp.clip(t, 0.0, 1.0) / 2.0))
        if self.schedule == "cosine":
            return 2.0 * jnp.sin(0.25 * math.pi * t) ** 2
        return t

    def sample_xt(self, key: jax.Array, x0: jax.Array, t: jax.Array) -> jax.Array:
        """x0: int[B, D], t: [B] -> x_t: int32[B, D]."""
        m = self.mask_prob(as_batch_times(t, x0.shape[0]))[:, None]
        masked = jax.random.uniform(key, x0.shape) < m
        return jnp.where(masked, self.mask_id, x0).astype(jnp.int32)

    def sample_prior(self, key: jax.Array, shape) -> jax.Array:
        del key
        return jnp.full(shape, self.mask_id, jnp.int32)

    def transition(self, t: jax.Array, s: jax.Array | None = None) -> jax.Array:
        """q_{t|s}[b, from, to] as float32[B, K, K] (s=None means s=0)."""
        t = jnp.atleast_1d(jnp.asarray(t, jnp.float32))
        m_t = self.mask_prob(t)
        m_s = jnp.zeros_like(m_t) if s is None else self.mask_prob(jnp.broadcast_to(s, t.shape))
        stay = ((1.0 - m_t) / (1.0 - m_s))[:, None, None]
        eye = jnp.eye(self.num_states, dtype=jnp.float32)
        to_mask = jnp.zeros((self.num_states,), jnp.float32).at[self.mask_id].set(1.0)
        is_mask_row = jnp.arange(self.num_states) == self.mask_id
        unmasked_rows = stay * eye + (1.0 - stay) * to_mask[None, None, :]
        return jnp.where(is_mask_row[None, :, None], eye[None], unmasked_rows)

    def x0_logprobs(self, logits: jax.Array, x_t: jax.Array) -> jax.Array:
        """Normalised log p(x0 | x_t) [B, D, K] from raw logits [B, D, K]."""
        logits = logits.astype(jnp.float32)
        if not self.subs:
            return jax.nn.log_softmax(logits, axis=-1)
        logits = logits.at[..., self.mask_id].add(NEG_INF)
        logp = jax.nn.log_softmax(logits, axis=-1)
        copy = jnp.where(jax.nn.one_hot(x_t, self.num_states, dtype=bool), 0.0, NEG_INF)
        return jnp.where((x_t != self.mask_id)[..., None], copy, logp)

    def _without_mask_class(self, logp_x0: jax.Array) -> jax.Array:
        return jax.nn.log_softmax(logp_x0.at[..., self.mask_id].set(NEG_INF), axis=-1)

    def reverse_step_logprobs(self, x_t, logp_x0, t, s) -> jax.Array:
        """log p(x_s^d | x_t) [B, D, K]: a masked position unmasks to v with prob p(v|x_t)(m_t - m_s)/m_t and
        stays masked with prob m_s/m_t; unmasked positions are copied."""
        batch = x_t.shape[0]
        m_t = self.mask_prob(as_batch_times(t, batch))[:, None, None]
        m_s = self.mask_prob(as_batch_times(s, batch))[:, None, None]
        m_t = jnp.maximum(m_t, 1e-12)
        unmask = safe_log(jnp.clip((m_t - m_s) / m_t, 0.0, 1.0))
        stay = safe_log(jnp.clip(m_s / m_t, 0.0, 1.0))
        out = self._without_mask_class(logp_x0) + unmask
        out = out.at[..., self.mask_id].set(stay[..., 0])
        copy = jnp.where(jax.nn.one_hot(x_t, self.num_states, dtype=bool), 0.0, NEG_INF)
        return jnp.where((x_t == self.mask_id)[..., None], out, copy)

    def denoise(self, key, x_t, logp_x0, mode: str = "sample") -> jax.Array:
        """Final x0 [B, D] from x_t: masked positions drawn ('sample') or argmax'ed, mask class excluded."""
        logp = self._without_mask_class(logp_x0)
        x0 = denoise_x0(key, logp, mode)
        return jnp.where(x_t == self.mask_id, x0, x_t)

    def default_time_grid(self, num_steps: int) -> jax.Array:
        return jnp.linspace(1.0, 0.0, num_steps + 1, dtype=jnp.float32)
