"""Our own format: `model.safetensors` (params flattened as `a.b.c`) + `config.json` (the model config).

Bit-exact both ways, no torch needed. Registered as the family 'di4c'.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from di4c_jax.interop.families import FAMILIES, Family, no_extra_hparams
from di4c_jax.interop.files import CheckpointError, read_json, read_safetensors, write_json, write_safetensors
from di4c_jax.interop.keys import flatten_params, unflatten_params

FORMAT = "di4c-jax"
WEIGHTS, CONFIG = "model.safetensors", "config.json"


def save_folder(model_config: dict, params, folder) -> Path:
    """Write `params` and `model_config` into `folder` (created); returns the folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    flat = {k: np.asarray(v) for k, v in flatten_params(params).items()}
    write_safetensors(flat, folder / WEIGHTS, metadata={"format": FORMAT})
    write_json({"format": FORMAT, "model": model_config}, folder / CONFIG)
    return folder


def load_model_config(path) -> dict:
    """The model config of a folder written by `save_folder`."""
    folder = Path(path)
    if not folder.is_dir():
        raise CheckpointError(f"{folder}: expected a folder with {WEIGHTS} and {CONFIG}")
    config = read_json(folder / CONFIG)
    if config.get("format") != FORMAT or not isinstance(config.get("model"), dict):
        raise CheckpointError(f"{folder / CONFIG}: not a di4c-jax export (format {config.get('format')!r}); use the "
                              f"family of the file's origin")
    return config["model"]


def load_folder(path, *, ema=None, weights_only=True, **hparams):
    no_extra_hparams(hparams, "di4c")
    if ema:
        raise CheckpointError(f"{path}: a di4c-jax export holds one set of weights; ema=True does not apply")
    model_config = load_model_config(path)
    return model_config, unflatten_params(read_safetensors(Path(path) / WEIGHTS))


FAMILIES.register("di4c", Family(load_folder, None, "di4c-jax's own safetensors + config.json (save_checkpoint)"))
