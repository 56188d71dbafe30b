"""The digital corruptions of ImageNet-C: brightness, contrast, saturate, pixelate (on the device)
and JPEG compression (on the host).

Each follows its function in hendrycks/robustness (`imagecorruptions.corruptions`):

- brightness and saturate shift the V or scale the S channel in scikit-image's HSV space
  (`skimage.color.rgb2hsv` / `hsv2rgb`). The round trip keeps the other two coordinates, so
  each output channel is a rational function of the pixel's channels, its largest `M` and its
  smallest; it is computed exactly in int32, with scikit-image's rule for grey pixels (hue
  and saturation 0). The reference computes the same values in float64 and truncates: where
  the exact value is an integer its rounding error sometimes lands one below (about 1-4 % of
  those values, 16 % of all at saturate severity 3); everywhere else the two agree.
  Brightness's largest channel, `V'` itself, comes from a table of the reference's float64
  values, which removes most of those cases there;
- contrast scales each channel about its spatial mean;
- pixelate is PIL's `resize(BOX)` to `int(W c) x int(H c)` and back with `resize(NEAREST)`,
  reproduced pixel for pixel: PIL's box filter in its 22-bit fixed point, rounding to uint8
  between the horizontal and the vertical pass, then its nearest-neighbour index tables;
- jpeg_compression re-encodes with PIL at the reference's quality. It runs on the host: JPEG
  coding (libjpeg's DCT, quantisation, chroma subsampling and entropy coding) has no JAX form.

The deterministic ops take a `key` only to share the corruption signature; they ignore it.
"""

from __future__ import annotations

import functools
import io

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from nsjax.robustness._common import filter_separable, to_uint8, to_unit

BRIGHTNESS_SHIFT = (0.1, 0.2, 0.3, 0.4, 0.5)
CONTRAST_FACTOR = (0.4, 0.3, 0.2, 0.1, 0.05)
SATURATE_SCALE_SHIFT = ((0.3, 0.0), (0.1, 0.0), (2.0, 0.0), (5.0, 0.1), (20.0, 0.2))
PIXELATE_SCALE = (0.6, 0.5, 0.4, 0.3, 0.25)
JPEG_QUALITY = (25, 18, 15, 10, 7)

_PIL_PRECISION_BITS = 22  # PIL's Resample.c: 32 - 8 - 2


