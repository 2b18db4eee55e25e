"""Key-by-key conversion between a reference state_dict (flat `a.b.c` names, PyTorch layouts) and our params tree.

`StateDict` hands out tensors by key and shape and remembers what was taken, so a converter fails on the first
missing key or wrong shape, and on keys it never used, each named. The layout rules (PyTorch -> Flax):
Linear weight (out, in) -> kernel (in, out); Conv2d weight (O, I, kh, kw) -> kernel (kh, kw, I, O).
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from di4c_jax.interop.files import CheckpointError


class StateDict:
    """A flat {name: array} with checked, tracked access (all names relative to `prefix`)."""

    def __init__(self, tensors: Mapping[str, Any], *, source: str, prefix: str = ""):
        self.tensors = dict(tensors)
        self.source, self.prefix = source, prefix
        self.used: set[str] = set()

    def __contains__(self, key: str) -> bool:
        return self.prefix + key in self.tensors

    def shape(self, key: str) -> tuple[int, ...]:
        """The shape of a tensor (without marking it used): what a converter reads sizes from."""
        full = self.prefix + key
        if full not in self.tensors:
            raise CheckpointError(f"{self.source}: missing key {full!r}")
        return tuple(np.shape(self.tensors[full]))

    def take(self, key: str, shape: Iterable[int] | None = None) -> np.ndarray:
        """The tensor under `prefix + key` as float32 (integer tensors as they are), its shape checked."""
        full = self.prefix + key
        if full not in self.tensors:
            raise CheckpointError(f"{self.source}: missing key {full!r}")
        value = np.asarray(self.tensors[full])
        if shape is not None and tuple(value.shape) != tuple(shape):
            raise CheckpointError(f"{self.source}: key {full!r} has shape {tuple(value.shape)}, expected "
                                  f"{tuple(shape)}")
        self.used.add(full)
        return value.astype(np.float32) if np.issubdtype(value.dtype, np.floating) else value

    def linear(self, key: str, in_features: int, out_features: int, *, bias: bool = True) -> dict[str, np.ndarray]:
        """A PyTorch nn.Linear `key.weight` (out, in) [+ `key.bias`] as {'kernel': (in, out), 'bias'}."""
        out = {"kernel": self.take(f"{key}.weight", (out_features, in_features)).T}
        if bias:
            out["bias"] = self.take(f"{key}.bias", (out_features,))
        return out

    def conv(self, key: str, in_ch: int, out_ch: int, size: int = 3) -> dict[str, np.ndarray]:
        """A PyTorch nn.Conv2d (O, I, kh, kw) + bias as {'kernel': (kh, kw, I, O), 'bias'}."""
        return {"kernel": self.take(f"{key}.weight", (out_ch, in_ch, size, size)).transpose(2, 3, 1, 0),
                "bias": self.take(f"{key}.bias", (out_ch,))}

    def norm(self, key: str, features: int, *, bias: bool = True) -> dict[str, np.ndarray]:
        """A LayerNorm/GroupNorm `key.weight` [+ `key.bias`] as {'scale', 'bias'}."""
        out = {"scale": self.take(f"{key}.weight", (features,))}
        if bias:
            out["bias"] = self.take(f"{key}.bias", (features,))
        return out

    def finish(self, ignore: Iterable[str] = ()) -> None:
        """Raise if a tensor under the prefix was never taken (except the names in `ignore`, prefix included)."""
        ignore = {self.prefix + k for k in ignore}
        left = sorted(k for k in self.tensors if k.startswith(self.prefix) and k not in self.used | ignore)
        if left:
            more = f" (+{len(left) - 8} more)" if len(left) > 8 else ""
            raise CheckpointError(f"{self.source}: unexpected key(s) {left[:8]}{more}: the file holds tensors this "
                                  f"architecture does not have (another family or size?)")


def linear_to_torch(p: Mapping[str, Any], key: str) -> dict[str, np.ndarray]:
    """{'kernel', 'bias'?} -> {key.weight (out, in), key.bias}: the inverse of `StateDict.linear`."""
    out = {f"{key}.weight": np.asarray(p["kernel"]).T}
    if "bias" in p:
        out[f"{key}.bias"] = np.asarray(p["bias"])
    return out


def conv_to_torch(p: Mapping[str, Any], key: str) -> dict[str, np.ndarray]:
    """{'kernel' (kh, kw, I, O), 'bias'} -> {key.weight (O, I, kh, kw), key.bias}."""
    return {f"{key}.weight": np.asarray(p["kernel"]).transpose(3, 2, 0, 1), f"{key}.bias": np.asarray(p["bias"])}


def norm_to_torch(p: Mapping[str, Any], key: str) -> dict[str, np.ndarray]:
    out = {f"{key}.weight": np.asarray(p["scale"])}
    if "bias" in p:
        out[f"{key}.bias"] = np.asarray(p["bias"])
    return out


def flatten_params(params: Mapping[str, Any], sep: str = ".") -> dict[str, np.ndarray]:
    """Nested params dict -> {'a.b.c': array} (numpy, on host)."""
    flat: dict[str, np.ndarray] = {}

    def walk(node, path):
        if isinstance(node, Mapping):
            for k, v in node.items():
                if sep in str(k):
                    raise ValueError(f"param name {k!r} contains the separator {sep!r}")
                walk(v, path + (str(k),))
        else:
            flat[sep.join(path)] = np.asarray(node)

    walk(params, ())
    return flat


def unflatten_params(flat: Mapping[str, Any], sep: str = ".") -> dict[str, Any]:
    """{'a.b.c': array} -> nested dict: the inverse of `flatten_params`."""
    tree: dict[str, Any] = {}
    for name, value in flat.items():
        node = tree
        *parents, leaf = name.split(sep)
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return tree


def name_shadow_list(shadow: Any, named_shapes: list[tuple[str, tuple[int, ...]]], *, source: str,
                     what: str) -> dict[str, np.ndarray]:
    """{name: tensor} of an EMA shadow list (PyTorch keeps it unnamed, in parameter registration order).

    Checks that `shadow` is a list of float tensors, one per (name, shape) of `named_shapes`, each of that shape;
    `what` names the list in the errors (e.g. "ema.shadow_params").
    """
    if not isinstance(shadow, (list, tuple)):
        raise CheckpointError(f"{source}: {what} is a {type(shadow).__name__}, expected a list")
    if len(shadow) != len(named_shapes):
        first = named_shapes[len(shadow)][0] if len(shadow) < len(named_shapes) else "(none)"
        raise CheckpointError(f"{source}: {what} holds {len(shadow)} tensors, the architecture has "
                              f"{len(named_shapes)} parameters (first without a shadow: '{first}')")
    out = {}
    for i, ((name, want), value) in enumerate(zip(named_shapes, shadow)):
        if not isinstance(value, np.ndarray) or not np.issubdtype(value.dtype, np.floating):
            raise CheckpointError(f"{source}: {what}[{i}] (for '{name}') is not a float tensor: "
                                  f"{type(value).__name__}")
        if tuple(value.shape) != tuple(want):
            raise CheckpointError(f"{source}: {what}[{i}] has shape {tuple(value.shape)}, but parameter {i} in "
                                  f"registration order is '{name}' with shape {tuple(want)} (a list in another "
                                  f"order, or of another architecture?)")
        out[name] = value
    return out


def check_tree(params: Mapping[str, Any], expected: Mapping[str, Any], *, source: str) -> None:
    """`params` has exactly the leaves and shapes of `expected` (arrays or jax.ShapeDtypeStruct leaves, e.g.
    `registry.abstract_params(config)`), each difference named."""
    got = {k: tuple(np.shape(v)) for k, v in flatten_params(params).items()}
    want = {k: tuple(v.shape) for k, v in _flat_leaves(expected, ()).items()}
    missing, extra = sorted(set(want) - set(got)), sorted(set(got) - set(want))
    if missing:
        raise CheckpointError(f"{source}: missing parameter(s) {missing[:8]}")
    if extra:
        raise CheckpointError(f"{source}: unexpected parameter(s) {extra[:8]}")
    for k in sorted(want):
        if got[k] != want[k]:
            raise CheckpointError(f"{source}: parameter {k!r} has shape {got[k]}, the model config needs {want[k]}")


def _flat_leaves(tree, path) -> dict[str, Any]:
    if isinstance(tree, Mapping):
        return {k: v for key, sub in tree.items() for k, v in _flat_leaves(sub, path + (str(key),)).items()}
    return {".".join(path): tree}
