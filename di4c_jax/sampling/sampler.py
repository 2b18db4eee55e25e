"""`Sampler` (a jitted sampler with its exact cost) and the sampler registry.

A registered sampler factory has the signature
`factory(*, process, denoiser, shape, num_steps, teacher=None, teacher_last_steps=0, **options) -> Sampler`;
`options` are the sampler's own settings (e.g. `final` for the analytic sampler, `guidance` for MaskGIT).
"""
from __future__ import annotations

import dataclasses
import numbers
from typing import Callable

import jax

from di4c_jax.registry import Registry

# fold_in data of a trajectory's shared-lambda key: no sampler folds a step index this large into its key
TRAJECTORY_LAM_STREAM = 0x1A4B

SAMPLERS: Registry[Callable[..., "Sampler"]] = Registry("sampler")


@dataclasses.dataclass(frozen=True)
class Sampler:
    """A jitted sampler with its exact cost.

    `sampler(key, *, params, teacher_params=None, cond=None) -> int32[B, D]`; `sample(key, params, teacher_params,
    cond)` is the jitted function itself (positional, e.g. for `jax.shard_map`). `nfe` counts every network
    evaluation of one trajectory (student + teacher), `teacher_nfe` the teacher's share; both are Python ints fixed
    by the static step counts.
    """

    sample: Callable[..., jax.Array]
    nfe: int
    teacher_nfe: int = 0

    def __call__(self, key: jax.Array, *, params, teacher_params=None, cond=None) -> jax.Array:
        return self.sample(key, params, teacher_params, cond)


def check_share_lam(share_lam) -> None:
    """Raise ValueError naming the value unless share_lam is a bool."""
    if not isinstance(share_lam, bool):
        raise ValueError(f"share_lam must be True or False, got {share_lam!r}")


def lam_drawer(key: jax.Array, *, denoiser, batch: int, share_lam: bool) -> Callable[[jax.Array], jax.Array | None]:
    """How a sampler draws a mixture's lambda: returns `draw(step_key) -> float32[B] | None` for one step.

    Args:
      key: the sampler's key (the shared lambda's stream is folded out of it).
      denoiser: a `Denoiser` (a product one gives None at every step); batch: B.

      share_lam: False: a fresh lambda per sample per step, from `step_key` (the references' samplers): each step
        samples the mixture p(x0 | x_t). True: one lambda per sample for the whole trajectory, drawn once from
        `key`'s own stream, so every step evaluates the same component: the samples' law is the mean over lambda
        of each component's own chain (lambda as a latent drawn first), not the chain of the mixture.

    Returns:
      draw(step_key) -> float32[B] lambdas in [0, 1), or None for a product denoiser.
    """
    check_share_lam(share_lam)
    if not share_lam:
        return lambda step_key: denoiser.draw_lam(step_key, batch)
    lam = denoiser.draw_lam(jax.random.fold_in(key, TRAJECTORY_LAM_STREAM), batch)
    return lambda step_key: lam


def reject_teacher_hybrid(name: str, teacher_last_steps: int) -> None:
    """Samplers without teacher hybrids reject teacher_last_steps > 0."""
    if teacher_last_steps:
        raise ValueError(f"the {name} sampler has no teacher hybrid; got teacher_last_steps={teacher_last_steps}")


def check_networks(process, shape, *denoisers) -> None:
    """A sampler's static inputs agree before anything is traced: `shape` is (batch, num_dims) with both >= 1,
    and every denoiser (None skipped) has the process's K states and, if fixed, D positions."""
    if len(tuple(shape)) != 2 or not all(isinstance(n, numbers.Integral) and n >= 1 for n in shape):
        raise ValueError(f"shape must be (batch, num_dims) with both >= 1, got {tuple(shape)}")
    for denoiser in (d for d in denoisers if d is not None):
        if denoiser.num_states != process.num_states:
            raise ValueError(f"the denoiser has K={denoiser.num_states} states, the process "
                             f"{type(process).__name__} K={process.num_states} (built for another vocabulary)")
        if denoiser.num_positions is not None and denoiser.num_positions != shape[1]:
            raise ValueError(f"shape {tuple(shape)} asks for {shape[1]} positions, the denoiser was built for "
                             f"num_positions={denoiser.num_positions}")
