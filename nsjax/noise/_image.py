"""Batched uint8 image primitives shared by `nsjax.noise.ops` and the RandAugment policy.

Every primitive takes a batch `uint8[B, H, W, 3]` and per-image parameters with a leading `[B]`
axis, and never loops over images in Python. The RandAugment policy builds every op from these
same functions, so a public op and the policy give bit-identical results.

Two numerics are provided where PIL and the TensorFlow reference differ: PIL's (integer
grayscale, rounded smoothing, float64 AutoContrast, 16.16 fixed-point geometry) and TF's
(float32 throughout). Float32 arithmetic follows TF exactly: one rounding per operation, no
fused multiply-add. XLA contracts `a * b + c` into an FMA on CPU and GPU, which changes the
rounding; every product that feeds an addition is therefore written as the sum of two *exact*
products (`mul_small_int`), so the result is the correctly rounded float32 product whatever the
compiler fuses. That holds for integer factors below 2**12 (pixel values, pixel coordinates of
images up to 4096 px a side, the limit `_kernels.check_side` enforces).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

_LOW_BITS_MASK = np.int32(~0xFFF)  # clears the low 12 of float32's 23 stored mantissa bits


def split12(f: jax.Array) -> tuple[jax.Array, jax.Array]:
    """float32 `f = hi + lo` exactly, each with at most 12 significant bits, so that the
    product of either with another 12-bit value is exact."""
    hi = lax.bitcast_convert_type(lax.bitcast_convert_type(f, jnp.int32) & _LOW_BITS_MASK,
                                  jnp.float32)
    return hi, f - hi


def mul_small_int(f: jax.Array, n: jax.Array) -> jax.Array:
    """`fl32(f * n)` for float32 `f` and float32 `n` holding an integer with |n| < 2**12.

    `f = hi + lo` with 12 significant bits each, so `hi * n` and `lo * n` are exact and their
    sum rounds once to the correctly rounded product, with or without FMA contraction.
    """
    hi, lo = split12(f)
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
        leaf = jax.tree.leaves(a)[0]
        if leaf.size == 0:  # an empty batch: nothing to keep apart
            return fn(*a)
        return lax.cond(leaf.reshape(-1)[0].astype(jnp.float32) > 0.5, fn, fn, *a)

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
    return _trunc_uint8(degenerate + mul_small_int(factor, v - degenerate))


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
    offset = -mul_small_int(scale, lo)
    return jnp.where(spread > 0, _trunc_uint8(mul_small_int(scale, v) + offset),
                     v.astype(jnp.uint8))


@functools.cache
def _pil_autocontrast_misses() -> np.ndarray:
    """Sorted `int32` keys `lo * 65536 + hi * 256 + v` where PIL's AutoContrast table is one
    below the exact `floor((v - lo) * 255 / (hi - lo))`.

    PIL computes `int(v * scale + offset)` in float64 with `scale = 255 / (hi - lo)` and
    `offset = -lo * scale`; where the exact quotient is a whole number the rounded sum can land
    just below it (12,094 of the 8.4 million (lo, hi, v) triples). Found by evaluating that
    expression in NumPy float64, which rounds as CPython does.
    """
    lo, hi = np.triu_indices(256, 1)
    v = np.arange(256)
    exact = ((v[None, :] - lo[:, None]) * 255) % (hi - lo)[:, None] == 0
    pair, value = np.nonzero(exact & (v[None, :] >= lo[:, None]) & (v[None, :] <= hi[:, None]))
    lo, hi = lo[pair], hi[pair]
    scale = 255.0 / (hi - lo).astype(np.float64)
    pil = np.trunc(value * scale + (-lo * scale))
    whole = (value - lo) * 255 // (hi - lo)
    miss = pil < whole
    return np.sort((lo[miss] * 65536 + hi[miss] * 256 + value[miss]).astype(np.int32))


def _contains(sorted_keys: np.ndarray, key: jax.Array) -> jax.Array:
    """`bool`, shape of `key`: whether each key is in the sorted `int32` table. A binary search
    unrolled into its ~14 steps (no device loop)."""
    table = jnp.asarray(sorted_keys)
    at = jnp.searchsorted(table, key, method="scan_unrolled")
    return table[jnp.clip(at, 0, table.shape[0] - 1)] == key


def pil_autocontrast_values(v: jax.Array, lo: jax.Array, hi: jax.Array) -> jax.Array:
    """`clip(floor((v - lo) * 255 / (hi - lo)), 0, 255)` exactly, `uint8`; `v` unchanged where
    `hi <= lo`. `v`, `lo`, `hi`: integer grey levels broadcasting together.

    PIL's AutoContrast except at its float64 misses (`pil_autocontrast_has_misses`). Computed
    as `floor((q + 1/2) * fl32(1 / d))` for `q = (v - lo) * 255`, `d = hi - lo`: `(q + 1/2) / d`
    is at least `1 / (2 d) >= 0.002` from an integer and the float32 error below 3e-5, so no
    integer division is needed.
    """
    v, lo, hi = (a.astype(jnp.int32) for a in (v, lo, hi))
    spread = hi - lo
    inverse = np.float32(1.0) / jnp.maximum(spread, 1).astype(jnp.float32)
    scaled = (jnp.clip(v - lo, 0, None) * 255).astype(jnp.float32) + np.float32(0.5)
    whole = jnp.minimum(jnp.floor(scaled * inverse), 255.0)
    return jnp.where(spread > 0, whole.astype(jnp.int32), v).astype(jnp.uint8)


def pil_autocontrast_has_misses(lo: jax.Array, hi: jax.Array) -> jax.Array:
    """`bool`, shape of `lo`: whether PIL's table for a channel with extremes `lo`, `hi`
    differs from `pil_autocontrast_values` anywhere (5,958 of the 32,640 ranges)."""
    pairs = np.unique(_pil_autocontrast_misses() >> 8)
    return _contains(pairs, lo.astype(jnp.int32) * 256 + hi.astype(jnp.int32))


def pil_autocontrast_luts(lo: jax.Array, hi: jax.Array) -> jax.Array:
    """PIL's `ImageOps.autocontrast` tables for channels with extremes `lo`, `hi` (integers of
    any shape `S`), `uint8[*S, 256]`: `pil_autocontrast_values` one lower at PIL's float64
    misses (see `_pil_autocontrast_misses`); the identity where `hi <= lo`."""
    lo, hi = lo[..., None].astype(jnp.int32), hi[..., None].astype(jnp.int32)
    v = jnp.arange(256, dtype=jnp.int32).reshape((1,) * (lo.ndim - 1) + (256,))
    found = _contains(_pil_autocontrast_misses(), lo * 65536 + hi * 256 + v)
    return pil_autocontrast_values(v, lo, hi) - found.astype(jnp.uint8)


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


def grayscale(images: jax.Array, *, tf_compat: bool) -> jax.Array:
    """Grey level of every pixel, `uint8[B, H, W]`.

    Default: PIL's `convert("L")`, `(19595 R + 38470 G + 7471 B + 2**15) >> 16` (ITU-R 601-2
    weights 0.299, 0.587, 0.114 in 16-bit fixed point, rounded).
    tf_compat: `tf.image.rgb_to_grayscale`, which scales to [0, 1] (`* fl(1/255)`), takes the
    dot product with (0.2989, 0.5870, 0.1140) left to right in float32 and converts back with
    `* 255.5` and truncation; the per-channel terms come from 256-entry tables so that no
    product is fused into the sum.
    """
    if not tf_compat:
        x = images.astype(jnp.int32)
        return ((x[..., 0] * 19595 + x[..., 1] * 38470 + x[..., 2] * 7471 + 32768) >> 16
                ).astype(jnp.uint8)
    tables = jnp.asarray(_GRAY_TABLES)
    r, g, b = (tables[c].at[images[..., c].astype(jnp.int32)].get(mode="promise_in_bounds")
               for c in range(3))
    return (((r + g) + b) * np.float32(255.5)).astype(jnp.uint8)


def smooth(images: jax.Array, *, tf_compat: bool) -> jax.Array:
    """PIL's SMOOTH filter, `uint8[B, H, W, 3]`: kernel [[1, 1, 1], [1, 5, 1], [1, 1, 1]] / 13
    per channel on the interior; the one-pixel border keeps the input pixels.

    Default: rounded, as PIL (`floor((S + 6) / 13)` for the integer sum `S`; PIL's float32 sum
    never lands on the wrong side, as `S / 13` is at least 1/26 from a half).
    tf_compat: truncated, as the TF reference casts its float32 convolution
    (`floor(S / 13)`, the exact value). Computed on `[B, H, W * 3]` rows (neighbours 3 apart) in
    int16, separably.
    """
    b, h, w, c = images.shape
    if h < 3 or w < 3:
        return images
    rows = images.reshape(b, h, w * c)
    v = rows.astype(jnp.int16)
    across = v[:, :, :-2 * c] + v[:, :, c:-c] + v[:, :, 2 * c:]  # [B, H, (W - 2) C]
    total = across[:, :-2] + across[:, 1:-1] + across[:, 2:] + 4 * v[:, 1:-1, c:-c]
    inner = ((total if tf_compat else total + 6) // 13).astype(jnp.uint8)
    middle = jnp.concatenate([rows[:, 1:-1, :c], inner, rows[:, 1:-1, -c:]], axis=2)
    return jnp.concatenate([rows[:, :1], middle, rows[:, -1:]], axis=1).reshape(b, h, w, c)


# --------------------------------------------------------------------------- geometry


@functools.partial(jax.jit, static_argnames="fill")
def warp(images: jax.Array, maps: jax.Array, fill: int,
         boxes: jax.Array | None = None) -> jax.Array:
    """Nearest-neighbour affine warp with constant fill, `uint8[B, H, W, 3]`.

    `maps` is `[B, 2, 3]` per image, one of:
    - `int32`: PIL's 16.16 fixed-point coefficients (`_pil_geometry`): output pixel (x, y)
      takes input pixel `((A2 + x A0 + y A1) >> 16, (A5 + x A3 + y A4) >> 16)`;
    - `float32`: TF's matrix (`_tf_geometry`): output (x, y) takes input `round(M @ (x, y, 1))`,
      rounded half away from zero, as `ImageProjectiveTransform` with NEAREST.
    Pixels whose source lies outside the image take `fill`; so do `boxes` (`int32[B, 4]` =
    y0, y1, x0, x1, half-open; Cutout). One gather of whole pixels from the images with a fill
    pixel appended.
    """
    b, h, w, c = images.shape
    index = materialize(lambda m, bx: _warp_index(m, bx, h, w), maps, boxes)
    table = jnp.concatenate([images.reshape(b, h * w, c),
                             jnp.full((b, 1, c), fill, jnp.uint8)], axis=1)
    return table.reshape(b * (h * w + 1), c).at[index].get(mode="promise_in_bounds")


def _fixed_point_axis(a0, a1, a2, xs, ys) -> jax.Array:
    """`(a2 + a0 x + a1 y) >> 16` as exact integers, `int32[B, H, W]`.

    Each coefficient is split as `q * 2**16 + r` with `0 <= r < 2**16`, so the shifted sum is
    `q0 x + q1 y + ((a2 + r0 x + r1 y) >> 16)` and no intermediate exceeds int32 for images of
    up to 4096 px a side, whatever the shear.
    """
    q0, r0 = a0 >> 16, a0 & 0xFFFF
    q1, r1 = a1 >> 16, a1 & 0xFFFF
    fraction = (a2[:, None, None] + (r0[:, None] * xs[None, :])[:, None, :]
                + (r1[:, None] * ys[None, :])[:, :, None])
    whole = (q0[:, None] * xs[None, :])[:, None, :] + (q1[:, None] * ys[None, :])[:, :, None]
    return whole + (fraction >> 16)


def _rounded_axis(m0, m1, m2, xs, ys) -> jax.Array:
    """`round(fl(fl(fl(m0 x) + fl(m1 y)) + m2))`, half away from zero, as TF's
    projective-transform kernel, `int32[B, H, W]` (clipped to +-2**24, far outside)."""
    xs, ys = xs.astype(jnp.float32), ys.astype(jnp.float32)
    along_x = mul_small_int(m0[:, None], xs[None, :])  # [B, W]
    along_y = mul_small_int(m1[:, None], ys[None, :])  # [B, H]
    source = (along_x[:, None, :] + along_y[:, :, None]) + m2[:, None, None]
    rounded = jnp.sign(source) * jnp.floor(jnp.abs(source) + 0.5)
    return jnp.clip(rounded, -(2.0**24), 2.0**24).astype(jnp.int32)


def _warp_index(m: jax.Array, boxes: jax.Array | None, h: int, w: int) -> jax.Array:
    """`int32[B, H, W]`: row of the source pixel in the `[B * (H * W + 1), C]` table whose last
    row per image is the fill pixel."""
    b = m.shape[0]
    axis = _fixed_point_axis if m.dtype == jnp.int32 else _rounded_axis
    xs = jnp.arange(w, dtype=jnp.int32)
    ys = jnp.arange(h, dtype=jnp.int32)
    ix = axis(m[:, 0, 0], m[:, 0, 1], m[:, 0, 2], xs, ys)
    iy = axis(m[:, 1, 0], m[:, 1, 1], m[:, 1, 2], xs, ys)
    inside = (ix >= 0) & (ix < w) & (iy >= 0) & (iy < h)
    if boxes is not None:
        inside = inside & ~_box_mask(boxes, h, w)
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
