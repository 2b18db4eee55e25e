"""Named warps of a sampler's time grid: t -> w(t), monotone on [0, 1] with w(0) = 0 and w(1) = 1.

A warp moves where the n network evaluations of a few-step sampler sit without changing their number. On a masked
process with the loglinear schedule (mask probability t), `sine` (w(t) = sin(pi t / 2)) unmasks fewer tokens in the
first steps and more in the last, as MaskGIT's cosine schedule does; `power:p` (w(t) = t^p) does the same for p < 1
and the opposite for p > 1.
"""
from __future__ import annotations

import math

import jax.numpy as jnp

TIME_WARPS = ("none", "sine", "power:<p>")


def _power(warp: str) -> float:
    try:
        p = float(warp.split(":", 1)[1])
    except ValueError:
        p = math.nan
    if not (math.isfinite(p) and p > 0.0):
        raise ValueError(f"time warp {warp!r}: power:<p> needs a finite p > 0")
    return p


def check_time_warp(warp: str) -> None:
    """Raise ValueError naming `warp` unless it is one of TIME_WARPS."""
    if not isinstance(warp, str):
        raise ValueError(f"time warp must be a string, one of {TIME_WARPS}; got {warp!r}")
    if warp.startswith("power:"):
        _power(warp)
    elif warp not in ("none", "sine"):
        raise ValueError(f"unknown time warp {warp!r}; choose one of {TIME_WARPS}")


def warp_time_grid(grid, warp: str):
    """The grid float32[n + 1] mapped point by point through the warp (a decreasing grid stays decreasing).

    Args:
      grid: float[n + 1] times in [0, 1], decreasing from 1.
      warp: 'none', 'sine' (sin(pi t / 2)) or 'power:<p>' (t^p, p > 0).

    Returns:
      float32[n + 1]: the warped grid (`grid` itself as float32 for 'none').
    """
    check_time_warp(warp)
    grid = jnp.asarray(grid, jnp.float32)
    if warp == "sine":
        return jnp.sin(0.5 * jnp.pi * grid)
    if warp.startswith("power:"):
        return grid ** _power(warp)
    return grid
