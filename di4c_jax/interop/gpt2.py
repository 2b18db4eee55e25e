"""Hugging Face GPT-2 checkpoints (`model.safetensors` + `config.json`, e.g. 'gpt2-large') -> our NNX GPT-2.

Keys (huggingface/transformers:src/transformers/models/gpt2/modeling_gpt2.py), with or without the `transformer.`
prefix: `wte.weight` [V, d], `wpe.weight` [n_positions, d], `h.{i}.ln_1|ln_2.weight|bias`, `h.{i}.attn.c_attn`,
`h.{i}.attn.c_proj`, `h.{i}.mlp.c_fc`, `h.{i}.mlp.c_proj` (Conv1D: weight stored (in, out), our kernel layout as it
is), `ln_f`. `lm_head.weight`, when present, must equal `wte.weight` (tied); the causal-mask buffers of older files
(`h.{i}.attn.bias`, `h.{i}.attn.masked_bias`) are ignored. A sharded checkpoint
(`model.safetensors.index.json`) is read shard by shard.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from di4c_jax.eval.gpt2 import GPT2Config, gpt2_graph, make_apply
from di4c_jax.interop.files import CheckpointError, read_json, read_safetensors
from di4c_jax.interop.keys import StateDict

CONFIG_FIELDS = ("vocab_size", "n_positions", "n_embd", "n_layer", "n_head")
BUFFER = re.compile(r"h\.\d+\.attn\.(masked_)?bias")  # causal-mask buffers of older files, not weights
OPTIONAL_FIELDS = ("n_inner", "layer_norm_epsilon", "activation_function", "scale_attn_weights",
                   "scale_attn_by_inverse_layer_idx")


def gpt2_config(raw: dict, *, source: str) -> GPT2Config:
    """GPT2Config from a Hugging Face config.json dict; a missing field or an unsupported setting is named."""
    if raw.get("model_type", "gpt2") != "gpt2":
        raise CheckpointError(f"{source}: model_type {raw['model_type']!r}, expected 'gpt2'")
    if not raw.get("tie_word_embeddings", True):
        raise CheckpointError(f"{source}: tie_word_embeddings is false; only GPT-2 with the head tied to wte is "
                              f"supported")
    missing = [f for f in CONFIG_FIELDS if f not in raw]
    if missing:
        raise CheckpointError(f"{source}: config.json lacks {missing}; expected a GPT-2 config")
    fields = {f: raw[f] for f in CONFIG_FIELDS} | {f: raw[f] for f in OPTIONAL_FIELDS if raw.get(f) is not None}
    try:
        return GPT2Config(**fields)
    except ValueError as err:
        raise CheckpointError(f"{source}: {err}") from None


def _files(path: Path) -> tuple[list[Path], Path]:
    """(safetensors files, config.json) of a checkpoint folder or of a .safetensors file with config.json beside."""
    folder = path if path.is_dir() else path.parent
    if path.is_dir():
        index = folder / "model.safetensors.index.json"
        if index.is_file():
            names = sorted(set(read_json(index).get("weight_map", {}).values()))
            files = [folder / n for n in names]
        else:
            files = [folder / "model.safetensors"]
    else:
        files = [path]
    return files, folder / "config.json"


def read_gpt2_tensors(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict, str]:
    """(flat tensors, config.json dict, source name) of a GPT-2 checkpoint folder or file."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such GPT-2 checkpoint (expected a folder with model.safetensors and "
                              f"config.json)")
    files, config_path = _files(path)
    tensors: dict[str, np.ndarray] = {}
    for f in files:
        tensors.update(read_safetensors(f))
    return tensors, read_json(config_path), str(files[0] if len(files) == 1 else path)


def convert_gpt2(tensors: dict[str, np.ndarray], config: GPT2Config, *, source: str) -> dict:
    """Flat HF tensors -> our params as a pure dict (nnx.to_pure_dict layout of `GPT2`); every key checked."""
    prefix = "transformer." if any(k.startswith("transformer.") for k in tensors) else ""
    others = sorted(k for k in tensors if not k.startswith(prefix) and k != "lm_head.weight")
    if others:
        raise CheckpointError(f"{source}: unexpected key(s) {others[:8]} outside {prefix!r}: not a GPT-2 checkpoint?")
    sd = StateDict(tensors, source=source, prefix=prefix)
    d, inner, v = config.n_embd, config.inner, config.vocab_size
    wte, wpe = sd.take("wte.weight", (v, d)), sd.take("wpe.weight", (config.n_positions, d))

    def conv1d(key, d_in, d_out):  # HF Conv1D keeps weight as (in, out): our kernel layout
        return {"kernel": sd.take(f"{key}.weight", (d_in, d_out)), "bias": sd.take(f"{key}.bias", (d_out,))}

    blocks = {}
    for i in range(config.n_layer):
        blocks[i] = {"ln_1": sd.norm(f"h.{i}.ln_1", d), "ln_2": sd.norm(f"h.{i}.ln_2", d),
                     "c_attn": conv1d(f"h.{i}.attn.c_attn", d, 3 * d), "c_proj": conv1d(f"h.{i}.attn.c_proj", d, d),
                     "c_fc": conv1d(f"h.{i}.mlp.c_fc", d, inner), "mlp_proj": conv1d(f"h.{i}.mlp.c_proj", inner, d)}
    buffers = [k[len(prefix):] for k in tensors if k.startswith(prefix) and BUFFER.fullmatch(k[len(prefix):])]
    head = "lm_head.weight"
    if head in tensors:
        if np.shape(tensors[head]) != (v, d) or not np.array_equal(np.asarray(tensors[head], np.float32), wte):
            raise CheckpointError(f"{source}: {head!r} differs from the token embedding; only a tied head is supported")
    ln_f = sd.norm("ln_f", d)
    sd.finish(ignore=buffers + ([head] if not prefix and head in tensors else []))
    return {"wte": {"embedding": wte}, "wpe": {"embedding": wpe}, "h": blocks, "ln_f": ln_f}


def load_gpt2(path: str | os.PathLike):
    """A Hugging Face GPT-2 checkpoint -> (config, apply, params).

    path: a folder with model.safetensors (or model.safetensors.index.json + shards) and config.json, or a
      .safetensors file with config.json beside it.
    Returns apply(params, tokens int[B, L]) -> logits float32[B, L, V], and params (an nnx.State in float32).
    """
    tensors, raw_config, source = read_gpt2_tensors(path)
    config = gpt2_config(raw_config, source=source)
    pure = convert_gpt2(tensors, config, source=source)
    _, params = gpt2_graph(config)
    nnx.replace_by_pure_dict(params, jax.tree.map(jnp.asarray, pure))
    return config, make_apply(config), params
