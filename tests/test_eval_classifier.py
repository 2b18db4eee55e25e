"""The learned digit feature space: accuracy, save/load, confidence, class consistency, FID/IS in that space."""
import jax
import numpy as np
import pytest

from di4c_jax.data.digits import digits_arrays
from di4c_jax.eval.classifier import (ClassifierConfig, accuracy, classify, confidence, load_classifier,
                                      save_classifier, train_classifier)
from di4c_jax.eval.fid import fid, inception_score


@pytest.fixture(scope="module")
def trained():
    x_train, y_train, _ = digits_arrays("train")
    apply, params = train_classifier(jax.random.key(0), ClassifierConfig(), x_train, y_train, num_steps=300)
    return apply, params


@pytest.fixture(scope="module")
def test_split():
    x, y, _ = digits_arrays("test")
    return x.reshape(len(y), -1), y


def test_classifier_reaches_90_percent_on_digits(trained, test_split):
    x, y = test_split
    probs, feats = classify(*trained, x)
    assert accuracy(probs, y) >= 0.9
    assert probs.shape == (len(y), 10) and feats.shape == (len(y), 128)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)


def test_confidence_and_class_consistency_separate_real_from_noise(trained, test_split):
    x, y = test_split
    probs, _ = classify(*trained, x)
    noise = np.random.default_rng(0).integers(0, 17, size=x.shape)
    noise_probs, _ = classify(*trained, noise)
    assert confidence(probs) > 0.9 > confidence(noise_probs)
    # class consistency: generated with label y -> classified as y; random labels give ~10%
    assert accuracy(probs, y) > 0.9
    assert accuracy(probs, np.random.default_rng(1).permutation(y)) < 0.3
    assert inception_score(probs[np.random.default_rng(2).permutation(len(y))], num_splits=3)[0] > 8.0


def test_feature_fid_ranks_real_digits_above_noise(trained, test_split):
    x, _ = test_split
    x_train, _, _ = digits_arrays("train")
    _, f_train = classify(*trained, x_train.reshape(len(x_train), -1))
    _, f_test = classify(*trained, x)
    _, f_noise = classify(*trained, np.random.default_rng(0).integers(0, 17, size=x.shape))
    assert fid(f_train, f_test) < 0.1 * fid(f_train, f_noise)


def test_save_load_roundtrip(trained, test_split, tmp_path):
    apply, params = trained
    save_classifier(tmp_path / "clf.npz", params)
    apply2, params2 = load_classifier(tmp_path / "clf.npz", ClassifierConfig())
    x, _ = test_split
    np.testing.assert_array_equal(classify(apply, params, x)[0], classify(apply2, params2, x)[0])
    with pytest.raises(ValueError, match="shape"):
        load_classifier(tmp_path / "clf.npz", ClassifierConfig(hidden=(64, 32)))


def test_wrong_image_size_is_named(trained):
    with pytest.raises(ValueError, match="64 values per row"):
        classify(*trained, np.zeros((2, 10), np.int32))
