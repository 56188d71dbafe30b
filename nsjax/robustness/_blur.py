"""The blur corruptions of ImageNet-C: defocus, glass, motion and zoom blur, and the validation
corruption Gaussian blur, all on the device.

Each follows its function in hendrycks/robustness (`imagecorruptions.corruptions`) at any image
size, in float32 where the reference computes in float64, ending in its truncating cast:

- `gaussian_blur`: scikit-image's Gaussian as two matrix products (`_common.gaussian_matrix`).
- `defocus_blur`: the reference's `disk` kernel (built with OpenCV on the host, as the reference
  does) correlated with each channel under OpenCV's default border (reflect-101), as a product
  of Fourier transforms of the padded image: the disk is not separable, and the transform beats
  a 17x17 or 21x21 convolution on CPU and GPU alike. At severity 1 the disk is a box of equal
  weights, whose ties the reference's float64 resolves one way (`_box_mean_uint8`).
- `glass_blur`: Gaussian, uint8, the reference's sequential local pixel "swaps" (which copy, as
  written with NumPy views), Gaussian. The pass is resolved exactly and in parallel by pointer
  doubling (`_glass_swaps`).
- `motion_blur`: the reference's `_motion_blur` (Gaussian-weighted copies shifted along a line,
  edge replicated, stopping at the image's side), a sum of slices of the edge-padded image;
  `_snow` reuses it. Where all copies agree, the reference's float64 sum is tabulated.
- `zoom_blur`: the sum of clipped zooms, each two linear interpolations along the axes with the
  taps of `_common.clipped_zoom_matrix` (gathers: 15x faster than matrix products on CPU).

Float32 cannot follow the reference's float64 rounding where an output lands exactly on a level:
flat areas under the Gaussian, or under the disk at severities 2 and 3 (whose weights sum to
1 - 3e-8 and 1 - 6e-9), come out one level apart where the reference truncates a hair below.
Motion blur's flat runs (common: its edge replication makes them) and the severity-1 disk are
exact.
"""

from __future__ import annotations

import functools
import math

import cv2
import jax
import jax.numpy as jnp
import numpy as np

from nsjax.robustness._common import (
    clipped_zoom_matrix,
    filter_separable,
    gaussian_matrix,
    to_uint8,
    to_uint8_from_255,
    to_unit,
)

GAUSSIAN_BLUR_SIGMA = (1, 2, 3, 4, 6)
GLASS_BLUR_SIGMA_DELTA_ITERATIONS = ((0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2))
DEFOCUS_BLUR_RADIUS_ALIAS_SIGMA = ((3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5))
MOTION_BLUR_RADIUS_SIGMA = ((10, 3), (15, 5), (15, 8), (15, 12), (20, 15))
ZOOM_BLUR_FACTORS = tuple(  # the reference's np.arange: 12 (1.11 in), 16, 11, 13, 11 zooms
    tuple(np.arange(1, stop, step).tolist())
    for stop, step in ((1.11, 0.01), (1.16, 0.01), (1.21, 0.02), (1.26, 0.02), (1.31, 0.03))
)


def _gaussian(x: jax.Array, sigma: float) -> jax.Array:
    """float32 `[H, W, C]` -> float32 `[H, W, C]`: scikit-image's `filters.gaussian` over H and W
    (mode "nearest", truncate 4), as the reference calls it."""
    h, w = x.shape[:2]
    return filter_separable(x, gaussian_matrix(h, sigma), gaussian_matrix(w, sigma))


def gaussian_blur(key: jax.Array, image: jax.Array, severity: int) -> jax.Array:
    """uint8 `[H, W, 3]` -> uint8 `[H, W, 3]`: Gaussian filter of std `c` pixels (reference
    `gaussian_blur`). Deterministic: `key` is unused."""
    del key
    return to_uint8(_gaussian(to_unit(image), GAUSSIAN_BLUR_SIGMA[severity - 1]))


@functools.cache
def _disk(radius: int, alias_sigma: float) -> np.ndarray:
    """float32 `[17, 17]` (radius <= 8) or `[2r + 1, 2r + 1]`: the reference's `disk`, a
    normalised aliased disk smoothed by `cv2.GaussianBlur` (3x3, or 5x5 past radius 8). The
    smoothing reflects mass back at the grid's edge, so radii 8 and 10 sum to 1.013 and 1.011."""
    grid = np.arange(-8, 9) if radius <= 8 else np.arange(-radius, radius + 1)
    ksize = (3, 3) if radius <= 8 else (5, 5)
    xx, yy = np.meshgrid(grid, grid)
    aliased = np.array(xx**2 + yy**2 <= radius**2, dtype=np.float32)
    aliased /= np.sum(aliased)
    return cv2.GaussianBlur(aliased, ksize=ksize, sigmaX=alias_sigma)


