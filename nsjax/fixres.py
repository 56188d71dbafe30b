"""Train/test resolution (FixRes, Touvron et al. 2019): resize, evaluation crop, Inception crop.

All image functions take a batch `[B, H, W, 3]` of `uint8` or floating images and return the
same dtype. Floating images are resampled in (at least) float32; `uint8` images follow PIL's
two-pass pipeline: a width pass, rounded and clipped to [0, 255], then a height pass, rounded
and clipped again. Downsampling is antialiased (the kernel is stretched by the scale factor), as
in PIL. Against Pillow 13's `Image.resize` (BICUBIC, BILINEAR) that gives at most 2 grey levels
of difference, mean under 0.1, when both axes scale the same way; where one axis shrinks much
more than the other, or one shrinks while the other grows, Pillow 13 may run the height pass
first, and pixels next to a clipped overshoot can then differ by up to ~20.

One core, `_crop_resize`, resamples a box of every image to the output size; `resize` uses the
whole image as the box, `center_crop_resize` the evaluation crop of the EfficientNet reference
and `random_resized_crop` a box sampled per image. Like PIL's `Image.resize(..., box=...)`, the
box is a region of the input coordinate frame, not a hard cut: kernels centred near its edge
read the pixels just outside it.

`fixres_trainable` builds the boolean mask of what a FixRes fine-tune updates.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Sequence
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np

from nsjax import _checks

__all__ = ["center_crop_resize", "fixres_trainable", "random_resized_crop", "resize"]

Method = Literal["bicubic", "bilinear", "nearest"]
Size = int | tuple[int, int]

_KERNELS = {"bicubic": "cubic", "bilinear": "linear"}  # jax.image names of the kernels
_METHODS = (*_KERNELS, "nearest")
_MAX_ATTEMPTS = 10  # candidate boxes per image, as the reference's `max_attempts`
_UNIFORMS_PER_BOX = 2 * _MAX_ATTEMPTS + 2  # a ratio and a height per candidate, two offsets
_ARRAY_TYPES = (jax.Array, np.ndarray, jax.ShapeDtypeStruct)


# --------------------------------------------------------------------------- argument checks


def _check_images(images: Any) -> tuple[int, int]:
    """`images` is `[B, H, W, 3]` uint8 or floating with H, W >= 1; returns (H, W)."""
    _, height, width = _checks.check_images("images", images, dtypes=("uint8", "floating"))
    return height, width


def _check_size(size: Any) -> tuple[int, int]:
    """An int (square) or a pair of ints, each >= 1; returns (height, width)."""
    if isinstance(size, (tuple, list)):
        if len(size) != 2:
            raise ValueError(f"size must be an int or (height, width), got {size!r}")
        return (_checks.check_positive_int("size[0]", size[0]),
                _checks.check_positive_int("size[1]", size[1]))
    side = _checks.check_positive_int("size", size)
    return side, side


def _check_range(name: str, value: Any, *, upper: float | None) -> tuple[float, float]:
    """A pair (lo, hi) of numbers with 0 < lo <= hi (<= upper when given)."""
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise ValueError(f"{name} must be a pair (lo, hi), got {value!r}")
    lo, hi = (_checks.check_number(f"{name}[{i}]", v, minimum=0.0, min_open=True, maximum=upper)
              for i, v in enumerate(value))
    if not (lo <= hi and np.isfinite(hi)):
        bound = "" if upper is None else f" <= {upper}"
        raise ValueError(f"{name} must satisfy 0 < lo <= hi{bound}, got {value!r}")
    return lo, hi


def _check_crop_fraction(crop_fraction: Any) -> float:
    crop_fraction = _checks.check_probability("crop_fraction", crop_fraction)
    if crop_fraction == 0.0:
        raise ValueError(f"crop_fraction must be in (0, 1], got {crop_fraction}")
    return crop_fraction


# --------------------------------------------------------------------------- resampling core


def _kernel_support(method: str) -> float:
    """Half-width of the resampling kernel at scale 1, in input pixels."""
    return 2.0 if method == "bicubic" else 1.0


def _kernel(method: str, x: jax.Array) -> jax.Array:
    """jax.image's kernels, same expressions: Keys cubic (a = -0.5) or the triangle; x >= 0."""
    if method == "bicubic":
        out = ((1.5 * x - 2.5) * x) * x + 1.0
        out = jnp.where(x >= 1.0, ((-0.5 * x + 2.5) * x - 4.0) * x + 2.0, out)
        return jnp.where(x >= 2.0, 0.0, out)
    return jnp.maximum(0.0, 1.0 - jnp.abs(x))


