"""scikit-learn digits (1797 images, 8x8, 17 grey levels 0..16, 10 classes) as an offline TFDS dataset.

`DigitsBuilder` is a real `tfds.core.GeneratorBasedBuilder`; it is prepared locally into `data_dir` as
ArrayRecord files (no download: sklearn ships the data; tensorflow-datasets 4.9.10 prepares array_record without
TensorFlow installed) and read back through `builder.as_data_source` (tfds' ArrayRecord random-access source).

Split (deterministic, independent of any RNG): sklearn index i goes to 'test' when i % 6 == 0 (300 images),
to 'train' otherwise (1497 images).
"""
import os

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from di4c_jax.data.sources import DataInfo, TransformedSource

DIGITS_NUM_LEVELS = 17
DIGITS_SHAPE = (1, 8, 8)
DIGITS_NUM_CLASSES = 10
DIGITS_TEST_EVERY = 6


def digits_arrays(split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The raw split straight from sklearn: (images uint8[n, 1, 8, 8], labels int32[n], sklearn indices int32[n])."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    index = np.arange(len(digits.target), dtype=np.int32)
    is_test = index % DIGITS_TEST_EVERY == 0
    if split == "test":
        keep = is_test
    elif split == "train":
        keep = ~is_test
    else:
        raise ValueError(f"digits split must be 'train' or 'test', got {split!r}")
    images = digits.images.astype(np.uint8).reshape(-1, *DIGITS_SHAPE)
    return images[keep], digits.target.astype(np.int32)[keep], index[keep]


class DigitsBuilder(tfds.core.GeneratorBasedBuilder):
    """TFDS builder for sklearn digits; examples carry their sklearn `index` so that splits can be audited."""

    name = "di4c_digits"
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "sklearn.datasets.load_digits, test = index % 6 == 0."}

    # tfds' default `code_path` consults the optional `importlib_resources` package (absent here) for classes
    # that live inside a package; the answer it computes is simply this file.
    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls) -> epath.Path:
        return epath.Path(__file__)

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description="UCI optical digits as shipped with scikit-learn: 8x8 images with values 0..16.",
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Tensor(shape=DIGITS_SHAPE, dtype=np.uint8),
                    "label": tfds.features.ClassLabel(num_classes=DIGITS_NUM_CLASSES),
                    "index": tfds.features.Tensor(shape=(), dtype=np.int32),
                }
            ),
            supervised_keys=("image", "label"),
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # nothing to download
        return {split: self._generate_examples(split) for split in ("train", "test")}

    def _generate_examples(self, split: str):
        images, labels, index = digits_arrays(split)
        for image, label, i in zip(images, labels, index):
            yield int(i), {"image": image, "label": int(label), "index": i}


def prepare_digits(data_dir: str | os.PathLike) -> DigitsBuilder:
    """Writes the ArrayRecord files under `data_dir/di4c_digits/1.0.0` once (a no-op when already there)."""
    builder = DigitsBuilder(data_dir=os.fspath(data_dir), file_format="array_record")
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(try_download_gcs=False))
    return builder


def digits_example(record: dict) -> dict[str, np.ndarray]:
    """tfds record -> {'x0': int32[64] (C, H, W order), 'label': int32}."""
    return {"x0": np.asarray(record["image"], np.int32).reshape(-1), "label": np.int32(record["label"])}


def digits_dataset(split: str = "train", *, data_dir: str | os.PathLike) -> tuple[TransformedSource, DataInfo]:
    """Prepares (if needed) and opens a digits split from its ArrayRecord files."""
    if split not in ("train", "test"):
        raise ValueError(f"digits split must be 'train' or 'test', got {split!r}")
    records = prepare_digits(data_dir).as_data_source(split=split)
    info = DataInfo(
        name="digits", vocab_size=DIGITS_NUM_LEVELS, shape=DIGITS_SHAPE, num_classes=DIGITS_NUM_CLASSES
    )
    return TransformedSource(records, digits_example), info
