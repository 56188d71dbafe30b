"""Argument checks shared by every public function.

Each check raises before any work is done, with a message naming the argument, what was
expected and what was given. Checks only look at static facts (shape, dtype, Python numbers),
so they also run, once, while `jax.jit` traces a function.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence

import jax
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
    """A concrete number in [0, 1] (or [0, 1) when `allow_one` is False); returns it as float."""
    return check_number(name, value, minimum=0.0, maximum=1.0, max_open=not allow_one)


def check_positive_int(name: str, value, *, minimum: int = 1) -> int:
    """A concrete int >= `minimum`: a Python int, a NumPy integer or a 0-d integer array (it
    sets shapes or how much is computed, so a traced value is refused); returns a Python int."""
    if is_traced(value):
        raise TypeError(f"{name} must be a concrete int (it sets what is computed), got a traced "
                        f"value of dtype {value.dtype}")
    if (hasattr(value, "shape") and hasattr(value, "dtype") and tuple(value.shape) == ()
            and np.issubdtype(np.dtype(value.dtype), np.integer)):
        value = value.item() if hasattr(value, "item") else int(value)
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def check_bool(name: str, value) -> bool:
    """A Python or NumPy bool, for flags that select what is computed; returns a Python bool."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__}")
    return bool(value)


def check_choice(name: str, value, choices: Sequence[str]) -> str:
    if value not in choices:
        raise ValueError(f"{name} must be one of {tuple(choices)}, got {value!r}")
    return value


# --------------------------------------------------------------------------- numbers
# A "number" argument accepts a Python int or float, a NumPy scalar and a 0-d array (NumPy or
# JAX). A concrete value is checked here and returned as a Python float; a traced value (inside
# `jax.jit`, `grad`, `vmap`) cannot be checked and is returned as is: the function using it
# must then make an out-of-range value give NaN, never a plausible finite result.


def is_traced(x) -> bool:
    """Whether `x` is an abstract value under a JAX transformation (no concrete number)."""
    return isinstance(x, jax.core.Tracer)


def _number_kind(name: str, value) -> None:
    if isinstance(value, bool) or isinstance(value, (np.bool_,)):
        raise TypeError(f"{name} must be a number, got bool")
    if isinstance(value, (int, float, np.integer, np.floating)):
        return
    if hasattr(value, "shape") and hasattr(value, "dtype"):
        if tuple(value.shape) != ():
            raise ValueError(f"{name} must be a scalar number, got an array of shape "
                             f"{tuple(value.shape)}")
        dtype = np.dtype(value.dtype)
        if dtype == np.bool_ or not (np.issubdtype(dtype, np.integer)
                                     or np.issubdtype(dtype, np.floating)):
            raise TypeError(f"{name} must be a number, got a 0-d array of dtype {dtype}")
        return
    raise TypeError(f"{name} must be a number, got {type(value).__name__}")


def check_number(name: str, value, *, minimum: float | None = None,
                 maximum: float | None = None, min_open: bool = False,
                 max_open: bool = False, traced_ok: bool = False):
    """A real number in the interval given by `minimum` / `maximum` (closed unless `*_open`);
    NaN is always refused. Returns a Python float, or the tracer itself when `traced_ok` and the
    value is traced (then the caller maps an out-of-range value to NaN, see `nan_unless`)."""
    _number_kind(name, value)
    if is_traced(value):
        if traced_ok:
            return value
        raise TypeError(f"{name} must be a concrete number (it selects what is computed), "
                        f"got a traced value of dtype {value.dtype}")
    x = float(np.asarray(value))
    lo_ok = minimum is None or (x > minimum if min_open else x >= minimum)
    hi_ok = maximum is None or (x < maximum if max_open else x <= maximum)
    if math.isnan(x) or not (lo_ok and hi_ok):
        raise ValueError(f"{name} must be {_range_text(minimum, maximum, min_open, max_open)}, "
                         f"got {x}")
    return x


def _range_text(minimum, maximum, min_open: bool, max_open: bool) -> str:
    """`"> 0"`, `"<= 1"`, `"in [0, 1)"` or `"a number"` (no bound)."""
    if minimum is not None and maximum is not None:
        return f"in {'(' if min_open else '['}{minimum:g}, {maximum:g}{')' if max_open else ']'}"
    if minimum is not None:
        return f"{'>' if min_open else '>='} {minimum:g}"
    if maximum is not None:
        return f"{'<' if max_open else '<='} {maximum:g}"
    return "a number (not NaN)"


def nan_unless(valid, x):
    """`x` where `valid`, NaN elsewhere (the result of a traced argument out of its range)."""
    return jnp.where(valid, x, jnp.nan)


# --------------------------------------------------------------------------- keys and images


def check_key(name: str, key) -> None:
    """A `jax.random` key: a typed key array (`jax.random.key`) or a raw `uint32[2]`
    (`jax.random.PRNGKey`); `None` and other values are refused by name."""
    dtype = getattr(key, "dtype", None)
    if dtype is not None and jnp.issubdtype(dtype, jax.dtypes.prng_key):
        if np.ndim(key) != 0:
            raise ValueError(f"{name} must be a single jax.random key, got a key array of "
                             f"shape {shape_of(key)}")
        return
    if dtype is not None and np.dtype(dtype) == np.uint32 and shape_of(key) == (2,):
        return
    what = "None" if key is None else f"{type(key).__name__} {shape_of(key) if dtype else ''}"
    raise TypeError(f"{name} must be a jax.random key (jax.random.key(seed)), got {what.strip()}")


def check_images(name: str, x, *, dtypes: Sequence[str], min_side: int = 1,
                 channels: int = 3) -> tuple[int, int, int]:
    """`x` is `[B, H, W, channels]` with a dtype in `dtypes` (see `check_dtype_in`) and
    H, W >= `min_side`; B may be 0 (an empty batch gives an empty result everywhere).
    Accepts any array type with `.shape` and `.dtype` (NumPy, JAX, `ShapeDtypeStruct`).
    Returns (B, H, W)."""
    check_rank(name, x, 4, f"[B, H, W, {channels}]")
    check_dtype_in(name, x, dtypes)
    batch, height, width, c = shape_of(x)
    if c != channels or height < min_side or width < min_side:
        raise ValueError(f"{name} must have shape [B, H, W, {channels}] with H, W >= "
                         f"{min_side}, got {shape_of(x)}")
    return batch, height, width


def check_json_dict(name: str, value) -> dict:
    """A dict JSON can write (metadata, an iterator's state); returns a deep copy made through
    JSON, so later changes by the caller do not reach what is stored."""
    if not isinstance(value, dict):
        raise TypeError(f"{name} must be a JSON-able dict or None, got {type(value).__name__}")
    try:
        return json.loads(json.dumps(value))
    except (TypeError, ValueError) as e:
        raise TypeError(f"{name} must be a JSON-able dict: {e}") from e
