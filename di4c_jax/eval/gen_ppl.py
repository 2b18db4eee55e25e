"""Generative perplexity of text samples under an evaluator LM (GPT-2-large in the papers), two protocols.

'sdtt' (the default; Di4C inherits it: sony/di4c:sdtt/src/sdtt/run_eval.py, `uncond_eval`, as in jdeschena/sdtt):
  the evaluator scores the sample ids as they are (the diffusion model and GPT-2 share the GPT-2 tokenizer): no
  retokenisation, no BOS, no EOS masking, fp32, batches of 8; per sample the mean NLL of positions start..L-1
  (start = 1 unconditional, the prefix length conditional); PPL = exp(mean over samples).
  A model with another tokenizer cannot be scored on its own ids: give `sample_tokenizer` and its samples are
  decoded, retokenised as below, and each sample averages over its own retokenised positions 1..len-1 (our
  extension; SDTT never retokenises).
'mdlm' (kuleshov-group/mdlm:diffusion.py, `compute_generative_perplexity` and `eval_retokenize`):
  samples decoded with the diffusion model's tokenizer (`batch_decode`: special tokens kept as text; transformers
  4.38, which MDLM pins, also cleaned up spaces before punctuation by default), retokenised by the evaluator's
  tokenizer (truncated to `max_length` = the sample length, padded to the longest sample of each call with EOS),
  split into chunks of the evaluator context (1024), scored in batches of 8 where a call's last n % 8 samples are
  dropped; scored tokens are the non-EOS tokens plus the first EOS of each chunk (position 0 never scored), and
  PPL = exp(sum of NLL / number of scored tokens) over all samples (token-weighted).
  MDLM scores one sampling batch per call: `samples_per_call` (None: all samples in one call).

Both report the mean unigram entropy of the samples' own ids (`eval.text.mean_unigram_entropy`; the unigram
entropy of SDTT's diversity evaluation and DUO's `record_entropy`, in nats).
"""
from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from di4c_jax.eval.text import mean_unigram_entropy

PROTOCOLS = ("sdtt", "mdlm")
BATCH_SIZE = 8
CONTEXT = 1024  # GPT-2's; MDLM's `eval_context_size`


@dataclasses.dataclass(frozen=True)
class GenPPL:
    """ppl = exp(mean_nll); mean_nll in nats per the protocol's averaging; entropy: mean unigram entropy (nats)."""

    ppl: float
    mean_nll: float
    num_samples: int  # samples that contributed
    num_tokens: int  # scored tokens
    entropy: float
    protocol: str


@functools.partial(jax.jit, static_argnames="apply")
def token_nll(apply, params, tokens) -> jax.Array:
    """int32[B, C] -> float32[B, C - 1]: -log p(x_j | x_<j) for j = 1..C-1, from one evaluator call."""
    logp = jax.nn.log_softmax(apply(params, tokens[:, :-1]).astype(jnp.float32), axis=-1)
    return -jnp.take_along_axis(logp, tokens[:, 1:, None], axis=-1)[..., 0]


def _batched_nll(apply, params, tokens: np.ndarray, batch_size: int) -> np.ndarray:
    """float64[n, C - 1] of rows int[n, C], `batch_size` rows per call (the last batch padded with row 0)."""
    n = len(tokens)
    size = min(batch_size, n)
    padded = np.concatenate([tokens, np.repeat(tokens[:1], -n % size, axis=0)]).astype(np.int32)
    out = [np.asarray(token_nll(apply, params, padded[i:i + size]), np.float64) for i in range(0, len(padded), size)]
    return np.concatenate(out)[:n]


def decode_samples(samples, tokenizer, *, clean_up_spaces: bool = False) -> list[str]:
    """int[n, L] -> n strings, special tokens kept (transformers' batch_decode defaults)."""
    if hasattr(tokenizer, "decode_batch"):
        return tokenizer.decode_batch(np.asarray(samples), clean_up_spaces=clean_up_spaces)
    return [tokenizer.decode(row) for row in np.asarray(samples)]


