"""Model noise: dropout and stochastic depth (drop-path) with the reference's linear rate rule."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array
from jax.typing import ArrayLike

from nsjax import _checks


def _apply(key, x: ArrayLike, rate, train, mask_shape) -> Array:
    """`x * keep / (1 - rate)`, `keep ~ Bernoulli(1 - rate)` of `mask_shape` (broadcast over
    `x`); `x` itself when not `train` or `rate == 0`; NaN everywhere for a traced rate outside
    [0, 1] (or NaN)."""
    train = _checks.check_bool("train", train)
    rate = _checks.check_number("rate", rate, minimum=0.0, maximum=1.0, traced_ok=True)
    x = jnp.asarray(x)
    if not train or (isinstance(rate, float) and rate == 0.0):
        return x
    _checks.check_key("key", key)
    if isinstance(rate, float):  # exact 1 / (1 - rate) in float64, then one rounding
        survival = 1.0 - rate
        scale = jnp.asarray(1.0 / survival if survival > 0 else 0.0, x.dtype)
    else:
        rate = jnp.asarray(rate, jnp.float32)
        survival = 1.0 - rate
        scale = jnp.where(survival > 0, 1.0 / jnp.maximum(survival, 1e-12), 0.0).astype(x.dtype)
    keep = jax.random.uniform(key, mask_shape) < survival
    out = jnp.where(keep, x * scale, jnp.zeros((), x.dtype))
    if isinstance(rate, float):
        return out
    valid = (rate >= 0) & (rate <= 1)  # False for NaN; on the rate: 1 - (-1e-28) rounds to 1
    return _checks.nan_unless(valid, out).astype(x.dtype)


def drop_path(key: Array | None, x: ArrayLike, rate: float | ArrayLike, *, train: bool = True
              ) -> Array:  # fmt: skip
    """Per-example stochastic depth on a residual branch.

    Each example's branch is zeroed with probability `rate`; survivors are scaled by
    `1 / (1 - rate)` so the expectation is unchanged. Identity when `train` is False or
    `rate == 0` (then `key` may be None).

    **Arguments:**

    - `key`: a `jax.random` key (checked when used: `train` and a rate that is not 0).
    - `x`: float `[B, ...]` (rank >= 1, `B` may be 0), any float dtype (kept).
    - `rate`: drop probability in [0, 1]: a Python number, NumPy scalar or 0-d array (a
      concrete value out of range raises `ValueError`), or a traced scalar (under `jax.jit`,
      `grad`, `vmap`): then a value outside [0, 1] or NaN makes every output NaN.
    - `train`: Python bool; False makes this the identity.

    **Returns:** `x`'s shape and dtype.
    """
    _checks.check_floating("x", x)
    if np.ndim(x) < 1:
        raise ValueError(f"x must have shape [B, ...] (rank >= 1), got shape {np.shape(x)}")
    shape = np.shape(x)
    return _apply(key, x, rate, train, (shape[0],) + (1,) * (len(shape) - 1))


def dropout(key: Array | None, x: ArrayLike, rate: float | ArrayLike, *, train: bool = True
            ) -> Array:  # fmt: skip
    """Element-wise dropout: each element is zeroed with probability `rate`, survivors scaled by
    `1 / (1 - rate)`. Identity when `train` is False or `rate == 0` (then `key` may be None).

    **Arguments:**

    - `key`: a `jax.random` key (checked when used: `train` and a rate that is not 0).
    - `x`: float array of any shape (may be empty), any float dtype (kept).
    - `rate`: drop probability in [0, 1], checked as in `drop_path` (a traced rate out of
      range or NaN gives NaN outputs).
    - `train`: Python bool; False makes this the identity.

    **Returns:** `x`'s shape and dtype.
    """
    _checks.check_floating("x", x)
    return _apply(key, x, rate, train, np.shape(x))


def stochastic_depth_rates(num_blocks: int, max_rate: float = 0.2) -> tuple[float, ...]:
    """Drop rates per block by the reference's linear rule (the only place it is written;
    `EfficientNetConfig.expand` calls it).

    Block `i` of `N` gets `max_rate * i / N` (`i = 0 .. N-1`), so the first block is never
    dropped and the last keeps probability `1 - max_rate * (N - 1) / N`.

    **Arguments:**

    - `num_blocks`: int >= 0, `N`.
    - `max_rate`: a concrete number in [0, 1] (Python, NumPy scalar or 0-d array).

    **Returns:** a tuple of `N` Python floats.
    """
    num_blocks = _checks.check_positive_int("num_blocks", num_blocks, minimum=0)
    max_rate = _checks.check_probability("max_rate", max_rate)
    return tuple(max_rate * i / num_blocks for i in range(num_blocks))
