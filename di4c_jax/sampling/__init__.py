"""Few-step samplers (docs/design.md, Samplers): analytic/ancestral with mixture students, teacher hybrids and
named time-grid warps, MaskGIT confidence decoding, and tau-leaping; each draws a mixture's lambda per step or, with
`share_lam`, once per trajectory. Each factory returns a jitted `Sampler` whose `nfe` is the exact number of network
evaluations; `SAMPLERS` maps names to factories (a new sampler registers itself)."""
from di4c_jax.sampling.analytic import analytic_sample, make_analytic_sampler
from di4c_jax.sampling.maskgit import (
    cfg_weights, gumbel_temperatures, make_maskgit_sampler, maskgit_sample, maskgit_schedule,
)
from di4c_jax.sampling.sampler import SAMPLERS, Sampler, check_share_lam, lam_drawer
from di4c_jax.sampling.time_warps import TIME_WARPS, check_time_warp, warp_time_grid
from di4c_jax.sampling.tau_leaping import make_tau_leaping_sampler, tau_leap, tau_leaping_grid, tau_leaping_sample

# The checks of options several samplers share, run by callers that validate a config before sampling.
_OPTION_CHECKS = {"time_warp": check_time_warp, "share_lam": check_share_lam}


def check_sampler_options(options: dict) -> None:
    """Raise ValueError naming the option and its value for a bad value of a shared option (time_warp, share_lam)."""
    for name, value in options.items():
        if name in _OPTION_CHECKS:
            _OPTION_CHECKS[name](value)


__all__ = [
    "SAMPLERS", "Sampler", "check_sampler_options", "check_share_lam", "lam_drawer", "analytic_sample",
    "make_analytic_sampler",
    "maskgit_schedule", "cfg_weights", "gumbel_temperatures", "maskgit_sample", "make_maskgit_sampler",
    "TIME_WARPS", "check_time_warp", "warp_time_grid",
    "tau_leaping_grid", "tau_leap", "tau_leaping_sample", "make_tau_leaping_sampler",
]
