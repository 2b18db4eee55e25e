"""Export to the 'mdlm' and 'sdtt' families (the reading side and the key layout: `interop.mdlm`): a Lightning
`.ckpt` or a Hugging Face folder that the references load, from a model of kind 'dit' with the reference options."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np

from di4c_jax.interop.files import CheckpointError, write_json, write_safetensors, write_torch
from di4c_jax.interop.mdlm import CONFIG, EMA_DECAY, ROTARY_BASE, WEIGHTS, layout, parameter_keys, to_torch


def _check_exportable(cfg: Mapping[str, Any], params, family: str) -> dict:
    """The params without the (all-ones) lambda gates, or an error naming what the reference cannot hold."""
    need = dict(kind="dit", num_classes=0, time_embedding="mdlm", time_freq_dim=256, rotary_base=ROTARY_BASE,
                mlp_dim=4 * cfg.get("hidden", 768))
    got = dict(cfg, mlp_dim=cfg.get("mlp_dim") or 4 * cfg.get("hidden", 768))
    defaults = dict(num_classes=0, time_embedding="sinusoid", time_freq_dim=256, rotary_base=ROTARY_BASE)
    for key, want in need.items():
        if got.get(key, defaults.get(key)) != want:
            raise CheckpointError(f"export to {family!r}: the reference DiT needs {key}={want!r}, the model config has "
                                  f"{key}={got.get(key, defaults.get(key))!r}")
    lam = cfg.get("lam_style")
    if lam not in (None, "token") or (lam and family == "mdlm"):
        raise CheckpointError(f"export to {family!r}: lam_style={lam!r} has no reference counterpart"
                              + (" in MDLM (the Di4C lambda token is family 'sdtt')" if lam == "token" else ""))
    if lam and (cfg.get("lam_feature_dim", 128), cfg.get("lam_hidden", 512)) != (128, 512):
        raise CheckpointError(f"export to {family!r}: Di4C's latent_projection is 128 -> 512 -> hidden, the model "
                              f"config has lam_feature_dim={cfg.get('lam_feature_dim')}, lam_hidden="
                              f"{cfg.get('lam_hidden')}")
    params = {k: dict(v) if isinstance(v, Mapping) else v for k, v in params.items()}
    if lam and cfg.get("lam_token_gate", True):
        blocks = {}
        for i, block in params["blocks"].items():
            gate = np.asarray(block["lam_gate"])
            if not np.all(gate == 1):
                raise CheckpointError(f"export to {family!r}: blocks.{i}.lam_gate = {gate.tolist()}; the reference's "
                                      f"lambda token has no gate (gate 1): only lam_token_gate=False or gates of 1 "
                                      f"export exactly")
            blocks[i] = {k: v for k, v in block.items() if k != "lam_gate"}
        params["blocks"] = blocks
    return params


def _hydra_config(cfg: Mapping[str, Any]) -> dict:
    """The Hydra fields the references read (model section, time_conditioning, is_di4c)."""
    return {"model": {"type": "ddit-orig", "hidden_size": cfg["hidden"], "cond_dim": cfg["cond_dim"],
                      "length": cfg["num_positions"], "n_blocks": cfg["depth"], "n_heads": cfg["num_heads"],
                      "scale_by_sigma": True, "dropout": cfg.get("dropout", 0.1), "tie_word_embeddings": False},
            "time_conditioning": bool(cfg.get("time_conditioning", True)),
            "is_di4c": cfg.get("lam_style") == "token"}


def _hf_config(cfg: Mapping[str, Any]) -> dict:
    """config.json of the HF MDLM (kuleshov-group/mdlm-owt); its remote code files are not written."""
    return {"architectures": ["MDLM"], "auto_map": {"AutoConfig": "configuration_mdlm.MDLMConfig",
                                                     "AutoModelForMaskedLM": "modeling_mdlm.MDLM"},
            "model_type": "mdlm", "vocab_size": cfg["num_states"], "model_length": cfg["num_positions"],
            "hidden_dim": cfg["hidden"], "cond_dim": cfg["cond_dim"], "n_blocks": cfg["depth"],
            "n_heads": cfg["num_heads"], "dropout": cfg.get("dropout", 0.1),
            "time_conditioning": bool(cfg.get("time_conditioning", True)), "return_dict": False,
            "torch_dtype": "float32"}


def export(model_config: Mapping[str, Any], params, path, *, family: str) -> None:
    """Write `params` in the reference layout: `path` ending in .ckpt -> a Lightning-style
    `{'state_dict': {'backbone.<key>': tensor}, 'ema': {...}, 'hyper_parameters': {'config': {...}}}` (the EMA
    shadow list equals the weights, so EMA and raw readers see the same model); otherwise a Hugging Face folder,
    `model.safetensors` (`backbone.` keys) + `config.json` ('mdlm': the HF MDLM fields; 'sdtt': the Hydra fields the
    references read, enough for our loader and for sony/di4c's `load_small_student(config=...)`, which takes the
    architecture from its own config). Reading the result back with `load_checkpoint` gives the same params.
    """
    cfg = dict(model_config)
    params = _check_exportable(cfg, params, family)
    head_dim = cfg["hidden"] // cfg["num_heads"]
    rows = layout(cfg)
    state = {f"backbone.{k}": v for k, v in to_torch(params, rows, head_dim).items()}
    path = Path(path)
    if path.suffix == ".ckpt":
        shadow = [state[f"backbone.{name}"].copy() for name, _ in parameter_keys(rows)]
        write_torch({"state_dict": state, "ema": {"decay": EMA_DECAY, "num_updates": 0, "shadow_params": shadow},
                     "hyper_parameters": {"config": _hydra_config(cfg)}}, path)
        return
    path.mkdir(parents=True, exist_ok=True)
    write_safetensors(state, path / WEIGHTS, metadata={"format": "pt"})
    write_json(_hf_config(cfg) if family == "mdlm" else _hydra_config(cfg), path / CONFIG)
