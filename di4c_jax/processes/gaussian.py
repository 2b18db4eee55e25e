"""Discretised-Gaussian (tauLDR) diffusion: the exact rate construction of andrew-cr/tauLDR:lib/models/models.py."""
from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from di4c_jax.processes.base import (ProductKernelSampling, as_batch_times, denoise_x0, safe_log,
                                     sample_categorical)
from di4c_jax.processes.registry import PROCESSES

# Entries of q below this are set to 0, as the reference does (it also removes float32 round-off negatives).
TRANSITION_FLOOR = 1e-8


def build_gaussian_rate(num_states: int = 256, rate_sigma: float = 6.0, q_sigma: float = 512.0) -> np.ndarray:
    """The reference base rate matrix R[from, to] (float64), built with its exact two-pass loop."""
    s = num_states
    vals = np.exp(-np.arange(s, dtype=np.float64) ** 2 / rate_sigma**2)
    rate = np.zeros((s, s), np.float64)
    for i in range(s):
        for j in range(s):
            if i < s // 2 and i < j < s - i:
                rate[i, j] = vals[j - i - 1]
            elif i > s // 2 and s - 1 - i < j < i:
                rate[i, j] = vals[i - j - 1]
    for i in range(s):  # detailed balance w.r.t. pi(k) ∝ exp(-((k+1) - S/2)^2 / (2 q_sigma^2)), row-major in place
        for j in range(s):
            if rate[j, i] > 0:
                expo = (j + 1) ** 2 - (i + 1) ** 2 + s * (i + 1) - s * (j + 1)
                rate[i, j] = rate[j, i] * math.exp(-expo / (2 * q_sigma**2))
    np.fill_diagonal(rate, 0.0)
    np.fill_diagonal(rate, -rate.sum(axis=1))
    return rate


def gaussian_stationary(num_states: int, q_sigma: float) -> np.ndarray:
    k = np.arange(num_states, dtype=np.float64)
    logits = -(((k + 1) - num_states / 2) ** 2) / (2 * q_sigma**2)
    p = np.exp(logits - logits.max())
    return p / p.sum()


@functools.lru_cache(maxsize=8)
def _eig_constants(num_states, rate_sigma, q_sigma):
    rate = build_gaussian_rate(num_states, rate_sigma, q_sigma)
    w, v = np.linalg.eig(rate)
    if np.iscomplexobj(w):
        if np.abs(w.imag).max() > 1e-8 or np.abs(v.imag).max() > 1e-8:
            raise ValueError("rate matrix has complex eigenvalues; check rate_sigma / q_sigma")
        w, v = w.real, v.real
    v_inv = np.linalg.inv(v)
    return rate, w.astype(np.float32), v.astype(np.float32), v_inv.astype(np.float32)


