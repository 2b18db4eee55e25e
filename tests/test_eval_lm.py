"""The tiny evaluator LM, scored through `eval.generative_perplexity` (SDTT protocol)."""
import this  # noqa: F401  (the Zen of Python: a small English corpus shipped with Python)
import codecs

import jax
import numpy as np
import pytest

from di4c_jax.data.tokenizers import ByteTokenizer
from di4c_jax.eval import generative_perplexity
from di4c_jax.eval.gen_ppl import sdtt_per_sample_nll, token_nll
from di4c_jax.eval.lm import LMConfig, chunk_stream, train_lm

ZEN = codecs.decode(this.s, "rot13")


@pytest.fixture(scope="module")
def evaluator():
    rows = chunk_stream(ByteTokenizer().encode(ZEN * 4), 64)
    config = LMConfig(vocab_size=256, max_len=64, d_model=64, num_heads=4, num_layers=1)
    apply, params = train_lm(jax.random.key(0), config, rows, num_steps=150, batch_size=16, learning_rate=3e-3)
    return apply, params, rows


def ppl(apply, params, rows, **kw):
    return generative_perplexity(apply=apply, params=params, samples=rows, **kw).ppl


def test_own_text_has_lower_perplexity_than_shuffled(evaluator):
    apply, params, rows = evaluator
    rng = np.random.default_rng(0)
    shuffled = np.stack([rng.permutation(r) for r in rows])
    own = ppl(apply, params, rows)
    assert own < 0.5 * ppl(apply, params, shuffled)
    assert own < 10.0


def test_perplexity_is_exp_mean_of_per_sample_means(evaluator):
    apply, params, rows = evaluator
    nll = np.asarray(token_nll(apply, params, rows[:5]), np.float64)  # [5, L-1]
    np.testing.assert_allclose(sdtt_per_sample_nll(apply, params, rows[:5], batch_size=2), nll.mean(1), rtol=1e-5)
    np.testing.assert_allclose(sdtt_per_sample_nll(apply, params, rows[:5], start=10), nll[:, 9:].mean(1), rtol=1e-5)
    assert ppl(apply, params, rows[:5], batch_size=256) == pytest.approx(np.exp(nll.mean(1).mean()), rel=1e-5)
    assert ppl(apply, params, rows[:5], start=10) == pytest.approx(np.exp(nll[:, 9:].mean(1).mean()), rel=1e-5)


def test_causality(evaluator):
    apply, params, rows = evaluator
    x = rows[:2].copy()
    apply_jit = jax.jit(apply)
    logits = np.asarray(apply_jit(params, x))
    x[:, 40:] = (x[:, 40:] + 1) % 256
    np.testing.assert_allclose(np.asarray(apply_jit(params, x))[:, :40], logits[:, :40], atol=1e-5)


def test_bad_inputs_are_named(evaluator):
    apply, params, rows = evaluator
    with pytest.raises(ValueError, match=r"evaluator's vocabulary \[0, 256\), got 300"):
        ppl(apply, params, rows * 0 + 300)
    with pytest.raises(ValueError, match="start"):
        ppl(apply, params, rows, start=64)
    with pytest.raises(ValueError, match="length 128 are longer than the evaluator's context 64"):
        ppl(apply, params, np.concatenate([rows, rows], axis=1))
    with pytest.raises(ValueError, match="token ids"):
        train_lm(jax.random.key(0), LMConfig(vocab_size=4), rows)