def _tap_count(method: str, max_length: int, out_size: int) -> int:
    """Taps per output pixel that cover the kernel for any box length up to `max_length`: the
    kernel is nonzero on an open interval of width 2R (R its stretched support), which holds at
    most ceil(2R) integers."""
    stretch = max(max_length / out_size, 1.0)
    return max(1, int(np.ceil(2 * _kernel_support(method) * stretch)))


def _taps(in_size: int, out_size: int, start: Any, length: Any, method: str, count: int):
    """The nonzero part of `jax.image.scale_and_translate`'s weight matrix, per output pixel.

    `start`, `length`: the box on this axis, inside the image, in whole pixels, as Python ints
    or float32 scalars. Returns `(index, weight)`: int32 `[out_size, count]` input pixels
    (consecutive, clipped into the image) and float32 `[out_size, count]` weights, zero outside
    the image.
    The weights are jax.image's (antialiased kernel, renormalised over the image), computed by
    the same float32 expressions, so resampling with them is the dense contraction restricted
    to its nonzero terms. (jax.image also zeroes outputs whose centre falls outside the image;
    a box inside the image has none.)
    """
    scale = jnp.asarray(out_size / length, jnp.float32)
    translation = -start * scale
    inv_scale = 1.0 / scale
    kernel_scale = jnp.maximum(inv_scale, 1.0)
    centres = jnp.arange(out_size, dtype=jnp.float32) + 0.5
    sample = centres * inv_scale - translation * inv_scale - 0.5
    # The first tap, floor(sample - R) + 1, in exact integer arithmetic (times 2 * out_size):
    # in float32 a compiler may evaluate `sample` twice, once for the indices and once for the
    # weights, rounding differently (fused multiply-adds), and when sample - R is a whole
    # number the two floors then disagree, shifting the weights by one pixel.
    start_i, length_i = (jnp.round(jnp.asarray(v, jnp.float32)).astype(jnp.int32)
                         for v in (start, length))  # fmt: skip
    twice_support = round(2 * _kernel_support(method))
    twice_centres = 2 * jnp.arange(out_size, dtype=jnp.int32) + 1
    numerator = (2 * out_size * start_i + twice_centres * length_i - out_size
                 - twice_support * jnp.maximum(length_i, out_size))  # fmt: skip
    first = jnp.floor_divide(numerator, 2 * out_size) + 1
    position = (first[:, None] + jnp.arange(count, dtype=jnp.int32)[None, :]).astype(jnp.float32)
    weight = _kernel(method, jnp.abs(sample[:, None] - position) / kernel_scale)
    weight = jnp.where((position >= 0) & (position <= in_size - 1), weight, 0.0)
    total = jnp.sum(weight, axis=1, keepdims=True)
    weight = jnp.where(jnp.abs(total) > 1000.0 * float(np.finfo(np.float32).eps),
                       weight / jnp.where(total != 0, total, 1.0), 0.0)
    index = jnp.clip(position, 0, in_size - 1).astype(jnp.int32)
    return index, weight


