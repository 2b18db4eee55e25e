"""The 'maskgit' family: MaskGIT v1 `.pth` files (teacher `MaskGIT_ImageNet_256.pth`, Di4C student
`maskgit-di4c-d.pth`) <-> the model kind 'maskgit_v1'.

File: a torch pickle `{'iter', 'global_epoch', 'model_state_dict', 'optimizer_state_dict'}` written by
`Trainer.save_network` (valeoai/Maskgit-pytorch:Trainer/trainer.py; sony/di4c:maskgit-pytorch/Trainer/trainer.py);
`model_state_dict` holds the `MaskTransformer` keys without prefix (valeoai/Maskgit-pytorch:Network/transformer.py
at 32062fa), plus `latent_projection.{0,2}.*` for the Di4C student (sony/di4c:maskgit-pytorch/Network/transformer.py).
The reference reads it with `torch.load` and `load_state_dict(checkpoint['model_state_dict'], strict=False)` after
taking 'iter' and 'global_epoch' (sony/di4c:maskgit-pytorch/Trainer/vit.py `get_network`). There is no EMA.

Sizes from the tensors: hidden (tok_emb), depth (the transformer.layers indices), positions (pos_emb rows - 1),
mlp (net.0), the lambda projection (latent_projection.0). Not recorded: `num_heads` (16 in the released model) and
the split of the tok_emb rows V = num_states + num_classes + 1 (`num_classes`, 1000 in the released model).
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from di4c_jax.interop.families import FAMILIES, Family, hparam, no_extra_hparams
from di4c_jax.interop.files import CheckpointError, read_torch, write_torch
from di4c_jax.interop.keys import StateDict, linear_to_torch, norm_to_torch

KIND = "maskgit_v1"
NUM_HEADS, NUM_CLASSES = 16, 1000  # the released ImageNet-256 model (sony/di4c:maskgit-pytorch/Trainer/vit.py)
_LAYER = re.compile(r"transformer\.layers\.(\d+)\.")
_FIRST = {"first_norm_in": 0, "first_dense_in": 2, "first_norm_mid": 4, "first_dense_out": 6}
_LAST = {"last_norm_in": 0, "last_dense": 2, "last_norm_out": 4}


def _state_dict(obj: Any, source: str) -> Mapping[str, np.ndarray]:
    if not isinstance(obj, Mapping) or "model_state_dict" not in obj:
        found = sorted(map(str, obj)) if isinstance(obj, Mapping) else type(obj).__name__
        raise CheckpointError(f"{source}: not a MaskGIT checkpoint: expected a dict with key 'model_state_dict' "
                              f"(MaskGIT-pytorch save_network), found {found}; another family ('mdlm', 'sdtt', "
                              f"'tauldr', 'di4c')?")
    sd = obj["model_state_dict"]
    if not isinstance(sd, Mapping) or "tok_emb.weight" not in sd:
        keys = sorted(sd)[:6] if isinstance(sd, Mapping) else type(sd).__name__
        raise CheckpointError(f"{source}: 'model_state_dict' has no key 'tok_emb.weight' (a MaskGIT v1 "
                              f"MaskTransformer's); its keys start {keys}")
    return sd


def _depth(sd: StateDict) -> int:
    layers = {int(m.group(1)) for k in sd.tensors if (m := _LAYER.match(k))}
    if not layers:
        raise CheckpointError(f"{sd.source}: no 'transformer.layers.<i>.*' keys: not a MaskGIT v1 MaskTransformer")
    return max(layers) + 1  # a gap is a missing key, named by `take`


def _sizes(sd: StateDict, hparams: dict, source: str) -> dict:
    """The model config of the tensors and the keyword arguments (which the tensors must not contradict)."""
    vocab, hidden = sd.shape("tok_emb.weight")
    pos = sd.shape("pos_emb")
    if len(pos) != 3 or pos[0] != 1 or pos[1] < 2:
        raise CheckpointError(f"{source}: key 'pos_emb' has shape {pos}, expected (1, positions + 1, {hidden})")
    given_states = hparams.get("num_states")
    num_classes = hparam(hparams, "num_classes", None, NUM_CLASSES if given_states is None else
                         vocab - 1 - given_states, source=source)
    num_states = hparam(hparams, "num_states", vocab - 1 - num_classes, None, source=source)
    if num_classes < 0 or num_states < 2:
        raise CheckpointError(f"{source}: 'tok_emb.weight' has {vocab} rows = codes + 1 + num_classes + 1; "
                              f"num_classes={num_classes} leaves {num_states - 1} codes: pass the file's num_classes")
    cfg = dict(kind=KIND, num_states=num_states, num_classes=num_classes,
               hidden=hparam(hparams, "hidden", hidden, None, source=source),
               depth=hparam(hparams, "depth", _depth(sd), None, source=source),
               num_positions=hparam(hparams, "num_positions", pos[1] - 1, None, source=source),
               mlp_dim=hparam(hparams, "mlp_dim", sd.shape("transformer.layers.0.1.fn.net.0.weight")[0], None,
                              source=source),
               num_heads=hparam(hparams, "num_heads", None, NUM_HEADS, source=source),
               dropout=hparam(hparams, "dropout", None, 0.1, source=source),
               lam_style=None, compute_dtype=None, remat="none")
    if hidden % cfg["num_heads"]:
        raise CheckpointError(f"{source}: hidden size {hidden} (tok_emb.weight) is not divisible by "
                              f"num_heads={cfg['num_heads']}")
    if "latent_projection.0.weight" in sd:
        lam_hidden, lam_features = sd.shape("latent_projection.0.weight")
        cfg.update(lam_style="token", lam_feature_dim=lam_features, lam_hidden=lam_hidden)
    return cfg


def _block(sd: StateDict, i: int, hidden: int, mlp: int) -> dict:
    p = f"transformer.layers.{i}."
    return {
        "attn_norm": sd.norm(p + "0.norm", hidden),
        "qkv": {"kernel": sd.take(p + "0.fn.mha.in_proj_weight", (3 * hidden, hidden)).T,
                "bias": sd.take(p + "0.fn.mha.in_proj_bias", (3 * hidden,))},
        "attn_out": sd.linear(p + "0.fn.mha.out_proj", hidden, hidden),
        "mlp_norm": sd.norm(p + "1.norm", hidden),
        "mlp_in": sd.linear(p + "1.fn.net.0", hidden, mlp),
        "mlp_out": sd.linear(p + "1.fn.net.3", mlp, hidden),
    }


def params_from_state_dict(sd: StateDict, cfg: dict) -> dict:
    """A MaskTransformer state_dict -> the 'maskgit_v1' params tree of `cfg` (every tensor taken and checked)."""
    h, n = cfg["hidden"], cfg["num_positions"]
    vocab = cfg["num_states"] + cfg["num_classes"] + 1
    params = {
        "tok_emb": {"table": sd.take("tok_emb.weight", (vocab, h))},
        "pos_emb": sd.take("pos_emb", (1, n + 1, h))[0],
        "bias": sd.take("bias", (n + 1, vocab)),
        "blocks": {str(i): _block(sd, i, h, cfg["mlp_dim"]) for i in range(cfg["depth"])},
    }
    for name, idx in _FIRST.items():
        params[name] = (sd.linear(f"first_layer.{idx}", h, h) if "dense" in name
                        else sd.norm(f"first_layer.{idx}", h))
    for name, idx in _LAST.items():
        params[name] = sd.linear(f"last_layer.{idx}", h, h) if "dense" in name else sd.norm(f"last_layer.{idx}", h)
    if cfg["lam_style"] == "token":
        f, lh = cfg["lam_feature_dim"], cfg["lam_hidden"]
        params["lam_proj"] = {"dense_in": sd.linear("latent_projection.0", f, lh),
                              "dense_out": sd.linear("latent_projection.2", lh, h)}
    sd.finish()
    return params


def load(path: Path, *, ema: bool | None = None, weights_only: bool = True, **hparams) -> tuple[dict, dict]:
    """(model config of kind 'maskgit_v1', params) of a MaskGIT v1 / Di4C maskgit `.pth` file."""
    source = str(path)
    if ema:
        raise CheckpointError(f"{source}: MaskGIT-pytorch v1 and the Di4C maskgit fork keep no EMA weights "
                              f"(the file holds one set, 'model_state_dict'); ema=True does not apply")
    sd = StateDict(_state_dict(read_torch(path, weights_only=weights_only), source), source=source)
    cfg = _sizes(sd, hparams, source)
    no_extra_hparams(hparams, "maskgit")
    return cfg, params_from_state_dict(sd, cfg)


def state_dict_from_params(model_config: Mapping[str, Any], params: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """The inverse of `params_from_state_dict`, in the reference's `named_parameters()` order, float32."""
    if model_config.get("kind") != KIND:
        raise ValueError(f"the 'maskgit' family exports model kind {KIND!r}, got {model_config.get('kind')!r}")
    sd = {"pos_emb": np.asarray(params["pos_emb"])[None], "bias": np.asarray(params["bias"]),
          "tok_emb.weight": np.asarray(params["tok_emb"]["table"])}
    for name, idx in _FIRST.items():
        to_torch = linear_to_torch if "dense" in name else norm_to_torch
        sd.update(to_torch(params[name], f"first_layer.{idx}"))
    blocks = params["blocks"]
    for i in range(len(blocks)):
        b, p = blocks[str(i)], f"transformer.layers.{i}."
        sd.update(norm_to_torch(b["attn_norm"], p + "0.norm"))
        sd[p + "0.fn.mha.in_proj_weight"] = np.asarray(b["qkv"]["kernel"]).T
        sd[p + "0.fn.mha.in_proj_bias"] = np.asarray(b["qkv"]["bias"])
        sd.update(linear_to_torch(b["attn_out"], p + "0.fn.mha.out_proj"))
        sd.update(norm_to_torch(b["mlp_norm"], p + "1.norm"))
        sd.update(linear_to_torch(b["mlp_in"], p + "1.fn.net.0"))
        sd.update(linear_to_torch(b["mlp_out"], p + "1.fn.net.3"))
    for name, idx in _LAST.items():
        to_torch = linear_to_torch if "dense" in name else norm_to_torch
        sd.update(to_torch(params[name], f"last_layer.{idx}"))
    if model_config.get("lam_style") == "token":
        sd.update(linear_to_torch(params["lam_proj"]["dense_in"], "latent_projection.0"))
        sd.update(linear_to_torch(params["lam_proj"]["dense_out"], "latent_projection.2"))
    return {k: np.array(v, dtype=np.float32, order="C") for k, v in sd.items()}  # writable copies for torch


def export(model_config: Mapping[str, Any], params: Mapping[str, Any], path: Path) -> None:
    """Write `{'iter': 0, 'global_epoch': 0, 'model_state_dict'}`: what the reference's `get_network` reads (no
    optimizer state). The reference builds the student with `is_student=True` iff lam_style is 'token'."""
    write_torch({"iter": 0, "global_epoch": 0, "model_state_dict": state_dict_from_params(model_config, params)},
                path)


FAMILIES.register("maskgit", Family(load, export, "MaskGIT v1 .pth (MaskGIT_ImageNet_256.pth; Di4C "
                                    "maskgit-di4c-d.pth with latent_projection -> a mixture denoiser)"))
