"""The block oracle (experiments/block_oracle.py): x0 exact within blocks, independent across them."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from di4c_jax.eval.hmm import random_hmm
from experiments.block_oracle import blockwise_posterior_x0, parse_cell

H, V, L = 3, 4, 6


def test_blocks_keep_the_observed_tokens_and_pair_within_a_block_only():
    hmm = random_hmm(jax.random.key(0), H, V, trans_sharpness=3.0, emit_sharpness=3.0)
    num = 6000
    x_t = jnp.full((num, L), V, jnp.int32).at[:, 2].set(1)
    for block in (1, 3, L):
        x0 = np.asarray(blockwise_posterior_x0(jax.random.key(block), x_t, hmm, V, block))
        assert x0.shape == (num, L) and np.all(x0[:, 2] == 1) and np.all(x0 < V)
    # positions 4 and 5 are adjacent: correlated unless the blocks split them (block 1 always does)
    def dependence(x0):
        joint = np.histogram2d(x0[:, 4], x0[:, 5], bins=V, range=[[0, V], [0, V]])[0] / len(x0)
        return np.abs(joint - np.outer(joint.sum(1), joint.sum(0))).sum()
    product = dependence(np.asarray(blockwise_posterior_x0(jax.random.key(1), x_t, hmm, V, 1)))
    exact = dependence(np.asarray(blockwise_posterior_x0(jax.random.key(2), x_t, hmm, V, L)))
    assert product < 0.05 < exact


def test_cells_are_checked():
    assert parse_cell("4:2", 32) == (4, 2)
    for bad in ("4", "4:0", "0:2", "4:33", "a:b"):
        with pytest.raises(ValueError, match="steps"):
            parse_cell(bad, 32)