def _sparse_axis(x: jax.Array, axis: int, index: jax.Array, weight: jax.Array) -> jax.Array:
    """Resample `axis` (1 or 2) of a float batch `[B, H, W, C]` with per-output taps.

    `index`, `weight`: `[B, n_out, count]`, each image's taps. Output pixel o of image b is
    `sum_k weight[b, o, k] * x[b, index[b, o, k]]` along `axis`: `count` gathers and
    multiply-adds in one elementwise kernel. The gathers clip (the indices are in range
    already); JAX's default fill mode checks every index and ran 4x slower on a CPU.
    """
    shape = [x.shape[0], 1, 1, 1]
    shape[axis] = index.shape[1]
    take = jax.vmap(lambda image, i: jnp.take(image, i, axis=axis - 1, mode="clip"))
    out = None
    for k in range(index.shape[-1]):
        term = take(x, index[..., k]) * weight[..., k].reshape(shape)
        out = term if out is None else out + term
    return out


def _materialized(f: Callable[[jax.Array], Any], x: jax.Array) -> Any:
    """`f(x)`, computed on the CPU by kernels of its own whose results are kept in memory.

    XLA:CPU drops `optimization_barrier` and fuses the first resampling pass into the gathers
    of the second, recomputing it for every tap (measured 3-4x slower). The two branches of a
    conditional are compiled as separate computations, so a `cond` whose branches are both `f`,
    on a runtime predicate the compiler cannot fold, keeps the passes apart. Elsewhere, where a
    conditional would cost a device-to-host sync, `f(x)` as is.
    """
    if x.size == 0:
        return f(x)
    flat = x.reshape(-1)

    def barrier(x):
        return jax.lax.cond(flat[0] == flat[-1], f, f, x)

    return jax.lax.platform_dependent(x, cpu=barrier, default=f)


def _resample_axis_dense(
    image: jax.Array, axis: int, out_size: int, start: Any, length: Any, *, method: str
) -> jax.Array:
    """`jax.image.scale_and_translate` of input pixels [start, start + length) of `axis` of one
    float image `[H, W, C]` onto `out_size`: a dense weight matrix, for TPUs' matrix units."""
    scale = jnp.asarray(out_size / length, jnp.float32)
    shape = (*image.shape[:axis], out_size, *image.shape[axis + 1:])
    return jax.image.scale_and_translate(
        image, shape, (axis,), scale[None], (-start * scale)[None], _KERNELS[method],
        precision=jax.lax.Precision.HIGHEST,
    )


def _resample_nearest(
    x: jax.Array, axis: int, out_size: int, start: Any, length: Any
) -> jax.Array:
    """Nearest-neighbour resampling of `axis` of one image `[H, W, C]`."""
    # jax.image.resize's rule (PIL's, but for exact ties): floor(start + (i + .5) * len / out),
    # written (2i + 1) * len / (2 out) so that float32 floors exact integer ratios exactly.
    i = jnp.arange(out_size, dtype=jnp.float32)
    index = start + jnp.floor((2 * i + 1) * length / (2 * out_size))
    return jnp.take(x, jnp.clip(index.astype(jnp.int32), 0, x.shape[axis] - 1), axis)


Box = tuple[int, int, int, int] | jax.Array  # (top, left, height, width): static, or [B, 4]


def _crop_resize(images: jax.Array, boxes: Box, size: tuple[int, int], method: str) -> jax.Array:
    """Resample a box of every image to `size`.

    images: `[B, H, W, C]` uint8 or floating. boxes: `(top, left, height, width)` in pixels,
    either a static tuple of ints shared by the batch or a float32 `[B, 4]` array, one per image.
    Returns `[B, size[0], size[1], C]` of the input dtype.

    Width pass, then height pass (PIL's order), each rounded and clipped for uint8. Bicubic and
    bilinear resample with the nonzero taps of jax.image's weights (`_sparse_crop_resize`: 5
    per output pixel at 256 -> 224, where the dense matrix has 256) on CPUs and GPUs; TPUs keep
    the dense contraction (`_dense_crop_resize`), which their matrix units prefer. The two give
    the same values up to float32 summation order.
    """
    if method == "nearest":
        return _two_passes(images, boxes, size, _resample_nearest)
    dense = functools.partial(_dense_crop_resize, boxes=boxes, size=size, method=method)
    sparse = functools.partial(_sparse_crop_resize, boxes=boxes, size=size, method=method)
    return jax.lax.platform_dependent(images, tpu=dense, default=sparse)


