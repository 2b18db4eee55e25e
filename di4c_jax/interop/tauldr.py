"""Family 'tauldr': tauLDR U-Net checkpoints (.pt), the CIFAR-10 teacher and the Di4C student, both ways.

The file is what andrew-cr/tauLDR:lib/utils/bookkeeping.py `save_checkpoint` writes (sony/di4c:tauldr the same):
a torch pickle `{'model': state_dict, 'optimizer': ..., 'n_iter': int}` whose state_dict is the EMA mixin's
(lib/models/models.py `EMA.state_dict`): the `net.*` tensors (`net.module.*` when trained under DDP, as the
released teacher `ckpt_0001999999.pt`; rewritten as lib/utils/utils.py `remove_module_from_keys` does) plus
`ema_decay`, `ema_num_updates` and `ema_shadow_params`, a list in `model.parameters()` order. The reference
evaluates with that list (`model.eval()` copies it into the parameters), so `ema=None` reads it; `ema=False` reads
the raw `net.*` tensors (the training weights, which Di4C fine-tunes its student from).

Sizes the tensors fix (ch, channels, ch_mult, num_res_blocks, where attention sits, the time embedding width, the
lambda paths of the student) are read from them; the rest defaults to the released CIFAR-10 model's
(num_states 256, resolution 32, dropout 0.1, skip_rescale True) and can be given as keywords.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import re
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from di4c_jax.interop.families import FAMILIES, Family, hparam, no_extra_hparams
from di4c_jax.interop.files import CheckpointError, read_torch, write_torch
from di4c_jax.interop.keys import StateDict, check_tree, name_shadow_list, unflatten_params

EMA_KEYS = ("ema_decay", "ema_num_updates", "ema_shadow_params")
EMA_DECAY = 0.9999  # the released configs' model.ema_decay

# The released CIFAR-10 model (andrew-cr/tauLDR:config/train/cifar10.py) for what a file does not record.
RELEASED = dict(num_states=256, channels=3, resolution=32, ch=128, ch_mult=(1, 2, 2, 2), num_res_blocks=2,
                attn_resolutions=(16,), dropout=0.1, skip_rescale=True)


@dataclasses.dataclass(frozen=True)
class Tensor:
    """One reference parameter: its name under `net.`, our params path and the layout rule between them.

    kind: 'linear' (weight (out, in) <-> kernel (in, out)), 'conv' ((O, I, kh, kw) <-> (kh, kw, I, O)),
    'nin' (tauLDR's NiN.W, stored (in, out) <-> 1x1 kernel (1, 1, in, out)) or 'copy'.
    """

    key: str
    path: tuple[str, ...]
    kind: str


def to_ours(kind: str, value: np.ndarray) -> np.ndarray:
    """A reference tensor in our layout (see `Tensor.kind`)."""
    if kind == "linear":
        return value.T
    if kind == "conv":
        return value.transpose(2, 3, 1, 0)
    return value[None, None] if kind == "nin" else value


def to_torch(kind: str, value: np.ndarray) -> np.ndarray:
    """One of our params in the reference's layout: the inverse of `to_ours`."""
    if kind == "linear":
        return value.T
    if kind == "conv":
        return value.transpose(3, 2, 0, 1)
    return value[0, 0] if kind == "nin" else value


def torch_shape(kind: str, shape: tuple[int, ...]) -> tuple[int, ...]:
    """The reference's shape of a tensor whose params shape is `shape`."""
    return to_torch(kind, np.empty(shape, np.uint8)).shape


def _module(key: str, path: tuple, names: tuple[tuple[str, str, str], ...]) -> list[Tensor]:
    return [Tensor(f"{key}.{ref}", path + (ours,), kind) for ref, ours, kind in names]


def _linear(key, path):
    return _module(key, path, (("weight", "kernel", "linear"), ("bias", "bias", "copy")))


def _conv(key, path):
    return _module(key, path, (("weight", "kernel", "conv"), ("bias", "bias", "copy")))


def _norm(key, path):
    return _module(key, path, (("weight", "scale", "copy"), ("bias", "bias", "copy")))


def _nin(key, path):
    return _module(key, path, (("W", "kernel", "nin"), ("b", "bias", "copy")))


def _resblock(key, path, node) -> list[Tensor]:
    """ResBlock in registration order: groupnorm0, conv0, dense0, dense1 (student), groupnorm1, conv1, nin."""
    out = _norm(f"{key}.groupnorm0", path + ("norm0",)) + _conv(f"{key}.conv0", path + ("conv0",))
    out += _linear(f"{key}.dense0", path + ("dense0",))
    if "dense1" in node:
        out += _linear(f"{key}.dense1", path + ("dense1",))
    out += _norm(f"{key}.groupnorm1", path + ("norm1",)) + _conv(f"{key}.conv1", path + ("conv1",))
    return out + (_nin(f"{key}.nin", path + ("nin",)) if "nin" in node else [])


def _attnblock(key, path) -> list[Tensor]:
    out = _norm(f"{key}.GroupNorm_0", path + ("norm",))
    for i, name in enumerate(("q", "k", "v", "out")):
        out += _nin(f"{key}.NIN_{i}", path + (name,))
    return out


def _blocks(ref_name: str, our_name: str, tree) -> list[Tensor]:
    """A reference nn.ModuleList against our nnx.List (whose None slots, no attention there, hold no params)."""
    out, ref_index = [], 0
    for index in sorted(tree[our_name], key=int):
        node, key, path = tree[our_name][index], f"{ref_name}.{ref_index}", (our_name, index)
        if "conv0" in node:
            out += _resblock(key, path, node)
        elif "q" in node:
            out += _attnblock(key, path)
        else:                                            # Downsample / Upsample: one 3x3 conv
            out += _conv(f"{key}.conv", path)
        ref_index += 1
    return out


def layout(tree: Mapping[str, Any]) -> list[Tensor]:
    """Every reference parameter of our U-Net params tree (arrays or shape structs), in the reference's
    registration order (= `parameters()` = the EMA shadow list = the state_dict order, which has no buffers):
    temb_modules, lemb_modules, hlemb_modules, tlam_mix, input_conv, downsampling_modules, h_t_lam_mix,
    middle_modules, upsampling_modules, output_modules (sony/di4c:tauldr/lib/networks/networks.py `UNet`)."""
    student = "lam_down" in tree
    if student and "lam_up" not in tree:
        raise ValueError("a U-Net with lam_hidden_mix=False has no tauLDR counterpart (the reference mixes the "
                         "bottleneck into the middle and up path's lambda embedding)")
    out = _linear("temb_modules.0", ("temb0",)) + _linear("temb_modules.1", ("temb1",))
    if student:
        out += _linear("lemb_modules.0", ("lam_down", "dense0")) + _linear("lemb_modules.1", ("lam_down", "dense1"))
        out += _linear("hlemb_modules.0", ("lam_up", "dense0")) + _linear("hlemb_modules.1", ("lam_up", "dense1"))
        out += _linear("tlam_mix", ("lam_down", "mix"))
    out += _conv("input_conv", ("conv_in",)) + _blocks("downsampling_modules", "down", tree)
    if student:
        out += _linear("h_t_lam_mix", ("lam_up", "mix"))
    out += _blocks("middle_modules", "mid", tree) + _blocks("upsampling_modules", "up", tree)
    return out + _norm("output_modules.0", ("norm_out",)) + _conv("output_modules.1", ("conv_out",))


@functools.lru_cache(maxsize=8)
def _shapes(config_json: str):
    """Our params' shape structs for a config (as JSON): an abstract build costs seconds, a checkpoint often repeats."""
    from di4c_jax.models import abstract_params

    return abstract_params(json.loads(config_json))


def shapes_of(config: Mapping[str, Any]):
    """jax.ShapeDtypeStruct tree of a U-Net config's params (cached)."""
    return _shapes(json.dumps(dict(config), sort_keys=True, default=list))


def _leaf(tree, path):
    for part in path:
        tree = tree[part]
    return tree


# ------------------------------------------------------------------------------------------------ reading


def _read_state(path: Path, weights_only: bool) -> dict[str, Any]:
    """The file's `model` dict with `.module.` removed from its keys."""
    if path.is_dir() or path.suffix == ".safetensors":
        raise CheckpointError(f"{path}: a tauLDR checkpoint is a single torch pickle (.pt); this is a "
                              f"{'folder' if path.is_dir() else 'safetensors file'} (family 'di4c', 'mdlm' or "
                              f"'sdtt'?)")
    obj = read_torch(path, weights_only=weights_only)
    state = obj.get("model") if isinstance(obj, Mapping) else None
    if not isinstance(state, Mapping) or not any(str(k).startswith("net.") for k in state):
        top = sorted(map(str, obj))[:8] if isinstance(obj, Mapping) else type(obj).__name__
        hint = ("; 'model_state_dict' is MaskGIT's layout (family 'maskgit')" if "model_state_dict" in top else
                "; 'state_dict' is a Lightning checkpoint (family 'mdlm' or 'sdtt')" if "state_dict" in top else "")
        raise CheckpointError(f"{path}: not a tauLDR checkpoint: expected {{'model': {{'net.<name>': tensor, ...}}, "
                              f"...}} (tauLDR's save_checkpoint), found top-level {top}{hint}")
    out: dict[str, Any] = {}
    for key, value in state.items():
        new = key.replace(".module.", ".")
        if new in out:
            raise CheckpointError(f"{path}: keys {key!r} and another both become {new!r} without '.module.'")
        out[new] = value
    return out


def _down_path(state: Mapping[str, Any], source: str) -> list[tuple[str, int]]:
    """downsampling_modules as [('res', out_ch) | ('attn', 0) | ('down', 0)] from the keys."""
    indices = {int(m.group(1)) for k in state if (m := re.match(r"net\.downsampling_modules\.(\d+)\.", k))}
    kinds = []
    for i in range(max(indices, default=-1) + 1):
        key = f"net.downsampling_modules.{i}"
        if f"{key}.conv0.weight" in state:
            kinds.append(("res", int(np.shape(state[f"{key}.conv0.weight"])[0])))
        elif f"{key}.GroupNorm_0.weight" in state:
            kinds.append(("attn", 0))
        elif f"{key}.conv.weight" in state:
            kinds.append(("down", 0))
        else:
            raise CheckpointError(f"{source}: {key} is not a ResBlock (conv0.weight), AttnBlock (GroupNorm_0.weight) "
                                  f"or Downsample (conv.weight)")
    if not kinds or kinds[0][0] != "res":
        raise CheckpointError(f"{source}: the down path does not start with a ResBlock (downsampling_modules.0)")
    return kinds


def _shape(state, key: str, rank: int, source: str) -> tuple[int, ...]:
    if f"net.{key}" not in state:
        raise CheckpointError(f"{source}: missing key 'net.{key}'")
    shape = tuple(np.shape(state[f"net.{key}"]))
    if len(shape) != rank:
        raise CheckpointError(f"{source}: key 'net.{key}' has shape {shape}, expected {rank} dimensions")
    return shape


def _lam_style(state, hparams: dict, source: str) -> str | None:
    """'embed' for a Di4C student (its lambda paths), None for a teacher; a contradicting keyword is an error."""
    implied = "embed" if "net.tlam_mix.weight" in state else None
    given = hparams.pop("lam_style", implied)
    if given != implied:
        raise CheckpointError(f"{source}: lam_style={given!r} contradicts the tensors, which imply "
                              f"lam_style={implied!r}")
    return implied


def unet_config(state: Mapping[str, Any], hparams: dict, *, source: str) -> dict:
    """Our U-Net config of a (module-free) tauLDR state_dict: sizes from the tensors, the rest from `hparams`
    (popped) or the released model; a keyword the tensors contradict is an error."""
    for name in ("ch_mult", "attn_resolutions"):
        if hparams.get(name) is not None:
            hparams[name] = tuple(hparams[name])
    ch, channels = _shape(state, "input_conv.weight", 4, source)[:2]
    embed_dim = _shape(state, "temb_modules.0.weight", 2, source)[1]
    levels: list[list[tuple[str, int]]] = [[]]
    for kind in _down_path(state, source):                # Downsample modules separate the levels
        if kind[0] == "down":
            levels.append([])
        else:
            levels[-1].append(kind)
    res_outs = [[out for kind, out in level if kind == "res"] for level in levels]
    if not all(res_outs) or any(out % ch for level in res_outs for out in level):
        raise CheckpointError(f"{source}: down-path ResBlock widths {res_outs} are not whole multiples of ch={ch} "
                              f"at every level")
    resolution = hparam(hparams, "resolution", None, RELEASED["resolution"], source=source)
    attn = tuple(resolution // 2 ** i for i, level in enumerate(levels) if any(k == "attn" for k, _ in level))
    config = dict(
        kind="unet",
        num_states=hparam(hparams, "num_states", None, RELEASED["num_states"], source=source),
        channels=hparam(hparams, "channels", channels, RELEASED["channels"], source=source),
        resolution=resolution,
        ch=hparam(hparams, "ch", ch, RELEASED["ch"], source=source),
        ch_mult=hparam(hparams, "ch_mult", tuple(level[0] // ch for level in res_outs), None, source=source),
        num_res_blocks=hparam(hparams, "num_res_blocks", len(res_outs[0]), None, source=source),
        attn_resolutions=hparam(hparams, "attn_resolutions", attn, None, source=source),
        dropout=hparam(hparams, "dropout", None, RELEASED["dropout"], source=source),
        skip_rescale=hparam(hparams, "skip_rescale", None, RELEASED["skip_rescale"], source=source),
        lam_style=_lam_style(state, hparams, source),
        time_embed_dim=hparam(hparams, "time_embed_dim", embed_dim, None, source=source),
        compute_dtype=hparams.pop("compute_dtype", None),
        remat=hparams.pop("remat", "none"),
    )
    if any(len(level) != config["num_res_blocks"] for level in res_outs):
        raise CheckpointError(f"{source}: the levels of the down path hold {[len(x) for x in res_outs]} ResBlocks; "
                              f"a U-Net has the same number at every level")
    if config["time_embed_dim"] == config["ch"]:
        config["time_embed_dim"] = None                  # our default: E = ch
    return config


def _shadow(state: Mapping[str, Any], entries: list[Tensor], expected: dict, source: str) -> list[np.ndarray]:
    """The EMA shadow list, checked entry by entry against the reference's registration order."""
    if "ema_shadow_params" not in state:
        raise CheckpointError(f"{source}: no 'ema_shadow_params' (the EMA weights the reference evaluates with); "
                              f"pass ema=False for the raw net.* weights")
    named = name_shadow_list(state["ema_shadow_params"], [(f"net.{e.key}", expected[e.key]) for e in entries],
                             source=source, what="ema_shadow_params")
    return [value.astype(np.float32) for value in named.values()]


def load(path: Path, *, ema: bool | None = None, weights_only: bool = True, **hparams) -> tuple[dict, dict]:
    """(model config, params) of a tauLDR `.pt`: EMA weights for ema None/True, raw `net.*` for ema False.

    hparams (our model config's names): num_states, resolution, dropout, skip_rescale (not in the file; the
    released model's by default), ch, channels, ch_mult, num_res_blocks, attn_resolutions, time_embed_dim,
    lam_style (implied by the tensors: a different value is an error), compute_dtype, remat (passed through).
    Every `net.*` tensor is checked by name and shape whichever weights are used; the shadow list by length
    and, position by position, against the shapes of the parameters in registration order.
    """
    source = str(path)
    state = _read_state(Path(path), weights_only)
    config = unet_config(state, hparams, source=source)
    no_extra_hparams(hparams, "tauldr")
    shapes = shapes_of(config)
    entries = layout(shapes)
    expected = {e.key: torch_shape(e.kind, _leaf(shapes, e.path).shape) for e in entries}
    tensors = StateDict(state, source=source, prefix="net.")
    raw = [tensors.take(e.key, expected[e.key]) for e in entries]   # every net.* key checked, whichever is used
    tensors.finish()
    others = sorted(k for k in state if not k.startswith("net.") and k not in EMA_KEYS)
    if others:
        raise CheckpointError(f"{source}: unexpected key(s) {others[:8]} in 'model' beside net.* and the EMA entries")
    values = raw if ema is False else _shadow(state, entries, expected, source)
    flat = {".".join(e.path): np.ascontiguousarray(to_ours(e.kind, v)) for e, v in zip(entries, values)}
    return config, unflatten_params(flat)


# ------------------------------------------------------------------------------------------------ writing


def export(model_config: dict, params, path: Path) -> None:
    """Write `params` of a U-Net config as a tauLDR `.pt` (keys `net.*`, the EMA shadow list equal to them,
    ema_decay 0.9999, ema_num_updates 0, an empty 'optimizer' and n_iter 0) that the reference's loaders read.

    The reference must be configured to match: data.S = num_states, data_min_max = (0, num_states - 1), data.shape
    = (channels, resolution, resolution), time_embed_dim, and attention at one level (`scale_count_to_put_attn`).
    """
    config = dict(model_config)
    if config.get("kind") != "unet":
        raise ValueError(f"family 'tauldr' holds tauLDR U-Nets; this model config is kind={config.get('kind')!r}")
    levels = len(config.get("ch_mult", RELEASED["ch_mult"]))
    res = config.get("resolution", RELEASED["resolution"])
    attn = [r for r in config.get("attn_resolutions", ()) if r in {res // 2 ** i for i in range(levels)}]
    if len(attn) > 1:
        raise ValueError(f"the reference U-Net puts attention at one level (scale_count_to_put_attn); "
                         f"attn_resolutions={tuple(attn)} has {len(attn)}")
    if config.get("lam_style") is not None and not config.get("lam_hidden_mix", True):
        raise ValueError("a U-Net with lam_hidden_mix=False has no tauLDR counterpart (the reference mixes the "
                         "bottleneck into the middle and up path's lambda embedding)")
    check_tree(params, shapes_of(config), source="export(tauldr)")
    entries = layout(params)
    net = {f"net.{e.key}": to_torch(e.kind, np.asarray(_leaf(params, e.path), np.float32)) for e in entries}
    state = dict(net, ema_decay=EMA_DECAY, ema_num_updates=0, ema_shadow_params=list(net.values()))
    write_torch({"model": state, "optimizer": {}, "n_iter": 0}, path)


FAMILIES.register("tauldr", Family(load, export, "tauLDR / Di4C U-Net .pt (andrew-cr/tauLDR, sony/di4c:tauldr): "
                                                 "{'model': net.* + EMA shadow list, 'optimizer', 'n_iter'}"))

__all__ = ["RELEASED", "Tensor", "export", "layout", "load", "unet_config"]
