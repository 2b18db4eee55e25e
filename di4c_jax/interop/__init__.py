"""Released checkpoints in, our students out: `load_checkpoint`, `save_checkpoint`, `export_checkpoint`.

Families (`FAMILIES`): 'di4c' (ours), 'mdlm', 'sdtt', 'maskgit', 'tauldr'. safetensors files need no torch; the
PyTorch pickles (.ckpt/.pth/.pt) need `pip install -e .[torch]`.
"""
from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp

from di4c_jax.denoiser import Denoiser
from di4c_jax.interop import maskgit, mdlm, ours, tauldr  # noqa: F401  (each registers its families)
from di4c_jax.interop.families import FAMILIES, Family
from di4c_jax.interop.files import CheckpointError
from di4c_jax.interop.keys import check_tree


def _denoiser(model_config: dict, params, source: str):
    from di4c_jax.models import abstract_params, make_denoiser

    check_tree(params, abstract_params(model_config), source=source)
    return make_denoiser(model_config), jax.tree.map(jnp.asarray, params)


def load_checkpoint(path, family: str, *, ema: bool | None = None, weights_only: bool = True,
                    **hparams) -> tuple[Denoiser, dict]:
    """(Denoiser, params) of a checkpoint file or folder of `family`.

    Args:
      path: the file (.safetensors, .ckpt, .pth, .pt) or folder (Hugging Face: model.safetensors + config.json).
      family: a name in `FAMILIES` ('di4c', 'mdlm', 'sdtt', 'maskgit', 'tauldr').
      ema: True / False: EMA or raw weights; None: what the reference evaluates with.
      weights_only: torch.load's safety switch for pickles; False only for files you trust.
      **hparams: sizes the file does not record, named as in our model configs (e.g. num_heads, num_classes);
        a value the tensors contradict is an error.
    Returns:
      (Denoiser, params): `denoiser.apply(params, x_t, t, lam, cond)` gives the reference's raw logits.
    """
    entry = FAMILIES.get(family)
    model_config, params = entry.load(Path(path), ema=ema, weights_only=weights_only, **hparams)
    return _denoiser(model_config, params, f"{path} ({family})")


def save_checkpoint(denoiser: Denoiser, params, folder) -> Path:
    """Write `params` + the denoiser's model config as `folder/model.safetensors` + `folder/config.json`;
    `load_checkpoint(folder, 'di4c')` gives them back bit for bit."""
    if denoiser.model_config is None:
        raise ValueError("this Denoiser records no model config (built by hand, not by models.make_denoiser); "
                         "nothing to write beside the weights")
    return ours.save_folder(denoiser.model_config, jax.device_get(params), folder)


def export_checkpoint(denoiser: Denoiser, params, path, family: str) -> Path:
    """Write a file in `family`'s released layout that the reference code loads (e.g. a distilled student)."""
    entry = FAMILIES.get(family)
    if entry.export is None:
        raise ValueError(f"family {family!r} has no exporter")
    if denoiser.model_config is None:
        raise ValueError("this Denoiser records no model config; export needs the architecture")
    entry.export(denoiser.model_config, jax.device_get(params), Path(path))
    return Path(path)


__all__ = ["CheckpointError", "FAMILIES", "Family", "export_checkpoint", "load_checkpoint", "save_checkpoint"]
