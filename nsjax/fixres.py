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


def _resample_axis(
    image: jax.Array, axis: int, out_size: int, start: Any, length: Any, method: str
) -> jax.Array:
    """Resample input pixels [start, start + length) of `axis` of one float image onto `out_size`.

    `image` is `[H, W, C]`; `start` and `length` are Python ints (a static box) or float32
    scalars (traced). A static box that keeps the size is a plain slice.
    """
    if isinstance(length, int) and length == out_size:
        return jax.lax.slice_in_dim(image, start, start + length, axis=axis)
    if method == "nearest":
        # jax.image.resize's rule (PIL's, but for exact ties): floor(start + (i + .5) * len / out),
        # written (2i + 1) * len / (2 out) so that float32 floors exact integer ratios exactly.
        i = jnp.arange(out_size, dtype=jnp.float32)
        index = start + jnp.floor((2 * i + 1) * length / (2 * out_size))
        return jnp.take(image, jnp.clip(index.astype(jnp.int32), 0, image.shape[axis] - 1), axis)
    scale = jnp.asarray(out_size / length, jnp.float32)
    shape = (*image.shape[:axis], out_size, *image.shape[axis + 1:])
    return jax.image.scale_and_translate(
        image, shape, (axis,), scale[None], (-start * scale)[None], _KERNELS[method]
    )


def _crop_resize(
    images: jax.Array,
    boxes: tuple[int, int, int, int] | jax.Array,
    size: tuple[int, int],
    method: str,
) -> jax.Array:
    """Resample a box of every image to `size`.

    images: `[B, H, W, C]` uint8 or floating. boxes: `(top, left, height, width)` in pixels,
    either a static tuple of ints shared by the batch or a float32 `[B, 4]` array, one per image.
    Returns `[B, size[0], size[1], C]` of the input dtype.
    """
    dtype = images.dtype
    is_uint8 = dtype == jnp.uint8
    compute = jnp.float32 if is_uint8 else jnp.promote_types(dtype, jnp.float32)

    def quantise(x: jax.Array) -> jax.Array:
        return jnp.clip(jnp.floor(x + 0.5), 0, 255) if is_uint8 else x  # halves up, as PIL

    def one(image: jax.Array, box) -> jax.Array:
        x = image.astype(compute)
        x = quantise(_resample_axis(x, 1, size[1], box[1], box[3], method))  # width first, as PIL
        return quantise(_resample_axis(x, 0, size[0], box[0], box[2], method))

    if isinstance(boxes, tuple):
        return jax.vmap(lambda image: one(image, boxes))(images).astype(dtype)
    return jax.vmap(one)(images, boxes).astype(dtype)


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
