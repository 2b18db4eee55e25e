"""Diversity metrics on token sequences: per-sequence unigram entropy and self-BLEU.

Entropy follows DUO (s-sahoo/duo:metrics.py, `record_entropy`): token-id frequencies within one sequence,
H = -sum p log p in nats, mean over sequences. Di4C's own entropy code is not public; this is the assumed one.
BLEU reimplements nltk's `sentence_bleu` (uniform 4-gram weights, `SmoothingFunction().method1`, epsilon 0.1)
on token ids, reported on the x100 scale as in SDTT/Di4C (sony/di4c:sdtt/src/sdtt/core/distill/multi_round_sdtt.py).
"""
from __future__ import annotations

import math
from collections import Counter
from typing import Sequence

import numpy as np


def unigram_entropy(tokens) -> np.ndarray:
    """int[n, L] -> float64[n]: entropy (nats) of the token-frequency distribution of each row."""
    x = np.asarray(tokens)
    if x.ndim != 2 or x.shape[1] == 0 or not np.issubdtype(x.dtype, np.integer):
        raise ValueError(f"tokens must be int[n, L >= 1], got shape {x.shape} and dtype {x.dtype}")
    n, length = x.shape
    base = int(x.max()) - int(x.min()) + 1
    keys = np.arange(n, dtype=np.int64)[:, None] * base + (x - x.min()).astype(np.int64)
    uniq, counts = np.unique(keys.ravel(), return_counts=True)
    p = counts / length
    return np.bincount(uniq // base, weights=-p * np.log(p), minlength=n)


def mean_unigram_entropy(tokens) -> float:
    """The reported number: mean over sequences of `unigram_entropy`."""
    return float(unigram_entropy(tokens).mean())


def _ngram_counts(seq: Sequence[int], order: int) -> Counter:
    return Counter(tuple(seq[i:i + order]) for i in range(len(seq) - order + 1))


def _bleu_from_counts(matches: list[int], totals: list[int], hyp_len: int, ref_len: int) -> float:
    """nltk corpus_bleu on one sentence: zero if no unigram matches; method1 smoothing of zero precisions."""
    if hyp_len == 0 or matches[0] == 0:
        return 0.0
    log_p = [math.log((m if m > 0 else 0.1) / max(1, t)) for m, t in zip(matches, totals)]
    bp = 1.0 if hyp_len > ref_len else math.exp(1.0 - ref_len / hyp_len)
    return 100.0 * bp * math.exp(math.fsum(log_p) / len(log_p))


def _closest_ref_len(ref_lens: Sequence[int], hyp_len: int) -> int:
    return min(ref_lens, key=lambda r: (abs(r - hyp_len), r))


def sentence_bleu(references: Sequence[Sequence[int]], hypothesis: Sequence[int], max_order: int = 4) -> float:
    """BLEU (x100) of one hypothesis against references, as nltk `sentence_bleu(..., method1)`.

    Modified n-gram precision: hypothesis counts clipped by the max count in any single reference; a zero
    numerator becomes 0.1 / denominator; brevity penalty against the closest reference length (ties: shorter).
    """
    if not references:
        raise ValueError("sentence_bleu needs at least one reference")
    hyp = [int(t) for t in hypothesis]
    refs = [[int(t) for t in r] for r in references]
    matches, totals = [], []
    for order in range(1, max_order + 1):
        counts = _ngram_counts(hyp, order)
        max_ref = Counter()
        for r in refs:
            max_ref |= _ngram_counts(r, order)
        matches.append(sum(min(c, max_ref[g]) for g, c in counts.items()))
        totals.append(sum(counts.values()))
    return _bleu_from_counts(matches, totals, len(hyp), _closest_ref_len([len(r) for r in refs], len(hyp)))


def _self_bleu_group(samples: list[list[int]], max_order: int) -> float:
    """Mean BLEU of each sample against all the others, in O(total length) per order.

    The clip count of an n-gram against "all references but me" is the largest count among the other samples:
    the top count if its owner is not me, else the runner-up.
    """
    if len(samples) < 2:
        raise ValueError("self-BLEU needs at least two samples per group")
    per_order = []
    for order in range(1, max_order + 1):
        counts = [_ngram_counts(s, order) for s in samples]
        best: dict[tuple, list] = {}
        for owner, c in enumerate(counts):
            for g, v in c.items():
                top = best.setdefault(g, [0, -1, 0])  # top count, its owner, runner-up count
                if v > top[0]:
                    top[:] = [v, owner, top[0]]
                elif v > top[2]:
                    top[2] = v
        per_order.append([(sum(min(v, best[g][2] if best[g][1] == i else best[g][0]) for g, v in c.items()),
                           sum(c.values())) for i, c in enumerate(counts)])
    lens = [len(s) for s in samples]
    scores = []
    for i, hyp_len in enumerate(lens):
        ref_len = _closest_ref_len(lens[:i] + lens[i + 1:], hyp_len)
        matches = [per_order[o][i][0] for o in range(max_order)]
        totals = [per_order[o][i][1] for o in range(max_order)]
        scores.append(_bleu_from_counts(matches, totals, hyp_len, ref_len))
    return float(np.mean(scores))


def self_bleu(samples, max_order: int = 4) -> float:
    """Self-BLEU (x100; 100 = all samples identical): each sample scored against the others, averaged.

    samples: int[R, L] (one group) or int[G, R, L] (Di4C/SDTT conditional protocol: G prefixes with R
    continuations each, scored within each group, mean over groups), or a list of variable-length sequences.
    """
    if isinstance(samples, np.ndarray) or hasattr(samples, "shape"):
        arr = np.asarray(samples)
        if arr.ndim == 3:
            return float(np.mean([self_bleu(g, max_order) for g in arr]))
        if arr.ndim != 2:
            raise ValueError(f"samples must be int[R, L] or int[G, R, L], got shape {arr.shape}")
        samples = arr.tolist()
    return _self_bleu_group([[int(t) for t in s] for s in samples], max_order)
