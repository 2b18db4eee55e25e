"""Test laws on {0..K-1}^D with exact probabilities and exact samplers.

Each law has `num_dims` (D), `num_states` (K), `probs() -> float64[K^D]` (base-K index, first dimension most
significant, as in `di4c_jax.eval.exact`) and `sample(key, n) -> int32[n, D]`. The samplers are written from the
law's structure (component choice, chain messages), not from `probs()`, so comparing the two is a real check.
The laws are meant for D <= 8, K <= 4 (`probs()` enumerates all K^D states).
"""
from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from scipy.special import logsumexp

from di4c_jax.eval.exact import all_states
from di4c_jax.processes.base import safe_log, sample_categorical


@dataclasses.dataclass(frozen=True, eq=False)
class ProductMixture:
    """p(x) = sum_c w_c prod_d probs[c, d, x_d].  weights: float[C], probs: float[C, D, K]."""

    weights: np.ndarray
    probs_cdk: np.ndarray

    def __post_init__(self):
        w, p = np.asarray(self.weights, np.float64), np.asarray(self.probs_cdk, np.float64)
        if w.ndim != 1 or p.ndim != 3 or p.shape[0] != w.shape[0]:
            raise ValueError(f"need weights[C] and probs[C, D, K], got {w.shape} and {p.shape}")
        if w.min() < 0 or p.min() < 0 or not np.allclose(w.sum(), 1) or not np.allclose(p.sum(-1), 1):
            raise ValueError("weights and every probs[c, d] must be probability vectors")
        object.__setattr__(self, "weights", w)
        object.__setattr__(self, "probs_cdk", p)

    @classmethod
    def random(cls, key, num_components: int, num_dims: int, num_states: int, sharpness: float = 2.0):
        """Random mixture: weights and factors are softmaxes of N(0, sharpness^2) logits (large = peaked
        factors, strongly correlated mixture)."""
        kw, kp = jax.random.split(key)
        w = jax.nn.softmax(jax.random.normal(kw, (num_components,)))
        p = jax.nn.softmax(sharpness * jax.random.normal(kp, (num_components, num_dims, num_states)), axis=-1)
        return cls(np.asarray(w), np.asarray(p))

    @property
    def num_dims(self) -> int:
        return self.probs_cdk.shape[1]

    @property
    def num_states(self) -> int:
        return self.probs_cdk.shape[2]

    def probs(self) -> np.ndarray:
        x = all_states(self.num_dims, self.num_states)
        logp = np.log(np.where(self.probs_cdk > 0, self.probs_cdk, 1e-300))
        per_comp = logp[:, np.arange(self.num_dims), x].sum(-1)  # [C, K^D]
        return np.exp(logsumexp(per_comp + np.log(np.maximum(self.weights, 1e-300))[:, None], axis=0))

    @functools.partial(jax.jit, static_argnums=(0, 2))  # one compilation per law object and n
    def sample(self, key, n: int) -> jax.Array:
        kc, kx = jax.random.split(key)
        comp = sample_categorical(kc, jnp.broadcast_to(safe_log(jnp.asarray(self.weights, jnp.float32)),
                                                       (n, self.weights.size)))
        logp = safe_log(jnp.asarray(self.probs_cdk, jnp.float32))[comp]  # [n, D, K]
        return sample_categorical(kx, logp)


