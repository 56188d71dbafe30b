"""Argument checks shared by every public function.

Each check raises before any work is done, with a message naming the argument, what was
expected and what was given. Checks only look at static facts (shape, dtype, Python numbers),
so they also run, once, while `jax.jit` traces a function.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax.numpy as jnp
import numpy as np


def shape_of(x) -> tuple[int, ...]:
    """Shape of an array-like without converting it."""
    return tuple(np.shape(x))


def check_rank(name: str, x, rank: int, what: str) -> None:
    """`x` has exactly `rank` dimensions; `what` names them, e.g. "[B, C]"."""
    if np.ndim(x) != rank:
        raise ValueError(f"{name} must have shape {what} (rank {rank}), got shape {shape_of(x)}")


def check_same_dims(name_a: str, a, name_b: str, b, axes: Sequence[int] | None = None) -> None:
    """`a` and `b` agree on `axes` (all axes when None)."""
    sa, sb = shape_of(a), shape_of(b)
    if axes is None:
        ok = sa == sb
        detail = "the same shape"
    else:
        ok = all(sa[i] == sb[i] for i in axes)
        detail = f"the same size on axes {tuple(axes)}"
    if not ok:
        raise ValueError(f"{name_a} and {name_b} must have {detail}, got {sa} and {sb}")


def dtype_of(x) -> np.dtype:
    """dtype of an array-like without copying a jax.Array to the host."""
    return np.dtype(x.dtype) if hasattr(x, "dtype") else np.asarray(x).dtype


def check_floating(name: str, x) -> None:
    if not jnp.issubdtype(dtype_of(x), jnp.floating):
        raise TypeError(f"{name} must have a floating dtype, got {dtype_of(x)}")


def check_integer(name: str, x) -> None:
    if not jnp.issubdtype(dtype_of(x), jnp.integer):
        raise TypeError(f"{name} must have an integer dtype, got {dtype_of(x)}")


def check_dtype_in(name: str, x, allowed: Sequence[str]) -> None:
    """`x.dtype` is one of `allowed` (names such as "uint8", "float32", or "floating")."""
    dtype = dtype_of(x)
    for a in allowed:
        if a == "floating" and jnp.issubdtype(dtype, jnp.floating):
            return
        if a != "floating" and dtype == np.dtype(a):
            return
    raise TypeError(f"{name} must have dtype in {tuple(allowed)}, got {dtype}")


def check_probability(name: str, value, *, allow_one: bool = True) -> float:
    """A Python number in [0, 1] (or [0, 1) when `allow_one` is False); returns it as float."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    value = float(value)
    upper_ok = value <= 1.0 if allow_one else value < 1.0
    if math.isnan(value) or value < 0.0 or not upper_ok:
        interval = "[0, 1]" if allow_one else "[0, 1)"
        raise ValueError(f"{name} must be in {interval}, got {value}")
    return value


def check_positive_int(name: str, value, *, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def check_choice(name: str, value, choices: Sequence[str]) -> str:
    if value not in choices:
        raise ValueError(f"{name} must be one of {tuple(choices)}, got {value!r}")
    return value
