"""TF's nearest-neighbour affine maps (`tf.contrib.image` as the reference calls it), as
float32 matrices `[B, 2, 3]` for `_image.warp`: output pixel (x, y) takes input pixel
`round(M @ (x, y, 1))`, rounded half away from zero. The same builders as `_pil_geometry`.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from nsjax.noise._image import mul_small_int


def identity(batch: int) -> jax.Array:
    """`float32[B, 2, 3]` identity maps."""
    eye = jnp.asarray([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], jnp.float32)
    return jnp.broadcast_to(eye, (batch, 2, 3))


def rotation(degrees: jax.Array, height: int, width: int) -> jax.Array:
    """`contrib.image.rotate` about the image centre, `float32[B, 2, 3]`.

    `radians = fl32(degrees * fl32(pi / 180))`; output (x, y) samples input
    `(cos x - sin y + x_off, sin x + cos y + y_off)` with TF's float32 offsets.
    """
    radians = degrees.astype(jnp.float32) * np.float32(math.pi / 180.0)
    cos, sin = jnp.cos(radians), jnp.sin(radians)
    w1, h1 = np.float32(width - 1), np.float32(height - 1)
    x_off = (w1 - (mul_small_int(cos, w1) - mul_small_int(sin, h1))) * np.float32(0.5)
    y_off = (h1 - (mul_small_int(sin, w1) + mul_small_int(cos, h1))) * np.float32(0.5)
    return jnp.stack([jnp.stack([cos, -sin, x_off], -1), jnp.stack([sin, cos, y_off], -1)], -2)


def _matrices(a, b, c, d, e, f) -> jax.Array:
    row0 = jnp.stack(jnp.broadcast_arrays(a, b, c), -1)
    row1 = jnp.stack(jnp.broadcast_arrays(d, e, f), -1)
    return jnp.stack([row0, row1], -2).astype(jnp.float32)


def shear_x(shear: jax.Array) -> jax.Array:
    """Output (x, y) samples input (x + shear * y, y): TF's `[1, s, 0, 0, 1, 0, 0, 0]`."""
    one, zero = jnp.ones_like(shear), jnp.zeros_like(shear)
    return _matrices(one, shear, zero, zero, one, zero)


def shear_y(shear: jax.Array) -> jax.Array:
    """Output (x, y) samples input (x, shear * x + y)."""
    one, zero = jnp.ones_like(shear), jnp.zeros_like(shear)
    return _matrices(one, zero, zero, shear, one, zero)


def translate_x(pixels: jax.Array, width: int) -> jax.Array:
    """Output (x, y) samples input (x + pixels, y): TF's `translate(image, [-pixels, 0])`.
    `width` is unused (the signature matches `_pil_geometry`)."""
    del width
    one, zero = jnp.ones_like(pixels), jnp.zeros_like(pixels)
    return _matrices(one, zero, pixels, zero, one, zero)


def translate_y(pixels: jax.Array, height: int) -> jax.Array:
    """Output (x, y) samples input (x, y + pixels)."""
    del height
    one, zero = jnp.ones_like(pixels), jnp.zeros_like(pixels)
    return _matrices(one, zero, zero, zero, one, pixels)
