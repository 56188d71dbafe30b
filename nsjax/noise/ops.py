"""RandAugment's image ops, one pure batched function each: the ops of the official Noisy
Student code (`randaugment.py`), computed as PIL computes them by default and as the TF
reference computes them with `tf_compat=True`.

Every function takes `images: uint8[B, H, W, 3]` (B >= 0; an empty batch gives an empty
batch) and returns `uint8[B, H, W, 3]`. Per-image parameters are arrays of shape `[B]` or
scalars (Python or NumPy numbers, 0-d arrays, traced values), broadcast to the batch, so every
image of a batch can get its own angle, factor or threshold; nothing needs a `vmap`. All
functions are pure and `jax.jit`-able; argument checks look only at shapes, dtypes and concrete
numbers and run before any work (at trace time under `jit`). `fill` and `tf_compat` select
what is computed and must be concrete. A concrete non-finite float parameter (NaN, inf) is a
`ValueError`; a traced one cannot be seen and a uint8 image cannot hold NaN, so its images are
unspecified: wrap the call in `jax.experimental.checkify` or check with `eqx.error_if` where a
parameter may be non-finite.

Default: each op equals PIL's (`ImageOps`, `ImageEnhance`, `Image.transform` / `Image.rotate`
with NEAREST) bit for bit: the grayscale is PIL's `convert("L")`, the Sharpness smoothing
rounds, AutoContrast reproduces PIL's float64 table, and the geometric ops reproduce PIL's
16.16 fixed-point sampling of pixel centres.

`tf_compat=True`: the TF reference's arithmetic (`tf.image.rgb_to_grayscale`, a truncated
smoothing, float32 AutoContrast, `ImageProjectiveTransform` rounding half away from zero) and
its corner cases under TF1 with numpy < 2 (Contrast's degenerate grey; Posterize and Solarize
arguments beyond magnitude 10). See docs/randaugment.md for the two side by side.

In both modes the enhance ops (`color`, `contrast`, `brightness`, `sharpness`) are
`blend(degenerate, image, factor)`: `degenerate + factor * (image - degenerate)` in float32,
clipped to [0, 255] and truncated toward zero (PIL's `Image.blend` and TF's `blend` agree);
factor 0 gives the degenerate image, 1 the input. Float products are formed so that compiler
FMA contraction cannot change them: results are identical on CPU and GPU, except through
`cos`/`sin` in `rotate(..., tf_compat=True)`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from nsjax import _checks
from nsjax.noise import _image, _pil_geometry, _tf_geometry
from nsjax.noise._kernels import (
    auto_contrast_kernel,
    brightness_kernel,
    check_fill,
    check_images,
    check_side,
    color_kernel,
    contrast_kernel,
    equalize_kernel,
    invert_kernel,
    per_image,
    posterize_kernel,
    posterize_shift,
    sharpness_kernel,
    solarize_add_kernel,
    solarize_kernel,
    solarize_threshold,
)

__all__ = [
    "auto_contrast", "brightness", "color", "contrast", "cutout", "equalize", "invert",
    "posterize", "rotate", "sharpness", "shear_x", "shear_y", "solarize", "solarize_add",
    "translate_x", "translate_y",
]

# --------------------------------------------------------------------------- public ops

def auto_contrast(images: jax.Array, *, tf_compat: bool = False) -> jax.Array:
    """Stretch each channel of each image to [0, 255].

    A channel with extremes `lo < hi` maps `v` to `(v - lo) * 255 / (hi - lo)`, truncated; a
    channel with `hi == lo` is unchanged. Default: PIL's `ImageOps.autocontrast` table
    `int(v * scale + offset)` in float64 (`scale = 255 / (hi - lo)`, `offset = -lo * scale`),
    reproduced exactly: `floor((v - lo) * 255 / (hi - lo))`, one lower where PIL's float64 sum
    rounds below a whole number. `tf_compat=True`: the same expression in float32, truncated,
    as the TF reference.

    **Arguments:**

    - `images`: `uint8[B, H, W, 3]`, B >= 0.
    - `tf_compat`: a bool.

    **Returns:** `uint8[B, H, W, 3]`.
    """
    check_images(images)
    return auto_contrast_kernel(jnp.asarray(images), _checks.check_bool("tf_compat", tf_compat))


def equalize(images: jax.Array) -> jax.Array:
    """Histogram-equalise each channel of each image (the TF and PIL rule).

    Per channel: `step = (pixel count - count of the last non-empty bin) // 255`; the identity
    when `step == 0`, else `v -> min(255, (count of values below v + step // 2) // step)`.

    **Arguments:**

    - `images`: `uint8[B, H, W, 3]`, B >= 0.

    **Returns:** `uint8[B, H, W, 3]`.
    """
    check_images(images)
    return equalize_kernel(jnp.asarray(images))


def invert(images: jax.Array) -> jax.Array:
    """`255 - images`.

    **Arguments:**

    - `images`: `uint8[B, H, W, 3]`, B >= 0.

    **Returns:** `uint8[B, H, W, 3]`.
    """
    check_images(images)
    return invert_kernel(jnp.asarray(images))


def posterize(images: jax.Array, bits: Any, *, tf_compat: bool = False) -> jax.Array:
    """Keep the `bits` high bits of every channel: `(v >> (8 - bits)) << (8 - bits)`.

    Default: bits >= 8 is the identity, bits <= 0 gives 0 (PIL's `ImageOps.posterize` for
    1-8 bits). `tf_compat=True`: the official code's TF1 behaviour -- the shift `8 - bits`
    wraps mod 256 as uint8 and is clamped to [0, 7], so bits 0 and bits > 8 keep one bit.

    **Arguments:**

    - `images`: `uint8[B, H, W, 3]`, B >= 0.
    - `bits`: int, a scalar or `[B]`.
    - `tf_compat`: a bool.

    **Returns:** `uint8[B, H, W, 3]`.
    """
    batch, _, _ = check_images(images)
    bits = per_image("bits", bits, batch, integer=True)
    shift = posterize_shift(bits, _checks.check_bool("tf_compat", tf_compat))
    return posterize_kernel(jnp.asarray(images), shift)


def solarize(images: jax.Array, threshold: Any, *, tf_compat: bool = False) -> jax.Array:
    """Invert every channel value at or above `threshold`: `v < t ? v : 255 - v`.

    Default: threshold >= 256 is the identity (PIL's `ImageOps.solarize`). `tf_compat=True`:
    the threshold wraps mod 256 as TF1's uint8 cast does (256 inverts every value).

    **Arguments:**

    - `images`: `uint8[B, H, W, 3]`, B >= 0.
    - `threshold`: int, a scalar or `[B]`.
    - `tf_compat`: a bool.

    **Returns:** `uint8[B, H, W, 3]`.
    """
    batch, _, _ = check_images(images)
    threshold = per_image("threshold", threshold, batch, integer=True)
    threshold = solarize_threshold(threshold, _checks.check_bool("tf_compat", tf_compat))
    return solarize_kernel(jnp.asarray(images), threshold)


def solarize_add(images: jax.Array, addition: Any, *, threshold: Any = 128) -> jax.Array:
    """Add to the values below a threshold: `v < threshold ? clip(v + addition, 0, 255) : v`.

    **Arguments:**

    - `images`: `uint8[B, H, W, 3]`, B >= 0.
    - `addition`: int, a scalar or `[B]`.
    - `threshold`: int, a scalar or `[B]` (128 in RandAugment).

    **Returns:** `uint8[B, H, W, 3]`.
    """
    batch, _, _ = check_images(images)
    addition = per_image("addition", addition, batch, integer=True)
    threshold = per_image("threshold", threshold, batch, integer=True)
    return solarize_add_kernel(jnp.asarray(images), addition, threshold)


def color(images: jax.Array, factor: Any, *, tf_compat: bool = False) -> jax.Array:
    """Blend toward the image's grayscale: factor 0 is grey, 1 the input, > 1 more saturated.

    `blend(gray, image, factor)` (see the module docstring). Default: PIL's `convert("L")`
    (weights 0.299, 0.587, 0.114 in fixed point, rounded), as `ImageEnhance.Color`.
    `tf_compat=True`: `tf.image.rgb_to_grayscale` (0.2989, 0.5870, 0.1140, truncated).

    **Arguments:**

    - `images`: `uint8[B, H, W, 3]`, B >= 0.
    - `factor`: float, a scalar or `[B]`.
    - `tf_compat`: a bool.

    **Returns:** `uint8[B, H, W, 3]`.
    """
    batch, _, _ = check_images(images)
    factor = per_image("factor", factor, batch, integer=False)
    return color_kernel(jnp.asarray(images), factor, _checks.check_bool("tf_compat", tf_compat))


def contrast(images: jax.Array, factor: Any, *, tf_compat: bool = False) -> jax.Array:
    """Blend toward a uniform grey: factor 0 is that grey, 1 the input.

    Default: the mean of PIL's grey levels rounded half up (`ImageEnhance.Contrast`).
    `tf_compat=True`: the official code's value `min(255, H * W / 256)`, truncated (a histogram
    count, not a mean).

    **Arguments:**

    - `images`: `uint8[B, H, W, 3]`, B >= 0, at most 4096 px a side.
    - `factor`: float, a scalar or `[B]`.
    - `tf_compat`: a bool.

    **Returns:** `uint8[B, H, W, 3]`.
    """
    batch, _, _ = check_images(images)
    check_side(images, "contrast")
    factor = per_image("factor", factor, batch, integer=False)
    return contrast_kernel(jnp.asarray(images), factor, _checks.check_bool("tf_compat", tf_compat))


def brightness(images: jax.Array, factor: Any) -> jax.Array:
    """Blend toward black: `trunc(clip(factor * v, 0, 255))`.

    **Arguments:**

    - `images`: `uint8[B, H, W, 3]`, B >= 0.
    - `factor`: float, a scalar or `[B]`.

    **Returns:** `uint8[B, H, W, 3]`.
    """
    batch, _, _ = check_images(images)
    return brightness_kernel(jnp.asarray(images), per_image("factor", factor, batch, integer=False))


def sharpness(images: jax.Array, factor: Any, *, tf_compat: bool = False) -> jax.Array:
    """Blend toward the image smoothed by [[1, 1, 1], [1, 5, 1], [1, 1, 1]] / 13.

    The smoothed image's one-pixel border keeps the input. Default: the smoothing rounds, as
    PIL's `ImageFilter.SMOOTH` (`ImageEnhance.Sharpness`). `tf_compat=True`: it truncates, as
    the TF reference casts its convolution to uint8.

    **Arguments:**

    - `images`: `uint8[B, H, W, 3]`, B >= 0.
    - `factor`: float, a scalar or `[B]`.
    - `tf_compat`: a bool.

    **Returns:** `uint8[B, H, W, 3]`.
    """
    batch, _, _ = check_images(images)
    factor = per_image("factor", factor, batch, integer=False)
    return sharpness_kernel(jnp.asarray(images), factor, _checks.check_bool("tf_compat", tf_compat))


def _warp(images: jax.Array, name: str, value: Any, fill: int, tf_compat: bool,
          maps_of: Callable[..., jax.Array]) -> jax.Array:
    """The geometric ops: check, broadcast the per-image float parameter `name`, build one map
    per image with `maps_of(geometry, value, height, width)` from `_pil_geometry` (default) or
    `_tf_geometry` and sample the nearest pixel (outside: `fill`)."""
    batch, height, width = check_images(images)
    check_side(images, "the geometric ops")
    geometry = _tf_geometry if _checks.check_bool("tf_compat", tf_compat) else _pil_geometry
    value = per_image(name, value, batch, integer=False)
    fill = check_fill(fill)
    maps = maps_of(geometry, value, height, width)
    return _image.warp(jnp.asarray(images), maps, fill)


def rotate(images: jax.Array, degrees: Any, *, fill: int = 128,
           tf_compat: bool = False) -> jax.Array:
    """Rotate each image counter-clockwise about its centre; pixels from outside get `fill`.

    Default: PIL's `Image.rotate(degrees, NEAREST, fillcolor=fill)` (centre `(W / 2, H / 2)`
    in pixel-corner coordinates, 16.16 fixed point). `tf_compat=True`: TF's
    `contrib.image.rotate` (centre `((W - 1) / 2, (H - 1) / 2)` in pixel-centre coordinates,
    float32, rounded half away from zero).

    **Arguments:**

    - `images`: `uint8[B, H, W, 3]`, B >= 0, at most 4096 px a side.
    - `degrees`: float, a scalar or `[B]`.
    - `fill`: the grey level of pixels from outside, an int in [0, 255].
    - `tf_compat`: a bool.

    **Returns:** `uint8[B, H, W, 3]`.
    """
    return _warp(images, "degrees", degrees, fill, tf_compat,
                 lambda g, d, h, w: g.rotation(d, h, w))


def shear_x(images: jax.Array, shear: Any, *, fill: int = 128,
            tf_compat: bool = False) -> jax.Array:
    """Shear along x about the top-left corner: output (x, y) takes input (x + shear * y, y).

    Default: PIL's `Image.transform(AFFINE, (1, shear, 0, 0, 1, 0))`, which maps pixel
    centres (`x + 1/2`, `y + 1/2`). `tf_compat=True`: TF's transform `[1, shear, 0, 0, 1, 0]`,
    which maps pixel indices and rounds (half a pixel of shear apart from PIL's).

    **Arguments:**

    - `images`: `uint8[B, H, W, 3]`, B >= 0, at most 4096 px a side.
    - `shear`: float, a scalar or `[B]`.
    - `fill`: the grey level of pixels from outside, an int in [0, 255].
    - `tf_compat`: a bool.

    **Returns:** `uint8[B, H, W, 3]`.
    """
    return _warp(images, "shear", shear, fill, tf_compat, lambda g, s, h, w: g.shear_x(s))


def shear_y(images: jax.Array, shear: Any, *, fill: int = 128,
            tf_compat: bool = False) -> jax.Array:
    """Shear along y about the top-left corner: output (x, y) takes input (x, y + shear * x).

    PIL's `(1, 0, 0, shear, 1, 0)` by default, TF's with `tf_compat=True` (see `shear_x`).

    **Arguments:**

    - `images`: `uint8[B, H, W, 3]`, B >= 0, at most 4096 px a side.
    - `shear`: float, a scalar or `[B]`.
    - `fill`: the grey level of pixels from outside, an int in [0, 255].
    - `tf_compat`: a bool.

    **Returns:** `uint8[B, H, W, 3]`.
    """
    return _warp(images, "shear", shear, fill, tf_compat, lambda g, s, h, w: g.shear_y(s))


def translate_x(images: jax.Array, pixels: Any, *, fill: int = 128,
                tf_compat: bool = False) -> jax.Array:
    """Shift along x: output (x, y) takes input (x + pixels, y), so positive `pixels` move the
    content left.

    A fraction rounds half up by default (PIL's `(1, 0, pixels, 0, 1, 0)`), half away from
    zero with `tf_compat=True` (TF).

    **Arguments:**

    - `images`: `uint8[B, H, W, 3]`, B >= 0, at most 4096 px a side.
    - `pixels`: float, a scalar or `[B]`.
    - `fill`: the grey level of pixels from outside, an int in [0, 255].
    - `tf_compat`: a bool.

    **Returns:** `uint8[B, H, W, 3]`.
    """
    return _warp(images, "pixels", pixels, fill, tf_compat,
                 lambda g, p, h, w: g.translate_x(p, w))


def translate_y(images: jax.Array, pixels: Any, *, fill: int = 128,
                tf_compat: bool = False) -> jax.Array:
    """Shift along y: output (x, y) takes input (x, y + pixels), so positive `pixels` move the
    content up.

    Fractions round as in `translate_x`.

    **Arguments:**

    - `images`: `uint8[B, H, W, 3]`, B >= 0, at most 4096 px a side.
    - `pixels`: float, a scalar or `[B]`.
    - `fill`: the grey level of pixels from outside, an int in [0, 255].
    - `tf_compat`: a bool.

    **Returns:** `uint8[B, H, W, 3]`.
    """
    return _warp(images, "pixels", pixels, fill, tf_compat,
                 lambda g, p, h, w: g.translate_y(p, h))


def cutout(images: jax.Array, centers: Any, half_size: Any, *, fill: int = 128) -> jax.Array:
    """Fill a square per image, around a given centre, with `fill`.

    Rows `[max(0, cy - p), min(H, cy + p))` and the same columns around `cx`, `p = half_size`
    (side at most `2 p`, clipped at the borders; `p <= 0` changes nothing). The reference's
    `cutout`; `nsjax.noise.random_cutout` draws the centres.

    **Arguments:**

    - `images`: `uint8[B, H, W, 3]`, B >= 0.
    - `centers`: int `[B, 2]` of (row, column), or one `(row, column)` pair for the batch.
    - `half_size`: int, a scalar or `[B]`.
    - `fill`: an int grey level in [0, 255].

    **Returns:** `uint8[B, H, W, 3]`.
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
