"""Checks on token arrays: integer dtype, expected rank, ids inside the vocabulary."""
import numpy as np


def check_integer_tokens(x: np.ndarray, *, ndim: int, what: str = "tokens") -> np.ndarray:
    """Returns `x` as a numpy array after checking that it holds integers and has rank `ndim`.

    Raises:
      ValueError: if the dtype is not an integer type (float, bool, object, ...) or the rank differs.
    """
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.integer):
        raise ValueError(f"{what} must have an integer dtype (token ids), got {x.dtype}{_float_detail(x)}")
    if x.ndim != ndim:
        raise ValueError(f"{what} must have {ndim} dimensions, got shape {x.shape}")
    return x


def _float_detail(x: np.ndarray) -> str:
    """Why a non-integer array is not tokens: NaN/Inf values, or whole numbers that only need a cast."""
    if not np.issubdtype(x.dtype, np.floating) or x.size == 0:
        return ""
    finite = np.isfinite(x)
    if not finite.all():
        return f" holding {int((~finite).sum())} NaN/Inf value(s)"
    if np.all(x == np.round(x)):
        return " (whole numbers: cast with .astype(np.int32) if they are ids)"
    return ""


def validate_tokens(x: np.ndarray, num_states: int, *, what: str = "tokens") -> None:
    """Raises ValueError naming the first offending position and value if any id is < 0 or >= num_states.

    Args:
      x: integer array of any shape, e.g. int32[B, D].
      num_states: vocabulary size S; valid ids are 0..S-1.
    """
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.integer):
        raise ValueError(f"{what} must have an integer dtype, got {x.dtype}")
    if num_states < 1:
        raise ValueError(f"num_states must be >= 1, got {num_states}")
    bad = (x < 0) | (x >= num_states)
    if bad.any():
        flat = int(np.argmax(bad.reshape(-1)))
        index = tuple(int(i) for i in np.unravel_index(flat, x.shape))
        raise ValueError(
            f"{what}: id {int(x[index])} at index {index} is out of range [0, {num_states}) "
            f"({int(bad.sum())} out-of-range ids in total)"
        )
