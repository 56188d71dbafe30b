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


def _matrices(a, b, c, d, e, f) -> jax.Array:
    """`float32[B, 2, 3]` from six `[B]` arrays or Python numbers (broadcast)."""
    m = jnp.broadcast_arrays(*(jnp.asarray(v, jnp.float32) for v in (a, b, c, d, e, f)))
    return jnp.stack([jnp.stack(m[:3], -1), jnp.stack(m[3:], -1)], -2)


def identity(batch: int) -> jax.Array:
    """`float32[B, 2, 3]` identity maps."""
    return _matrices(jnp.ones((batch,), jnp.float32), 0.0, 0.0, 0.0, 1.0, 0.0)


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
    return _matrices(cos, -sin, x_off, sin, cos, y_off)


def shear_x(shear: jax.Array) -> jax.Array:
    """Output (x, y) samples input (x + shear * y, y): TF's `[1, s, 0, 0, 1, 0, 0, 0]`."""
    return _matrices(1.0, shear, 0.0, 0.0, 1.0, 0.0)


def shear_y(shear: jax.Array) -> jax.Array:
    """Output (x, y) samples input (x, shear * x + y)."""
    return _matrices(1.0, 0.0, 0.0, shear, 1.0, 0.0)


def translate_x(pixels: jax.Array, width: int) -> jax.Array:
    """Output (x, y) samples input (x + pixels, y): TF's `translate(image, [-pixels, 0])`.
    `width` is unused (the signature matches `_pil_geometry`)."""
    del width
    return _matrices(1.0, 0.0, pixels, 0.0, 1.0, 0.0)


def translate_y(pixels: jax.Array, height: int) -> jax.Array:
    """Output (x, y) samples input (x, y + pixels)."""
    del height
    return _matrices(1.0, 0.0, 0.0, 0.0, 1.0, pixels)