def _quantise(x: jax.Array, dtype: Any) -> jax.Array:
    """uint8 results are rounded (halves up, as PIL) and clipped to [0, 255]; others kept."""
    return jnp.clip(jnp.floor(x + 0.5), 0, 255) if dtype == jnp.uint8 else x


def _compute_dtype(dtype: Any) -> Any:
    return jnp.float32 if dtype == jnp.uint8 else jnp.promote_types(dtype, jnp.float32)


def _kept(boxes: Box, size: tuple[int, int]) -> tuple[bool, bool]:
    """Per axis (height, width): a static box that keeps the size, resampled as a plain slice."""
    static = isinstance(boxes, tuple)
    return static and boxes[2] == size[0], static and boxes[3] == size[1]


def _two_passes(images: jax.Array, boxes: Box, size: tuple[int, int], resample) -> jax.Array:
    """Per image, `resample(image, axis, out_size, start, length)` of the width, then of the
    height, each quantised; the pixels themselves where a static box keeps an axis's size."""
    dtype, compute, kept = images.dtype, _compute_dtype(images.dtype), _kept(boxes, size)

    def axis_pass(image, box, axis):
        start, length = box[axis], box[axis + 2]
        if kept[axis]:
            return jax.lax.slice_in_dim(image, start, start + size[axis], axis=axis)
        return _quantise(resample(image, axis, size[axis], start, length), dtype)

    def one(image, box):
        return axis_pass(axis_pass(image.astype(compute), box, 1), box, 0)

    if isinstance(boxes, tuple):
        return jax.vmap(lambda image: one(image, boxes))(images).astype(dtype)
    return jax.vmap(one)(images, boxes).astype(dtype)


def _dense_crop_resize(images: jax.Array, *, boxes: Box, size: tuple[int, int], method: str):
    """`_crop_resize` with jax.image's dense weight matrices (float32, highest precision)."""
    return _two_passes(images, boxes, size,
                       functools.partial(_resample_axis_dense, method=method))


def _sparse_crop_resize(images: jax.Array, *, boxes: Box, size: tuple[int, int], method: str):
    """`_crop_resize` with the nonzero taps of the dense weights (`_taps`), batched: one gather
    kernel per pass, the width pass kept in memory between them (`_materialized`)."""
    dtype, compute, kept = images.dtype, _compute_dtype(images.dtype), _kept(boxes, size)
    static = isinstance(boxes, tuple)

    def taps(traced_boxes, axis):  # [B, n_out, count] per image
        in_size = images.shape[1 + axis]
        count = _tap_count(method, boxes[axis + 2] if static else in_size, size[axis])
        make = functools.partial(_taps, in_size, size[axis], method=method, count=count)
        if static:  # one box, its taps broadcast: one gather form for both (measured as fast)
            return tuple(jnp.broadcast_to(a, (images.shape[0], *a.shape))
                         for a in make(boxes[axis], boxes[axis + 2]))  # fmt: skip
        return jax.vmap(make)(traced_boxes[:, axis], traced_boxes[:, axis + 2])

    # Computed once, not once per output pixel inside the passes' kernels.
    width_taps, height_taps = _materialized(lambda b: (taps(b, 1), taps(b, 0)),
                                            jnp.asarray(boxes, jnp.float32))

    def axis_pass(x, axis, taps):  # [B, H, W, C]; axis 0 = height, 1 = width
        if kept[axis]:
            return jax.lax.slice_in_dim(x, boxes[axis], boxes[axis] + size[axis], axis=axis + 1)
        out = _quantise(_sparse_axis(x.astype(compute), axis + 1, *taps), dtype)
        return out.astype(dtype if dtype == jnp.uint8 else compute)

    if kept[1]:
        x = axis_pass(images, 1, width_taps)
    else:
        x = _materialized(lambda x: axis_pass(x, 1, width_taps), images)
    return axis_pass(x, 0, height_taps).astype(dtype)


