"""Exact metrics on small state spaces {0..K-1}^D: empirical laws, TV, KL and the Monte-Carlo noise floor.

A state x in {0..K-1}^D is indexed in base K with the FIRST dimension most significant
(`index = sum_d x_d K^(D-1-d)`, the order of `np.ravel_multi_index`), so a law is a float64 vector of length K^D.
These are host-side numpy functions: they run once per evaluation, on up to millions of samples.
"""
from __future__ import annotations

import numpy as np
from scipy.special import gammaln

MAX_STATES = 1 << 24


def _check_space(num_dims: int, num_states: int) -> int:
    size = num_states**num_dims
    if num_states < 1 or num_dims < 1 or size > MAX_STATES:
        raise ValueError(f"state space {num_states}^{num_dims} is empty or larger than {MAX_STATES} states")
    return size


def state_index(samples, num_states: int) -> np.ndarray:
    """int[n, D] states -> int64[n] base-K indices (first dimension most significant)."""
    x = np.asarray(samples)
    if x.ndim != 2:
        raise ValueError(f"samples must be int[n, D], got shape {x.shape}")
    if not np.issubdtype(x.dtype, np.integer):
        raise TypeError(f"samples must hold integer states, got dtype {x.dtype}")
    _check_space(x.shape[1], num_states)
    if x.size and (x.min() < 0 or x.max() >= num_states):
        raise ValueError(f"states must lie in [0, {num_states}), got range [{x.min()}, {x.max()}]")
    powers = num_states ** np.arange(x.shape[1] - 1, -1, -1, dtype=np.int64)
    return x.astype(np.int64) @ powers


def all_states(num_dims: int, num_states: int) -> np.ndarray:
    """int32[K^D, D]: every state, row i has base-K index i."""
    size = _check_space(num_dims, num_states)
    return np.stack(np.unravel_index(np.arange(size), (num_states,) * num_dims), axis=1).astype(np.int32)


def empirical_law(samples, num_states: int) -> np.ndarray:
    """int[n, D] samples -> float64[K^D] empirical frequencies (np.bincount on the base-K index)."""
    idx = state_index(samples, num_states)
    if idx.size == 0:
        raise ValueError("empirical_law needs at least one sample")
    size = num_states ** np.asarray(samples).shape[1]
    return np.bincount(idx, minlength=size).astype(np.float64) / idx.size


def _check_laws(p, q) -> tuple[np.ndarray, np.ndarray]:
    p, q = np.asarray(p, np.float64), np.asarray(q, np.float64)
    if p.shape != q.shape or p.ndim != 1:
        raise ValueError(f"laws must be 1-D vectors of equal length, got {p.shape} and {q.shape}")
    for name, v in (("p", p), ("q", q)):
        if v.min() < 0 or abs(v.sum() - 1.0) > 1e-6:
            raise ValueError(f"{name} is not a probability vector (min {v.min():.3g}, sum {v.sum():.8f})")
    return p, q


def tv_distance(p, q) -> float:
    """Total variation 0.5 * sum_x |p(x) - q(x)| of two float[K^D] laws, in [0, 1]."""
    p, q = _check_laws(p, q)
    return 0.5 * float(np.abs(p - q).sum())


def kl_divergence(p, q, smoothing: float = 0.0) -> float:
    """KL(p || q_s) in nats, with q_s = (1 - smoothing) q + smoothing / |X| (a mixture with the uniform law).

    Terms with p(x) = 0 contribute 0. An empirical `q` with zeros where p > 0 gives +inf unless smoothing > 0;
    the usual report is KL(p_data || p_model_smoothed), e.g. smoothing = 0.5 * |X| / n for n model samples
    (half a pseudo-count per state).
    """
    p, q = _check_laws(p, q)
    if not 0.0 <= smoothing <= 1.0:
        raise ValueError(f"smoothing must lie in [0, 1], got {smoothing}")
    q = (1.0 - smoothing) * q + smoothing / q.size
    support = p > 0
    if np.any(q[support] == 0):
        return float("inf")
    return float(np.sum(p[support] * (np.log(p[support]) - np.log(q[support]))))


def mc_noise_floor(p, n: int) -> float:
    """Expected TV between the law p and the empirical law of n i.i.d. draws from p (exact).

    E TV = (1 / 2n) sum_x E|N_x - n p_x| with N_x ~ Binomial(n, p_x), and the binomial mean absolute deviation
    has de Moivre's closed form E|N - np| = 2 m C(n, m) p^m (1 - p)^(n - m + 1), m = floor(np) + 1
    (the formula gives the same value on either side of an integer np, so float rounding is harmless).
    For n p_x >> 1 this tends to the normal approximation sum_x sqrt(p_x (1 - p_x) / (2 pi n)); for rare states
    it is ~p_x where the normal approximation overestimates. A measured TV within a small multiple of this floor
    is indistinguishable from sampling noise.
    """
    p = np.asarray(p, np.float64)
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    inner = (p > 0) & (p < 1)
    pi = p[inner]
    m = np.floor(n * pi) + 1
    log_mad = (np.log(2 * m) + gammaln(n + 1) - gammaln(m + 1) - gammaln(n - m + 1)
               + m * np.log(pi) + (n - m + 1) * np.log1p(-pi))
    mad = np.where(m <= n, np.exp(log_mad), 0.0)
    return float(mad.sum() / (2 * n))