@PROCESSES.register("gaussian")
@dataclasses.dataclass(frozen=True)
class DiscreteGaussian(ProductKernelSampling):
    """tauLDR's discretised-Gaussian CTMC. `DiscreteGaussian()` is the reference CIFAR-10 process (S = 256).

    Rate R_t = beta(t) R_base with beta(t) = time_base ln(time_exponential) time_exponential^t, integrated rate
    I(t) = time_base (time_exponential^t - 1). Transitions are V diag(exp(I w)) V^-1 in float32 from the float64
    eigendecomposition of R_base, entries < 1e-8 set to 0 (andrew-cr/tauLDR:lib/models/models.py, `transition`).

    The time constants are CIFAR-10's (256 levels). With fewer levels the same constants forget x0 long before
    t = 1 (17 levels, rate_sigma 2: no information left past t ~ 0.3), which wastes most sampling steps and
    training times; `processes.information.mutual_information` shows a schedule's profile (digits use
    time_base 0.2).
    """

    num_states: int = 256
    rate_sigma: float = 6.0
    q_sigma: float = 512.0
    time_base: float = 3.0
    time_exponential: float = 100.0
    t_min: float = 0.01
    ratio_eps: float = 1e-9

    default_final = "argmax"
    absorbing = False
    has_generator = True

    def prior_logprobs(self) -> jax.Array:
        """The stationary law of the base rate: float32[K]."""
        return jnp.log(jnp.asarray(self.stationary, jnp.float32))

    def _consts(self):
        return _eig_constants(self.num_states, self.rate_sigma, self.q_sigma)

    @property
    def rate_matrix(self) -> np.ndarray:
        """R_base[from, to], float64."""
        return self._consts()[0]

    @property
    def stationary(self) -> np.ndarray:
        """The prior pi (float64), the stationary law of R_base."""
        return gaussian_stationary(self.num_states, self.q_sigma)

    def integral_rate(self, t) -> jax.Array:
        return self.time_base * (self.time_exponential ** jnp.asarray(t, jnp.float32)) - self.time_base

    def rate_scalar(self, t) -> jax.Array:
        t = jnp.asarray(t, jnp.float32)
        return self.time_base * math.log(self.time_exponential) * self.time_exponential**t

    def rate(self, t) -> jax.Array:
        """R_t[b, from, to] as float32[B, K, K]."""
        t = jnp.atleast_1d(jnp.asarray(t, jnp.float32))
        return self.rate_scalar(t)[:, None, None] * jnp.asarray(self.rate_matrix, jnp.float32)[None]

    def transition(self, t, s=None) -> jax.Array:
        """q_{t|s}[b, from, to] as float32[B, K, K] (s=None means s=0)."""
        t = jnp.atleast_1d(jnp.asarray(t, jnp.float32))
        integral = self.integral_rate(t)
        if s is not None:
            integral = integral - self.integral_rate(jnp.broadcast_to(s, t.shape))
        _, w, v, v_inv = self._consts()
        scaled = jnp.asarray(v)[None] * jnp.exp(integral[:, None] * jnp.asarray(w)[None, :])[:, None, :]
        p = scaled @ jnp.asarray(v_inv)
        return jnp.where(p < TRANSITION_FLOOR, 0.0, p)

    def sample_xt(self, key, x0, t) -> jax.Array:
        """x0: int[B, D], t: [B] -> x_t: int32[B, D], x_t[b, d] ~ q_{t|0}(. | x0[b, d])."""
        q = self.transition(as_batch_times(t, x0.shape[0]))  # [B, K, K]
        rows = jnp.take_along_axis(q, x0[:, :, None].astype(jnp.int32), axis=1)  # [B, D, K]
        return sample_categorical(key, safe_log(rows))

    def sample_prior(self, key, shape) -> jax.Array:
        logp = jnp.log(jnp.asarray(self.stationary, jnp.float32))
        return jax.random.categorical(key, logp, shape=tuple(shape)).astype(jnp.int32)

    def x0_logprobs(self, logits, x_t) -> jax.Array:
        del x_t
        return jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)

    def reverse_step_logprobs(self, x_t, logp_x0, t, s) -> jax.Array:
        """log p(x_s^d | x_t) [B, D, K] = log sum_{x0} q(x_s | x_t, x0) p(x0 | x_t), with the reference's
        ratio_eps added to q_{t|0}, q_{s|0} and q_{t|s} (sony/di4c:tauldr/lib/losses/losses.py, closed-form `calc_pst`).
        Computed as ((p / q_{t|0}[:, x_t]) @ q_{s|0}) * q_{t|s}[:, x_t] with a max-shift for stability."""
        batch = x_t.shape[0]
        t, s = as_batch_times(t, batch), as_batch_times(s, batch)
        eps = self.ratio_eps
        qt0 = self.transition(t) + eps
        qs0 = self.transition(s) + eps
        qts = self.transition(t, s) + eps
        cols = jax.vmap(lambda m, idx: m.T[idx])  # m[:, x_t[d]] for every d: [B, D, K]
        log_w = logp_x0 - jnp.log(cols(qt0, x_t))
        w = jnp.exp(log_w - jnp.max(log_w, axis=-1, keepdims=True))
        mixed = jnp.einsum("bdx,bxy->bdy", w, qs0)
        return jax.nn.log_softmax(jnp.log(mixed) + jnp.log(cols(qts, x_t)), axis=-1)

    def denoise(self, key, x_t, logp_x0, mode: str = "argmax") -> jax.Array:
        del x_t
        return denoise_x0(key, logp_x0, mode)

    def default_time_grid(self, num_steps: int) -> jax.Array:
        grid = jnp.linspace(1.0, self.t_min, num_steps, dtype=jnp.float32)
        return jnp.concatenate([grid, jnp.zeros((1,), jnp.float32)])
