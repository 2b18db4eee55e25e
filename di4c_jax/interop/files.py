"""Reading and writing tensor files: safetensors (no torch needed) and PyTorch pickles (optional torch).

Every reader returns plain numpy arrays, so converters never touch torch tensors; every error names the file.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np


class CheckpointError(ValueError):
    """A checkpoint file that cannot be converted: wrong family, missing/unexpected key, wrong shape, bad file."""


def read_safetensors(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """All tensors of a .safetensors file as numpy arrays (copies, so the file can be closed or replaced)."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such safetensors file")
    try:
        return {k: np.array(v) for k, v in load_file(path).items()}
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{path}: not a readable safetensors file (truncated or corrupt?): {err}") from None


def write_safetensors(tensors: Mapping[str, np.ndarray], path: str | os.PathLike,
                      metadata: Mapping[str, str] | None = None) -> None:
    """Write `tensors` atomically (a temporary file renamed into place)."""
    from safetensors.numpy import save_file

    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, tmp,
              metadata=None if metadata is None else dict(metadata))
    os.replace(tmp, path)


def _torch():
    try:
        import torch
    except ImportError:
        raise CheckpointError("reading or writing PyTorch .ckpt/.pth/.pt files needs torch: "
                              "pip install -e .[torch] (safetensors files need no torch)") from None
    return torch


def _to_numpy(obj: Any) -> Any:
    torch = _torch()
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu()
        return t.float().numpy() if t.dtype == torch.bfloat16 else t.numpy()
    # plain containers only: config objects (OmegaConf in Lightning's hyper_parameters) stay as they are, since
    # walking them would resolve their interpolations
    if isinstance(obj, dict):
        return {k: _to_numpy(v) for k, v in obj.items()}
    if type(obj) in (list, tuple):
        return type(obj)(_to_numpy(v) for v in obj)
    return obj


def read_torch(path: str | os.PathLike, *, weights_only: bool = True) -> Any:
    """A torch.save pickle with every tensor as a numpy array (nested dicts/lists kept).

    `weights_only=True` (the default) refuses arbitrary pickled objects; Lightning checkpoints whose
    `hyper_parameters` pickle config objects need `weights_only=False`, only for files you trust.
    """
    torch = _torch()
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=weights_only)
    except Exception as err:  # torch raises RuntimeError, UnpicklingError, EOFError, zipfile errors ...
        hint = ("; if it pickles objects other than tensors (e.g. Lightning hyper_parameters) and you trust it, "
                "pass weights_only=False") if weights_only and "weights_only" in str(err) else ""
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint (truncated or corrupt?): "
                              f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}{hint}") from None
    return _to_numpy(obj)


def _to_torch(obj: Any) -> Any:
    torch = _torch()
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(np.array(obj, order="C", copy=True))  # a copy: torch wants writable memory
    if isinstance(obj, Mapping):
        return {k: _to_torch(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_torch(v) for v in obj)
    return obj


def write_torch(obj: Any, path: str | os.PathLike) -> None:
    """torch.save `obj` with numpy arrays as tensors, atomically."""
    torch = _torch()
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(_to_torch(obj), tmp)
    os.replace(tmp, path)


def read_json(path: str | os.PathLike) -> dict:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path}: not valid JSON: {err}") from None


def write_json(obj: Any, path: str | os.PathLike) -> None:
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)
