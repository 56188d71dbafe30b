"""RandAugment's image ops, one pure batched function each, as the official Noisy Student code
defines them (TensorFlow, `randaugment.py`).

Every function takes `images: uint8[B, H, W, 3]` and returns `uint8[B, H, W, 3]`. Per-image
parameters are arrays of shape `[B]` (or scalars, broadcast to the batch), so every image of a
batch can get its own angle, factor or threshold; nothing needs a `vmap`. All functions are
pure and `jax.jit`-able; argument checks look only at shapes, dtypes and Python numbers and run
before any work (at trace time under `jit`).

Semantics (see docs/randaugment.md for the comparison with PIL):

- Point ops (`auto_contrast`, `equalize`, `invert`, `posterize`, `solarize`, `solarize_add`)
  work per channel exactly as the reference.
- The enhance ops (`color`, `contrast`, `brightness`, `sharpness`) are TF's
  `blend(degenerate, image, factor)`: `degenerate + factor * (image - degenerate)` in float32,
  clipped to [0, 255] and truncated toward zero; factor 0 gives the degenerate image, 1 the
  input.
- The geometric ops sample the nearest input pixel (rounded half away from zero, as TF's
  projective transform) and put `fill` where that pixel lies outside the image.
- Float arithmetic is float32 with one rounding per operation, as TF evaluates it, whatever
  the compiler fuses; results are identical on CPU and GPU except through `cos`/`sin` in
  `rotate`.

`tf_compat=True` reproduces the official code's behaviour under TF1 with numpy < 2 where it
differs from the evident intent (Contrast's degenerate grey; Posterize and Solarize arguments
beyond magnitude 10). See `nsjax.noise.randaugment`.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from nsjax import _checks
from nsjax.noise import _image
from nsjax.noise._kernels import (
    auto_contrast_kernel, brightness_kernel, check_fill, check_flag, check_images, color_kernel,
    contrast_kernel, equalize_kernel, invert_kernel, per_image, posterize_kernel, posterize_shift,
    sharpness_kernel, solarize_add_kernel, solarize_kernel, solarize_threshold,
)

__all__ = [
    "auto_contrast", "brightness", "color", "contrast", "cutout", "equalize", "invert",
    "posterize", "rotate", "sharpness", "shear_x", "shear_y", "solarize", "solarize_add",
    "translate_x", "translate_y",
]

# --------------------------------------------------------------------------- public ops


def auto_contrast(images: jax.Array) -> jax.Array:
    """Stretch each channel of each image to [0, 255]: `v * scale + offset` with
    `scale = 255 / (hi - lo)`, `offset = -lo * scale` in float32, truncated; a channel with
    `hi == lo` is unchanged. `uint8[B, H, W, 3] -> uint8[B, H, W, 3]`."""
    check_images(images)
    return auto_contrast_kernel(jnp.asarray(images))


def equalize(images: jax.Array) -> jax.Array:
    """Histogram-equalise each channel of each image (TF/PIL rule; see `_image.equalize_luts`).
    `uint8[B, H, W, 3] -> uint8[B, H, W, 3]`."""
    check_images(images)
    return equalize_kernel(jnp.asarray(images))


def invert(images: jax.Array) -> jax.Array:
    """`255 - images`."""
    check_images(images)
    return invert_kernel(jnp.asarray(images))


def posterize(images: jax.Array, bits: Any, *, tf_compat: bool = False) -> jax.Array:
    """Keep the `bits` high bits of every channel: `(v >> (8 - bits)) << (8 - bits)`.

    `bits`: int `[B]` or scalar. Default: bits >= 8 is the identity, bits <= 0 gives 0.
    `tf_compat=True`: the official code's TF1 behaviour -- the shift `8 - bits` wraps mod 256
    as uint8 and is clamped to [0, 7], so bits 0 and bits > 8 keep one bit.
    """
    batch, _, _ = check_images(images)
    bits = per_image("bits", bits, batch, integer=True)
    shift = posterize_shift(bits, check_flag("tf_compat", tf_compat))
    return posterize_kernel(jnp.asarray(images), shift)


def solarize(images: jax.Array, threshold: Any, *, tf_compat: bool = False) -> jax.Array:
    """Invert every channel value `>= threshold` (`v < t ? v : 255 - v`).

    `threshold`: int `[B]` or scalar. Default: threshold >= 256 is the identity.
    `tf_compat=True`: the threshold wraps mod 256 as TF1's uint8 cast does (256 inverts all).
    """
    batch, _, _ = check_images(images)
    threshold = per_image("threshold", threshold, batch, integer=True)
    threshold = solarize_threshold(threshold, check_flag("tf_compat", tf_compat))
    return solarize_kernel(jnp.asarray(images), threshold)


def solarize_add(images: jax.Array, addition: Any, *, threshold: Any = 128) -> jax.Array:
    """`v < threshold ? clip(v + addition, 0, 255) : v`; `addition`, `threshold`: int `[B]` or
    scalar."""
    batch, _, _ = check_images(images)
    addition = per_image("addition", addition, batch, integer=True)
    threshold = per_image("threshold", threshold, batch, integer=True)
    return solarize_add_kernel(jnp.asarray(images), addition, threshold)


def color(images: jax.Array, factor: Any) -> jax.Array:
    """Blend toward the image's grayscale (`tf.image.rgb_to_grayscale`, weights 0.2989, 0.5870,
    0.1140): factor 0 is grey, 1 the input, > 1 more saturated. `factor`: float `[B]` or scalar."""
    batch, _, _ = check_images(images)
    return color_kernel(jnp.asarray(images), per_image("factor", factor, batch, integer=False))


def contrast(images: jax.Array, factor: Any, *, tf_compat: bool = False) -> jax.Array:
    """Blend toward a uniform grey: by default the mean grey level of the image (rounded half
    up, as PIL's ImageEnhance.Contrast); `tf_compat=True` uses the official code's value
    `min(255, H * W / 256)` (a histogram count, not a mean). `factor`: float `[B]` or scalar."""
    batch, _, _ = check_images(images)
    factor = per_image("factor", factor, batch, integer=False)
    return contrast_kernel(jnp.asarray(images), factor, check_flag("tf_compat", tf_compat))


def brightness(images: jax.Array, factor: Any) -> jax.Array:
    """Blend toward black: `trunc(clip(factor * v))`. `factor`: float `[B]` or scalar."""
    batch, _, _ = check_images(images)
    return brightness_kernel(jnp.asarray(images), per_image("factor", factor, batch, integer=False))


def sharpness(images: jax.Array, factor: Any) -> jax.Array:
    """Blend toward the image smoothed by [[1, 1, 1], [1, 5, 1], [1, 1, 1]] / 13 (VALID,
    truncated; the one-pixel border keeps the input). `factor`: float `[B]` or scalar."""
    batch, _, _ = check_images(images)
    return sharpness_kernel(jnp.asarray(images), per_image("factor", factor, batch, integer=False))


def _warp(images: jax.Array, name: str, value: Any, fill: int, matrices_of) -> jax.Array:
    """The geometric ops: check, broadcast the per-image float parameter `name`, build one
    2x3 matrix per image with `matrices_of` and sample the nearest pixel (outside: `fill`)."""
    batch, _, _ = check_images(images)
    matrices = matrices_of(per_image(name, value, batch, integer=False))
    return _image.warp(jnp.asarray(images), matrices, check_fill(fill))


def rotate(images: jax.Array, degrees: Any, *, fill: int = 128) -> jax.Array:
    """Rotate each image by `degrees` (float `[B]` or scalar) about its centre
    `((W - 1) / 2, (H - 1) / 2)`, as TF's `contrib.image.rotate`: output pixel (x, y) takes the
    input pixel nearest to `(cos a x - sin a y + x_off, sin a x + cos a y + y_off)`, so positive
    angles turn the content counter-clockwise on screen. Pixels from outside get `fill`."""
    _, height, width = check_images(images)
    return _warp(images, "degrees", degrees, fill,
                 lambda d: _image.rotation_matrices(d, height, width))  # fmt: skip


def shear_x(images: jax.Array, shear: Any, *, fill: int = 128) -> jax.Array:
    """Shear along x about the top-left corner: output (x, y) takes input (x + shear * y, y).
    `shear`: float `[B]` or scalar."""
    return _warp(images, "shear", shear, fill, _image.shear_x_matrices)


def shear_y(images: jax.Array, shear: Any, *, fill: int = 128) -> jax.Array:
    """Shear along y about the top-left corner: output (x, y) takes input (x, y + shear * x)."""
    return _warp(images, "shear", shear, fill, _image.shear_y_matrices)


def translate_x(images: jax.Array, pixels: Any, *, fill: int = 128) -> jax.Array:
    """Output (x, y) takes input (x + pixels, y): positive `pixels` move the content left.
    `pixels`: float `[B]` or scalar (a fraction is rounded per pixel, half away from zero)."""
    return _warp(images, "pixels", pixels, fill, _image.translate_x_matrices)


def translate_y(images: jax.Array, pixels: Any, *, fill: int = 128) -> jax.Array:
    """Output (x, y) takes input (x, y + pixels): positive `pixels` move the content up."""
    return _warp(images, "pixels", pixels, fill, _image.translate_y_matrices)


def cutout(images: jax.Array, centers: Any, half_size: Any, *, fill: int = 128) -> jax.Array:
    """Fill a square per image with `fill`: rows `[max(0, cy - p), min(H, cy + p))` and the
    same columns around `cx`, `p = half_size` (side at most `2 p`, clipped at the borders;
    `p <= 0` changes nothing).

    `centers`: int `[B, 2]` of (row, column), or one `(row, column)` pair for the batch.
    `half_size`: int `[B]` or scalar.
    """
    batch, height, width = check_images(images)
    shape = _checks.shape_of(centers)
    if shape not in ((2,), (batch, 2)):
        raise ValueError(f"centers must have shape [B, 2] = ({batch}, 2) or (2,), got {shape}")
    if not jnp.issubdtype(_checks.dtype_of(centers), jnp.integer):
        raise TypeError(f"centers must have an integer dtype, got {_checks.dtype_of(centers)}")
    centers = jnp.broadcast_to(jnp.asarray(centers, jnp.int32), (batch, 2))
    half_size = per_image("half_size", half_size, batch, integer=True)
    boxes = _image.cutout_boxes(centers, half_size, height, width)
    return _image.fill_boxes(jnp.asarray(images), boxes, check_fill(fill))
