"""Benchmark 2 (Section 5.1 analogue): discretised-Gaussian pixel diffusion on scikit-learn digits.

8x8 images with 17 levels, the tauLDR process with S = 17, a small tauLDR-style U-Net teacher trained with the
CTMC ELBO (+0.001 CE), a mixture student distilled with CDM one-step (`:<size>,di4c`: the tauLDR Di4C recipe),
teacher vs student vs hybrid; FID/KID in the feature space of a digit classifier trained here (its test accuracy is
reported), classifier confidence.

    python -m experiments.run --config experiments/configs/digits_pixels.py --workdir runs/digits_pixels
    python -m experiments.run --config experiments/configs/digits_pixels.py:cpu --workdir runs/digits_pixels_cpu

`:cpu` is the size that fits 2 CPU cores in about 45 minutes: the U-Net is replaced by a 2-layer width-64 DiT
over the 64 pixels (the same categorical x0 head over 17 levels; the U-Net step costs ~1-2 s on 2 cores), with
12000 teacher and 1000 distillation steps (CDM one-step on it: about 1.5x fewer steps at 2-4 steps, where the
Di4C student gains nothing; README section 5).
"""
from experiments.configs.base import OBJECTIVES, SIZES, base_config, parse_arg, use_objective


def get_config(arg: str = "default"):
    """arg = '<size>' (default or cpu), optionally with ',di4c' (the student objective; CDM one-step without)."""
    chosen = parse_arg(arg, size=SIZES, objective=OBJECTIVES)
    size = chosen["size"]
    c = base_config("digits pixels (tauLDR process, S=17)", size)
    c.data = dict(kind="digits")
    # Rate width 2 for 17 levels (the CIFAR-10 value 6 is for 256 levels); q_sigma large = near-uniform prior.
    # time_base 0.2, not CIFAR-10's 3: with 17 levels and width 2, time_base 3 leaves x_t independent of x0 from
    # t ~ 0.3 on (mutual information per image, uniform x0: 0.5 nats at t = 0.25, 0 at 0.5), so 3/4 of the time
    # axis is pure noise and an n-step uniform grid makes ~n/4 useful steps. With 0.2 the information falls over
    # the whole axis (167 / 43 / 12 / 0.7 / 1e-4 nats at t = 0.01 / 0.25 / 0.5 / 0.75 / 1; README section 5).
    c.process = dict(kind="gaussian", rate_sigma=2.0, q_sigma=64.0, time_base=0.2, time_exponential=100.0,
                     t_min=0.01)
    c.model = dict(size="unet-tiny", overrides=dict(ch=32, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(4,),
                                                    dropout=0.1))
    c.teacher = dict(steps=8000, batch_size=64, checkpoint_every=2000, log_every=200,
                     optim=dict(learning_rate=1e-3, warmup_steps=200, ema_decay=0.999), loss=dict(objective="ctmc"))
    # The tauLDR recipe with the quickstart's wide teacher step delta ~ LogUniform[0.02, 0.5] (the CIFAR-10 values
    # [1e-3, 1e-2] suit a student sampled with many steps; this one is sampled with 2-8).
    # The data term at every t (time_coeff_floor=1): on the uniform process it took the 4-step TV from 0.104 to 0.081.
    c.distill = dict(objective="di4c", loss=dict(recipe="tauldr", num_lambda=16, min_delta=0.02, max_delta=0.5,
                                                 time_coeff_floor=1.0),
                     steps=3000, batch_size=8,
                     checkpoint_every=1000, log_every=100, init_from="raw",
                     optim=dict(learning_rate=2e-4, ema_decay=0.999), rounds=1)
    c.sample = dict(options=dict(),  # the sampler's own keywords, e.g. time_warp
                    teacher_steps=(2, 4, 8, 16, 32), student_steps=(2, 4, 8), hybrid=((4, 1), (8, 2),),
                    num_samples=2000, batch_size=500)
    c.evaluate = dict(classifier_steps=2000, kid_subset_size=200)
    if size == "cpu":
        c.model = dict(size="dit-tiny", lam_style="token", lam_zero_init=False,  # gates open (why: text_hmm.py)
                       overrides=dict(hidden=64, depth=2, num_heads=4, dropout=0.1))
        # 12000 teacher steps: at 6000 this teacher was undertrained (trained on, its FID at 4 / 8 steps went from
        # 180 / 161 to 105 / 84; README section 5).
        c.teacher.steps = 12000
        c.distill.update(steps=1000, batch_size=16)
        # lr 1e-4: at 2e-4 the student's correlation term jumped (-2 -> -31 nats) and its marginals drifted between
        # steps 600 and 800, and its samples fell behind the teacher's; at 1e-4 neither happens (README section 5).
        c.distill.optim.learning_rate = 1e-4
    return use_objective(c, chosen["objective"])
