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
