"""FID, KID and the Inception-score form: closed forms and unbiasedness."""
import math

import jax
import numpy as np
import pytest

from di4c_jax.eval.fid import fid, frechet_distance, inception_score, kid


def test_fid_of_a_set_with_itself_is_zero():
    a = np.random.default_rng(0).normal(size=(500, 16))
    assert abs(fid(a, a)) < 1e-6


def test_fid_of_shifted_features_is_squared_mean_shift():
    a = np.random.default_rng(1).normal(size=(400, 8)) @ np.random.default_rng(2).normal(size=(8, 8))
    shift = np.linspace(-1, 2, 8)
    # identical covariance (a translated copy): the trace term vanishes exactly
    assert fid(a, a + shift) == pytest.approx(float(shift @ shift), rel=1e-6)


def test_frechet_distance_closed_form_for_gaussians():
    # 1-D: (m1 - m2)^2 + (s1 - s2)^2
    assert frechet_distance([0.0], [[4.0]], [3.0], [[1.0]]) == pytest.approx(9 + 1)
    # singular (zero) covariances: sqrtm of a singular product stays finite
    s = np.zeros((3, 3))
    assert frechet_distance(np.zeros(3), s, np.ones(3), s) == pytest.approx(3.0, abs=1e-4)


def test_kid_is_unbiased_zero_for_one_law_and_positive_for_shifted():
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(2000, 10)), rng.normal(size=(2000, 10))
    mean, std = kid(jax.random.key(0), a, b, num_subsets=50, subset_size=200)
    assert abs(mean) < 3 * std / math.sqrt(50) + 1e-4
    shifted_mean, _ = kid(jax.random.key(0), a, b + 0.5, num_subsets=50, subset_size=200)
    assert shifted_mean > 10 * std


def test_inception_score_bounds():
    onehot = np.eye(10)[np.arange(1000) % 10]
    assert inception_score(onehot)[0] == pytest.approx(10.0)
    assert inception_score(np.full((1000, 10), 0.1))[0] == pytest.approx(1.0)
