"""Checks and per-op kernels shared by `nsjax.noise.ops` and the RandAugment policy.

A kernel takes validated arguments: `images` a `uint8[B, H, W, 3]` jax array and per-image
parameters as `[B]` arrays. The public ops check their arguments and call these; the policy
calls them on one image at a time (CPU) or builds the same results from `_image` primitives for
the whole batch (other platforms).
"""

from __future__ import annotations

import functools
import numbers
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from nsjax import _checks
from nsjax.noise import _image

_ARRAY_TYPES = (jax.Array, np.ndarray, np.generic, jax.ShapeDtypeStruct)

# --------------------------------------------------------------------------- argument checks


def check_images(images: Any) -> tuple[int, int, int]:
    """`images` is `uint8[B, H, W, 3]` with H, W >= 1 and B >= 0 (`_checks.check_images`);
    returns (B, H, W)."""
    return _checks.check_images("images", images, dtypes=("uint8",), min_side=1)


MAX_SIDE = 4096


def check_side(images: Any, op: str) -> None:
    """Images of at most 4096 px a side, for the ops whose exact integer arithmetic needs it:
    the geometric ops (coordinates times float32 coefficients, 16.16 fixed point) and Contrast
    (a uint32 sum of grey levels)."""
    _, height, width, _ = _checks.shape_of(images)
    if max(height, width) > MAX_SIDE:
        raise ValueError(
            f"images must be at most {MAX_SIDE} px high and wide for {op}, "
            f"got shape {_checks.shape_of(images)}"
        )


def check_fill(fill: Any) -> int:
    """`fill` is an integer grey level in [0, 255]: a Python int, a NumPy integer or a 0-d
    integer array (concrete: it is baked into the computation)."""
    value = _checks.check_number("fill", fill, minimum=0, maximum=255)
    dtype = _checks.dtype_of(fill) if not isinstance(fill, int) else np.dtype(np.int64)
    if not np.issubdtype(dtype, np.integer):
        raise TypeError(f"fill must be an integer grey level in [0, 255], got {dtype} {value:g}")
    return int(value)


def per_image(name: str, value: Any, batch: int, *, integer: bool) -> jax.Array:
    """A per-image parameter: a scalar or an array of shape `[B]`, as `int32[B]` (integer) or
    `float32[B]`."""
    if isinstance(value, bool) or not isinstance(value, (numbers.Real, *_ARRAY_TYPES)):
        raise TypeError(f"{name} must be a number or an array of shape [B], "
                        f"got {type(value).__name__}")
    shape = _checks.shape_of(value)
    if len(shape) > 1 or (len(shape) == 1 and shape[0] != batch):
        raise ValueError(
            f"{name} must be a scalar or have shape [B] = ({batch},), got shape {shape}"
        )
    dtype = _checks.dtype_of(value)
    if integer:
        if not (jnp.issubdtype(dtype, jnp.integer) and dtype != np.bool_):
            raise TypeError(f"{name} must have an integer dtype, got {dtype}")
        return jnp.broadcast_to(jnp.asarray(value, jnp.int32), (batch,))
    if not (jnp.issubdtype(dtype, jnp.integer) or jnp.issubdtype(dtype, jnp.floating)):
        raise TypeError(f"{name} must have an integer or floating dtype, got {dtype}")
    if not _checks.is_traced(value):  # a traced NaN cannot be seen: see the ops' docstring
        finite = np.isfinite(np.asarray(value, np.float32))
        if not finite.all():
            raise ValueError(f"{name} must be finite, got {np.asarray(value).ravel()[~finite.ravel()][0]} "
                             f"at {int(np.flatnonzero(~finite.ravel())[0])} of {finite.size}")
    return jnp.broadcast_to(jnp.asarray(value, jnp.float32), (batch,))


def _col(x: jax.Array) -> jax.Array:
    """`[B]` -> `[B, 1, 1, 1]`, to broadcast against images."""
    return x[:, None, None, None]


# --------------------------------------------------------------------------- kernels
# Unchecked implementations on validated arguments: the policy calls these directly. They are
# jitted so that eager calls of the public ops run compiled (inside a jit they are inlined).


def posterize_shift(bits: jax.Array, tf_compat: bool) -> jax.Array:
    """Right-then-left shift that keeps `bits` bits, `int32[B]` in [0, 8].

    Default: `clip(8 - bits, 0, 8)` (bits >= 8 keep the image, bits <= 0 give black).
    tf_compat: TF1 casts `8 - bits` to uint8 (wrapping mod 256) and its shift kernels clamp
    the shift to [0, 7], so bits 0 and bits > 8 keep 1 bit.
    """
    if tf_compat:
        return jnp.minimum(jnp.mod(8 - bits, 256), 7)
    return jnp.clip(8 - bits, 0, 8)


