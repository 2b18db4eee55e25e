"""The checkpoint-family registry: a family knows one released file layout, both ways.

A family registers a `Family` under its name (its own file, `@FAMILIES.register`-style):
- `load(path, *, ema, weights_only, **hparams) -> (model_config dict, params)`: the model config (a registered
  model kind and its constructor arguments) and a params tree of numpy arrays that `models.make_denoiser(config)`
  takes. `ema`: True/False picks EMA or raw weights, None the reference's own choice. `hparams`: sizes a file does
  not record, named as in our model configs; a value the tensors contradict is an error.
- `export(model_config, params, path)` (optional): the reverse, a file the reference code loads.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

from di4c_jax.registry import Registry

Load = Callable[..., tuple[dict, Any]]
Export = Callable[[dict, Any, Any], None]


@dataclasses.dataclass(frozen=True)
class Family:
    load: Load
    export: Export | None = None
    description: str = ""


FAMILIES: Registry[Family] = Registry("checkpoint family")


def hparam(hparams: dict, name: str, from_tensors: int | None, default: Any, *, source: str) -> Any:
    """A size from the keyword arguments, the tensors, or the released model's default, in that order of authority:
    a keyword that contradicts the tensors is an error naming both."""
    from di4c_jax.interop.files import CheckpointError

    given = hparams.pop(name, None)
    if given is not None and from_tensors is not None and given != from_tensors:
        raise CheckpointError(f"{source}: {name}={given!r} contradicts the tensors, which imply {name}={from_tensors}")
    if given is not None:
        return given
    return default if from_tensors is None else from_tensors


def no_extra_hparams(hparams: dict, family: str) -> None:
    if hparams:
        raise TypeError(f"load_checkpoint(family={family!r}) got unknown keyword argument(s) {sorted(hparams)}")