def _center_box(height: int, width: int, crop_fraction: float) -> tuple[int, int, int, int]:
    """The reference's evaluation crop as (top, left, side, side); the side is at least 1."""
    side = max(1, int(crop_fraction * min(height, width)))
    return (height - side + 1) // 2, (width - side + 1) // 2, side, side


def _sample_boxes(
    key: jax.Array,
    batch: int,
    height: int,
    width: int,
    area: tuple[float, float],
    ratio: tuple[float, float],
    fallback: tuple[int, int, int, int],
) -> jax.Array:
    """Inception crop boxes, float32 `[batch, 4]` = (top, left, h, w), independently per image:
    `_boxes_from_uniforms` on one uniform draw `[batch, _UNIFORMS_PER_BOX]` from `key`."""
    u = jax.random.uniform(key, (batch, _UNIFORMS_PER_BOX))
    return _boxes_from_uniforms(jnp, u, height, width, area, ratio, fallback)


def _boxes_from_uniforms(
    xp: Any,
    u: Any,
    height: int,
    width: int,
    area: tuple[float, float],
    ratio: tuple[float, float],
    fallback: tuple[int, int, int, int],
) -> Any:
    """Inception crop boxes, float32 `[batch, 4]` = (top, left, h, w), as TF's
    sample_distorted_bounding_box, from uniforms `u` in [0, 1), float32 `[batch, 22]`.

    Written once against the array namespace `xp` (`jax.numpy` in `random_resized_crop`, NumPy
    in `nsjax.data`'s host-side crops); float32 `u` keeps the arithmetic in float32 in both, so
    the same uniforms give the same boxes. `height`, `width` and `fallback` are one image size
    (ints) and box, or, with NumPy, one per row (`[batch]`, `[batch]`, `[batch, 4]`): each row
    then gets the box it would get alone. `_MAX_ATTEMPTS` candidates per image: aspect ratio
    w/h uniform in `ratio`; height uniform among the integers whose box covers a fraction of the
    image in `area` and whose rounded width fits; the first valid candidate wins, else
    `fallback`. Offsets are uniform over every position. Columns of `u`: the ratios of the 10
    candidates, their heights, then the top and the left offsets.
    """
    n = _MAX_ATTEMPTS
    u_ratio, u_height, u_top, u_left = u[:, :n], u[:, n:2 * n], u[:, 2 * n], u[:, 2 * n + 1]

    def uniform_int(u: Any, count: Any) -> Any:
        """An integer uniform in [0, count) from u uniform in [0, 1); count >= 1."""
        return xp.minimum(xp.floor(u * count), count - 1)

    if np.ndim(height):  # per-image sizes, NumPy `[batch]`: columns against the candidates
        min_area = (area[0] * np.float64(height) * width).astype(np.float32)[:, None]
        max_area = (area[1] * np.float64(height) * width).astype(np.float32)[:, None]
        height, width = np.float32(height), np.float32(width)
        cand_height, cand_width = height[:, None], width[:, None]
    else:  # Python ints: weakly typed, so the float32 arithmetic is the same as above
        min_area, max_area = area[0] * height * width, area[1] * height * width
        cand_height, cand_width = height, width
    r = ratio[0] + u_ratio * (ratio[1] - ratio[0])
    h_lo = xp.round(xp.sqrt(min_area / r))
    h_hi = xp.round(xp.sqrt(max_area / r))
    # The largest height whose rounded width still fits (TF's correction, then its -1 fix-up).
    h_hi = xp.where(xp.round(h_hi * r) > cand_width, xp.floor((cand_width + 0.5) / r), h_hi)
    h_hi = xp.where(xp.round(h_hi * r) > cand_width, h_hi - 1, h_hi)
    h_hi = xp.minimum(h_hi, cand_height)
    h_lo = xp.minimum(h_lo, h_hi)
    h = h_lo + uniform_int(u_height, xp.maximum(h_hi - h_lo + 1, 1))
    # Rounding may leave the area just outside the range: try one pixel taller, then shorter.
    h = xp.where(xp.round(h * r) * h < min_area, h + 1, h)
    h = xp.where(xp.round(h * r) * h > max_area, h - 1, h)
    w = xp.round(h * r)
    ok = (
        (w * h >= min_area) & (w * h <= max_area)
        & (h >= 1) & (w >= 1) & (h <= cand_height) & (w <= cand_width)
    )
    first = xp.argmax(ok, axis=1)[:, None]
    h = xp.take_along_axis(h, first, axis=1)[:, 0]
    w = xp.take_along_axis(w, first, axis=1)[:, 0]
    top = uniform_int(u_top, height - h + 1)
    left = uniform_int(u_left, width - w + 1)
    found = xp.take_along_axis(ok, first, axis=1)
    boxes = xp.stack([top, left, h, w], axis=1)
    fallback = xp.asarray(fallback, dtype=xp.float32)
    return xp.where(found, boxes, fallback if fallback.ndim == 2 else fallback[None])


