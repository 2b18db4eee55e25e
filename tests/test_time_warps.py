"""Named time-grid warps: closed forms, validation, and the analytic sampler's law on a warped grid."""
import jax
import numpy as np
import pytest

from di4c_jax.processes import DiscreteGaussian, Masked
from di4c_jax.sampling import check_time_warp, make_analytic_sampler, warp_time_grid
from sampling_oracle import assert_matches_law, exact_chain_law, oracle_denoiser, random_law, tv

DIMS = 3


def test_warps_closed_forms_keep_the_endpoints_and_the_order():
    grid = np.linspace(1.0, 0.0, 5)
    np.testing.assert_allclose(warp_time_grid(grid, "none"), grid, rtol=0, atol=0)
    np.testing.assert_allclose(warp_time_grid(grid, "sine"), np.sin(np.pi * grid / 2), atol=1e-6)
    np.testing.assert_allclose(warp_time_grid(grid, "power:0.5"), np.sqrt(grid), atol=1e-6)
    for warp in ("sine", "power:0.5", "power:2"):
        warped = np.asarray(warp_time_grid(grid, warp))
        assert warped[0] == 1.0 and warped[-1] == 0.0 and np.all(np.diff(warped) < 0)
    # sine and p < 1 keep early times near 1 (few tokens unmasked first); p > 1 the opposite
    assert warp_time_grid(grid, "sine")[1] > grid[1] > warp_time_grid(grid, "power:2")[1]


@pytest.mark.parametrize("warp", ["cosine", "power:", "power:0", "power:-1", "power:nan", "power:x", 2.0])
def test_bad_warps_name_the_value(warp):
    with pytest.raises(ValueError, match="time warp"):
        check_time_warp(warp)
    process = Masked(vocab_size=3)
    with pytest.raises(ValueError, match="time warp"):
        make_analytic_sampler(process=process, denoiser=oracle_denoiser(process, random_law(0, process, DIMS), DIMS),
                              shape=(2, DIMS), num_steps=2, time_warp=warp)


@pytest.mark.parametrize("process", [Masked(vocab_size=3), DiscreteGaussian(num_states=4)], ids=["masked", "gauss"])
def test_warped_sampler_law_is_the_chain_on_the_warped_grid(process):
    oracle = oracle_denoiser(process, random_law(0, process, DIMS), DIMS)
    grid = warp_time_grid(process.default_time_grid(3), "sine")
    warped_law = exact_chain_law(process, oracle, DIMS, 3, grid=grid)
    assert tv(warped_law, exact_chain_law(process, oracle, DIMS, 3)) > 0.01  # the warp changes the law
    sampler = make_analytic_sampler(process=process, denoiser=oracle, shape=(100_000, DIMS), num_steps=3,
                                    time_warp="sine")
    assert_matches_law(sampler(jax.random.key(1), params=None), warped_law, process.num_states)
    explicit = make_analytic_sampler(process=process, denoiser=oracle, shape=(1000, DIMS), num_steps=3,
                                     time_grid=grid)
    short = make_analytic_sampler(process=process, denoiser=oracle, shape=(1000, DIMS), num_steps=3,
                                  time_warp="sine")
    np.testing.assert_array_equal(short(jax.random.key(2), params=None), explicit(jax.random.key(2), params=None))
