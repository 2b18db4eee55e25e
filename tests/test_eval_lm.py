"""Evaluator LM and generative perplexity (SDTT convention)."""
import this  # noqa: F401  (the Zen of Python: a small English corpus shipped with Python)
import codecs

import jax
import numpy as np
import pytest

from di4c_jax.data.tokenizers import ByteTokenizer
from di4c_jax.eval.lm import LMConfig, chunk_stream, generative_perplexity, per_sample_nll, train_lm, token_nll

ZEN = codecs.decode(this.s, "rot13")


@pytest.fixture(scope="module")
def evaluator():
    rows = chunk_stream(ByteTokenizer().encode(ZEN * 4), 64)
    config = LMConfig(vocab_size=256, max_len=64, d_model=64, num_heads=4, num_layers=1)
    apply, params = train_lm(jax.random.key(0), config, rows, num_steps=150, batch_size=16, learning_rate=3e-3)
    return apply, params, config, rows


def test_own_text_has_lower_perplexity_than_shuffled(evaluator):
    apply, params, config, rows = evaluator
    rng = np.random.default_rng(0)
    shuffled = np.stack([rng.permutation(r) for r in rows])
    own = generative_perplexity(apply, params, config, rows)
    assert own < 0.5 * generative_perplexity(apply, params, config, shuffled)
    assert own < 10.0


def test_perplexity_is_exp_mean_of_per_sample_means(evaluator):
    apply, params, config, rows = evaluator
    nll = np.asarray(jax.jit(token_nll, static_argnums=0)(apply, params, rows[:5]), np.float64)  # [5, L-1]
    np.testing.assert_allclose(per_sample_nll(apply, params, config, rows[:5], batch_size=2), nll.mean(1), rtol=1e-5)
    np.testing.assert_allclose(per_sample_nll(apply, params, config, rows[:5], start=10), nll[:, 9:].mean(1),
                               rtol=1e-5)
    ppl = generative_perplexity(apply, params, config, rows[:5])
    assert ppl == pytest.approx(np.exp(nll.mean(1).mean()), rel=1e-5)


def test_causality(evaluator):
    apply, params, _, rows = evaluator
    x = rows[:2].copy()
    apply_jit = jax.jit(apply)
    logits = np.asarray(apply_jit(params, x))
    x[:, 40:] = (x[:, 40:] + 1) % 256
    np.testing.assert_allclose(np.asarray(apply_jit(params, x))[:, :40], logits[:, :40], atol=1e-5)


def test_bad_inputs_are_named(evaluator):
    apply, params, config, rows = evaluator
    with pytest.raises(ValueError, match="token ids"):
        generative_perplexity(apply, params, config, rows * 0 + 300)
    with pytest.raises(ValueError, match="start"):
        per_sample_nll(apply, params, config, rows, start=64)
