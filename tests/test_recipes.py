"""The Di4C recipes: their time draws, their reference defaults and the errors for fields they do not have."""
import jax
import numpy as np
import pytest

from di4c_jax.losses import MaskGITRecipe, SDTTRecipe, TauLDRRecipe, di4c_config
from test_di4c_loss import rbg_key


def test_time_draws_per_scheme():
    batch = 20000

    def draw(key, recipe):
        return jax.jit(lambda k: recipe.draw_times(k, batch))(key)

    t, u, coeff, w_d, w_c = draw(rbg_key(0), di4c_config("tauldr"))
    t, u, coeff, w_c = map(np.asarray, (t, u, coeff, w_c))
    delta = t - u
    assert delta.min() >= 1e-3 - 1e-6 and delta.max() <= 1e-2 + 1e-6 and u.min() >= 0.01 - 1e-6 and t.max() <= 1
    assert abs(np.log(delta).mean() - 0.5 * (np.log(1e-3) + np.log(1e-2))) < 0.03  # log-uniform midpoint
    assert w_d is None and np.all(w_c == 1)  # tauldr: no same-x_t distillation term (its own small-time batch)
    np.testing.assert_allclose(coeff, 1 / (1 + np.exp(-20 * (t - 0.5))), rtol=1e-5)

    t, u, coeff, w_d, w_c = map(np.asarray, draw(rbg_key(1), di4c_config("sdtt")))
    grid = t * 1024
    np.testing.assert_allclose(grid, np.round(grid), atol=1e-3)
    assert grid.min() >= 1 and grid.max() <= 1024
    np.testing.assert_allclose(t - u, np.minimum(1 / 1024, t / 2), atol=1e-7)
    assert abs(w_d.mean() - 0.3 * 20 / 20.48) < 0.01  # t < 0.02 <=> t in {1..20}/1024
    np.testing.assert_array_equal(w_d, (t < 0.02).astype(np.float32))
    np.testing.assert_array_equal(w_c, 1 - w_d)
    np.testing.assert_allclose(coeff, 0.1 / (1 + np.exp(-20 * (t - 0.5))), rtol=1e-5)

    t, u, coeff, w_d, w_c = map(np.asarray, draw(rbg_key(2), di4c_config("maskgit")))
    r = 1 - t
    np.testing.assert_allclose(u, 1 - np.minimum(r + 0.05, 1), atol=1e-6)
    np.testing.assert_allclose(w_d, 20.0 * (r >= 0.95), atol=1e-4)
    np.testing.assert_array_equal(w_c, (r < 0.95).astype(np.float32))
    assert abs((w_d > 0).mean() - 0.05) < 0.01
    np.testing.assert_allclose(coeff, 0.1 / (1 + np.exp(-20 * (0.5 - r))), rtol=1e-4)


def test_config_field_of_another_recipe_or_none_is_an_error_naming_it():
    with pytest.raises(ValueError, match=r"'num_time_bins'.*belongs to the sdtt recipe"):
        di4c_config("tauldr", num_time_bins=32)
    with pytest.raises(ValueError, match=r"'sampler_steps'.*belongs to the maskgit recipe"):
        di4c_config("sdtt", sampler_steps=4)
    with pytest.raises(ValueError, match=r"'foo'"):
        di4c_config("maskgit", foo=1)
    assert di4c_config("sdtt", num_time_bins=32).num_time_bins == 32
    assert di4c_config("maskgit", sampler_steps=4).sampler_steps == 4


def test_recipe_class_defaults_are_the_reference_presets():
    for cls, name, num_lambda, scale in [(TauLDRRecipe, "tauldr", 16, 1.0), (SDTTRecipe, "sdtt", 16, 0.1),
                                         (MaskGITRecipe, "maskgit", 32, 0.1)]:
        recipe = cls()
        assert (recipe.name, recipe.num_lambda, recipe.time_coeff_scale) == (name, num_lambda, scale)
        assert di4c_config(name) == recipe and type(di4c_config(name)) is cls
    assert TauLDRRecipe.small_time_distillation and not SDTTRecipe.small_time_distillation


@pytest.mark.parametrize("name", ["tauldr", "sdtt", "maskgit"])
def test_time_coeff_floor_interpolates_from_the_sigmoid_to_a_constant(name):
    t = np.linspace(0.0, 1.0, 11, dtype=np.float32)
    scale = di4c_config(name).time_coeff_scale
    sigmoid = 1 / (1 + np.exp(-20 * (t - 0.5)))
    for floor in (0.0, 0.25, 1.0):
        coeff = np.asarray(di4c_config(name, time_coeff_floor=floor).time_coeff(t))
        np.testing.assert_allclose(coeff, scale * (floor + (1 - floor) * sigmoid), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(np.asarray(di4c_config(name, time_coeff_floor=1.0).time_coeff(t)), scale, rtol=1e-6)
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError, match=rf"time_coeff_floor must be in \[0, 1\], got {bad}"):
            di4c_config(name, time_coeff_floor=bad)


def test_time_coeff_scale_above_one_is_rejected_with_the_control_variate():
    """c (G - F) + KL(teacher || m) holds (1 - c) CE(q, m) in expectation: c > 1 rewards wrong marginals."""
    for name in ("tauldr", "sdtt", "maskgit"):
        with pytest.raises(ValueError, match=r"time_coeff_scale must be in \[0, 1\] with the control variate.*got 3"):
            di4c_config(name, time_coeff_scale=3.0)
        assert di4c_config(name, time_coeff_scale=3.0, control_variate=False).time_coeff_scale == 3.0
        assert di4c_config(name, time_coeff_scale=1.0).time_coeff_scale == 1.0
