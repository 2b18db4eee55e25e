"""Few-step samplers (docs/design.md, Samplers): analytic/ancestral with mixture students, teacher hybrids and
named time-grid warps, MaskGIT confidence decoding, and tau-leaping. Each factory returns a jitted `Sampler` whose
`nfe` is the exact number of network evaluations; `SAMPLERS` maps names to factories (a new sampler registers
itself)."""
from di4c_jax.sampling.analytic import analytic_sample, make_analytic_sampler
from di4c_jax.sampling.maskgit import (
    cfg_weights, gumbel_temperatures, make_maskgit_sampler, maskgit_sample, maskgit_schedule,
)
from di4c_jax.sampling.sampler import SAMPLERS, Sampler
from di4c_jax.sampling.time_warps import TIME_WARPS, check_time_warp, warp_time_grid
from di4c_jax.sampling.tau_leaping import make_tau_leaping_sampler, tau_leap, tau_leaping_grid, tau_leaping_sample

__all__ = [
    "SAMPLERS", "Sampler", "analytic_sample", "make_analytic_sampler",
    "maskgit_schedule", "cfg_weights", "gumbel_temperatures", "maskgit_sample", "make_maskgit_sampler",
    "TIME_WARPS", "check_time_warp", "warp_time_grid",
    "tau_leaping_grid", "tau_leap", "tau_leaping_sample", "make_tau_leaping_sampler",
]
