"""The 'mdlm' and 'sdtt' families: MDLM's DiT (kuleshov-group/mdlm:models/dit.py), SDTT's copy of it
(jdeschena/sdtt:src/sdtt/models/dit_orig.py) and the Di4C student with the lambda token
(sony/di4c:sdtt/src/sdtt/models/dit_orig.py) <-> the model kind 'dit' with the reference options
(`time_embedding='mdlm'`, `lam_token_gate=False`, `fast_variance=False`).

Files read (both families):
- a Hugging Face folder, `model.safetensors` + `config.json`. 'mdlm': `kuleshov-group/mdlm-owt`, config fields
  `hidden_dim`, `n_blocks`, `n_heads`, `cond_dim`, `vocab_size`, `model_length`, `time_conditioning`. 'sdtt': the
  revisions of `jdeschena/sdtt`, whose config.json is the full Hydra config (`model.hidden_size`, `model.n_blocks`,
  `model.n_heads`, `model.cond_dim`, `model.length`, top-level `time_conditioning`, `is_di4c`); written by
  `PyTorchModelHubMixin` from the Lightning module's state_dict (jdeschena/sdtt:src/sdtt/push_to_hub.py). One set of
  weights.
- a Lightning `.ckpt`: `state_dict` plus `ema = {'decay', 'num_updates', 'shadow_params'}`, the shadow list unnamed
  in `backbone.parameters()` order (kuleshov-group/mdlm:models/ema.py, sony/di4c:sdtt/src/sdtt/core/core.py). MDLM
  evaluates with the EMA (kuleshov-group/mdlm:diffusion.py, `ema.copy_to` before sampling), so `ema=None` means EMA
  for 'mdlm' (raw when the file has no 'ema'); Di4C samples its students with the raw `state_dict` (sony/di4c:sdtt/src/sdtt/core/distill/
  multi_round_sdtt.py, `prepare_teacher_and_student`), so `ema=None` means raw for 'sdtt'.

Keys: `backbone.` + the DIT keys, or `backbone.backbone.` (a run started from the HF model: the `MDLM` wrapper's
`backbone` child); `_orig_mod.` (torch.compile) is removed. `backbone.rotary_emb.inv_freq` is a buffer: it must be
1 / 1e4^(2i/d) and is dropped (our model recomputes it). `backbone.latent_projection.{0,2}.*` (Di4C's
`is_di4c=True` model) make the Denoiser a mixture with the reference's lambda token.

Sizes from the tensors: vocabulary and hidden (vocab_embed.embedding), cond_dim (sigma_map.mlp.0), depth (the block
keys), head dim (rotary_emb.inv_freq). From the config when there is one: model length, time conditioning, dropout
(and the sizes again, checked). Keywords, named as in our model configs (`num_heads`, `num_positions`,
`time_conditioning`, `dropout`, and the sizes as checks), fill what neither records (defaults: the released models'
12 heads, length 1024, no time conditioning, dropout 0.1); a keyword that contradicts the file is an error.

The Denoiser's `apply(params, x_t, t, lam, cond)` is the reference backbone's raw output (before SUBS) at
sigma(t) = -log1p(-(1 - 1e-3) t) (sigma = 0 without time conditioning, as the reference wrappers zero it).
Writing these layouts back: `interop.mdlm_export`.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from di4c_jax.interop.families import FAMILIES, Family, no_extra_hparams
from di4c_jax.interop.files import CheckpointError, read_json, read_safetensors, read_torch
from di4c_jax.interop.keys import StateDict, flatten_params, name_shadow_list, unflatten_params

WEIGHTS, CONFIG = "model.safetensors", "config.json"
ROTARY_BASE = 1e4
EMA_DECAY = 0.9999  # training.ema of both references' configs
DEFAULTS = dict(num_heads=12, num_positions=1024, time_conditioning=False, dropout=0.1)  # the released models
REFERENCE_OPTIONS = dict(time_embedding="mdlm", lam_token_gate=False, fast_variance=False, rotary_base=ROTARY_BASE)
# config.json fields of the HF MDLM (kuleshov-group/mdlm-owt) and of the Hydra configs (sdtt revisions, Lightning
# hyper_parameters['config']), by our model-config name.
HF_FIELDS = dict(hidden="hidden_dim", depth="n_blocks", num_heads="n_heads", cond_dim="cond_dim",
                 num_states="vocab_size", num_positions="model_length", time_conditioning="time_conditioning",
                 dropout="dropout")
HYDRA_FIELDS = dict(hidden="model.hidden_size", depth="model.n_blocks", num_heads="model.n_heads",
                    cond_dim="model.cond_dim", num_positions="model.length", time_conditioning="time_conditioning",
                    dropout="model.dropout", mixture="is_di4c")
KEYWORDS = ("num_states", "hidden", "depth", "num_heads", "cond_dim", "num_positions", "time_conditioning",
            "dropout")
_BLOCK = re.compile(r"blocks\.(\d+)\.")


# ----------------------------------------------------------------------------------------------- the key layout

def layout(cfg: Mapping[str, Any]) -> list[tuple[str, str, str, tuple[int, ...]]]:
    """(reference module key, our param path, kind, PyTorch weight shape) in `named_parameters()` order.

    kind: 'raw' (a bare nn.Parameter), 'linear' (weight (out, in) + bias), 'linear_nobias', 'norm' (weight only).
    """
    v, d, c, m = cfg["num_states"], cfg["hidden"], cfg["cond_dim"], cfg.get("mlp_dim") or 4 * cfg["hidden"]
    rows = [("vocab_embed.embedding", "tok_embed.table", "raw", (v, d)),
            ("sigma_map.mlp.0", "time_in", "linear", (c, cfg.get("time_freq_dim", 256))),
            ("sigma_map.mlp.2", "time_out", "linear", (c, c))]
    for i in range(cfg["depth"]):
        b = f"blocks.{i}"
        rows += [(f"{b}.norm1", f"{b}.norm1", "norm", (d,)),
                 (f"{b}.attn_qkv", f"{b}.qkv", "linear_nobias", (3 * d, d)),
                 (f"{b}.attn_out", f"{b}.attn_out", "linear_nobias", (d, d)),
                 (f"{b}.norm2", f"{b}.norm2", "norm", (d,)),
                 (f"{b}.mlp.0", f"{b}.mlp_in", "linear", (m, d)), (f"{b}.mlp.2", f"{b}.mlp_out", "linear", (d, m)),
                 (f"{b}.adaLN_modulation", f"{b}.adaln", "linear", (6 * d, c))]
    rows += [("output_layer.norm_final", "final_norm", "norm", (d,)),
             ("output_layer.linear", "final_out", "linear", (v, d)),
             ("output_layer.adaLN_modulation", "final_adaln", "linear", (2 * d, c))]
    if cfg.get("lam_style") == "token":
        lf, lh = cfg.get("lam_feature_dim", 128), cfg.get("lam_hidden", 512)
        rows += [("latent_projection.0", "lam_proj.dense_in", "linear", (lh, lf)),
                 ("latent_projection.2", "lam_proj.dense_out", "linear", (d, lh))]
    return rows


def parameter_keys(rows) -> list[tuple[str, tuple[int, ...]]]:
    """The PyTorch parameter names and shapes in `named_parameters()` order (the order of an EMA shadow list)."""
    out = []
    for key, _, kind, shape in rows:
        if kind == "raw":
            out.append((key, shape))
        else:
            out.append((f"{key}.weight", shape))
            if kind == "linear":
                out.append((f"{key}.bias", shape[:1]))
    return out


def inv_freq(head_dim: int) -> np.ndarray:
    """float32[head_dim / 2]: the `Rotary` buffer, 1 / base^(arange(0, d, 2) / d) in float32 as the reference."""
    return (1.0 / (np.float32(ROTARY_BASE) ** (np.arange(0, head_dim, 2, dtype=np.float32) / np.float32(head_dim)))
            ).astype(np.float32)


def to_params(sd: StateDict, rows) -> dict:
    """Our params tree (numpy float32) from the reference tensors, each taken with its checked shape."""
    flat = {}
    for key, path, kind, shape in rows:
        if kind == "raw":
            flat[path] = sd.take(key, shape)
        elif kind == "norm":
            flat[f"{path}.scale"] = sd.take(f"{key}.weight", shape)
        else:
            for name, value in sd.linear(key, shape[1], shape[0], bias=kind == "linear").items():
                flat[f"{path}.{name}"] = value
    return unflatten_params(flat)


def to_torch(params, rows, head_dim: int) -> dict[str, np.ndarray]:
    """The reference state_dict (no prefix, state_dict order: the inv_freq buffer after sigma_map) of our params."""
    flat = {k: np.array(v, np.float32) for k, v in flatten_params(params).items()}  # writable copies
    out = {}
    for key, path, kind, _ in rows:
        if kind == "raw":
            out[key] = flat[path]
        elif kind == "norm":
            out[f"{key}.weight"] = flat[f"{path}.scale"]
        else:
            out[f"{key}.weight"] = flat[f"{path}.kernel"].T
            if kind == "linear":
                out[f"{key}.bias"] = flat[f"{path}.bias"]
        if key == "sigma_map.mlp.2":
            out["rotary_emb.inv_freq"] = inv_freq(head_dim)
    return {k: np.ascontiguousarray(v) for k, v in out.items()}


# ------------------------------------------------------------------------------------------------ reading files

def _config_value(config: Mapping | None, dotted: str) -> Any:
    """config['a']['b'] for 'a.b', None when absent or an unresolved Hydra interpolation ('${...}')."""
    node: Any = config
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return None if isinstance(node, str) and "${" in node else node


def _config_style(config: Mapping | None) -> str | None:
    if isinstance(config, Mapping) and "hidden_dim" in config:
        return "hf"
    if isinstance(_config_value(config, "model"), Mapping) and "hidden_size" in config["model"]:
        return "hydra"
    return None


def _read_folder(path: Path, family: str) -> tuple[dict, dict | None, str]:
    """(tensors, config, config description) of an HF folder or of a bare .safetensors file (+ config.json beside)."""
    folder, weights = (path, path / WEIGHTS) if path.is_dir() else (path.parent, path)
    config_path = folder / CONFIG
    if path.is_dir() and not config_path.is_file():
        raise CheckpointError(f"{folder}: no {CONFIG} beside {WEIGHTS} (a Hugging Face folder has both)")
    config = read_json(config_path) if config_path.is_file() else None
    style = _config_style(config)
    if config is not None and config.get("format") == "di4c-jax":
        raise CheckpointError(f"{config_path}: a di4c-jax export (save_checkpoint): load it with family 'di4c'")
    want, other = ("hf", "sdtt") if family == "mdlm" else ("hydra", "mdlm")
    if config is not None and style != want:
        expected = ("the HF MDLM fields hidden_dim, n_blocks, n_heads, ... (kuleshov-group/mdlm-owt)" if family ==
                    "mdlm" else "the Hydra config of an sdtt revision (model.hidden_size, model.n_blocks, ...)")
        hint = f"; it looks like family {other!r}" if style is not None else ""
        raise CheckpointError(f"{config_path}: expected {expected}, found keys {sorted(config)[:10]}{hint}")
    return read_safetensors(weights), config, str(config_path)


def _read_ckpt(path: Path, weights_only: bool) -> tuple[dict, dict]:
    """(the checkpoint dict, its state_dict) of a Lightning .ckpt, other families' layouts named."""
    obj = read_torch(path, weights_only=weights_only)
    if not isinstance(obj, Mapping) or not isinstance(obj.get("state_dict"), Mapping):
        found = sorted(map(str, obj))[:10] if isinstance(obj, Mapping) else type(obj).__name__
        hint = ""
        if isinstance(obj, Mapping) and "model_state_dict" in obj:
            hint = " (a MaskGIT-pytorch save_network file: family 'maskgit')"
        elif isinstance(obj, Mapping) and "model" in obj and "n_iter" in obj:
            hint = " (a tauLDR checkpoint: family 'tauldr')"
        raise CheckpointError(f"{path}: not a Lightning checkpoint: no 'state_dict' dict, found {found}{hint}")
    return obj, dict(obj["state_dict"])