def retokenize(texts, tokenizer, *, max_length: int) -> tuple[np.ndarray, np.ndarray]:
    """MDLM's `eval_retokenize`: each text encoded (special tokens of the file's post-processor added, none for
    GPT-2), truncated on the right to `max_length`, padded on the right with EOS to the longest.
    Returns (ids int32[n, longest], lengths int[n])."""
    encoded = [ids[:max_length] for ids in tokenizer.encode_batch(list(texts), add_special_tokens=True)]
    lengths = np.asarray([len(ids) for ids in encoded])
    out = np.full((len(encoded), max(int(lengths.max(initial=0)), 1)), tokenizer.eos_id, np.int32)
    for row, ids in zip(out, encoded):
        row[:len(ids)] = ids
    return out, lengths


def sdtt_per_sample_nll(apply, params, tokens, *, start: int = 1, lengths=None,
                        batch_size: int = BATCH_SIZE) -> np.ndarray:
    """int[n, L] -> float64[n]: per sample the mean NLL of positions start..len_i - 1 (len_i = L when lengths is
    None). Rows with len_i <= start get NaN."""
    tokens = np.asarray(tokens)
    if tokens.ndim != 2 or not np.issubdtype(tokens.dtype, np.integer) or tokens.shape[1] < 2:
        raise ValueError(f"samples must be int[n, L >= 2], got shape {tokens.shape} and dtype {tokens.dtype}")
    if not 1 <= start < tokens.shape[1]:
        raise ValueError(f"start must lie in [1, {tokens.shape[1]}), got {start}")
    lengths = np.full(len(tokens), tokens.shape[1]) if lengths is None else np.asarray(lengths)
    nll = _batched_nll(apply, params, tokens, batch_size)                      # [n, L - 1], position j at j - 1
    positions = np.arange(1, tokens.shape[1])[None]
    scored = (positions >= start) & (positions < lengths[:, None])
    with np.errstate(invalid="ignore", divide="ignore"):
        return (nll * scored).sum(1) / scored.sum(1)


def mdlm_nll_sum(apply, params, ids, *, eos_id: int, context: int = CONTEXT,
                 batch_size: int = BATCH_SIZE) -> tuple[float, int, int]:
    """One MDLM call on retokenised ids int[n, L']: (sum of scored NLL, scored tokens, samples used).

    Rows in batches of min(batch_size, n), the last n % that rows dropped; each batch split into chunks of
    `context` tokens; in a chunk the scored positions j >= 1 are the non-EOS tokens and the first EOS.
    """
    ids = np.asarray(ids, np.int32)
    size = min(batch_size, len(ids))
    used = len(ids) // size * size
    total, count = 0.0, 0
    for i in range(0, used, size):
        for start in range(0, ids.shape[1], context):
            chunk = ids[i:i + size, start:start + context]
            if chunk.shape[1] < 2:
                continue
            is_eos = chunk == eos_id
            mask = ((np.cumsum(is_eos, axis=1) == 1) | ~is_eos)[:, 1:]
            width = min(context, ids.shape[1])  # one compiled shape per call (causal: the padding is not seen)
            full = np.pad(chunk, ((0, 0), (0, width - chunk.shape[1])), constant_values=eos_id)
            nll = np.asarray(token_nll(apply, params, full), np.float64)[:, :chunk.shape[1] - 1]
            total += float((nll * mask).sum())
            count += int(mask.sum())
    return total, count, used


