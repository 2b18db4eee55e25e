"""Rematerialisation (gradient checkpointing) of a model's repeated blocks, by policy name.

Every model takes `remat` (one of REMAT_POLICIES) and applies it per repeated block: the DiT scans its blocks
with the policy on the scan body (`dit.run_blocks`), the U-Net and the MLP wrap each residual / attention block or
hidden layer in `nnx.remat` (`remat_call`). What the backward pass keeps:

  none                              everything (no rematerialisation; the fastest, the most memory)
  dots_saveable                     the outputs of all matrix products, attention scores included; the
                                    elementwise ops (norms, activations, softmax) are recomputed
  dots_with_no_batch_dims_saveable  only the weight matmuls' outputs (attention scores are recomputed)
  full                              only each block's inputs: the whole block is recomputed in the backward pass

Values and gradients do not depend on the policy (same ops, same dropout keys), only memory and FLOPs do. In an
unrolled loop (U-Net, MLP) where the recomputation runs is the XLA scheduler's choice; XLA's CPU scheduler runs it
early, so on CPU the compiled memory of those two barely changes. The DiT's rolled scan bounds it everywhere.
"""
from __future__ import annotations

from collections.abc import Callable

import jax
from flax import nnx

REMAT_POLICIES: dict[str, Callable | None] = {
    "none": None,
    "dots_saveable": jax.checkpoint_policies.dots_saveable,
    "dots_with_no_batch_dims_saveable": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
    "full": jax.checkpoint_policies.nothing_saveable,
}


def check_remat(remat: str) -> str:
    if remat not in REMAT_POLICIES:
        raise ValueError(f"remat must be one of {sorted(REMAT_POLICIES)}, got {remat!r}")
    return remat


def remat_call(remat: str, fn: Callable, *args):
    """`fn(*args)`, rematerialised in the backward pass according to the policy `remat`.

    Modules and `nnx.Rngs` among `args` are lifted by `nnx.remat` (their state, e.g. the dropout counter, is
    updated as if `fn` had run unwrapped); `fn` must not close over modules with state.
    """
    if remat == "none":
        return fn(*args)
    return nnx.remat(fn, policy=REMAT_POLICIES[remat])(*args)