def solarize_threshold(threshold: jax.Array, tf_compat: bool) -> jax.Array:
    """tf_compat: TF1 casts the threshold to uint8, wrapping it mod 256 (256 -> 0)."""
    return jnp.mod(threshold, 256) if tf_compat else threshold


def contrast_degenerate(images: jax.Array, tf_compat: bool) -> jax.Array:
    """The grey level Contrast blends toward, `int32[B]`.

    Default: PIL's `int(mean + 0.5)` of the image's grey levels (`convert("L")`), computed
    exactly in integers. tf_compat: the reference's `sum(histogram) / 256` = H*W/256, clipped
    to 255 and truncated -- the same for every image of a given size.
    """
    b, h, w, _ = images.shape
    if tf_compat:
        value = int(min(255.0, float(np.float32(h * w)) / 256.0))
        return jnp.full((b,), value, jnp.int32)
    gray = _image.grayscale(images, tf_compat=False).astype(jnp.uint32)
    n = h * w  # <= 4096**2, so the sum of grey levels fits in uint32
    total = gray.reshape(b, n).sum(axis=1, dtype=jnp.uint32)
    quotient, remainder = total // n, total % n
    return (quotient + (2 * remainder >= n)).astype(jnp.int32)


@functools.partial(jax.jit, static_argnames="tf_compat")
def auto_contrast_kernel(images: jax.Array, tf_compat: bool) -> jax.Array:
    lo, hi = _image.channel_min_max(images)
    if not tf_compat:  # PIL's tables differ from the exact quotient only for some ranges
        return lax.cond(
            _image.pil_autocontrast_has_misses(lo, hi).any(),
            lambda: _image.apply_luts(images, _image.pil_autocontrast_luts(lo, hi)),
            lambda: _image.pil_autocontrast_values(images, lo[:, None, None, :],
                                                   hi[:, None, None, :]))
    lo = lo.astype(jnp.float32)[:, None, None, :]
    hi = hi.astype(jnp.float32)[:, None, None, :]
    return _image.autocontrast_values(images.astype(jnp.float32), lo, hi)


@jax.jit
def invert_kernel(images: jax.Array) -> jax.Array:
    return _image.invert_values(images)


@jax.jit
def equalize_kernel(images: jax.Array) -> jax.Array:
    luts = _image.materialize(lambda x: _image.equalize_luts(_image.channel_histograms(x)), images)
    return _image.apply_luts(images, luts)


@jax.jit
def posterize_kernel(images: jax.Array, shift: jax.Array) -> jax.Array:
    return _image.posterize_values(images.astype(jnp.int32), _col(shift)).astype(jnp.uint8)


@jax.jit
def solarize_kernel(images: jax.Array, threshold: jax.Array) -> jax.Array:
    x = images.astype(jnp.int32)
    return _image.solarize_values(x, _col(threshold)).astype(jnp.uint8)


@jax.jit
def solarize_add_kernel(images: jax.Array, addition: jax.Array, threshold: jax.Array) -> jax.Array:
    x = images.astype(jnp.int32)
    return _image.solarize_add_values(x, _col(addition), _col(threshold)).astype(jnp.uint8)


def blend_kernel(degenerate: jax.Array, images: jax.Array, factor: jax.Array) -> jax.Array:
    """`degenerate`: float32 broadcastable to the images."""
    return _image.blend_values(degenerate, images.astype(jnp.float32), _col(factor))


@functools.partial(jax.jit, static_argnames="tf_compat")
def color_kernel(images: jax.Array, factor: jax.Array, tf_compat: bool) -> jax.Array:
    gray = _image.grayscale(images, tf_compat=tf_compat)[..., None].astype(jnp.float32)
    return blend_kernel(gray, images, factor)


@functools.partial(jax.jit, static_argnames="tf_compat")
def contrast_kernel(images: jax.Array, factor: jax.Array, tf_compat: bool) -> jax.Array:
    mean = contrast_degenerate(images, tf_compat).astype(jnp.float32)
    return blend_kernel(_col(mean), images, factor)


@jax.jit
def brightness_kernel(images: jax.Array, factor: jax.Array) -> jax.Array:
    return blend_kernel(jnp.float32(0.0), images, factor)


@functools.partial(jax.jit, static_argnames="tf_compat")
def sharpness_kernel(images: jax.Array, factor: jax.Array, tf_compat: bool) -> jax.Array:
    smoothed = _image.materialize(functools.partial(_image.smooth, tf_compat=tf_compat), images)
    return blend_kernel(smoothed.astype(jnp.float32), images, factor)
