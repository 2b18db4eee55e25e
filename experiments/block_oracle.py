"""How much of the few-step error is local? Oracle k-step samplers on the HMM language, exact within blocks.

    python -m experiments.block_oracle --workdir runs/text_hmm --cells 4:1,8:1,4:2,4:4,4:8,1:32 --num 10000

Each cell `steps:block` runs the ancestral masked sampler of the experiment's process on its default grid, with
x0 at every step drawn from the exact HMM posterior q(x0 | x_t) jointly within blocks of `block` consecutive
positions (a random offset per sequence and step) and independently across blocks (block 1: the exact product of
the posterior marginals, the best any product denoiser can do; block = L: the exact posterior, so the samples are
the HMM's own). Each block takes its tokens from its own independent posterior draw
(`eval.hmm_masked_posterior_sample`). Scored like the experiment (window TV, unigram entropy, NLL); writes
<workdir>/block_oracle.md.
"""
from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from di4c_jax.denoiser import local_block_ids
from di4c_jax.eval import hmm_masked_posterior_sample
from di4c_jax.processes import safe_log
from experiments.evaluation import HMMScorer
from experiments.setup import setup_from_workdir

FLAGS = flags.FLAGS


def define_flags() -> None:
    flags.DEFINE_string("workdir", None, "an HMM-language experiment's workdir (holds config.json)")
    flags.DEFINE_list("cells", ["4:1", "8:1", "4:2", "4:4", "4:8", "1:32"], "steps:block pairs")
    flags.DEFINE_integer("num", 10_000, "sequences per cell")
    flags.DEFINE_integer("seed", 0, "sampling seed")
    flags.mark_flags_as_required(["workdir"])


def parse_cell(cell: str, length: int) -> tuple[int, int]:
    try:
        steps, block = (int(v) for v in cell.split(":"))
    except ValueError:
        raise ValueError(f"a cell is steps:block with two integers, got {cell!r}") from None
    if steps < 1 or not 1 <= block <= length:
        raise ValueError(f"need steps >= 1 and 1 <= block <= L={length}, got {cell!r}")
    return steps, block


def blockwise_posterior_x0(key, x_t, hmm, mask_id: int, block: int) -> jax.Array:
    """int32[B, D]: x0 exact within blocks of `block` positions (random offset per row), independent across them;
    block = D: the exact posterior."""
    length = x_t.shape[1]
    if block == length:  # one block, no offset: the exact posterior
        return hmm_masked_posterior_sample(key, x_t, mask_id, *hmm)[:, 0]
    k_draw, k_offset = jax.random.split(key)
    draws = hmm_masked_posterior_sample(k_draw, x_t, mask_id, *hmm, num=length // block + 1)  # [B, G, D]
    offset = jax.random.randint(k_offset, (x_t.shape[0],), 0, block)
    ids = jnp.asarray(local_block_ids(length, block))[offset]  # [B, D]: each position's block
    return jnp.take_along_axis(draws, ids[:, None, :], axis=1)[:, 0]


def oracle_samples(key, setup, steps: int, block: int, num: int) -> np.ndarray:
    process, length = setup.process, setup.num_dims
    grid = np.asarray(process.default_time_grid(steps), np.float32)
    x = jnp.full((num, length), process.mask_id, jnp.int32)
    for i in range(steps):
        key, k_x0, k_step = jax.random.split(key, 3)
        x0 = blockwise_posterior_x0(k_x0, x, setup.hmm, process.mask_id, block)
        logp = safe_log(jax.nn.one_hot(x0, process.num_states))  # x0 with certainty
        t, s = jnp.full((num,), grid[i]), jnp.full((num,), grid[i + 1])
        x = process.reverse_step(k_step, x, logp, t, s)
    return np.asarray(x)


def main(argv) -> None:
    del argv
    workdir = Path(FLAGS.workdir)
    setup = setup_from_workdir(workdir)
    if setup.hmm is None or not setup.process.absorbing:
        raise app.UsageError(f"{workdir} is not an HMM-language experiment with a masked process")
    cells = [parse_cell(c, setup.num_dims) for c in FLAGS.cells]
    scorer = HMMScorer(setup)
    lines = ["| steps | block | window_tv | unigram_entropy | nll_per_token |", "|---|---|---|---|---|"]
    for steps, block in cells:
        scores = scorer(oracle_samples(jax.random.key(FLAGS.seed * 1000 + steps * 64 + block), setup, steps, block,
                                       FLAGS.num))
        lines.append(f"| {steps} | {block} | {scores['window_tv']:.4f} | {scores['unigram_entropy']:.3f} | "
                     f"{scores['nll_per_token']:.3f} |")
        print(lines[-1], flush=True)
    text = (f"Oracle samplers, exact HMM posterior within blocks ({FLAGS.num} sequences per cell; a block of L = "
            f"{setup.num_dims} samples the HMM itself: its row is the noise level)\n\n" + "\n".join(lines) + "\n")
    (workdir / "block_oracle.md").write_text(text)
    print(text)


if __name__ == "__main__":
    define_flags()
    app.run(main)
