"""Multi-round distillation (di4c^2, multi-round SDTT): round r's teacher is round r-1's student.

`distill_rounds` is the driver; the caller's `train_round(round)` trains (or resumes) one round with the engine
and returns its final train state, so checkpoints, data and meshes stay the caller's.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax

from di4c_jax.denoiser import Denoiser
from di4c_jax.losses.objectives import OBJECTIVES
from di4c_jax.models.registry import init_student_from_teacher
from di4c_jax.train.step import LossFn, distillation_loss_fn

WEIGHTS = {"ema": "ema_params", "raw": "params"}


@dataclasses.dataclass(frozen=True)
class Round:
    """One distillation round, ready to train.

    index: 1-based.  teacher, teacher_params: the frozen network of this round (round 1: the given teacher; later:
    the previous round's mixture student).  config: the objective's static config for this round.  loss_fn: the
    engine loss (`train.make_train_step` convention, teacher params as `frozen`).  init_params(key): the student's
    initial params, every leaf it shares with the previous network copied from it (new lambda leaves keep init).
    """

    index: int
    teacher: Denoiser
    teacher_params: Any
    config: Any
    loss_fn: LossFn
    init_params: Callable[[jax.Array], Any]


def distill_rounds(train_round: Callable[[Round], dict], *, objective: str, options: dict, num_rounds: int,
                   process, teacher: Denoiser, teacher_state: dict, student: Denoiser,
                   student_init: Callable[[jax.Array], Any], teacher_weights: str = "ema",
                   init_from: str = "raw") -> list[dict]:
    """Run `num_rounds` rounds of the registered `objective` and return each round's final train state.

    Args:
      train_round: trains one `Round` and returns its final train state ({'params', 'ema_params', ...}).
      objective, options: an `OBJECTIVES` name and its options (the config of round r is
        `make_config(options, r)`: multi-round SDTT doubles its teacher step there).
      num_rounds: R >= 1.  process: the forward process.
      teacher, teacher_state: the first teacher and its train state.
      student, student_init: the student Denoiser (a mixture) and its fresh initialisation `student_init(key)`.
      teacher_weights, init_from: 'ema' or 'raw': which weights of the previous network are distilled and which
        the student starts from (the references distil EMA weights and start from the raw ones).

    Returns:
      [final train state of round 1, ..., of round R].
    """
    if num_rounds < 1:
        raise ValueError(f"num_rounds must be >= 1, got {num_rounds}")
    for name, value in (("teacher_weights", teacher_weights), ("init_from", init_from)):
        if value not in WEIGHTS:
            raise ValueError(f"{name} must be one of {sorted(WEIGHTS)}, got {value!r}")
    entry = OBJECTIVES.get(objective)
    states, net, state = [], teacher, teacher_state
    for index in range(1, num_rounds + 1):
        start = jax.device_get(state[WEIGHTS[init_from]])

        def init_params(key, start=start, index=index):
            return init_student_from_teacher(start, student_init(key), allow_unused=index > 1)

        config = entry.make_config(dict(options), index)
        loss_fn = distillation_loss_fn(entry.loss, student=student, teacher=net, process=process, config=config)
        state = train_round(Round(index, net, state[WEIGHTS[teacher_weights]], config, loss_fn, init_params))
        states.append(state)
        net = student
    return states