def generative_perplexity(*, apply, params, samples, protocol: str = "sdtt", eval_tokenizer=None,
                          sample_tokenizer=None, start: int = 1, batch_size: int = BATCH_SIZE,
                          context: int | None = None, max_length: int | None = None,
                          samples_per_call: int | None = None, clean_up_spaces: bool | None = None) -> GenPPL:
    """Generative perplexity of samples int[n, L] under the evaluator `apply(params, tokens) -> logits`.

    protocol: 'sdtt' (default) or 'mdlm' (module docstring).
    eval_tokenizer: the evaluator's tokenizer (a `data.BPETokenizer`, e.g. GPT-2's tokenizer.json); needed to
      retokenise ('mdlm' always does; 'sdtt' only with a sample_tokenizer).
    sample_tokenizer: the diffusion model's tokenizer. 'sdtt': None scores the ids as they are. 'mdlm': None means
      the evaluator's own (MDLM decodes and re-encodes even then).
    start: 'sdtt' first scored position (the prefix length for conditional samples).
    context: the evaluator's context (default `apply.context` when the apply has one, else 1024): 'mdlm' chunk
      length; 'sdtt' truncation of retokenised samples.
    max_length: truncation of retokenised samples (default: L for 'mdlm', context for 'sdtt').
    clean_up_spaces: decode with transformers' space clean-up (default: True for 'mdlm', False for 'sdtt').
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown generative-perplexity protocol {protocol!r}; choose one of {PROTOCOLS}")
    samples = np.asarray(samples)
    if samples.ndim != 2 or not np.issubdtype(samples.dtype, np.integer) or samples.shape[0] < 1:
        raise ValueError(f"samples must be int[n >= 1, L], got shape {samples.shape} and dtype {samples.dtype}")
    entropy = mean_unigram_entropy(samples)
    clean = protocol == "mdlm" if clean_up_spaces is None else clean_up_spaces
    context = context or getattr(apply, "context", CONTEXT)
    if protocol == "sdtt":
        if sample_tokenizer is None:
            _check_ids(samples, getattr(apply, "vocab_size", None))
            if samples.shape[1] > context:
                raise ValueError(f"samples of length {samples.shape[1]} are longer than the evaluator's context "
                                 f"{context}; score a prefix or retokenise (sample_tokenizer)")
            nll = sdtt_per_sample_nll(apply, params, samples, start=start, batch_size=batch_size)
            lengths = np.full(len(samples), samples.shape[1])
        else:
            _need(eval_tokenizer, "protocol 'sdtt' with a sample_tokenizer")
            texts = decode_samples(samples, sample_tokenizer, clean_up_spaces=clean)
            ids, lengths = retokenize(texts, eval_tokenizer, max_length=max_length or context)
            nll = sdtt_per_sample_nll(apply, params, ids, start=start, lengths=lengths, batch_size=batch_size) \
                if ids.shape[1] > start else np.full(len(ids), np.nan)
        ok = ~np.isnan(nll)
        if not ok.any():
            raise ValueError(f"no sample has a token at position >= start={start} to score")
        mean = float(nll[ok].mean())
        return GenPPL(float(np.exp(mean)), mean, int(ok.sum()), int((lengths[ok] - start).sum()), entropy, protocol)
    _need(eval_tokenizer, "protocol 'mdlm'")
    texts = decode_samples(samples, sample_tokenizer or eval_tokenizer, clean_up_spaces=clean)
    per_call = samples_per_call or len(texts)
    total, count, used = 0.0, 0, 0
    for i in range(0, len(texts), per_call):
        ids, _ = retokenize(texts[i:i + per_call], eval_tokenizer, max_length=max_length or samples.shape[1])
        s, c, u = mdlm_nll_sum(apply, params, ids, eos_id=eval_tokenizer.eos_id, context=context,
                               batch_size=batch_size)
        total, count, used = total + s, count + c, used + u
    if count == 0:
        raise ValueError("no token was scored (empty decoded samples?)")
    return GenPPL(float(np.exp(total / count)), total / count, used, count, entropy, protocol)


def _check_ids(samples: np.ndarray, vocab_size: int | None) -> None:
    """Ids outside the evaluator's vocabulary (e.g. a mask id left in a sample) named by row and position."""
    if vocab_size is None:
        return
    bad = np.argwhere((samples < 0) | (samples >= vocab_size))
    if len(bad):
        row, pos = (int(i) for i in bad[0])
        raise ValueError(f"sample ids must lie in the evaluator's vocabulary [0, {vocab_size}), got "
                         f"{int(samples[row, pos])} at row {row}, position {pos} (a mask id left in a sample?)")


def _need(tokenizer, what: str) -> None:
    if tokenizer is None:
        raise ValueError(f"{what} retokenises the samples: give eval_tokenizer (the evaluator's tokenizer.json, "
                         f"e.g. data.BPETokenizer('gpt2-large/tokenizer.json'))")
