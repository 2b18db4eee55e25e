"""Unigram entropy and (self-)BLEU against hand-computed values."""
import math

import numpy as np
import pytest

from di4c_jax.eval.text import mean_unigram_entropy, self_bleu, sentence_bleu, unigram_entropy


def test_entropy_of_constant_and_of_permutation():
    K = 7
    perms = np.stack([np.random.default_rng(i).permutation(K) for i in range(5)])
    np.testing.assert_allclose(unigram_entropy(perms), math.log(K))
    assert mean_unigram_entropy(np.full((3, 10), 4)) == 0.0
    # hand case: counts (2, 1, 1) over 4 tokens
    assert unigram_entropy(np.array([[5, 5, 0, 9]]))[0] == pytest.approx(-(0.5 * math.log(0.5) + 0.5 * math.log(0.25)))


def test_entropy_rejects_bad_shapes():
    with pytest.raises(ValueError, match="int\\[n, L"):
        unigram_entropy(np.array([1, 2, 3]))


def test_bleu_hand_computed_without_smoothing():
    # precisions 5/6, 3/5, 2/4, 1/3; equal lengths -> no brevity penalty
    assert sentence_bleu([[1, 2, 3, 4, 7, 6]], [1, 2, 3, 4, 5, 6]) == pytest.approx(100 * (1 / 12) ** 0.25)


def test_bleu_hand_computed_with_method1_and_brevity_penalty():
    # precisions 2/4, 1/3, 0/2 -> 0.1/2, 0/1 -> 0.1/1; closest ref length 5 > 4 -> bp = exp(1 - 5/4)
    expected = 100 * math.exp(-0.25) * (0.5 * (1 / 3) * 0.05 * 0.1) ** 0.25
    assert sentence_bleu([[1, 2, 5, 6, 7]], [1, 2, 3, 9]) == pytest.approx(expected)


def test_bleu_clips_by_the_max_count_in_a_single_reference():
    # four 1s, at most two per reference -> unigrams 2/4 (not 3/4); bigram (1,1): 1/3; then 0.1/2, 0.1/1
    refs = [[1, 1, 2, 2], [1, 3, 3, 3]]
    expected = 100 * (0.5 * (1 / 3) * 0.05 * 0.1) ** 0.25
    assert sentence_bleu(refs, [1, 1, 1, 1]) == pytest.approx(expected)
    assert sentence_bleu(refs, [8, 8, 8, 8]) == 0.0


def test_self_bleu_identical_is_100_random_is_low_and_matches_pairwise_definition():
    rng = np.random.default_rng(0)
    assert self_bleu(np.tile(rng.integers(0, 50, size=(1, 30)), (5, 1))) == pytest.approx(100.0)
    x = rng.integers(0, 50, size=(12, 30))
    brute = np.mean([sentence_bleu([x[j] for j in range(12) if j != i], x[i]) for i in range(12)])
    assert self_bleu(x) == pytest.approx(brute)
    assert self_bleu(x) < 10.0
    # grouped protocol: mean over groups; variable-length lists take the brevity penalty path
    groups = rng.integers(0, 5, size=(3, 5, 20))
    assert self_bleu(groups) == pytest.approx(np.mean([self_bleu(g) for g in groups]))
    ragged = [[1, 2, 3, 4, 5], [1, 2, 3], [2, 3, 4, 5, 6, 7]]
    brute = np.mean([sentence_bleu([r for j, r in enumerate(ragged) if j != i], h) for i, h in enumerate(ragged)])
    assert self_bleu(ragged) == pytest.approx(brute)