def _ckpt_config(obj: Mapping) -> dict | None:
    """The Hydra config a Lightning module saved with `save_hyperparameters()`, when it is a readable dict."""
    hp = obj.get("hyper_parameters")
    config = hp.get("config") if isinstance(hp, Mapping) else None
    return config if _config_style(config) == "hydra" else None


def _backbone_prefix(tensors: Mapping[str, Any], source: str) -> str:
    """'backbone.' or 'backbone.backbone.'; every tensor must carry it."""
    keys = list(tensors)
    if not any(k.startswith("backbone.") for k in keys):
        raise CheckpointError(f"{source}: no 'backbone.*' tensors (keys start {sorted(keys)[:6]}): not an MDLM/SDTT "
                              f"DiT checkpoint; another family ('maskgit', 'tauldr', 'di4c')?")
    prefix = "backbone.backbone." if any(k.startswith("backbone.backbone.") for k in keys) else "backbone."
    stray = sorted(k for k in keys if not k.startswith(prefix))
    if stray:
        raise CheckpointError(f"{source}: unexpected key(s) {stray[:8]} beside the {prefix!r} tensors")
    return prefix


# ------------------------------------------------------------------------------------------------------- sizes

def _settle(name: str, found: list[tuple[str, Any]], hparams: dict, source: str) -> Any:
    """The one value of `name` that the tensors, the config and the keyword agree on (None if none records it)."""
    given = hparams.pop(name, None)
    found = [(where, v) for where, v in found + [("keyword argument", given)] if v is not None]
    for where, value in found[1:]:
        if value != found[0][1]:
            raise CheckpointError(f"{source}: {name}={value!r} ({where}) contradicts {name}={found[0][1]!r} "
                                  f"({found[0][0]})")
    return found[0][1] if found else DEFAULTS.get(name)


