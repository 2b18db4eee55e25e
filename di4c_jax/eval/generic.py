"""Sample metrics for data with no known law, against held-out data (host-side numpy).

Small state spaces (K^D <= MAX_EXACT_STATES): the exact TV between the samples' empirical law and the held-out
rows' empirical law, beside its Monte-Carlo noise floor (the expected TV of two samples of those sizes from one
law). Larger spaces: the per-position marginal KL(held-out || samples) and the mean error of the pairwise mutual
informations I(x_i; x_j) over a seeded set of position pairs, both at equal sample sizes so their plug-in biases
cancel. Entropies are in nats.
"""
from __future__ import annotations

import numpy as np

from di4c_jax.eval.exact import state_index

MAX_EXACT_STATES = 1_000_000


def num_joint_states(num_dims: int, num_states: int) -> int:
    """K^D as an exact Python int."""
    return int(num_states) ** int(num_dims)


def _counts(idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(distinct values, their counts) of an int[n] array."""
    return np.unique(idx, return_counts=True)


def two_sample_tv(a, b, num_states: int) -> float:
    """TV between the empirical laws of two samples int[n, D] and int[m, D] of {0..K-1}^D (over the states seen in
    either, so the space is never enumerated); in [0, 1]."""
    va, ca = _counts(state_index(a, num_states))
    vb, cb = _counts(state_index(b, num_states))
    states = np.union1d(va, vb)
    pa = np.zeros(len(states))
    pb = np.zeros(len(states))
    pa[np.searchsorted(states, va)] = ca / ca.sum()
    pb[np.searchsorted(states, vb)] = cb / cb.sum()
    return 0.5 * float(np.abs(pa - pb).sum())


def two_sample_tv_floor(law_sample, n: int, m: int, num_states: int, repeats: int = 20, seed: int = 0) -> float:
    """E TV(empirical law of n draws, empirical law of m draws), both from one law, estimated by the parametric
    bootstrap from `law_sample`'s empirical law (int[r, D], e.g. the training rows): `repeats` seeded pairs of
    multinomial draws. A model whose TV to m held-out rows (from n samples) is near this is indistinguishable from
    the data at these sample sizes. (The plug-in law has no mass off `law_sample`'s support, which biases the floor
    low when r is small against the space.)"""
    if n < 1 or m < 1:
        raise ValueError(f"sample sizes must be >= 1, got n={n}, m={m}")
    _, counts = _counts(state_index(law_sample, num_states))
    p = counts / counts.sum()
    rng = np.random.default_rng(seed)
    x = rng.multinomial(n, p, size=repeats) / n
    y = rng.multinomial(m, p, size=repeats) / m
    return float(0.5 * np.abs(x - y).sum(axis=1).mean())


def marginals(tokens, num_states: int) -> np.ndarray:
    """int[n, D] -> float64[D, K]: the per-position empirical laws."""
    x = np.asarray(tokens)
    n, d = x.shape
    flat = (np.arange(d)[None, :] * num_states + x).reshape(-1)
    return np.bincount(flat, minlength=d * num_states).reshape(d, num_states) / n


def marginal_kl(reference, samples, num_states: int) -> float:
    """Mean over positions of KL(p_d || q_d) (nats): p_d the reference's (held-out) law of position d, q_d the
    samples' with half a pseudo-count per state, (count + 1/2) / (n + K/2), so an unseen state costs finite KL."""
    p = marginals(reference, num_states)
    n = len(samples)
    q = (marginals(samples, num_states) * n + 0.5) / (n + 0.5 * num_states)
    terms = np.where(p > 0, p * (np.log(np.where(p > 0, p, 1.0)) - np.log(q)), 0.0)
    return float(terms.sum(axis=1).mean())


def _entropy(codes: np.ndarray) -> float:
    """Miller-Madow corrected plug-in entropy (nats) of the values of int[n]: H_plugin + (bins seen - 1) / 2n."""
    _, counts = _counts(codes)
    p = counts / counts.sum()
    return float(-(p * np.log(p)).sum() + (len(counts) - 1) / (2 * counts.sum()))


def pair_mutual_information(tokens, pairs, num_states: int) -> np.ndarray:
    """int[n, D], int[P, 2] position pairs -> float64[P]: I(x_i; x_j) = H(x_i) + H(x_j) - H(x_i, x_j), each
    entropy the Miller-Madow corrected plug-in one (nats)."""
    x = np.asarray(tokens).astype(np.int64)
    out = np.empty(len(pairs))
    for row, (i, j) in enumerate(np.asarray(pairs)):
        out[row] = _entropy(x[:, i]) + _entropy(x[:, j]) - _entropy(x[:, i] * num_states + x[:, j])
    return out


def position_pairs(num_dims: int, max_pairs: int = 256, seed: int = 0) -> np.ndarray:
    """int[P, 2] pairs i < j: all of them if there are at most `max_pairs`, else the neighbours (i, i+1) (evenly
    spaced, up to half the budget) and a seeded random choice of the other pairs."""
    i, j = np.triu_indices(num_dims, k=1)
    pairs = np.stack([i, j], axis=1)
    if len(pairs) <= max_pairs:
        return pairs
    near = pairs[j - i == 1]
    near = near[np.linspace(0, len(near) - 1, min(len(near), max_pairs // 2)).astype(int)]
    far = pairs[j - i > 1]
    far = far[np.sort(np.random.default_rng(seed).choice(len(far), max_pairs - len(near), replace=False))]
    return np.concatenate([near, far])


def mutual_information_error(reference, samples, num_states: int, pairs) -> float:
    """Mean over `pairs` of |I_samples(x_i; x_j) - I_reference(x_i; x_j)| (nats), both sides on the same number of
    rows (the first min(n, m) of each) so their estimation biases match."""
    rows = min(len(reference), len(samples))
    return float(np.abs(pair_mutual_information(samples[:rows], pairs, num_states)
                        - pair_mutual_information(reference[:rows], pairs, num_states)).mean())