def _floor_div(num: jax.Array, den: jax.Array) -> jax.Array:
    """`floor(num / den)` of non-negative int32 numerators and positive denominators, as
    uint8 (the values lie in [0, 255])."""
    return (num // den).astype(jnp.uint8)


def _channel_extremes(image: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """uint8 `[H, W, 3]` -> the channels as int32 `[H, W, 3]`, their maximum `M` and their
    range `M - min`, each int32 `[H, W, 1]`."""
    x = image.astype(jnp.int32)
    top = jnp.max(x, axis=-1, keepdims=True)
    return x, top, top - jnp.min(x, axis=-1, keepdims=True)


@functools.lru_cache(maxsize=None)
def _brightness_top(severity: int) -> np.ndarray:
    """The reference's brightened value channel for each largest channel `M` in 0..255,
    uint8 `[256]`: `np.uint8(clip(M / 255 + c, 0, 1) * 255)` in float64, as it computes it."""
    value = np.clip(np.arange(256) / 255.0 + BRIGHTNESS_SHIFT[severity - 1], 0.0, 1.0)
    return (value * 255.0).astype(np.uint8)


def brightness(key: jax.Array, image: jax.Array, severity: int) -> jax.Array:
    """uint8 `[H, W, 3]` -> uint8 `[H, W, 3]`: HSV value `V + c`, clipped to [0, 1] (reference
    `brightness`, through `skimage.color.rgb2hsv` / `hsv2rgb`).

    Hue and saturation are kept, so every channel scales by `V' / V`: on the 0-255 scale
    `x' = V' x / M` with `M` the pixel's largest channel; a black pixel (scikit-image's
    zero division, S = H = 0) becomes grey `V'`. Computed exactly in integers (twice the
    pixel scale: `255 c` is a multiple of 1/2) and truncated as the reference's cast, except
    the largest channel, which is `V'` itself: it is looked up in the reference's own float64
    values of `V'` (`_brightness_top`), which fall one below `M + 255 c` for some `M`."""
    del key
    x, top, _ = _channel_extremes(image)
    shift = round(510 * BRIGHTNESS_SHIFT[severity - 1])  # 2 * 255 c, an integer
    value = jnp.minimum(2 * top + shift, 510)  # 2 * 255 V'
    scaled = _floor_div(value * x, jnp.maximum(2 * top, 1))  # black pixels: all from the table
    top_out = jnp.asarray(_brightness_top(severity))[top]
    return jnp.where(x == top, top_out, scaled)


def saturate(key: jax.Array, image: jax.Array, severity: int) -> jax.Array:
    """uint8 `[H, W, 3]` -> uint8 `[H, W, 3]`: HSV saturation `S a + b`, clipped to [0, 1]
    (reference `saturate`, through `skimage.color.rgb2hsv` / `hsv2rgb`).

    Hue and value are kept, so on the 0-255 scale each channel is
    `x' = M - S' M (M - x) / (M - min)`, with `S' M = min(a (M - min) + b M, M)`. A grey
    pixel has, as in scikit-image, S = 0 and hue 0 (red): it becomes `(M, M (1 - b),
    M (1 - b))`. Computed exactly in integers (tenths: `a` and `b` are multiples of 1/10) and
    truncated as the reference's cast."""
    del key
    scale, shift = SATURATE_SCALE_SHIFT[severity - 1]
    scale10, shift10 = round(10 * scale), round(10 * shift)
    x, top, spread = _channel_extremes(image)
    grey = spread == 0
    chroma10 = jnp.minimum(scale10 * spread + shift10 * top, 10 * top)  # 10 S' M
    coloured = 10 * top * spread - chroma10 * (top - x)
    grey_out = jnp.concatenate([10 * top, 10 * top - chroma10, 10 * top - chroma10], axis=-1)
    return _floor_div(jnp.where(grey, grey_out, coloured), jnp.where(grey, 10, 10 * spread))


def contrast(key: jax.Array, image: jax.Array, severity: int) -> jax.Array:
    """uint8 `[H, W, 3]` -> uint8 `[H, W, 3]`: `(x - m) · c + m` with `m` each channel's mean
    (reference `contrast`). The mean is an exact integer sum divided once."""
    del key
    height, width, _ = image.shape
    total = jnp.sum(image.astype(jnp.int32), axis=(0, 1), keepdims=True)
    mean = total.astype(jnp.float32) / float(255 * height * width)
    return to_uint8((to_unit(image) - mean) * CONTRAST_FACTOR[severity - 1] + mean)


@functools.lru_cache(maxsize=None)
def _box_taps(size: int, out: int) -> tuple[np.ndarray, np.ndarray]:
    """PIL's BOX filter from `size` to `out` samples (`precompute_coeffs` and
    `normalize_coeffs_8bpc` in Resample.c): input indices int32 `[out, taps]` and fixed-point
    weights int32 `[out, taps]` (zero past each window, whose indices are clamped)."""
    scale = size / out
    filter_scale = max(scale, 1.0)
    support = 0.5 * filter_scale
    taps = int(np.ceil(support)) * 2 + 1
    index = np.zeros((out, taps), np.int32)
    weight = np.zeros((out, taps), np.int32)
    for o in range(out):
        center = (o + 0.5) * scale
        lo = max(int(center - support + 0.5), 0)
        hi = min(int(center + support + 0.5), size)
        arg = (np.arange(lo, hi) - center + 0.5) * (1.0 / filter_scale)
        w = ((arg > -0.5) & (arg <= 0.5)).astype(np.float64)
        w /= w.sum()
        index[o] = np.minimum(lo + np.arange(taps), size - 1)
        weight[o, :hi - lo] = (0.5 + w * (1 << _PIL_PRECISION_BITS)).astype(np.int32)
    return index, weight


@functools.lru_cache(maxsize=None)
def _nearest_matrix(size: int, out: int) -> np.ndarray:
    """PIL's `resize(NEAREST)` from `size` to `out` samples as a 0/1 matrix, float64
    `[out, size]` (`ImagingScaleAffine` in Geometry.c: output i reads the source at the
    float64 position `scale/2 + i·scale`, accumulated by repeated addition, truncated)."""
    scale = size / out
    position = scale * 0.5
    m = np.zeros((out, size), np.float64)
    for i in range(out):
        m[i, int(position)] = 1.0
        position += scale
    return m


def _box_pass(x: jax.Array, size: int, out: int) -> jax.Array:
    """PIL's fixed-point BOX resampling of axis 1 of int32 `[A, size, C]` to `out` samples,
    rounded and clipped to [0, 255] as `clip8`, int32 `[A, out, C]`."""
    index, weight = _box_taps(size, out)
    taps = x[:, index]  # [A, out, taps, C]
    acc = jnp.sum(taps * weight[None, :, :, None], axis=2) + (1 << (_PIL_PRECISION_BITS - 1))
    return jnp.clip(acc >> _PIL_PRECISION_BITS, 0, 255)


def pixelate(key: jax.Array, image: jax.Array, severity: int) -> jax.Array:
    """uint8 `[H, W, 3]` -> uint8 `[H, W, 3]`: PIL's BOX downscale to `int(W c) x int(H c)`
    then NEAREST upscale to `W x H` (reference `pixelate`), pixel-exact.

    As PIL, the horizontal pass runs first and rounds to uint8, then the vertical pass; the
    upscale is a product with 0/1 matrices (exact: one term per sum)."""
    del key
    height, width, _ = image.shape
    scale = PIXELATE_SCALE[severity - 1]
    small_h, small_w = int(height * scale), int(width * scale)
    x = _box_pass(image.astype(jnp.int32), width, small_w)  # [H, w, 3]
    x = _box_pass(jnp.swapaxes(x, 0, 1), height, small_h)  # [w, h, 3]
    x = jnp.swapaxes(x, 0, 1).astype(jnp.float32)  # [h, w, 3]
    up = filter_separable(x, _nearest_matrix(small_h, height), _nearest_matrix(small_w, width))
    return up.astype(jnp.uint8)


def jpeg_compression(rng: np.random.Generator, image: np.ndarray, severity: int) -> np.ndarray:
    """uint8 `[H, W, 3]` -> uint8 `[H, W, 3]` (NumPy, on the host): PIL JPEG encode at the
    reference's quality and decode (reference `jpeg_compression`). Deterministic: `rng` is
    unused."""
    del rng
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(image, np.uint8)).save(buffer, "JPEG",
                                                      quality=JPEG_QUALITY[severity - 1])
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return np.asarray(decoded.convert("RGB"), np.uint8)


ON_DEVICE = {
    "brightness": brightness,
    "contrast": contrast,
    "saturate": saturate,
    "pixelate": pixelate,
}
ON_HOST = {"jpeg_compression": jpeg_compression}