# --------------------------------------------------------------------------- public functions


def resize(images: jax.Array, size: Size, *, method: Method = "bicubic") -> jax.Array:
    """Resize a batch of images, antialiased when downsampling (as PIL's `Image.resize`).

    **Arguments:**

    - `images`: `[B, H, W, 3]`, uint8 or floating.
    - `size`: output side (square) or `(height, width)`; static.
    - `method`: "bicubic" (Keys a=-0.5, PIL's BICUBIC), "bilinear" (triangle) or "nearest".

    **Returns:** `[B, height, width, 3]` of the input dtype. uint8 is computed in float32, rounded and
    clipped after each of the width and height passes (PIL's order).

    **Example:**

    >>> small = resize(jnp.zeros((8, 256, 256, 3), jnp.uint8), 224)  # [8, 224, 224, 3] uint8
    """
    height, width = _check_images(images)
    out = _check_size(size)
    _checks.check_choice("method", method, _METHODS)
    return _crop_resize(images, (0, 0, height, width), out, method)


def center_crop_resize(
    images: jax.Array, size: Size, *, crop_fraction: float = 0.875, method: Method = "bicubic"
) -> jax.Array:
    """The EfficientNet reference's evaluation crop: a centred square, resized to `size`.

    The crop side is `int(crop_fraction * min(H, W))` (at least 1), at offsets
    `((H - side) + 1) // 2` and `((W - side) + 1) // 2`. The reference uses
    `crop_fraction = size / (size + 32)`, i.e. 0.875 at 224 px.

    **Arguments:**

    - `images`: `[B, H, W, 3]`, uint8 or floating.
    - `size`: output side (square) or `(height, width)`; static.
    - `crop_fraction`: in (0, 1]; static.
    - `method`: as in `resize`.

    **Returns:** `[B, height, width, 3]` of the input dtype.

    **Example:**

    >>> test = center_crop_resize(images, 288)  # FixRes: evaluate at a larger resolution
    """
    height, width = _check_images(images)
    out = _check_size(size)
    box = _center_box(height, width, _check_crop_fraction(crop_fraction))
    _checks.check_choice("method", method, _METHODS)
    return _crop_resize(images, box, out, method)


def random_resized_crop(
    key: jax.Array,
    images: jax.Array,
    size: Size,
    *,
    area: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    method: Method = "bicubic",
) -> jax.Array:
    """The reference's Inception crop: a random box per image, resized to `size`.

    Follows TF's `sample_distorted_bounding_box` (area_range=`area`, aspect_ratio_range=`ratio`,
    max_attempts=10), vectorised: 10 candidate boxes per image, aspect ratio (width / height)
    uniform in `ratio`, height uniform among the integer heights whose box covers a fraction of
    the image in `area` and fits; the first valid candidate is used, else the centre crop of
    `center_crop_resize` (crop_fraction 0.875). Two departures from TF: a box's offset is uniform
    over all `H - h + 1` positions (TF never picks the last one), and a sampled whole-image box
    is kept (the reference treats it as a failure and centre-crops). The reference also passes
    `min_object_covered=0.1` with the whole image as object: `area=(0.1, 1.0)` gives that.

    **Arguments:**

    - `key`: a `jax.random` key; every image's box is drawn independently from it.
    - `images`: `[B, H, W, 3]`, uint8 or floating.
    - `size`: output side (square) or `(height, width)`; static.
    - `area`: (lo, hi) with 0 < lo <= hi <= 1, fractions of the image area; static.
    - `ratio`: (lo, hi) with 0 < lo <= hi, width / height; static.
    - `method`: as in `resize`.

    **Returns:** `[B, height, width, 3]` of the input dtype; the same key gives the same crops.

    **Example:**

    >>> train = random_resized_crop(jax.random.key(0), images, 224)
    """
    _checks.check_key("key", key)
    height, width = _check_images(images)
    out = _check_size(size)
    area = _check_range("area", area, upper=1.0)
    ratio = _check_range("ratio", ratio, upper=None)
    _checks.check_choice("method", method, _METHODS)
    fallback = _center_box(height, width, 0.875)
    boxes = _sample_boxes(key, images.shape[0], height, width, area, ratio, fallback)
    return _crop_resize(images, boxes, out, method)


