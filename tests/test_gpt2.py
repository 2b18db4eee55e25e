"""Our NNX GPT-2 from a Hugging Face checkpoint: logits equal to transformers' PyTorch GPT2LMHeadModel (random
weights, small config, saved by save_pretrained), the key layouts the converter accepts, and its errors."""
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from di4c_jax.interop.files import CheckpointError  # noqa: E402
from di4c_jax.interop.gpt2 import convert_gpt2, gpt2_config, load_gpt2, read_gpt2_tensors  # noqa: E402

from _tiny_gpt2 import save_random_gpt2  # noqa: E402


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gpt2")
    return folder, save_random_gpt2(folder)


def test_logits_equal_transformers(saved):
    folder, model = saved
    config, apply, params = load_gpt2(folder)
    assert (config.n_layer, config.n_head, config.n_embd, config.vocab_size) == (2, 4, 64, 300)
    tokens = np.random.default_rng(0).integers(0, 300, (3, 32))
    with torch.no_grad():
        want = model(torch.from_numpy(tokens)).logits.numpy()
    got = np.asarray(apply(params, tokens))
    assert got.shape == (3, 32, 300) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(np.asarray(apply(params, tokens[:, :7])), want[:, :7], atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="GPT-2 context is 32 tokens, got sequences of 33"):
        apply(params, np.zeros((1, 33), np.int32))


def test_inverse_layer_scaling_and_exact_gelu(tmp_path):
    model = save_random_gpt2(tmp_path, seed=1, scale_attn_by_inverse_layer_idx=True, activation_function="gelu")
    _, apply, params = load_gpt2(tmp_path / "model.safetensors")  # a file with config.json beside it
    tokens = np.random.default_rng(1).integers(0, 300, (2, 16))
    with torch.no_grad():
        want = model(torch.from_numpy(tokens)).logits.numpy()
    np.testing.assert_allclose(np.asarray(apply(params, tokens)), want, atol=1e-4, rtol=1e-4)


def test_key_layouts_the_converter_accepts(saved):
    """No 'transformer.' prefix (the original hub files), mask buffers and a tied lm_head.weight all load."""
    folder, _ = saved
    tensors, raw, _ = read_gpt2_tensors(folder)
    config = gpt2_config(raw, source="x")
    want = convert_gpt2(tensors, config, source="x")
    bare = {k.removeprefix("transformer."): v for k, v in tensors.items()}
    bare |= {"h.0.attn.bias": np.ones((1, 1, 32, 32), np.float32), "h.1.attn.masked_bias": np.float32(-1e4),
             "lm_head.weight": bare["wte.weight"]}
    got = convert_gpt2(bare, config, source="x")
    np.testing.assert_array_equal(got["h"][1]["c_fc"]["kernel"], want["h"][1]["c_fc"]["kernel"])
    assert got["h"][0]["c_attn"]["kernel"].shape == (64, 192)


@pytest.mark.parametrize("edit, pattern", [
    (lambda t: t.pop("transformer.h.1.mlp.c_fc.weight"), r"missing key 'transformer.h.1.mlp.c_fc.weight'"),
    (lambda t: t.update({"transformer.h.0.attn.c_attn.weight": np.zeros((192, 64), np.float32)}),
     r"key 'transformer.h.0.attn.c_attn.weight' has shape \(192, 64\), expected \(64, 192\)"),
    (lambda t: t.update({"transformer.h.2.ln_1.weight": np.zeros(64, np.float32)}),
     r"unexpected key\(s\) \['transformer.h.2.ln_1.weight'\]"),
    (lambda t: t.update({"lm_head.weight": np.zeros((300, 64), np.float32)}),
     r"'lm_head.weight' differs from the token embedding"),
    (lambda t: t.update({"model.embed_tokens.weight": np.zeros(3, np.float32)}),
     r"unexpected key\(s\) \['model.embed_tokens.weight'\] outside 'transformer.'"),
], ids=["missing", "shape", "unexpected", "untied_head", "foreign"])
def test_converter_errors_name_the_key(saved, edit, pattern):
    folder, _ = saved
    tensors, raw, _ = read_gpt2_tensors(folder)
    edit(tensors)
    with pytest.raises(CheckpointError, match=pattern):
        convert_gpt2(tensors, gpt2_config(raw, source="x"), source="x")


def test_config_and_file_errors(tmp_path, saved):
    folder, _ = saved
    raw = json.loads((folder / "config.json").read_text())
    with pytest.raises(CheckpointError, match=r"x: model_type 'llama', expected 'gpt2'"):
        gpt2_config(raw | {"model_type": "llama"}, source="x")
    with pytest.raises(CheckpointError, match=r"config.json lacks \['n_head'\]"):
        gpt2_config({k: v for k, v in raw.items() if k != "n_head"}, source="x")
    with pytest.raises(CheckpointError, match=r"activation_function 'swish' is not supported"):
        gpt2_config(raw | {"activation_function": "swish"}, source="x")
    with pytest.raises(CheckpointError, match=r"nowhere: no such GPT-2 checkpoint"):
        load_gpt2(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match=r"empty/model.safetensors: no such safetensors file"):
        load_gpt2(tmp_path / "empty")
