"""Distances between feature sets (FID, KID) and the Inception-score form on class probabilities.

Features are float[n, F] rows from any embedding (here: the penultimate layer of `eval.classifier`); the numbers
are comparable only within one embedding. Host-side numpy in float64, as in the reference
(sony/di4c:maskgit-pytorch/Metrics/inception_metrics.py).
"""
from __future__ import annotations

import jax
import numpy as np
import scipy.linalg


def _check_features(feats, name: str) -> np.ndarray:
    f = np.asarray(feats, np.float64)
    if f.ndim != 2 or f.shape[0] < 2:
        raise ValueError(f"{name} must be float[n >= 2, F], got shape {f.shape}")
    if not np.all(np.isfinite(f)):
        raise ValueError(f"{name} contains non-finite values")
    return f


def feature_stats(feats) -> tuple[np.ndarray, np.ndarray]:
    """float[n, F] -> (mean float64[F], covariance float64[F, F] with the n - 1 normalisation)."""
    f = _check_features(feats, "feats")
    return f.mean(0), np.cov(f, rowvar=False)


def frechet_distance(mu1, sigma1, mu2, sigma2, eps: float = 1e-6) -> float:
    """||mu1 - mu2||^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2)) (pytorch-fid / torch-fidelity form).

    If sqrtm(S1 S2) is not finite (singular product), eps is added to both diagonals and it is recomputed;
    a tiny imaginary part from round-off is dropped, a large one is an error.
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    s1, s2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (mu1.size, mu1.size):
        raise ValueError(f"mismatched statistics: mu {mu1.shape} vs {mu2.shape}, sigma {s1.shape} vs {s2.shape}")
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    if not np.all(np.isfinite(covmean)):
        offset = eps * np.eye(s1.shape[0])
        covmean = scipy.linalg.sqrtm((s1 + offset) @ (s2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"sqrtm has a large imaginary component {np.abs(covmean.imag).max():.3g}")
        covmean = covmean.real
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def fid(feats_a, feats_b, eps: float = 1e-6) -> float:
    """Frechet distance between Gaussian fits of two feature sets float[n_a, F], float[n_b, F]."""
    return frechet_distance(*feature_stats(feats_a), *feature_stats(feats_b), eps=eps)


def _mmd2_unbiased_poly(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 with k(a, b) = (a.b / F + 1)^3 (the KID kernel), both sets of size m."""
    m, dim = x.shape
    kxx = (x @ x.T / dim + 1) ** 3
    kyy = (y @ y.T / dim + 1) ** 3
    kxy = (x @ y.T / dim + 1) ** 3
    off_diag = (kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (m * (m - 1))
    return float(off_diag - 2 * kxy.mean())


def kid(key, feats_a, feats_b, num_subsets: int = 100, subset_size: int = 1000) -> tuple[float, float]:
    """Kernel Inception Distance: (mean, std) over random subsets of the unbiased cubic-kernel MMD^2.

    key: PRNG key choosing the subsets (without replacement inside a subset). subset_size is capped at the
    smaller set size. The mean is unbiased for MMD^2 (it can be slightly negative when the laws are equal).
    """
    a, b = _check_features(feats_a, "feats_a"), _check_features(feats_b, "feats_b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"feature sizes differ: {a.shape[1]} vs {b.shape[1]}")
    m = min(subset_size, a.shape[0], b.shape[0])
    scores = []
    for k in jax.random.split(key, num_subsets):
        ka, kb = jax.random.split(k)
        ia = np.asarray(jax.random.choice(ka, a.shape[0], (m,), replace=False))
        ib = np.asarray(jax.random.choice(kb, b.shape[0], (m,), replace=False))
        scores.append(_mmd2_unbiased_poly(a[ia], b[ib]))
    return float(np.mean(scores)), float(np.std(scores))


def inception_score(probs, num_splits: int = 10) -> tuple[float, float]:
    """exp(E_x KL(p(y|x) || p(y))) averaged over `num_splits` consecutive chunks: (mean, std).

    probs: float[n, C] class probabilities (softmax of a classifier). Permute the rows first (the reference
    permutes randomly) if the samples are ordered, e.g. by class. The maximum is the number of classes.
    """
    p = np.asarray(probs, np.float64)
    if p.ndim != 2 or p.shape[0] < num_splits or not np.allclose(p.sum(1), 1, atol=1e-4) or p.min() < 0:
        raise ValueError(f"probs must be row-normalised float[n >= num_splits, C], got shape {p.shape}")
    logp = np.log(np.maximum(p, 1e-30))
    scores = []
    for chunk, logc in zip(np.array_split(p, num_splits), np.array_split(logp, num_splits)):
        marginal = chunk.mean(0)
        kl = np.sum(chunk * (logc - np.log(np.maximum(marginal, 1e-30))), axis=1)
        scores.append(np.exp(kl.mean()))
    return float(np.mean(scores)), float(np.std(scores))
