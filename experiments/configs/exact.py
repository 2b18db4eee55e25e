"""Benchmark 1: the exact small-space benchmark (Theorem 1 made visible).

A correlated law with exact probabilities (config.data.law: 'ising' | 'mixture' | 'parity'), a masked or uniform
process (config.process.kind), teacher at 1..64 steps, the quickstart's student (CDM one-step; ':di4c' for Di4C)
at 1, 2, 4, 8 steps; TV and KL of the sampled law from 1e6 samples per row, with the Monte-Carlo noise floor.

    python -m experiments.run --config experiments/configs/exact.py --workdir runs/exact_masked
    python -m experiments.run --config experiments/configs/exact.py:uniform --workdir runs/exact_uniform
    python -m experiments.run --config experiments/configs/exact.py:uniform,di4c --workdir runs/exact_uniform_di4c
"""
from experiments.configs import quickstart
from experiments.configs.base import OBJECTIVES, parse_arg

PROCESSES = ("masked", "uniform")


def get_config(arg: str = ""):
    """arg = '<process>' (masked, the default, or uniform), optionally with ',di4c' (the student objective)."""
    chosen = parse_arg(arg, process=PROCESSES, objective=OBJECTIVES)
    process = chosen["process"]
    c = quickstart.get_config(chosen["objective"])
    c.name = f"exact benchmark (Ising chain D=6 K=3, {process})"
    c.process = dict(kind=process, schedule="loglinear" if process == "masked" else "linear")
    c.teacher.steps = 6000
    c.teacher.loss = dict(objective="mdlm" if process == "masked" else "ctmc")
    c.distill.steps = 4000
    c.sample = dict(options=dict(),  # the sampler's own keywords, e.g. time_warp
                    teacher_steps=(1, 2, 4, 8, 16, 32, 64), student_steps=(1, 2, 4, 8), hybrid=((4, 1), (8, 2),),
                    num_samples=1_000_000, batch_size=100_000)
    return c
