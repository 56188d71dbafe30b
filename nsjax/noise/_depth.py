"""Model noise: dropout and stochastic depth (drop-path) with the reference's linear rate rule."""

from __future__ import annotations

import numbers

import jax
import jax.numpy as jnp
from jax import Array
from jax.typing import ArrayLike

from nsjax import _checks


def _check_rate(rate: float | ArrayLike) -> bool:
    """Validate a concrete rate; returns True when it is statically zero (nothing to do)."""
    if isinstance(rate, numbers.Real):
        return _checks.check_probability("rate", rate) == 0.0
    if jnp.ndim(rate) != 0:
        raise ValueError(f"rate must be a scalar, got shape {jnp.shape(rate)}")
    return False


def _keep_and_scale(key: Array | None, x: ArrayLike, rate, mask_shape: tuple[int, ...]) -> Array:
    """`x * keep / (1 - rate)` with `keep ~ Bernoulli(1 - rate)` of `mask_shape` (broadcast)."""
    if key is None:
        raise ValueError("key must be a jax.random key when rate > 0 and not deterministic, got None")
    x = jnp.asarray(x)
    if isinstance(rate, numbers.Real):  # exact 1 / (1 - rate) in float64, then one rounding
        survival = 1.0 - float(rate)
        scale = jnp.asarray(1.0 / survival if survival > 0 else 0.0, x.dtype)
    else:
        survival = 1.0 - jnp.asarray(rate, jnp.float32)
        scale = jnp.where(survival > 0, 1.0 / jnp.maximum(survival, 1e-12), 0.0).astype(x.dtype)
    keep = jax.random.uniform(key, mask_shape) < survival
    return jnp.where(keep, x * scale, jnp.zeros((), x.dtype))


def drop_path(
    key: Array | None, x: ArrayLike, rate: float | ArrayLike, *, deterministic: bool = False
) -> Array:
    """Per-example stochastic depth on a residual branch.

    Each example's branch is zeroed with probability `rate`; survivors are scaled by
    `1 / (1 - rate)` so the expectation is unchanged. Identity when `deterministic` or
    `rate == 0` (then `key` may be None).

    **Arguments:**
    - `key`: a `jax.random` key.
    - `x`: `[B, ...]`, any float dtype (kept).
    - `rate`: drop probability in [0, 1], a Python number or a traced scalar.

    **Returns:** same shape and dtype as `x`.
    """
    _checks.check_floating("x", x)
    if jnp.ndim(x) < 1:
        raise ValueError(f"x must have shape [B, ...] (rank >= 1), got shape {jnp.shape(x)}")
    if deterministic or _check_rate(rate):
        return jnp.asarray(x)
    batch = jnp.shape(x)[0]
    return _keep_and_scale(key, x, rate, (batch,) + (1,) * (jnp.ndim(x) - 1))


def dropout(
    key: Array | None, x: ArrayLike, rate: float | ArrayLike, *, deterministic: bool = False
) -> Array:
    """Element-wise dropout: each element is zeroed with probability `rate`, survivors scaled by
    `1 / (1 - rate)`. Identity when `deterministic` or `rate == 0` (then `key` may be None).

    **Arguments:** `key`, a `jax.random` key; `x`, float array of any shape; `rate` in [0, 1].

    **Returns:** same shape and dtype as `x`.
    """
    _checks.check_floating("x", x)
    if deterministic or _check_rate(rate):
        return jnp.asarray(x)
    return _keep_and_scale(key, x, rate, jnp.shape(x))


def stochastic_depth_rates(num_blocks: int, max_rate: float = 0.2) -> tuple[float, ...]:
    """Drop rates per block by the reference's linear rule: block `i` of `N` gets
    `max_rate * i / N` (`i = 0 .. N-1`), so the first block is never dropped and the last keeps
    probability `1 - max_rate * (N - 1) / N`.
    """
    num_blocks = _checks.check_positive_int("num_blocks", num_blocks, minimum=0)
    max_rate = _checks.check_probability("max_rate", max_rate)
    return tuple(max_rate * i / num_blocks for i in range(num_blocks))
