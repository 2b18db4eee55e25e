"""Objectives side by side on one benchmark, every student distilled from the same trained teacher.

Exact benchmark (the quickstart's Ising chain):

    python -m experiments.run --config experiments/configs/quickstart.py --workdir runs/quickstart
    python -m experiments.run --config experiments/configs/quickstart.py:di4c --workdir runs/quickstart_di4c \
        --config.teacher_workdir=runs/quickstart
    python -m experiments.run --config experiments/configs/compare.py:sdtt --workdir runs/compare_sdtt \
        --config.teacher_workdir=runs/quickstart
    (likewise :cdm_one_step, :cdm_few_step, :trajectory, :di4c2)
    python -m experiments.report --compare runs/quickstart_di4c runs/compare_* --out docs/results

Text benchmark (the HMM language; its Di4C run holds Di4C and di4c^2 students):

    python -m experiments.run --config experiments/configs/text_hmm.py:di4c --workdir runs/text_hmm \
        --config.distill.rounds=2
    python -m experiments.run --config experiments/configs/compare.py:sdtt,text_hmm \
        --workdir runs/compare_text_hmm_sdtt --config.teacher_workdir=runs/text_hmm
    (likewise :cdm_one_step,text_hmm and :cdm_few_step,text_hmm)
    python -m experiments.report --compare runs/text_hmm runs/compare_text_hmm_* --out docs/results \
        --name compare_text_hmm

Digits and the Python stdlib characters (cpu size): ':<objective>,digits_pixels', ':<objective>,digits_maskgit' or
':<objective>,text_pystdlib' with --config.teacher_workdir of a digits_pixels.py:cpu, digits_maskgit.py:cpu or
text_pystdlib.py:cpu run (the stdlib config's two Di4C rounds become the objective's own rounds).

Every student starts from the teacher and trains for the benchmark's distillation budget (config.distill.steps
per round, batch config.distill.batch_size); only the objective (and its number of rounds) differs. Each objective
replaces the benchmark's Di4C settings (its ':di4c' variant); ':cdm_one_step,<benchmark>' is the benchmark config's
own default student (the quickstart's at lr 3e-4, see get_config).
"""
from experiments.configs import digits_maskgit, digits_pixels, quickstart, text_hmm, text_pystdlib
from experiments.configs.base import CDM_ONE_STEP

# benchmark -> (config module, its argument without the objective)
BENCHMARKS = {"quickstart": (quickstart, ""), "text_hmm": (text_hmm, ""), "digits_pixels": (digits_pixels, "cpu"),
              "digits_maskgit": (digits_maskgit, "cpu"), "text_pystdlib": (text_pystdlib, "cpu")}

OBJECTIVES = {
    # SDTT, 6 rounds: round r's student matches two teacher steps of size dt_r = 2^(r-1) / 64 (kl-bwd, per masked
    # token), the previous round's student being the teacher; the last round's student steps from t = 1 to 0 in one
    # step. (The reference starts at dt = 1/1024 with 7 rounds, ending at a 16-step student.)
    "sdtt": dict(objective="sdtt", rounds=6, loss=dict(dt=1 / 64, mode="kl-bwd", student_dropout=False)),
    # CDM one-step: the student's p(x0 | x_t) matches the teacher's 32-step chain from x_t (4 chains per item).
    "cdm_one_step": dict(objective="cdm", rounds=1, loss=dict(CDM_ONE_STEP)),
    # CDM few-step: each coarse interval of a 4-step grid matches 8 teacher steps.
    "cdm_few_step": dict(objective="cdm", rounds=1, loss=dict(mode="few_step", num_student_steps=4,
                                                              num_teacher_steps=8, num_samples=4,
                                                              student_dropout=False)),
    # Trajectory matching: the student's whole 4-step sampler, one lambda per trajectory (sampled so), fitted to
    # the teacher's 32-step law of x0 from t = 1.
    "trajectory": dict(objective="trajectory", rounds=1, loss=dict(num_student_steps=4, num_teacher_steps=32,
                                                                   student_dropout=False)),
    # di4c^2: a second Di4C round whose teacher is the round-1 mixture student.
    "di4c2": dict(objective="di4c", rounds=2),
}


def get_config(arg: str = "sdtt"):
    """arg = '<objective>' (exact benchmark) or '<objective>,<benchmark>'."""
    objective, _, benchmark = arg.partition(",")
    benchmark = benchmark or "quickstart"
    if objective not in OBJECTIVES:
        raise ValueError(f"unknown objective {objective!r}; choose one of {sorted(OBJECTIVES)}")
    if benchmark not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {benchmark!r}; choose one of {sorted(BENCHMARKS)}")
    module, arg = BENCHMARKS[benchmark]
    c = module.get_config(",".join(filter(None, [arg, "di4c"])))
    c.name = objective
    settings = dict(OBJECTIVES[objective])
    if settings["objective"] == "cdm":  # the default student's network (text_hmm: with local latents)
        c.model = module.get_config(arg).model
    if "loss" in settings:
        # Keep the benchmark's lambda count (the same for every objective).
        c.distill.loss = dict(settings.pop("loss"), num_lambda=c.distill.loss.num_lambda) \
            if settings["objective"] in ("cdm", "trajectory") else settings.pop("loss")
    c.distill.update(settings)
    if benchmark == "quickstart":
        # Section 2's comparison ran at the quickstart's first distillation lr; 3e-3 was measured for Di4C only.
        c.distill.optim.learning_rate = 3e-4
    if objective == "trajectory":
        c.sample.options.share_lam = True  # the sampler the loss trains
    c.sample.teacher_steps = ()  # the teacher's rows come from the shared teacher's own run
    c.sample.hybrid = ()
    return c