def _depth(sd: StateDict) -> int:
    blocks = {int(m.group(1)) for k in sd.tensors if k.startswith(sd.prefix)
              and (m := _BLOCK.match(k[len(sd.prefix):]))}
    if not blocks:
        raise CheckpointError(f"{sd.source}: missing key {sd.prefix + 'blocks.0.norm1.weight'!r}: no DiT blocks")
    return max(blocks) + 1  # a gap is a missing key, named by `take`


def dit_config(sd: StateDict, config: Mapping | None, config_name: str, hparams: dict) -> dict:
    """The 'dit' model config of the tensors, the file's config and the keyword arguments (checked against each
    other)."""
    fields = HF_FIELDS if _config_style(config) == "hf" else HYDRA_FIELDS
    from_config = {name: _config_value(config, field) for name, field in fields.items()}
    cfg_src = lambda name: (f"{config_name}: {fields.get(name)}", from_config.get(name))  # noqa: E731

    vocab, hidden = sd.shape("vocab_embed.embedding")
    cond_dim, freq_dim = sd.shape("sigma_map.mlp.0.weight")
    head_dim = None
    if "rotary_emb.inv_freq" in sd:
        (half,) = sd.shape("rotary_emb.inv_freq")
        head_dim = 2 * half
        if hidden % head_dim:
            raise CheckpointError(f"{sd.source}: rotary_emb.inv_freq has {half} entries (head dim {head_dim}), "
                                  f"which does not divide the hidden size {hidden}")
        got, want = sd.take("rotary_emb.inv_freq"), inv_freq(head_dim)
        if not np.allclose(got, want, rtol=1e-6, atol=0):
            raise CheckpointError(f"{sd.source}: {sd.prefix}rotary_emb.inv_freq = {got[:3]}... is not "
                                  f"1/{ROTARY_BASE:g}^(2i/{head_dim}) = {want[:3]}...: another rotary base")
    tensors = lambda what: f"the tensors: {sd.prefix}{what}"  # noqa: E731
    cfg = dict(kind="dit")
    cfg["num_states"] = _settle("num_states", [(tensors("vocab_embed.embedding"), vocab), cfg_src("num_states")],
                                hparams, sd.source)
    cfg["hidden"] = _settle("hidden", [(tensors("vocab_embed.embedding"), hidden), cfg_src("hidden")], hparams,
                            sd.source)
    cfg["depth"] = _settle("depth", [(tensors("blocks.*"), _depth(sd)), cfg_src("depth")], hparams, sd.source)
    cfg["num_heads"] = _settle("num_heads", [(tensors("rotary_emb.inv_freq"), head_dim and hidden // head_dim),
                                             cfg_src("num_heads")], hparams, sd.source)
    if hidden % cfg["num_heads"]:
        raise CheckpointError(f"{sd.source}: hidden size {hidden} is not divisible by num_heads={cfg['num_heads']}")
    cfg["mlp_dim"] = sd.shape("blocks.0.mlp.0.weight")[0]
    cfg["cond_dim"] = _settle("cond_dim", [(tensors("sigma_map.mlp.0.weight"), cond_dim), cfg_src("cond_dim")],
                              hparams, sd.source)
    cfg["time_freq_dim"] = freq_dim
    for name in ("num_positions", "time_conditioning", "dropout"):
        cfg[name] = _settle(name, [cfg_src(name)], hparams, sd.source)
    mixture = "latent_projection.0.weight" in sd
    if from_config.get("mixture") is not None and bool(from_config["mixture"]) != mixture:
        raise CheckpointError(f"{sd.source}: {config_name}: is_di4c={from_config['mixture']!r} contradicts the "
                              f"tensors ({'' if mixture else 'no '}{sd.prefix}latent_projection.*)")
    cfg["lam_style"] = "token" if mixture else None
    if mixture:
        cfg["lam_hidden"], cfg["lam_feature_dim"] = sd.shape("latent_projection.0.weight")
    cfg.update(REFERENCE_OPTIONS)
    return cfg


# ---------------------------------------------------------------------------------------------------- loading

def _ema_state(obj: Mapping, rows, prefix: str, source: str) -> StateDict:
    """The EMA shadow list named by `named_parameters()` order, each shape checked, as a StateDict."""
    ema = obj.get("ema")
    if not isinstance(ema, Mapping) or "shadow_params" not in ema:
        raise CheckpointError(f"{source}: ema=True but the checkpoint has no 'ema' dict with a 'shadow_params' "
                              f"list (found {sorted(obj)[:10]})")
    named = name_shadow_list(ema["shadow_params"], [(prefix + name, shape) for name, shape in parameter_keys(rows)],
                             source=source, what="ema.shadow_params")
    return StateDict(named, source=f"{source} (ema.shadow_params)", prefix=prefix)


def load(path, *, family: str, ema: bool | None = None, weights_only: bool = True, **hparams) -> tuple[dict, dict]:
    """(model config, params) of an MDLM/SDTT file or folder; see the module docstring."""
    path = Path(path)
    source = f"{path} ({family})"
    unknown = sorted(set(hparams) - set(KEYWORDS))
    if unknown:
        no_extra_hparams({k: hparams[k] for k in unknown}, family)
    if path.is_dir() or path.suffix == ".safetensors":
        if ema:
            raise CheckpointError(f"{path}: a Hugging Face folder holds one set of weights; ema=True does not "
                                  f"apply")
        tensors, config, config_name = _read_folder(path, family)
        obj = None
    else:
        obj, tensors = _read_ckpt(path, weights_only)
        config, config_name = _ckpt_config(obj), "hyper_parameters['config']"
    tensors = {k.replace("_orig_mod.", ""): v for k, v in tensors.items()}
    prefix = _backbone_prefix(tensors, source)
    sd = StateDict(tensors, source=source, prefix=prefix)
    cfg = dit_config(sd, config, config_name, hparams)
    rows = layout(cfg)
    params = to_params(sd, rows)
    sd.finish()
    use_ema = (family == "mdlm" and "ema" in obj) if ema is None and obj is not None else bool(ema)
    if use_ema:
        params = to_params(_ema_state(obj, rows, prefix, source), rows)
    return cfg, params


def _export(cfg, params, path, *, family: str) -> None:
    from di4c_jax.interop.mdlm_export import export  # it imports this module's layout

    export(cfg, params, path, family=family)


def _family(name: str, description: str) -> Family:
    return Family(lambda path, **kw: load(path, family=name, **kw),
                  lambda cfg, params, path: _export(cfg, params, path, family=name), description)


FAMILIES.register("mdlm", _family("mdlm", "MDLM DiT: HF folder (kuleshov-group/mdlm-owt) or Lightning .ckpt "
                                          "(ema=None: EMA, as MDLM evaluates)"))
FAMILIES.register("sdtt", _family("sdtt", "SDTT / Di4C DiT: jdeschena/sdtt HF revision folders or Lightning .ckpt "
                                          "incl. Di4C students (ema=None: raw, as Di4C samples)"))
