"""Generative perplexity under our GPT-2 equals the same protocol computed with transformers' PyTorch GPT-2 (same
random weights) and transformers' tokenizer on the same tokenizer.json: SDTT on raw ids, MDLM's decode ->
retokenise -> first-EOS mask -> token-weighted mean (with chunking and the dropped last n % 8 samples), and SDTT on
samples of another tokenizer (retokenised, per-sample means)."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from _tiny_bpe import stdlib_texts, train_tiny_bpe  # noqa: E402
from _tiny_gpt2 import save_random_gpt2  # noqa: E402
from di4c_jax.data import BPETokenizer, ByteTokenizer  # noqa: E402
from di4c_jax.eval.gen_ppl import generative_perplexity  # noqa: E402
from di4c_jax.eval.text import mean_unigram_entropy  # noqa: E402
from di4c_jax.interop.gpt2 import load_gpt2  # noqa: E402

V, LENGTH, EOS = 400, 32, 399
F = torch.nn.functional


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """The tiny BPE (ours and transformers'), a random GPT-2 over its 400 ids (ours and torch's), and samples."""
    folder = tmp_path_factory.mktemp("evaluator")
    tok_path = train_tiny_bpe(folder)
    model = save_random_gpt2(folder, vocab_size=V, n_positions=LENGTH, n_embd=32, n_layer=2, n_head=2, seed=3)
    hf_tok = transformers.PreTrainedTokenizerFast(tokenizer_file=str(tok_path), eos_token="<|endoftext|>",
                                                  pad_token="<|endoftext|>")
    _, apply, params = load_gpt2(folder)
    tok = BPETokenizer(tok_path)
    samples = np.random.default_rng(0).integers(0, V - 1, (10, LENGTH))  # retokenise longer: truncated
    text = stdlib_texts()[1]
    for row in range(5, 10):  # text spelt character by character: retokenises shorter, so padded with EOS
        samples[row] = np.concatenate([tok.encode(c) for c in text[row * 100:row * 100 + LENGTH]])[:LENGTH]
    samples[::3, 5] = EOS  # document ends inside some samples
    samples[1, 0] = EOS
    return dict(tok=tok, hf_tok=hf_tok, model=model, apply=apply, params=params, samples=samples)


def torch_sdtt(model, ids: np.ndarray) -> float:
    """sony/di4c:sdtt/src/sdtt/run_eval.py `uncond_eval`: per-sample mean NLL of positions 1..L-1, exp(mean)."""
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.from_numpy(ids)).logits[:, :-1], dim=-1)
    nll = -torch.gather(logp, -1, torch.from_numpy(ids)[:, 1:, None])[..., 0]
    return float(nll.double().mean(-1).mean().exp())


def torch_mdlm(model, hf_tok, texts, *, max_length: int, context: int, batch_size: int = 8) -> float:
    """kuleshov-group/mdlm:diffusion.py `eval_retokenize` + `compute_generative_perplexity` + `Perplexity`."""
    enc = hf_tok(texts, return_tensors="pt", return_token_type_ids=False, return_attention_mask=True,
                 truncation=True, padding=True, max_length=max_length)
    samples, attn_mask = enc["input_ids"], enc["attention_mask"]
    total, weight = torch.zeros((), dtype=torch.float64), torch.zeros((), dtype=torch.float64)
    batch_size = min(batch_size, samples.shape[0])
    for i in range(samples.shape[0] // batch_size):
        chunks = torch.split(samples[i * batch_size:(i + 1) * batch_size], context, dim=-1)
        masks = torch.split(attn_mask[i * batch_size:(i + 1) * batch_size], context, dim=-1)
        for chunk, mask in zip(chunks, masks):
            with torch.no_grad():
                logits = model(chunk, attention_mask=mask)[0].transpose(-1, -2)
            nlls = F.cross_entropy(logits[..., :-1], chunk[..., 1:], reduction="none")
            first_eos = (chunk == hf_tok.eos_token_id).cumsum(-1) == 1
            token_mask = chunk != hf_tok.eos_token_id
            w = (first_eos[..., 1:] + token_mask[..., 1:]).double()
            total, weight = total + (nlls.double() * w).sum(), weight + w.sum()
    return float(torch.exp(total / weight))


def test_sdtt_on_raw_ids(world):
    got = generative_perplexity(apply=world["apply"], params=world["params"], samples=world["samples"])
    want = torch_sdtt(world["model"], world["samples"])
    assert got.protocol == "sdtt" and got.num_samples == 10 and got.num_tokens == 10 * (LENGTH - 1)
    np.testing.assert_allclose(got.ppl, want, rtol=1e-4)
    assert got.entropy == mean_unigram_entropy(world["samples"]) and np.isclose(np.exp(got.mean_nll), got.ppl)
    cond = generative_perplexity(apply=world["apply"], params=world["params"], samples=world["samples"], start=10)
    assert cond.num_tokens == 10 * (LENGTH - 10) and cond.ppl != got.ppl


def _mdlm(world, samples, **kw):
    return generative_perplexity(apply=world["apply"], params=world["params"], samples=samples, protocol="mdlm",
                                 eval_tokenizer=world["tok"], **kw)


@pytest.mark.parametrize("context", [32, 12], ids=["one_chunk", "chunked"])
def test_mdlm_retokenised(world, context):
    tok, hf_tok = world["tok"], world["hf_tok"]
    got = _mdlm(world, world["samples"], sample_tokenizer=tok, context=context)
    texts = hf_tok.batch_decode(torch.from_numpy(world["samples"]), clean_up_tokenization_spaces=True)
    assert texts == tok.decode_batch(world["samples"], clean_up_spaces=True)
    lengths = [len(ids) for ids in hf_tok(texts, truncation=True, max_length=LENGTH)["input_ids"]]
    assert min(lengths) < LENGTH == max(lengths)  # both truncation and EOS padding are exercised
    want = torch_mdlm(world["model"], hf_tok, texts, max_length=LENGTH, context=context)
    np.testing.assert_allclose(got.ppl, want, rtol=1e-4)
    assert got.num_samples == 8  # batches of 8: the last 10 % 8 samples are dropped, as in MDLM


def test_mdlm_calls_share_one_token_weighted_mean(world):
    """samples_per_call=5: each call retokenised and padded on its own (as MDLM per sampling batch), one metric."""
    got = _mdlm(world, world["samples"], samples_per_call=5)
    texts = world["hf_tok"].batch_decode(torch.from_numpy(world["samples"]), clean_up_tokenization_spaces=True)
    parts = [_mdlm(world, world["samples"][i:i + 5]) for i in (0, 5)]
    for part, i in zip(parts, (0, 5)):
        want = torch_mdlm(world["model"], world["hf_tok"], texts[i:i + 5], max_length=LENGTH, context=LENGTH)
        np.testing.assert_allclose(part.ppl, want, rtol=1e-4)
    mean = sum(p.mean_nll * p.num_tokens for p in parts) / sum(p.num_tokens for p in parts)
    np.testing.assert_allclose(got.ppl, np.exp(mean), rtol=1e-6)
    assert got.num_samples == 10 and got.num_tokens == sum(p.num_tokens for p in parts)


def test_sdtt_on_samples_of_another_tokenizer(world):
    """Byte-level samples (a model with its own tokenizer): decoded, retokenised, each sample's own mean."""
    text = "def f(x):\n    return x + 1  # the end\n" * 3
    byte_samples = np.stack([ByteTokenizer().encode(text[i:i + 40]) for i in range(0, 30, 10)])
    got = generative_perplexity(apply=world["apply"], params=world["params"], samples=byte_samples,
                                eval_tokenizer=world["tok"], sample_tokenizer=ByteTokenizer())
    ids = [world["hf_tok"](text[i:i + 40])["input_ids"] for i in range(0, 30, 10)]
    means = [np.log(torch_sdtt(world["model"], np.asarray([row]))) for row in ids]
    np.testing.assert_allclose(got.ppl, np.exp(np.mean(means)), rtol=1e-4)
    assert got.num_tokens == sum(len(r) - 1 for r in ids)


def test_errors_name_the_problem(world):
    kw = dict(apply=world["apply"], params=world["params"], samples=world["samples"])
    with pytest.raises(ValueError, match="protocol 'mdlm' retokenises the samples: give eval_tokenizer"):
        generative_perplexity(**kw, protocol="mdlm")
    with pytest.raises(ValueError, match="unknown generative-perplexity protocol 'duo'"):
        generative_perplexity(**kw, protocol="duo")
    with pytest.raises(ValueError, match=r"start must lie in \[1, 32\), got 32"):
        generative_perplexity(**kw, start=32)
    masked = world["samples"].copy()
    masked[2, 7] = V
    with pytest.raises(ValueError, match=r"evaluator's vocabulary \[0, 400\), got 400 at row 2, position 7"):
        generative_perplexity(**(kw | {"samples": masked}))
    masked[2, 7], masked[4, 3] = 0, V  # the mask id of the masked process
    with pytest.raises(ValueError, match=r"BPE ids must lie in \[0, 400\), got 400 at row 4, position 3"):
        generative_perplexity(**(kw | {"samples": masked}), protocol="mdlm", eval_tokenizer=world["tok"])