def _correlate_reflect101(x: jax.Array, kernel: np.ndarray) -> jax.Array:
    """float32 `[H, W, C]` -> float32 `[H, W, C]`: each channel correlated with the odd square
    `kernel` `[k, k]` (k <= 2·min(H, W) - 1) under OpenCV's default border BORDER_REFLECT_101, as
    `cv2.filter2D(x[..., c], -1, kernel)`. Computed as a circular convolution by FFT of the
    padded image, whose wrapped-around border is cropped away."""
    r = kernel.shape[0] // 2
    padded = jnp.pad(x, ((r, r), (r, r), (0, 0)), mode="reflect")  # NumPy "reflect" = reflect-101
    shape = padded.shape[:2]
    flipped = np.zeros(shape)
    flipped[: 2 * r + 1, : 2 * r + 1] = np.asarray(kernel, np.float64)[::-1, ::-1]
    spectrum = jnp.asarray(np.fft.rfft2(flipped)[..., None], jnp.complex64)
    out = jnp.fft.irfft2(jnp.fft.rfft2(padded, axes=(0, 1)) * spectrum, s=shape, axes=(0, 1))
    return out[2 * r :, 2 * r :]


def _box_mean_uint8(image: jax.Array, support: np.ndarray, weight: float) -> jax.Array:
    """uint8 `[H, W, C]` -> uint8 `[H, W, C]`: the reference's defocus output for a kernel of n
    equal weights `weight` = float32(1/n) < 1/n on `support` (bool `[k, k]`) and negligible
    others (< 1e-21). The reference's float64 `S·w/255·255` for the integer sum S of the n
    pixels falls just below S/n, so a multiple of n truncates to S/n - 1 (one pixel in n); the
    output is `ceil(S/n) - 1` from the exact S (rounded from its float32 transform)."""
    n = int(support.sum())
    assert weight < 1.0 / n, "a weight of 1/n or more truncates differently"
    sums = _correlate_reflect101(image.astype(jnp.float32), support.astype(np.float64))
    sums = jnp.round(sums).astype(jnp.int32)
    return (jnp.maximum(sums - 1, 0) // n).astype(jnp.uint8)


def defocus_blur(key: jax.Array, image: jax.Array, severity: int) -> jax.Array:
    """uint8 `[H, W, 3]` -> uint8 `[H, W, 3]`: correlation with the reference's anti-aliased disk
    (reference `defocus_blur`). At severity 1 the anti-aliasing (σ 0.1) leaves a box of equal
    weights, whose ties `_box_mean_uint8` resolves as the reference. Deterministic: `key` is
    unused."""
    del key
    kernel = _disk(*DEFOCUS_BLUR_RADIUS_ALIAS_SIGMA[severity - 1])
    support = kernel > 1e-12 * kernel.max()
    if np.all(kernel[support] == kernel.max()):
        return _box_mean_uint8(image, support, float(kernel.max()))
    return to_uint8(_correlate_reflect101(to_unit(image), kernel))


def _glass_offsets(key: jax.Array, shape: tuple[int, ...], severity: int) -> jax.Array:
    """int32 `[iterations, H - 2δ, W - 2δ, 2]`: the reference's `np.random.randint(-δ, δ,
    size=(2,))` (δ excluded) for every scanned position, as (dx, dy). (Drawn flat: multi-axis
    draws compile several times slower on XLA:CPU.)"""
    _, delta, iterations = GLASS_BLUR_SIGMA_DELTA_ITERATIONS[severity - 1]
    size = (iterations, shape[0] - 2 * delta, shape[1] - 2 * delta, 2)
    return jax.random.randint(key, (math.prod(size),), -delta, delta, jnp.int32).reshape(size)


def _glass_swaps(x: jax.Array, offsets: jax.Array, delta: int) -> jax.Array:
    """One pass of the reference's local pixel swaps on `x` `[H, W, C]` (any dtype), with
    `offsets` int `[H - 2δ, W - 2δ, 2]` (dx, dy) for the positions h = H-δ … δ+1 (outer),
    w = W-δ … δ+1 (inner), in the reference's scan order.

    The reference's `x[h, w], x[h', w'] = x[h', w'], x[h, w]` assigns NumPy views, so it is no
    swap: it copies `x[h', w']` into `x[h, w]` and leaves `x[h', w']` as it was. Each scanned
    pixel is written once, with the value its source holds at that moment: the source's new
    value if the scan already passed the source, else the value from before the pass. That
    makes every pixel a chain of links back in scan order ending at a pre-pass value; pointer
    doubling over "new value of pixel p" (index p) and "old value of pixel q" (index N + q)
    follows all chains at once in ceil(log2(chain length)) gathers."""
    h, w = x.shape[:2]
    n = h * w
    rows = np.arange(h - delta, delta, -1)[:, None]
    cols = np.arange(w - delta, delta, -1)[None, :]
    dx, dy = offsets[..., 0], offsets[..., 1]
    src_rows, src_cols = rows + dy, cols + dx
    scanned = (src_rows > delta) & (src_rows <= h - delta) & (src_cols > delta)
    scanned &= src_cols <= w - delta
    passed = scanned & ((dy > 0) | ((dy == 0) & (dx > 0)))
    src = src_rows * w + src_cols
    pointer = jnp.concatenate([jnp.arange(n, 2 * n), jnp.arange(n, 2 * n)])
    pointer = pointer.at[(rows * w + cols).reshape(-1)].set(
        jnp.where(passed, src, n + src).reshape(-1)
    )
    steps = (offsets.shape[0] * offsets.shape[1]).bit_length()  # 2^steps > the longest chain
    pointer = jax.lax.fori_loop(0, steps, lambda _, p: p[p], pointer)
    flat = x.reshape(n, *x.shape[2:])
    return flat[pointer[:n] - n].reshape(x.shape)


def _glass_blur(image: jax.Array, offsets: jax.Array, severity: int) -> jax.Array:
    """uint8 `[H, W, 3]` -> uint8 `[H, W, 3]`: the reference's `glass_blur` given its offsets
    (`_glass_offsets`): Gaussian of std σ, truncating cast to uint8 (no clip), `iterations`
    passes of local swaps of at most δ pixels, Gaussian again."""
    sigma, delta, iterations = GLASS_BLUR_SIGMA_DELTA_ITERATIONS[severity - 1]
    x = to_uint8(_gaussian(to_unit(image), sigma))
    for i in range(iterations):
        x = _glass_swaps(x, offsets[i], delta)
    return to_uint8(_gaussian(to_unit(x), sigma))


def glass_blur(key: jax.Array, image: jax.Array, severity: int) -> jax.Array:
    """uint8 `[H, W, 3]` -> uint8 `[H, W, 3]`: blur, local pixel shuffling within δ pixels, blur
    (reference `glass_blur`, swaps as the reference actually performs them: `_glass_swaps`)."""
    return _glass_blur(image, _glass_offsets(key, image.shape, severity), severity)


def _motion_kernel(radius: int, sigma: float) -> np.ndarray:
    """float64 `[2·radius + 1]`: the reference's `getMotionBlurKernel`, a half Gaussian of std
    `sigma` over 0 … 2·radius, normalised to sum 1."""
    taps = np.arange(2 * radius + 1)
    weights = np.exp(-(taps**2) / (2 * sigma**2)) / (np.sqrt(2 * np.pi) * sigma)
    return weights / np.sum(weights)


def _motion_copies(x: jax.Array, angle: jax.Array, radius: int, sigma: float
                   ) -> tuple[list[jax.Array], jax.Array]:  # fmt: skip
    """The reference `_motion_blur`'s shifted copies of `x` `[H, W]` or `[H, W, C]` and their
    float32 weights `[2·radius + 1]`, 0 past the reference's `break`.

    Copy i is `x` shifted by `-ceil(i·sin θ - 1/2)` rows and `-ceil(i·cos θ - 1/2)` columns
    (`angle` θ in degrees, a float32 scalar), the edge replicated. As the reference, the copies
    stop at the first shift of a full image side or more (then the weights sum to less than 1:
    this happens on small images)."""
    h, w = x.shape[:2]
    width = 2 * radius + 1
    rad = jnp.deg2rad(jnp.asarray(angle, jnp.float32))
    point_y, point_x = width * jnp.sin(rad), width * jnp.cos(rad)
    hypot = jnp.sqrt(point_y**2 + point_x**2)
    i = jnp.arange(width, dtype=jnp.float32)
    dy = -jnp.ceil(i * point_y / hypot - 0.5).astype(jnp.int32)
    dx = -jnp.ceil(i * point_x / hypot - 0.5).astype(jnp.int32)
    inside = jnp.cumprod((jnp.abs(dy) < h) & (jnp.abs(dx) < w))
    weights = jnp.where(inside == 1, jnp.asarray(_motion_kernel(radius, sigma), jnp.float32), 0.0)
    pad, channels = width - 1, (0,) * (x.ndim - 2)
    padded = jnp.pad(x, ((pad, pad), (pad, pad)) + tuple((c, c) for c in channels), mode="edge")
    copies = [jax.lax.dynamic_slice(padded, (pad - dy[t], pad - dx[t], *channels), x.shape)
              for t in range(width)]  # fmt: skip
    return copies, weights


def _weighted_sum(copies: list[jax.Array], weights: jax.Array) -> jax.Array:
    """`Σ_t weights[t] · copies[t]`, accumulated in the reference's order."""
    return sum(weights[t] * copy for t, copy in enumerate(copies))


def _motion_blur(x: jax.Array, angle: jax.Array, radius: int, sigma: float) -> jax.Array:
    """float32 `[H, W]` or `[H, W, C]` -> float32, same shape: the reference's `_motion_blur`,
    the weighted sum of `_motion_copies`."""
    return _weighted_sum(*_motion_copies(x, angle, radius, sigma))


@functools.cache
def _motion_blur_flat(radius: int, sigma: float) -> np.ndarray:
    """uint8 `[2·radius + 2, 256]`: the reference's output where its first n copies all hold the
    value v, at `[n, v]`: the float64 sum of the weights times v, accumulated in the reference's
    order, lands just below v for about half of the levels v, and the cast truncates it."""
    levels = np.arange(256, dtype=np.uint8)
    blurred = np.zeros(256, np.float32)
    sums = [blurred]
    for weight in _motion_kernel(radius, sigma):
        blurred = blurred + weight * levels
        sums.append(blurred)
    return np.uint8(np.clip(np.stack(sums), 0, 255))


def _motion_blur_uint8(image: jax.Array, angle: jax.Array, radius: int, sigma: float
                       ) -> jax.Array:  # fmt: skip
    """uint8 `[H, W, C]` -> uint8 `[H, W, C]`: `_motion_blur` on the [0, 255] scale, clipped and
    truncated as the reference; where all copies agree (edges replicated into a run, flat
    areas) the output is the reference's exactly (`_motion_blur_flat`)."""
    x = image.astype(jnp.float32)
    copies, weights = _motion_copies(x, angle, radius, sigma)
    blurred = _weighted_sum(copies, weights)
    spread = sum(jnp.where(weights[t] > 0, jnp.abs(copy - x), 0.0) for t, copy in enumerate(copies))
    flat_value = jnp.asarray(_motion_blur_flat(radius, sigma))[jnp.sum(weights > 0)][image]
    return jnp.where(spread == 0, flat_value, to_uint8_from_255(blurred))


def motion_blur(key: jax.Array, image: jax.Array, severity: int) -> jax.Array:
    """uint8 `[H, W, 3]` -> uint8 `[H, W, 3]`: Gaussian-weighted copies shifted along a line at an
    angle drawn from U(-45°, 45°) (reference `motion_blur`, `_motion_blur_uint8`)."""
    angle = jax.random.uniform(key, (), jnp.float32, -45.0, 45.0)
    return _motion_blur_uint8(image, angle, *MOTION_BLUR_RADIUS_SIGMA[severity - 1])


def _zoom_taps(size: int, zoom: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The two source indices (int `[size]` each) and the fraction of the second (float32
    `[size]`) of each output sample of `_common.clipped_zoom_matrix(size, zoom)`, zoom >= 1
    (every row then has taps)."""
    matrix = clipped_zoom_matrix(size, zoom)
    lo = np.argmax(matrix != 0, axis=1)
    hi = np.minimum(lo + 1, size - 1)
    frac = np.where(hi > lo, matrix[np.arange(size), hi], 0.0)
    return lo, hi, frac.astype(np.float32)


def _lerp(x: jax.Array, taps: tuple[np.ndarray, np.ndarray, np.ndarray], axis: int) -> jax.Array:
    """`x` resampled along `axis` by linear interpolation `a + f·(b - a)` at `taps`
    (`_zoom_taps`); a run of equal values stays exact, as in SciPy's float64 interpolation."""
    lo, hi, frac = taps
    a, b = jnp.take(x, lo, axis=axis), jnp.take(x, hi, axis=axis)
    shape = [1] * x.ndim
    shape[axis] = -1
    return a + frac.reshape(shape) * (b - a)


def zoom_blur(key: jax.Array, image: jax.Array, severity: int) -> jax.Array:
    """uint8 `[H, W, 3]` -> uint8 `[H, W, 3]`: mean of the image and its clipped zooms by each
    factor of `ZOOM_BLUR_FACTORS` (reference `zoom_blur`; zoom 1 included, so the image counts
    twice), summed in float32 in the reference's order. Deterministic: `key` is unused."""
    del key
    zooms = ZOOM_BLUR_FACTORS[severity - 1]
    x = to_unit(image)
    h, w = x.shape[:2]
    out = jnp.zeros_like(x)
    for zoom in zooms:
        out = out + _lerp(_lerp(x, _zoom_taps(h, zoom), 0), _zoom_taps(w, zoom), 1)
    return to_uint8((x + out) / (len(zooms) + 1))


ON_DEVICE = {
    "defocus_blur": defocus_blur,
    "glass_blur": glass_blur,
    "motion_blur": motion_blur,
    "zoom_blur": zoom_blur,
    "gaussian_blur": gaussian_blur,
}
ON_HOST = {}
