"""Objectives side by side on the quickstart's exact benchmark, sharing one trained teacher.

    python -m experiments.run --config experiments/configs/quickstart.py --workdir runs/quickstart
    python -m experiments.run --config experiments/configs/compare.py:sdtt --workdir runs/compare_sdtt \
        --config.teacher_workdir=runs/quickstart
    (likewise :cdm_one_step, :cdm_few_step, :di4c2)
    python -m experiments.report --compare runs/quickstart runs/compare_* --out docs/results

Every student trains for the quickstart's budget (2000 steps x 64 data items; di4c2 adds a second round of the
same size) from the same teacher, with a lambda-mixture MLP student; only the objective differs.
"""
from experiments.configs import quickstart

OBJECTIVES = {
    # SDTT (one round): the student's x0-prediction after one step matches the teacher's two ancestral steps of
    # size dt = 1/16 (kl-bwd, per masked token). The reference's 7 doubling rounds from dt = 1/1024 do not fit
    # this budget.
    "sdtt": dict(objective="sdtt", loss=dict(dt=1 / 16, mode="kl-bwd", student_dropout=False)),
    # CDM one-step: the student's p(x0 | x_t) matches the teacher's 16-step chain from x_t (4 chains per item).
    "cdm_one_step": dict(objective="cdm", loss=dict(mode="one_step", num_teacher_steps=16, num_samples=4,
                                                    num_lambda=64, student_dropout=False)),
    # CDM few-step: each coarse interval of a 4-step grid matches 8 teacher steps.
    "cdm_few_step": dict(objective="cdm", loss=dict(mode="few_step", num_student_steps=4, num_teacher_steps=8,
                                                    num_samples=4, num_lambda=64, student_dropout=False)),
    # di4c^2: a second Di4C round whose teacher is the round-1 mixture student.
    "di4c2": dict(objective="di4c", rounds=2),
}


def get_config(objective: str = "sdtt"):
    if objective not in OBJECTIVES:
        raise ValueError(f"unknown objective {objective!r}; choose one of {sorted(OBJECTIVES)}")
    c = quickstart.get_config()
    c.name = objective
    settings = dict(OBJECTIVES[objective])
    if "loss" in settings:
        c.distill.loss = settings.pop("loss")
    c.distill.update(settings)
    c.sample.teacher_steps = ()  # the teacher's rows come from the shared teacher's own run
    c.sample.hybrid = ()
    return c
