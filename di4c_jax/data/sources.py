"""Random-access sources that yield {'x0': int32[D], 'label': int32} and the `DataInfo` that describes them.

A source is anything with `__len__` and `__getitem__(int)` (grain's RandomAccessDataSource protocol), so it can
feed `grain.MapDataset.source`. User arrays (a `.npy` file or any int array, e.g. a synthetic language) enter here.
"""
import dataclasses
import os
from collections.abc import Callable
from typing import Any

import numpy as np

from di4c_jax.data.validate import check_integer_tokens, validate_tokens

MAX_INFERRED_VOCAB = 1 << 20  # an inferred vocabulary above this is almost surely un-indexed ids (hashes, offsets)


@dataclasses.dataclass(frozen=True)
class DataInfo:
    """What a model needs to know about a dataset.

    vocab_size: S, number of data states (ids 0..S-1).
    shape: shape of one example before flattening, e.g. (1, 8, 8) (C, H, W) or (D,); x0 has prod(shape) entries.
    num_classes: number of label classes, 0 when the dataset has no labels.
    decode: for text, int[D] -> str; None otherwise.
    """

    name: str
    vocab_size: int
    shape: tuple[int, ...]
    num_classes: int = 0
    decode: Callable[[np.ndarray], str] | None = None

    @property
    def num_dims(self) -> int:
        """D, the length of a flattened example."""
        return int(np.prod(self.shape))


class ArraySource:
    """In-memory source over tokens int[num, D] and optional labels int[num]."""

    def __init__(self, x0: np.ndarray, labels: np.ndarray | None = None):
        self._x0 = check_integer_tokens(x0, ndim=2, what="x0").astype(np.int32)
        self._labels = None
        if labels is not None:
            self._labels = check_integer_tokens(labels, ndim=1, what="labels").astype(np.int32)
            if len(self._labels) != len(self._x0):
                raise ValueError(f"got {len(self._labels)} labels for {len(self._x0)} examples")

    def __len__(self) -> int:
        return len(self._x0)

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        example = {"x0": self._x0[index]}
        if self._labels is not None:
            example["label"] = self._labels[index]
        return example


class TransformedSource:
    """`fn(base[i])` for every index: turns raw records (e.g. from tfds) into {'x0', 'label'} dicts.

    `fn` should be a module-level function (or functools.partial of one) so that the source stays picklable for
    grain worker processes.
    """

    def __init__(self, base: Any, fn: Callable[[Any], dict[str, np.ndarray]]):
        self._base = base
        self._fn = fn

    def __len__(self) -> int:
        return len(self._base)

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        return self._fn(self._base[index])

    def __repr__(self) -> str:
        return f"TransformedSource({self._base!r}, {getattr(self._fn, '__name__', self._fn)!r})"


def array_dataset(
    x0: np.ndarray,
    *,
    vocab_size: int | None = None,
    labels: np.ndarray | None = None,
    num_classes: int | None = None,
    name: str = "array",
) -> tuple[ArraySource, DataInfo]:
    """Wraps int tokens [num, D] (e.g. a synthetic language) as a source.

    vocab_size: inferred as max + 1 when None; when given, every id must lie in [0, vocab_size).
    num_classes: inferred as max label + 1 when labels are given and num_classes is None.

    Raises:
      ValueError: non-integer dtype, ndim != 2, empty array, negative ids, or ids >= the given vocab_size.
    """
    x0 = check_integer_tokens(x0, ndim=2, what=f"{name} tokens")
    if x0.size == 0:
        raise ValueError(f"{name} tokens are empty: shape {x0.shape}; expected int tokens [num >= 1, D >= 1]")
    if vocab_size is None:
        if x0.min() < 0:
            index = tuple(int(i) for i in np.unravel_index(int(np.argmin(x0)), x0.shape))
            raise ValueError(f"{name} tokens: negative id {int(x0[index])} at index {index}; token ids must lie in "
                             f"[0, vocab_size)")
        vocab_size = int(x0.max()) + 1
        if vocab_size > MAX_INFERRED_VOCAB:
            raise ValueError(f"{name} tokens: the largest id is {vocab_size - 1}, a vocabulary of {vocab_size} "
                             f"states (more than {MAX_INFERRED_VOCAB}); re-index the ids to 0..V-1 or give "
                             f"vocab_size")
    else:
        validate_tokens(x0, vocab_size, what=f"{name} tokens (given vocab_size={vocab_size})")
    if labels is not None and num_classes is None:
        num_classes = int(np.max(labels)) + 1
    if labels is not None:
        validate_tokens(labels, num_classes, what=f"{name} labels")
    info = DataInfo(name=name, vocab_size=vocab_size, shape=(x0.shape[1],), num_classes=num_classes or 0)
    return ArraySource(x0, labels), info


NPY_MAGIC = b"\x93NUMPY"
EXPECTED_FILE = "expected int tokens [num, D] written by np.save(path, tokens)"


def load_token_file(path: str | os.PathLike) -> np.ndarray:
    """The array of a `.npy` file, never unpickling; every unreadable file is a FileNotFoundError or ValueError
    naming the path and what is wrong (missing, empty, not .npy, pickled objects, truncated)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such file; {EXPECTED_FILE}")
    with open(path, "rb") as f:
        head = f.read(len(NPY_MAGIC))
    if not head:
        raise ValueError(f"{path} is empty (0 bytes); {EXPECTED_FILE}")
    if head != NPY_MAGIC:
        raise ValueError(f"{path} is not a .npy file (it starts with {head!r}, not {NPY_MAGIC!r}); {EXPECTED_FILE}")
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as err:
        if "pickle" in str(err).lower():
            raise ValueError(f"{path} holds pickled Python objects (dtype object), which are not loaded; "
                             f"{EXPECTED_FILE}") from None
        raise ValueError(f"{path} is truncated or corrupt ({err}); {EXPECTED_FILE}") from None
    except (EOFError, OSError) as err:
        raise ValueError(f"{path} is truncated or corrupt ({err}); {EXPECTED_FILE}") from None


def npy_dataset(path: str | os.PathLike, *, vocab_size: int | None = None, labels_path: str | os.PathLike | None = None,
                num_classes: int | None = None) -> tuple[ArraySource, DataInfo]:
    """Loads int tokens [num, D] from a `.npy` file (`load_token_file`: no pickles), and optionally class labels
    int[num] from a second one (class-conditional data, e.g. MaskGIT's VQ tokens of ImageNet); see `array_dataset`
    for the checks."""
    labels = None if not labels_path else load_token_file(labels_path)
    if labels is not None and labels.ndim != 1:
        raise ValueError(f"{os.fspath(labels_path)}: labels must be int[num], got shape {labels.shape}")
    return array_dataset(load_token_file(path), vocab_size=vocab_size, labels=labels, num_classes=num_classes,
                         name=os.fspath(path))
