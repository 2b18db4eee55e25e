"""Quickstart: the exact small-space benchmark, small enough for 2 CPU cores in a few minutes.

A correlated law over D = 6 dimensions with K = 3 states (an Ising chain, coupling 1.5: the product of its
marginals is at TV 0.75 from it, the floor of any 1-step product sampler), a masked
(absorbing) process, an MLP teacher trained with the MDLM ELBO, and a mixture student distilled with CDM one-step
(`quickstart.py:di4c` for Di4C, `quickstart.py:di4c,sdtt` for Di4C's sdtt recipe); the sampled laws are compared
with the exact law (TV from 200k samples per row).
"""
from experiments.configs.base import OBJECTIVES, base_config, parse_arg, use_objective


RECIPE_LOSS = {
    # tauLDR recipe with a wide teacher step: delta ~ LogUniform[0.02, 0.5] (the CIFAR-10 values [1e-3, 1e-2] are
    # for a 1000-step teacher; a few-step student needs consistency across big steps). N = 64 lambda samples: at
    # equal wall time N = 16 (4x the steps) and N = 256 (1/4.6 of them) were both worse; N = 256 at the same 2000
    # steps is better at 1-4 steps on two seeds (uniform 4-step TV 0.051 / 0.056 against 0.062 / 0.068, masked
    # unchanged at 4-8) but takes 2.4-4.6x the time, which N = 64 x 8000 steps matches (README section 1b).
    # time_coeff_floor = 1: the data term at every t, not only t > 1/2 (uniform process: 4-step TV 0.104 -> 0.081;
    # masked: unchanged).
    "tauldr": dict(recipe="tauldr", num_lambda=64, min_delta=0.02, max_delta=0.5, time_coeff_floor=1.0),
    # The sdtt recipe on this space (README section 1, tuning): teacher step u = t - 1/32 on a 32-bin grid.
    "sdtt": dict(recipe="sdtt", num_lambda=64, num_time_bins=32, distil_time=0.05),
}


def get_config(arg: str = ""):
    """arg = '' (CDM one-step), 'di4c' (Di4C, the tauldr recipe) or 'di4c,sdtt' (Di4C, the sdtt recipe)."""
    chosen = parse_arg(arg, objective=OBJECTIVES, recipe=tuple(RECIPE_LOSS))
    objective, recipe = chosen["objective"], chosen["recipe"]
    if recipe != "tauldr" and objective != "di4c":
        raise ValueError(f"the {recipe} recipe is a Di4C recipe: quickstart.py:di4c,{recipe}")
    c = base_config("quickstart (Ising chain, masked, D=6, K=3)")
    c.data = dict(kind="exact", law="ising", num_dims=6, num_states=3, coupling=1.5, num_train=100_000,
                  num_eval=1_000, seed=1234)
    c.process = dict(kind="masked", schedule="loglinear")
    c.model = dict(size="mlp-tiny", lam_zero_init=True,
                   overrides=dict(embed_dim=16, hidden=256, num_layers=2, time_dim=32, lam_dim=32))
    c.teacher = dict(steps=3000, batch_size=256, checkpoint_every=1000, log_every=250,
                     optim=dict(learning_rate=1e-3, ema_decay=0.999), loss=dict(objective="mdlm"))
    c.distill = dict(objective="di4c", loss=dict(RECIPE_LOSS[recipe]),
                     steps=2000, batch_size=64, checkpoint_every=1000, log_every=250, init_from="ema",
                     # lr 3e-3, ten times the first choice: the uniform student's 4-step TV 0.081 -> 0.061, the masked
                     # one's 2-step 0.112 -> 0.099, 4 and 8 steps equal; 1e-2 is worse (README section 1b). CDM
                     # one-step gains from it too (masked 1-step TV 0.152 -> 0.132, README section 2).
                     optim=dict(learning_rate=3e-3, ema_decay=0.999), rounds=1)
    c.sample = dict(options=dict(),  # the sampler's own keywords, e.g. time_warp
                    teacher_steps=(1, 2, 4, 8, 16, 64), student_steps=(1, 2, 4, 8), hybrid=((4, 1),),
                    num_samples=200_000, batch_size=50_000)
    c.evaluate = dict()
    return use_objective(c, objective)
