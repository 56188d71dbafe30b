"""Batched uint8 image primitives shared by `nsjax.noise.ops` and the RandAugment policy.

Every primitive takes a batch `uint8[B, H, W, 3]` and per-image parameters with a leading `[B]`
axis, and never loops over images in Python. The RandAugment policy builds every op from these
same functions, so a public op and the policy give bit-identical results.

Float arithmetic follows the TensorFlow reference exactly: float32, one rounding per operation,
no fused multiply-add. XLA contracts `a * b + c` into an FMA on CPU and GPU, which changes the
rounding; every product that feeds an addition is therefore written as the sum of two *exact*
products (`_mul_small_int`), so the result is the correctly rounded float32 product whatever the
compiler fuses. That holds for integer factors below 2**12 (pixel values, pixel coordinates of
images up to 4096 px a side).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

_LOW_BITS_MASK = np.int32(~0xFFF)  # clears the low 12 of float32's 23 stored mantissa bits


def _mul_small_int(f: jax.Array, n: jax.Array) -> jax.Array:
    """`fl32(f * n)` for float32 `f` and float32 `n` holding an integer with |n| < 2**12.

    `f = hi + lo` with 12 significant bits each, so `hi * n` and `lo * n` are exact and their
    sum rounds once to the correctly rounded product, with or without FMA contraction.
    """
    hi = lax.bitcast_convert_type(lax.bitcast_convert_type(f, jnp.int32) & _LOW_BITS_MASK,
                                  jnp.float32)
    lo = f - hi
    return hi * n + lo * n


def _trunc_uint8(x: jax.Array) -> jax.Array:
    """Clip float32 to [0, 255] and truncate toward zero, as TF's cast to uint8."""
    return jnp.clip(x, 0.0, 255.0).astype(jnp.uint8)


def materialize(fn, *args):
    """`fn(*args)`, stored to memory on CPU instead of fused into its consumers.

    XLA:CPU fuses a producer into a gather or into a consumer that reads each element several
    times and then evaluates it per read without vectorising it (a nearest-neighbour warp's
    index array, an equalisation table, a smoothed image: 3x to 10x slower). A conditional
    is never fused, so on CPU `fn` runs as a branch of one whose two branches are identical
    (the predicate does not matter). Elsewhere this is `fn(*args)`.
    """

    def on_cpu(*a):
        first = jax.tree.leaves(a)[0].reshape(-1)[0].astype(jnp.float32)
        return lax.cond(first > 0.5, fn, fn, *a)

    return lax.platform_dependent(*args, cpu=on_cpu, default=fn)


# --------------------------------------------------------------------------- point values
# Functions of pixel values: applied to images directly, or to `arange(256)` to build a LUT.
# `v` is int32 (or float32 for the blends); parameters broadcast against it.


def invert_values(v: jax.Array) -> jax.Array:
    return 255 - v


def posterize_values(v: jax.Array, shift: jax.Array) -> jax.Array:
    """`(v >> shift) << shift` for int32 `v` in [0, 255] and `shift` in [0, 8]."""
    return (v >> shift) << shift


def solarize_values(v: jax.Array, threshold: jax.Array) -> jax.Array:
    return jnp.where(v < threshold, v, 255 - v)


def solarize_add_values(v: jax.Array, addition: jax.Array, threshold: jax.Array) -> jax.Array:
    return jnp.where(v < threshold, jnp.clip(v + addition, 0, 255), v)


def blend_values(degenerate: jax.Array, v: jax.Array, factor: jax.Array) -> jax.Array:
    """TF `blend(degenerate, image, factor)` on float32 grey levels, returned as uint8.

    `degenerate + factor * (v - degenerate)` in float32, clipped to [0, 255], truncated.
    factor 0 gives `degenerate`, factor 1 gives `v`, exactly.
    """
    return _trunc_uint8(degenerate + _mul_small_int(factor, v - degenerate))


# `fl32(255 / d)` for d = 0..255, correctly rounded, so that no device division (approximate on
# XLA:GPU, where dividing made AutoContrast one level lower than on CPU) is involved. Index 0 is
# unused.
_AUTOCONTRAST_SCALES = np.float32(255.0) / np.maximum(np.arange(256, dtype=np.float32), 1.0)