def fixres_trainable(
    params: Any, *, freeze: Callable[[str], bool] | str | re.Pattern | Sequence[str | re.Pattern]
) -> Any:
    """Boolean mask of the leaves a FixRes fine-tune updates, for `optax.multi_transform`.

    Each leaf's key path is rendered with `jax.tree_util.keystr` (e.g. `.blocks[0].conv.weight`).
    An array leaf (`jax.Array`, `np.ndarray`, `jax.ShapeDtypeStruct`) is `True` (trainable)
    unless frozen; any other leaf is `False`; `None` subtrees stay `None`.

    **Arguments:**

    - `params`: any pytree, typically `eqx.filter(model, eqx.is_inexact_array)` or an
      `eqx.nn.State` (whose paths are flat indices, not layer names).
    - `freeze`: a callable `path -> bool` (True freezes the leaf), or one or more regular
      expressions searched (`re.search`) in each path; each must match some array leaf.

    **Returns:** A pytree of Python bools with the structure of `params`.

    Freeze with `optax.multi_transform({True: opt, False: optax.set_to_zero()}, lambda _: mask)`.
    The lambda matters for Equinox pytrees: the mask is then itself a Module, hence callable,
    and optax would call it. Beware `optax.masked(opt, mask)` alone: it passes masked-out
    gradients through *unchanged*, so `apply_updates` still moves the frozen leaves.

    **Example:**

    >>> mask = fixres_trainable(params, freeze=[r"^\\.stem\\.", r"^\\.blocks\\[[0-3]\\]"])
    """
    if callable(freeze):
        frozen = freeze
    else:
        frozen = _regex_predicate(params, freeze)
    return jax.tree_util.tree_map_with_path(
        lambda path, leaf: (
            isinstance(leaf, _ARRAY_TYPES) and not frozen(jax.tree_util.keystr(path))
        ),
        params,
    )


def _regex_predicate(params: Any, freeze: Any) -> Callable[[str], bool]:
    """`path -> any pattern matches`, after checking that every pattern matches an array leaf."""
    if isinstance(freeze, (str, re.Pattern)):
        freeze = [freeze]
    if not isinstance(freeze, Sequence) or not all(isinstance(p, str | re.Pattern) for p in freeze):
        raise TypeError(
            f"freeze must be a callable or a sequence of regular expressions, got {freeze!r}"
        )
    try:
        patterns = [re.compile(p) for p in freeze]
    except re.error as e:
        raise ValueError(f"freeze holds an invalid regular expression: {e}") from e
    paths = [
        jax.tree_util.keystr(path)
        for path, leaf in jax.tree_util.tree_leaves_with_path(params)
        if isinstance(leaf, _ARRAY_TYPES)
    ]
    unused = [p.pattern for p in patterns if not any(p.search(s) for s in paths)]
    if unused:
        raise ValueError(
            f"freeze patterns {unused} match no array leaf of params; "
            f"its {len(paths)} array paths start {paths[:4]}"
        )
    return lambda path: any(p.search(path) for p in patterns)
