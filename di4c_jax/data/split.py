"""A seeded held-out split of any random-access source (a user's data has no test split of its own)."""
from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np


def holdout_indices(num: int, holdout: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train int64[num - m], held_out int64[m]): a seeded permutation of range(num) cut in two, each part sorted.

    holdout: a fraction 0 < holdout < 1 (m = round(holdout * num), at least 1) or a row count m >= 1 (an integer).
    Raises ValueError if either part would be empty.
    """
    if isinstance(holdout, bool) or not (0 < holdout < 1 or (holdout >= 1 and float(holdout).is_integer())):
        raise ValueError(f"data.holdout must be a fraction in (0, 1) or a whole number of rows >= 1, got {holdout}")
    m = max(1, round(holdout * num)) if holdout < 1 else int(holdout)
    if not 1 <= m < num:
        raise ValueError(f"data.holdout={holdout} holds out {m} of {num} rows: both the training and the held-out "
                         f"part need at least one row")
    order = np.random.default_rng(seed).permutation(num)
    return np.sort(order[m:]), np.sort(order[:m])


@dataclasses.dataclass(frozen=True)
class SubsetSource:
    """The rows `indices` (int[n]) of a random-access source, in that order."""

    base: Any
    indices: np.ndarray

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int):
        return self.base[int(self.indices[index])]


@dataclasses.dataclass(frozen=True)
class HeldOutSplit:
    train: SubsetSource
    held_out: SubsetSource
    seed: int

    def describe(self) -> str:
        """e.g. 'held out 30 of 300 rows (10.0%, seed 0) for evaluation'."""
        total = len(self.train) + len(self.held_out)
        return (f"held out {len(self.held_out)} of {total} rows ({100 * len(self.held_out) / total:.1f}%, seed "
                f"{self.seed}) for evaluation; training on {len(self.train)}")


def split_source(source: Any, holdout: float, seed: int) -> HeldOutSplit:
    """The source's rows split by `holdout_indices` into training and held-out sources."""
    train, held = holdout_indices(len(source), holdout, seed)
    return HeldOutSplit(SubsetSource(source, train), SubsetSource(source, held), seed)
