"""`load_dataset`: one entry point from a name, a `.npy` path or an int array to (source, DataInfo)."""
import os
from typing import Any

import numpy as np

from di4c_jax.data.digits import digits_dataset
from di4c_jax.data.sources import DataInfo, array_dataset, npy_dataset
from di4c_jax.data.text import pystdlib_dataset
from di4c_jax.data.tfds_sources import IMAGE_SHAPES, lm1b_dataset, tfds_image_dataset

DATASET_NAMES = ("digits", "cifar10", "mnist", "lm1b", "pystdlib_text")


def load_dataset(name_or_path: str | os.PathLike | np.ndarray, split: str = "train", **kwargs) -> tuple[Any, DataInfo]:
    """Returns (source, info); the source yields {'x0': int32[D], 'label': int32 (labelled sets only)}.

    name_or_path:
      'digits'                     kwargs: data_dir (required; the ArrayRecord files are prepared there once)
      'mnist' | 'cifar10'          kwargs: data_dir, download (tfds.data_source)
      'lm1b'                       kwargs: seq_len, data_dir, download (byte tokens)
      'pystdlib_text'              kwargs: seq_len, tokenizer ('byte' | 'char'), max_files, exclude_tests, root
      a path ending in '.npy'      kwargs: vocab_size (inferred as max + 1 when omitted); split must be 'train'
      an int array [num, D]        kwargs: vocab_size, labels, num_classes, name; split must be 'train'
    """
    if isinstance(name_or_path, np.ndarray) or str(name_or_path).endswith(".npy"):
        if split != "train":
            raise ValueError(f"a user array has only the 'train' split, got split={split!r}")
        if isinstance(name_or_path, np.ndarray):
            return array_dataset(name_or_path, **kwargs)
        return npy_dataset(name_or_path, **kwargs)
    name = str(name_or_path)
    if name == "digits":
        return digits_dataset(split, **kwargs)
    if name in IMAGE_SHAPES:
        return tfds_image_dataset(name, split, **kwargs)
    if name == "lm1b":
        return lm1b_dataset(split, **kwargs)
    if name == "pystdlib_text":
        return pystdlib_dataset(split, **kwargs)
    raise ValueError(f"unknown dataset {name!r}: expected one of {DATASET_NAMES}, a '.npy' path or an int array")