@dataclasses.dataclass(frozen=True, eq=False)
class ParityLaw:
    """p(x) proportional to prod_d base[d, x_d] on the states with even sum_d x_d (zero mass on odd parity).

    base: float[D, K] (per-dimension factor); `ParityLaw.uniform(D, K)` is uniform on the even-parity states,
    a law with no pairwise correlations for K = 2 but maximal D-th order correlation (XOR).
    """

    base: np.ndarray

    def __post_init__(self):
        b = np.asarray(self.base, np.float64)
        if b.ndim != 2 or b.shape[1] < 2 or b.min() <= 0:
            raise ValueError(f"base must be a positive float[D, K >= 2], got shape {b.shape}")
        object.__setattr__(self, "base", b / b.sum(-1, keepdims=True))

    @classmethod
    def uniform(cls, num_dims: int, num_states: int):
        return cls(np.ones((num_dims, num_states)))

    @property
    def num_dims(self) -> int:
        return self.base.shape[0]

    @property
    def num_states(self) -> int:
        return self.base.shape[1]

    def probs(self) -> np.ndarray:
        x = all_states(self.num_dims, self.num_states)
        w = np.prod(self.base[np.arange(self.num_dims), x], axis=1) * (x.sum(1) % 2 == 0)
        return w / w.sum()

    @functools.partial(jax.jit, static_argnums=(0, 2))  # one compilation per law object and n
    def sample(self, key, n: int) -> jax.Array:
        """Sequential exact draw: msg[d, r] = P_base(sum_{e >= d} x_e has parity r), then x_d | parity so far."""
        D, K = self.base.shape
        odd = np.arange(K) % 2
        msg = np.zeros((D + 1, 2))
        msg[D] = [1.0, 0.0]
        for d in range(D - 1, -1, -1):
            for r in range(2):
                msg[d, r] = np.sum(self.base[d] * msg[d + 1, (r + odd) % 2])
        base, msg = jnp.asarray(self.base, jnp.float32), jnp.asarray(msg, jnp.float32)
        oddj = jnp.asarray(odd)

        def step(parity, inputs):
            k, d = inputs
            logits = safe_log(base[d][None, :] * msg[d + 1][(parity[:, None] + oddj[None, :]) % 2])
            x = sample_categorical(k, logits)
            return (parity + x) % 2, x

        _, xs = jax.lax.scan(step, jnp.zeros(n, jnp.int32), (jax.random.split(key, D), jnp.arange(D)))
        return xs.T


@dataclasses.dataclass(frozen=True, eq=False)
class IsingChain:
    """Open chain with spins s_k = linspace(-1, 1, K): p(x) ~ exp(J sum_d s(x_d) s(x_{d+1}) + h sum_d s(x_d)).

    K = 2 is the Ising chain (spins +-1); K > 2 is a clock-like chain with evenly spaced spin values.
    """

    num_dims: int
    num_states: int = 2
    coupling: float = 1.0
    field: float = 0.0

    def __post_init__(self):
        if self.num_dims < 2 or self.num_states < 2:
            raise ValueError(f"need D >= 2 and K >= 2, got D={self.num_dims}, K={self.num_states}")

    @property
    def spins(self) -> np.ndarray:
        return np.linspace(-1.0, 1.0, self.num_states)

    def _log_factors(self) -> tuple[np.ndarray, np.ndarray]:
        s = self.spins
        return self.field * s, self.coupling * np.outer(s, s)  # unary [K], pairwise [K, K]

    def probs(self) -> np.ndarray:
        unary, pair = self._log_factors()
        x = all_states(self.num_dims, self.num_states)
        logw = unary[x].sum(1) + pair[x[:, :-1], x[:, 1:]].sum(1)
        return np.exp(logw - logsumexp(logw))

    @functools.partial(jax.jit, static_argnums=(0, 2))  # one compilation per law object and n
    def sample(self, key, n: int) -> jax.Array:
        """Exact draw by backward messages beta_d(x_d) = log sum_{x_{>d}} exp(energy of the tail)."""
        unary, pair = self._log_factors()
        D = self.num_dims
        beta = np.zeros((D, self.num_states))
        for d in range(D - 2, -1, -1):
            beta[d] = logsumexp(pair + unary[None, :] + beta[d + 1][None, :], axis=1)
        unary, pair, beta = (jnp.asarray(a, jnp.float32) for a in (unary, pair, beta))
        keys = jax.random.split(key, D)
        x0 = sample_categorical(keys[0], jnp.broadcast_to(unary + beta[0], (n, self.num_states)))

        def step(prev, inputs):
            k, d = inputs
            x = sample_categorical(k, pair[prev] + unary[None, :] + beta[d][None, :])
            return x, x

        _, rest = jax.lax.scan(step, x0, (keys[1:], jnp.arange(1, D)))
        return jnp.concatenate([x0[:, None], rest.T], axis=1)
