"""`Sampler` (a jitted sampler with its exact cost) and the sampler registry.

A registered sampler factory has the signature
`factory(*, process, denoiser, shape, num_steps, teacher=None, teacher_last_steps=0, **options) -> Sampler`;
`options` are the sampler's own settings (e.g. `final` for the analytic sampler, `guidance` for MaskGIT).
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import jax

from di4c_jax.registry import Registry

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


def reject_teacher_hybrid(name: str, teacher_last_steps: int) -> None:
    """Samplers without teacher hybrids reject teacher_last_steps > 0."""
    if teacher_last_steps:
        raise ValueError(f"the {name} sampler has no teacher hybrid; got teacher_last_steps={teacher_last_steps}")
