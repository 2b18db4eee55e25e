"""The distillation-objective registry: a name -> the loss and how its static config is built per round.

Every registered loss has the calling convention
`loss(key, *, student, student_params, teacher, teacher_params, process, x0, config, cond=None) -> (loss, aux)`,
so the engine and the runner take any of them. A new objective is one file that defines its loss and config and
calls `OBJECTIVES.register(name, Objective(loss, make_config))`.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

from di4c_jax.losses.cdm import CDMConfig, cdm_loss
from di4c_jax.losses.di4c import di4c_loss
from di4c_jax.losses.recipes import di4c_config
from di4c_jax.losses.sdtt import SDTTConfig, sdtt_loss, sdtt_round_dt
from di4c_jax.losses.trajectory import TrajectoryConfig, trajectory_loss
from di4c_jax.registry import Registry, dataclass_from_options


@dataclasses.dataclass(frozen=True)
class Objective:
    """A distillation objective.

    loss: the loss function (calling convention above).
    make_config: (options dict, round_index 1-based) -> the loss's static config for that distillation round; an
      unknown option is an error naming it.
    """

    loss: Callable[..., Any]
    make_config: Callable[[dict, int], Any]


OBJECTIVES: Registry[Objective] = Registry("distillation objective")


def _di4c_config(options: dict, round_index: int):
    del round_index  # later rounds differ only in their (mixture) teacher
    options = dict(options)
    if "recipe" not in options:
        raise ValueError("the di4c objective needs loss.recipe: one of 'tauldr', 'sdtt', 'maskgit'")
    return di4c_config(options.pop("recipe"), **options)


def _sdtt_config(options: dict, round_index: int):
    first = dataclass_from_options(SDTTConfig, options, "the sdtt objective's loss config")
    # Multi-round SDTT: the teacher step doubles every round (the round-r student takes 2^r round-1 dt's).
    return dataclasses.replace(first, dt=sdtt_round_dt(round_index, first.dt, first.num_teacher_steps))


OBJECTIVES.register("di4c", Objective(di4c_loss, _di4c_config))
OBJECTIVES.register("sdtt", Objective(sdtt_loss, _sdtt_config))
OBJECTIVES.register("cdm", Objective(cdm_loss, lambda options, round_index: dataclass_from_options(
    CDMConfig, options, "the cdm objective's loss config")))
OBJECTIVES.register("trajectory", Objective(trajectory_loss, lambda options, round_index: dataclass_from_options(
    TrajectoryConfig, options, "the trajectory objective's loss config")))
