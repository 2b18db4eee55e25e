"""Uniform-state diffusion: each position is independently resampled uniformly at a scheduled rate."""
from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

from di4c_jax.processes.base import ProductKernelSampling, as_batch_times, denoise_x0
from di4c_jax.processes.registry import PROCESSES

UNIFORM_SCHEDULES = ("linear", "cosine")


@PROCESSES.register("uniform")
@dataclasses.dataclass(frozen=True)
class Uniform(ProductKernelSampling):
    """Uniform CTMC on K states: q_{t|0}(y|x) = a(t) [y = x] + (1 - a(t)) / K.

    The keep probability a(t) is `linear`: 1 - (1 - eps) t, or `cosine`: cos(pi t / 2). Between times,
    q_{t|s} has keep probability a(t)/a(s) (the generator is a uniform-jump CTMC with rate -d log a / dt).
    """

    num_states: int
    schedule: str = "linear"
    eps: float = 1e-3

    def __post_init__(self):
        if self.schedule not in UNIFORM_SCHEDULES:
            raise ValueError(f"unknown uniform schedule {self.schedule!r}; choose one of {UNIFORM_SCHEDULES}")
        if self.num_states < 2:
            raise ValueError(f"num_states must be >= 2, got {self.num_states}")

    default_final = "sample"
    absorbing = False
    has_generator = True

    def prior_logprobs(self) -> jax.Array:
        """The uniform law: float32[K]."""
        return jnp.full((self.num_states,), -math.log(self.num_states), jnp.float32)

    def keep_prob(self, t: jax.Array) -> jax.Array:
        t = jnp.asarray(t, jnp.float32)
        if self.schedule == "linear":
            return 1.0 - (1.0 - self.eps) * t
        return jnp.clip(jnp.cos(0.5 * math.pi * t), 0.0, 1.0)

    def rate_scalar(self, t) -> jax.Array:
        """beta(t) = -d log a(t) / dt, the total jump rate of the generator R_t = beta(t) (11^T / K - I)."""
        t = jnp.asarray(t, jnp.float32)
        if self.schedule == "linear":
            return (1.0 - self.eps) / self.keep_prob(t)
        return 0.5 * math.pi * jnp.tan(0.5 * math.pi * jnp.clip(t, 0.0, 1.0 - 1e-6))

    def rate(self, t) -> jax.Array:
        """R_t[b, from, to] as float32[B, K, K]."""
        t = jnp.atleast_1d(jnp.asarray(t, jnp.float32))
        k = self.num_states
        gen = jnp.full((k, k), 1.0 / k, jnp.float32) - jnp.eye(k, dtype=jnp.float32)
        return self.rate_scalar(t)[:, None, None] * gen[None]

    def sample_xt(self, key, x0, t) -> jax.Array:
        """x0: int[B, D], t: [B] -> x_t: int32[B, D]."""
        a = self.keep_prob(as_batch_times(t, x0.shape[0]))[:, None]
        k_keep, k_new = jax.random.split(key)
        fresh = jax.random.randint(k_new, x0.shape, 0, self.num_states, jnp.int32)
        return jnp.where(jax.random.uniform(k_keep, x0.shape) < a, x0, fresh).astype(jnp.int32)

    def sample_prior(self, key, shape) -> jax.Array:
        return jax.random.randint(key, shape, 0, self.num_states, jnp.int32)

    def _keep_between(self, t, s):
        a_t = self.keep_prob(t)
        return a_t if s is None else a_t / self.keep_prob(s)

    def transition(self, t, s=None) -> jax.Array:
        """q_{t|s}[b, from, to] as float32[B, K, K] (s=None means s=0)."""
        t = jnp.atleast_1d(jnp.asarray(t, jnp.float32))
        r = self._keep_between(t, None if s is None else jnp.broadcast_to(s, t.shape))[:, None, None]
        k = self.num_states
        return r * jnp.eye(k, dtype=jnp.float32) + (1.0 - r) / k

    def x0_logprobs(self, logits, x_t) -> jax.Array:
        del x_t
        return jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)

    def reverse_step_logprobs(self, x_t, logp_x0, t, s) -> jax.Array:
        """log p(x_s^d | x_t) [B, D, K] in O(K) per position (no K x K matrices):
        p(y) = q_{t|s}(x_t|y) sum_{x0} p(x0) q_{s|0}(y|x0) / q_{t|0}(x_t|x0)."""
        batch, k = x_t.shape[0], self.num_states
        t, s = as_batch_times(t, batch), as_batch_times(s, batch)
        a_t = self.keep_prob(t)[:, None, None]
        a_s = self.keep_prob(s)[:, None, None]
        r = a_t / a_s
        at_xt = jax.nn.one_hot(x_t, k, dtype=bool)
        log_qt0 = jnp.where(at_xt, jnp.log(a_t + (1.0 - a_t) / k), jnp.log((1.0 - a_t) / k))
        log_w = logp_x0 - log_qt0  # w(x0) = p(x0) / q_{t|0}(x_t | x0)
        log_w_total = jax.nn.logsumexp(log_w, axis=-1, keepdims=True)
        # sum_x0 w(x0) q_{s|0}(y|x0) = a_s w(y) + (1 - a_s)/K * sum_x0 w(x0)
        log_mix = jnp.logaddexp(jnp.log(a_s) + log_w, jnp.log1p(-a_s) - jnp.log(k) + log_w_total)
        log_qts = jnp.where(at_xt, jnp.log(r + (1.0 - r) / k), jnp.log1p(-r) - jnp.log(k))
        return jax.nn.log_softmax(log_qts + log_mix, axis=-1)

    def denoise(self, key, x_t, logp_x0, mode: str = "sample") -> jax.Array:
        del x_t
        return denoise_x0(key, logp_x0, mode)

    def default_time_grid(self, num_steps: int) -> jax.Array:
        return jnp.linspace(1.0, 0.0, num_steps + 1, dtype=jnp.float32)
