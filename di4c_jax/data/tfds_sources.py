"""TFDS datasets (mnist, cifar10, lm1b) through `tfds.data_source`: random-access ArrayRecord reads, no TensorFlow.

The data has to be prepared in `data_dir` already (e.g. `tfds build --file_format=array_record`, which may need
TensorFlow on the machine that builds); `download=True` lets tfds try to prepare it on the spot.
"""
import functools
import os

import numpy as np
import tensorflow_datasets as tfds

from di4c_jax.data.sources import DataInfo, TransformedSource
from di4c_jax.data.tokenizers import ByteTokenizer

IMAGE_SHAPES = {"mnist": (1, 28, 28), "cifar10": (3, 32, 32)}  # (C, H, W)
IMAGE_LEVELS = 256
IMAGE_NUM_CLASSES = 10
LM1B_DEFAULT_SEQ_LEN = 128


def data_source(name: str, split: str, data_dir, download: bool):
    """`tfds.data_source(...)`, a dataset that is not prepared being a FileNotFoundError that says so."""
    try:
        return tfds.data_source(name, split=split, data_dir=data_dir, download=download)
    except (KeyError, AssertionError, FileNotFoundError, tfds.core.registered.DatasetNotFoundError) as err:
        where = data_dir or "tfds' default data_dir (~/tensorflow_datasets)"
        message = str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err)
        raise FileNotFoundError(f"tfds dataset {name!r} split {split!r} is not prepared in {where} ({message}); "
                                f"prepare it with `tfds build {name} --file_format=array_record` or allow "
                                f"download=True (--config.data.download=True)") from None


def image_example(record: dict, *, shape: tuple[int, int, int]) -> dict[str, np.ndarray]:
    """tfds image record (uint8[H, W, C]) -> {'x0': int32[C*H*W] in C, H, W order, 'label': int32}."""
    image = np.asarray(record["image"])
    channels, height, width = shape
    if image.shape != (height, width, channels):
        raise ValueError(f"expected an image of shape {(height, width, channels)} (H, W, C), got {image.shape}")
    x0 = np.transpose(image, (2, 0, 1)).reshape(-1).astype(np.int32)
    return {"x0": x0, "label": np.int32(record["label"])}


def byte_text_example(record: dict, *, seq_len: int) -> dict[str, np.ndarray]:
    """tfds text record -> {'x0': int32[seq_len]}: UTF-8 bytes, truncated, padded with the byte tokenizer's pad id."""
    tokenizer = ByteTokenizer()
    ids = tokenizer.encode(record["text"])[:seq_len]
    return {"x0": np.pad(ids, (0, seq_len - len(ids)), constant_values=tokenizer.pad_id)}


def tfds_image_dataset(
    name: str, split: str = "train", *, data_dir: str | os.PathLike | None = None, download: bool = False
) -> tuple[TransformedSource, DataInfo]:
    """mnist or cifar10: x0 int32[C*H*W] with 256 levels, 10 classes."""
    if name not in IMAGE_SHAPES:
        raise ValueError(f"unknown tfds image dataset {name!r}; known: {sorted(IMAGE_SHAPES)}")
    records = data_source(name, split, data_dir, download)
    shape = IMAGE_SHAPES[name]
    info = DataInfo(name=name, vocab_size=IMAGE_LEVELS, shape=shape, num_classes=IMAGE_NUM_CLASSES)
    return TransformedSource(records, functools.partial(image_example, shape=shape)), info


def lm1b_dataset(
    split: str = "train",
    *,
    seq_len: int = LM1B_DEFAULT_SEQ_LEN,
    data_dir: str | os.PathLike | None = None,
    download: bool = False,
) -> tuple[TransformedSource, DataInfo]:
    """lm1b sentences as byte tokens int32[seq_len] (vocab 256, NUL-padded; `info.decode` drops the padding)."""
    records = data_source("lm1b", split, data_dir, download)
    tokenizer = ByteTokenizer()
    info = DataInfo(name="lm1b", vocab_size=tokenizer.vocab_size, shape=(seq_len,), decode=tokenizer.decode)
    return TransformedSource(records, functools.partial(byte_text_example, seq_len=seq_len)), info
