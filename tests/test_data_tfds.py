"""TFDS-backed data: digits prepared locally as ArrayRecord, and mnist / cifar10 / lm1b through tfds mock data."""
import numpy as np
import pytest
import tensorflow_datasets as tfds
from sklearn.datasets import load_digits

from di4c_jax.data import load_dataset, make_iterator, prepare_digits


@pytest.fixture(scope="module")
def digits_dir(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("tfds")
    prepare_digits(data_dir)
    return data_dir


def test_digits_builder_writes_array_record(digits_dir):
    files = sorted(p.name for p in (digits_dir / "di4c_digits" / "1.0.0").iterdir())
    assert any(".array_record-" in f and "-train." in f for f in files)
    assert any(".array_record-" in f and "-test." in f for f in files)
    # the registered builder name is readable through the public tfds entry point too
    assert len(tfds.data_source("di4c_digits", split="test", data_dir=digits_dir, download=False)) == 300


def test_digits_content_and_deterministic_split(digits_dir):
    reference = load_digits()
    records = prepare_digits(digits_dir).as_data_source()
    seen = {}
    for split in ("train", "test"):
        for record in records[split]:
            seen[int(record["index"])] = split
            i = int(record["index"])
            np.testing.assert_array_equal(record["image"].reshape(8, 8), reference.images[i])
            assert record["label"] == reference.target[i]
    assert sorted(seen) == list(range(1797))  # disjoint splits, 1797 images in total
    assert all((split == "test") == (i % 6 == 0) for i, split in seen.items())


def test_digits_through_load_dataset_and_pipeline(digits_dir):
    train, info = load_dataset("digits", "train", data_dir=digits_dir)
    test, _ = load_dataset("digits", "test", data_dir=digits_dir)
    assert (len(train), len(test)) == (1497, 300)
    assert (info.vocab_size, info.shape, info.num_classes, info.num_dims) == (17, (1, 8, 8), 10, 64)
    x0 = np.stack([train[i]["x0"] for i in range(len(train))])
    labels = np.array([train[i]["label"] for i in range(len(train))])
    assert x0.dtype == np.int32 and x0.shape == (1497, 64) and x0.min() == 0 and x0.max() == 16
    assert labels.min() == 0 and labels.max() == 9
    iterator = make_iterator(train, global_batch_size=32, seed=0, num_states=info.vocab_size, process_count=1,
                             process_index=0)
    batch = next(iterator)
    assert batch["x0"].shape == (32, 64) and batch["label"].shape == (32,)


@pytest.mark.parametrize("name, shape", [("mnist", (1, 28, 28)), ("cifar10", (3, 32, 32))])
def test_tfds_image_loaders_on_mock_data(name, shape):
    with tfds.testing.mock_data(num_examples=6):
        source, info = load_dataset(name, "train")
        raw = tfds.data_source(name, split="train")
        assert len(source) == 6 and (info.vocab_size, info.shape, info.num_classes) == (256, shape, 10)
        for i in range(len(source)):
            example = source[i]
            assert example["x0"].dtype == np.int32 and example["x0"].shape == (np.prod(shape),)
            np.testing.assert_array_equal(example["x0"].reshape(shape), np.transpose(raw[i]["image"], (2, 0, 1)))
            assert 0 <= example["label"] < 10 and example["label"] == raw[i]["label"]
        batch = next(make_iterator(source, global_batch_size=4, seed=0, num_states=256, process_count=1,
                                   process_index=0))
        assert batch["x0"].shape == (4, np.prod(shape))


def test_lm1b_loader_on_mock_data():
    with tfds.testing.mock_data(num_examples=5):
        source, info = load_dataset("lm1b", "train", seq_len=12)
        raw = tfds.data_source("lm1b", split="train")
        assert (info.vocab_size, info.shape, info.num_classes) == (256, (12,), 0)
        for i in range(len(source)):
            x0 = source[i]["x0"]
            assert x0.dtype == np.int32 and x0.shape == (12,) and x0.max() < 256
            text = raw[i]["text"]
            text = text.decode() if isinstance(text, bytes) else text
            assert info.decode(x0) == text.encode()[:12].decode("utf-8", errors="replace")
