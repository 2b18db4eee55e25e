"""Benchmark 3 (Section 5.2 analogue): class-conditional masked tokens with classifier-free guidance.

Digits as 64 tokens over 17 levels, the arccos masked process (MaskGIT), a class-conditional DiT teacher trained
with the MDLM ELBO and 10% label dropout, a mixture student distilled with CDM one-step (`:<size>,di4c`: the
MaskGIT Di4C recipe), the MaskGIT confidence sampler with ramped guidance; FID/KID, confidence and
class-consistency accuracy at 2, 4, 8 steps.

    python -m experiments.run --config experiments/configs/digits_maskgit.py --workdir runs/digits_maskgit
    python -m experiments.run --config experiments/configs/digits_maskgit.py:cpu --workdir runs/digits_maskgit_cpu

`:cpu` is the size that fits 2 CPU cores in about half an hour (a 2-layer width-64 DiT, 12000 teacher and 1000
distillation steps).
`:<size>,ancestral` samples with the ancestral chain instead (the analytic sampler, x0 drawn at the last step, no
guidance): the law of x0 that CDM one-step matches the student to, e.g. a teacher's sample and evaluate stages:

    python -m experiments.run --config experiments/configs/digits_maskgit.py:cpu,ancestral --workdir runs/mg_chain \
        --config.teacher_workdir=runs/digits_maskgit_cpu '--config.sample.student_steps=()' --stage=sample
"""
from experiments.configs.base import OBJECTIVES, SIZES, base_config, parse_arg, use_objective


SAMPLERS = ("maskgit", "ancestral")


def get_config(arg: str = "default"):
    """arg = '<size>' (default or cpu), optionally with ',ancestral' (the sampler; 'maskgit' without) and ',di4c'
    (the student objective; CDM one-step without)."""
    chosen = parse_arg(arg, size=SIZES, sampler=SAMPLERS, objective=OBJECTIVES)
    size, sampler = chosen["size"], chosen["sampler"]
    c = base_config("digits tokens, class-conditional MaskGIT", size)
    c.data = dict(kind="digits")
    c.process = dict(kind="masked", schedule="arccos", subs=True)
    # lam_zero_init=False: the lambda gates start open (why: text_hmm.py).
    c.model = dict(size="dit-tiny", class_conditional=True, lam_style="token", lam_zero_init=False,
                   overrides=dict(hidden=96, depth=3, num_heads=4, dropout=0.1))
    # 12000 teacher steps: at 6000 the cpu teacher was far from converged (NELBO still falling; 1000 and 6000 more
    # steps took its 16-step ancestral FID from 281 to 228 and 112).
    c.teacher = dict(steps=12000, batch_size=64, checkpoint_every=2000, log_every=200, label_drop=0.1,
                     optim=dict(learning_rate=1e-3, warmup_steps=200, ema_decay=0.999), loss=dict(objective="mdlm"))
    c.distill = dict(objective="di4c", loss=dict(recipe="maskgit", num_lambda=16), steps=2000, batch_size=16,
                     checkpoint_every=1000, log_every=100, init_from="raw", label_drop=0.1,
                     optim=dict(learning_rate=1e-4, ema_decay=0.999), rounds=1)
    c.sample = dict(sampler="maskgit", options=dict(guidance=2.0, r_temp=4.5), teacher_steps=(2, 4, 8, 16),
                    student_steps=(2, 4, 8), num_samples=2000, batch_size=500)
    c.evaluate = dict(classifier_steps=2000, kid_subset_size=200)
    if size == "cpu":
        c.model.overrides.update(hidden=64, depth=2)
        c.distill.steps = 1000
    if sampler == "ancestral":
        c.sample.sampler = "analytic"
        c.sample.options = dict(final="sample")
    return use_objective(c, chosen["objective"])