def autocontrast_values(v: jax.Array, lo: jax.Array, hi: jax.Array) -> jax.Array:
    """TF AutoContrast of float32 grey levels `v` given the channel's float32 `lo`, `hi`.

    `v * scale + offset` with `scale = 255 / (hi - lo)`, `offset = -lo * scale` (float32),
    clipped and truncated; unchanged where `hi <= lo`. `lo` and `hi` are integer grey levels.
    Returns uint8.
    """
    spread = hi - lo
    scale = jnp.asarray(_AUTOCONTRAST_SCALES)[jnp.clip(spread, 0, 255).astype(jnp.int32)]
    offset = -_mul_small_int(scale, lo)
    return jnp.where(spread > 0, _trunc_uint8(_mul_small_int(scale, v) + offset),
                     v.astype(jnp.uint8))


# --------------------------------------------------------------------------- statistics


def channel_min_max(images: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Per image and channel minimum and maximum, two `uint8[B, 3]`.

    Reduces rows first (the contiguous `W * 3` axis stays minor, so it vectorises), then the
    remaining `[W, 3]`.
    """
    b, h, w, c = images.shape
    rows = images.reshape(b, h, w * c)
    lo = rows.min(axis=1).reshape(b, w, c).min(axis=1)
    hi = rows.max(axis=1).reshape(b, w, c).max(axis=1)
    return lo, hi


def channel_histograms(images: jax.Array) -> jax.Array:
    """256-bin histogram of every channel of every image, `int32[B, 3, 256]` (one scatter-add)."""
    b, h, w, c = images.shape
    offsets = (jnp.arange(b, dtype=jnp.int32)[:, None, None, None] * (c * 256)
               + jnp.arange(c, dtype=jnp.int32)[None, None, None, :] * 256)
    index = (images.astype(jnp.int32) + offsets).reshape(-1)
    counts = jnp.zeros((b * c * 256,), jnp.int32).at[index].add(1, mode="promise_in_bounds")
    return counts.reshape(b, c, 256)


def equalize_luts(hist: jax.Array) -> jax.Array:
    """TF/PIL Equalize lookup tables from `int32[..., 256]` histograms, `uint8[..., 256]`.

    `step = (sum of the histogram - count of the last non-empty bin) // 255`; identity when
    `step == 0`, else `lut[i] = (sum(hist[:i]) + step // 2) // step`, clipped to 255.
    """
    total = hist.sum(axis=-1, keepdims=True)
    last = 255 - jnp.argmax(hist[..., ::-1] > 0, axis=-1)[..., None]
    step = (total - jnp.take_along_axis(hist, last, axis=-1)) // 255
    before = jnp.cumsum(hist, axis=-1) - hist
    lut = jnp.minimum((before + step // 2) // jnp.maximum(step, 1), 255)
    identity = jnp.broadcast_to(jnp.arange(256, dtype=lut.dtype), lut.shape)
    return jnp.where(step > 0, lut, identity).astype(jnp.uint8)


# --------------------------------------------------------------------------- tables


def apply_luts(images: jax.Array, luts: jax.Array) -> jax.Array:
    """`out[b, y, x, c] = luts[b, c, images[b, y, x, c]]` (one gather); `luts` is `[B, 3, 256]`
    of any dtype, or `[3, 256]` shared by the batch."""
    b, _, _, c = images.shape
    if luts.ndim == 2:
        luts = jnp.broadcast_to(luts, (b, *luts.shape))
    offsets = (jnp.arange(b, dtype=jnp.int32)[:, None, None, None] * (c * 256)
               + jnp.arange(c, dtype=jnp.int32)[None, None, None, :] * 256)
    index = images.astype(jnp.int32) + offsets
    return luts.reshape(-1).at[index].get(mode="promise_in_bounds")


def _gray_tables() -> np.ndarray:
    """`float32[3, 256]`: `fl(fl(v * fl(1/255)) * w_c)`, TF's weights (0.2989, 0.5870, 0.1140)."""
    v = np.arange(256, dtype=np.float32) * np.float32(1.0 / 255.0)
    weights = np.asarray([0.2989, 0.5870, 0.1140], np.float32)
    return (v[None, :] * weights[:, None]).astype(np.float32)


_GRAY_TABLES = _gray_tables()


def grayscale(images: jax.Array) -> jax.Array:
    """`tf.image.rgb_to_grayscale` of uint8 images, `uint8[B, H, W]`.

    TF scales to [0, 1] (`* fl(1/255)`), takes the dot product with (0.2989, 0.5870, 0.1140)
    left to right in float32 and converts back with `* 255.5` and truncation. The per-channel
    terms come from 256-entry tables so that no product is fused into the sum.
    """
    tables = jnp.asarray(_GRAY_TABLES)
    r, g, b = (tables[c].at[images[..., c].astype(jnp.int32)].get(mode="promise_in_bounds")
               for c in range(3))
    return (((r + g) + b) * np.float32(255.5)).astype(jnp.uint8)


def smooth(images: jax.Array) -> jax.Array:
    """PIL's SMOOTH filter as the TF reference applies it, `uint8[B, H, W, 3]`.

    Kernel [[1, 1, 1], [1, 5, 1], [1, 1, 1]] / 13 per channel, VALID, truncated
    (`floor(sum / 13)` in exact integers); the one-pixel border keeps the input pixels.
    Computed on `[B, H, W * 3]` rows (neighbours 3 apart) in int16, separably.
    """
    b, h, w, c = images.shape
    if h < 3 or w < 3:
        return images
    rows = images.reshape(b, h, w * c)
    v = rows.astype(jnp.int16)
    across = v[:, :, :-2 * c] + v[:, :, c:-c] + v[:, :, 2 * c:]  # [B, H, (W - 2) C]
    total = across[:, :-2] + across[:, 1:-1] + across[:, 2:] + 4 * v[:, 1:-1, c:-c]
    inner = (total // 13).astype(jnp.uint8)
    middle = jnp.concatenate([rows[:, 1:-1, :c], inner, rows[:, 1:-1, -c:]], axis=2)
    return jnp.concatenate([rows[:, :1], middle, rows[:, -1:]], axis=1).reshape(b, h, w, c)


# --------------------------------------------------------------------------- geometry


def identity_matrices(batch: int) -> jax.Array:
    """`float32[B, 2, 3]` identity affine maps."""
    eye = jnp.asarray([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], jnp.float32)
    return jnp.broadcast_to(eye, (batch, 2, 3))


def rotation_matrices(degrees: jax.Array, height: int, width: int) -> jax.Array:
    """TF `contrib.image.rotate` maps about the image centre, `float32[B, 2, 3]`.

    `radians = fl32(degrees * fl32(pi / 180))`; output (x, y) samples input
    `(cos x - sin y + x_off, sin x + cos y + y_off)` with TF's float32 offsets.
    """
    radians = degrees.astype(jnp.float32) * np.float32(math.pi / 180.0)
    cos, sin = jnp.cos(radians), jnp.sin(radians)
    w1, h1 = np.float32(width - 1), np.float32(height - 1)
    x_off = (w1 - (_mul_small_int(cos, w1) - _mul_small_int(sin, h1))) * np.float32(0.5)
    y_off = (h1 - (_mul_small_int(sin, w1) + _mul_small_int(cos, h1))) * np.float32(0.5)
    return jnp.stack([jnp.stack([cos, -sin, x_off], -1), jnp.stack([sin, cos, y_off], -1)], -2)


def _matrices(a, b, c, d, e, f) -> jax.Array:
    row0 = jnp.stack(jnp.broadcast_arrays(a, b, c), -1)
    row1 = jnp.stack(jnp.broadcast_arrays(d, e, f), -1)
    return jnp.stack([row0, row1], -2).astype(jnp.float32)


def shear_x_matrices(shear: jax.Array) -> jax.Array:
    """Output (x, y) samples input (x + shear * y, y): TF's `[1, s, 0, 0, 1, 0, 0, 0]`."""
    one, zero = jnp.ones_like(shear), jnp.zeros_like(shear)
    return _matrices(one, shear, zero, zero, one, zero)


def shear_y_matrices(shear: jax.Array) -> jax.Array:
    """Output (x, y) samples input (x, shear * x + y)."""
    one, zero = jnp.ones_like(shear), jnp.zeros_like(shear)
    return _matrices(one, zero, zero, shear, one, zero)


def translate_x_matrices(pixels: jax.Array) -> jax.Array:
    """Output (x, y) samples input (x + pixels, y): TF's `translate(image, [-pixels, 0])`."""
    one, zero = jnp.ones_like(pixels), jnp.zeros_like(pixels)
    return _matrices(one, zero, pixels, zero, one, zero)


def translate_y_matrices(pixels: jax.Array) -> jax.Array:
    """Output (x, y) samples input (x, y + pixels)."""
    one, zero = jnp.ones_like(pixels), jnp.zeros_like(pixels)
    return _matrices(one, zero, zero, zero, one, pixels)


def _source_axis(m0, m1, m2, xs, ys) -> jax.Array:
    """`fl(fl(fl(m0 x) + fl(m1 y)) + m2)` as TF's projective-transform kernel, `[B, H, W]`."""
    along_x = _mul_small_int(m0[:, None], xs[None, :])  # [B, W]
    along_y = _mul_small_int(m1[:, None], ys[None, :])  # [B, H]
    return (along_x[:, None, :] + along_y[:, :, None]) + m2[:, None, None]


@functools.partial(jax.jit, static_argnames="fill")
def warp(images: jax.Array, matrices: jax.Array, fill: int,
         boxes: jax.Array | None = None) -> jax.Array:
    """Nearest-neighbour affine warp with constant fill, `uint8[B, H, W, 3]`.

    Output pixel (x, y) of image b takes input pixel `round(M_b @ (x, y, 1))` (x = column),
    rounded half away from zero, as TF's `ImageProjectiveTransform` with NEAREST; outside the
    image it takes `fill`. `boxes` (`int32[B, 4]` = y0, y1, x0, x1, half-open) are also filled
    (Cutout). One gather of whole pixels from the images with a fill pixel appended.
    """
    b, h, w, c = images.shape
    index = materialize(lambda m, bx: _warp_index(m, bx, h, w), matrices.astype(jnp.float32),
                        boxes)
    table = jnp.concatenate([images.reshape(b, h * w, c),
                             jnp.full((b, 1, c), fill, jnp.uint8)], axis=1)
    return table.reshape(b * (h * w + 1), c).at[index].get(mode="promise_in_bounds")


def _warp_index(m: jax.Array, boxes: jax.Array | None, h: int, w: int) -> jax.Array:
    """`int32[B, H, W]`: row of the source pixel in the `[B * (H * W + 1), C]` table whose last
    row per image is the fill pixel."""
    b = m.shape[0]
    xs = jnp.arange(w, dtype=jnp.float32)
    ys = jnp.arange(h, dtype=jnp.float32)
    sx = _source_axis(m[:, 0, 0], m[:, 0, 1], m[:, 0, 2], xs, ys)
    sy = _source_axis(m[:, 1, 0], m[:, 1, 1], m[:, 1, 2], xs, ys)
    inside = (sx > -0.5) & (sx < w - 0.5) & (sy > -0.5) & (sy < h - 0.5)
    if boxes is not None:
        inside = inside & ~_box_mask(boxes, h, w)
    ix = jnp.clip(jnp.floor(sx + 0.5), 0, w - 1).astype(jnp.int32)
    iy = jnp.clip(jnp.floor(sy + 0.5), 0, h - 1).astype(jnp.int32)
    base = (jnp.arange(b, dtype=jnp.int32) * (h * w + 1))[:, None, None]
    return base + jnp.where(inside, iy * w + ix, h * w)


def _box_mask(boxes: jax.Array, height: int, width: int) -> jax.Array:
    """`bool[B, H, W]`: inside the half-open box (y0, y1, x0, x1) of each image."""
    rows = jnp.arange(height, dtype=jnp.int32)[None, :, None]
    cols = jnp.arange(width, dtype=jnp.int32)[None, None, :]
    y0, y1, x0, x1 = (boxes[:, i, None, None] for i in range(4))
    return (rows >= y0) & (rows < y1) & (cols >= x0) & (cols < x1)


def cutout_boxes(centers: jax.Array, half_size: jax.Array, height: int, width: int) -> jax.Array:
    """TF cutout's zeroed region as half-open boxes `int32[B, 4]` = (y0, y1, x0, x1):
    rows `[max(0, cy - p), min(H, cy + p))`, columns likewise; empty when `p <= 0`."""
    cy, cx = centers[:, 0], centers[:, 1]
    p = jnp.maximum(half_size, 0)
    return jnp.stack([jnp.maximum(cy - p, 0), jnp.minimum(cy + p, height),
                      jnp.maximum(cx - p, 0), jnp.minimum(cx + p, width)], -1).astype(jnp.int32)


@functools.partial(jax.jit, static_argnames="fill")
def fill_boxes(images: jax.Array, boxes: jax.Array, fill: int) -> jax.Array:
    """Set the pixels inside each image's box to `fill`."""
    _, h, w, _ = images.shape
    return jnp.where(_box_mask(boxes, h, w)[..., None], jnp.uint8(fill), images)
