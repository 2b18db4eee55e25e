"""How much of the data each noise level of an experiment's process leaves: sum_d I(x0^d; x_t^d) in nats.

    python -m experiments.information --config experiments/configs/digits_pixels.py:cpu \
        [--config.process.time_base=3.0 ...] [--times 0.01,0.1,0.25,0.5,0.75,0.9,1]

x0^d follows the per-dimension marginals of the experiment's held-out split (its training split if it has none).
A schedule suits the data when the information falls over the whole time axis; where it is already ~0 at some
t < 1, the sampling steps above that t and the training times drawn there are wasted (README section 5). Prints one
row per t: the information summed over the D dimensions and its share of the t = 0 value (the summed per-dimension
entropies).
"""
from __future__ import annotations

import sys
import tempfile
from typing import Sequence

import numpy as np
from absl import app, flags
from ml_collections import config_flags

from experiments.cli import absl_help, guarded, last_override_wins

DEFAULT_TIMES = ("0.01", "0.1", "0.25", "0.5", "0.75", "0.9", "1")


def information_table(config, times: Sequence[float]) -> list[dict]:
    """Rows {t, nats, share} for the process and held-out data of `config` (an experiment ConfigDict)."""
    import jax.numpy as jnp

    from di4c_jax.eval.generic import marginals
    from di4c_jax.processes.information import mutual_information
    from experiments.evaluation import source_array
    from experiments.setup import build_setup
    from experiments.spec import resolve

    bad = [t for t in times if not 0.0 <= t <= 1.0]
    if bad:
        raise ValueError(f"--times must lie in [0, 1], got {bad}")
    with tempfile.TemporaryDirectory() as workdir:
        setup = build_setup(resolve(config), workdir)
        x0, _ = source_array(setup.eval_source if setup.eval_source is not None else setup.train_source)
    probs = marginals(x0, setup.process.num_states)  # [D, K]
    info = np.asarray(mutual_information(setup.process, jnp.asarray([0.0, *times]), x0_probs=probs)).sum(axis=1)
    return [dict(t=t, nats=float(v), share=float(v / info[0])) for t, v in zip(times, info[1:])]


def main(argv: Sequence[str] | None = None) -> int:
    argv = last_override_wins(sys.argv if argv is None else argv)
    flag_values = flags.FlagValues()

    def parse_and_run() -> int:
        config_flags.DEFINE_config_file("config", None, "experiment config file", lock_config=False,
                                        accept_new_attributes=True, flag_values=flag_values, sys_argv=argv)
        flags.DEFINE_list("times", list(DEFAULT_TIMES), "noise levels t in [0, 1]", flag_values=flag_values)
        flags.mark_flags_as_required(["config"], flag_values=flag_values)
        if absl_help(argv, __doc__, flag_values, sys.modules[__name__]):
            return 0
        rest = flag_values(argv)
        if len(rest) > 1:
            raise app.UsageError(f"unexpected arguments: {rest[1:]}")
        try:
            times = [float(t) for t in flag_values.times]
        except ValueError:
            raise ValueError(f"--times must be numbers, got {flag_values.times}") from None
        rows = information_table(flag_values.config, times)
        print("| t | sum_d I(x0^d; x_t^d), nats | share of t = 0 |\n|---|---|---|")
        for row in rows:
            print(f"| {row['t']:g} | {row['nats']:.4g} | {row['share']:.3g} |")
        return 0

    return guarded(parse_and_run, argv)


if __name__ == "__main__":
    sys.exit(main())
