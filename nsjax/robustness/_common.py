"""Numerics shared by the corruptions: the reference's float scale and final cast, per-image
host generators, and separable linear filters built on the host in float64.

The reference (`imagecorruptions`, hendrycks/robustness) works per image in float64 on [0, 1],
clips and multiplies by 255, then casts with `np.uint8` (truncation toward zero). Here images are
float32 on the device; `to_uint8` reproduces the clip-and-truncate cast.

Linear filters that the reference computes with SciPy (`gaussian_filter`, `zoom(order=1)`) are
separable. Along one axis of length `n` each is an `[n_out, n]` matrix whose rows hold the
filter weights after SciPy's boundary rule has folded out-of-range taps back into the image, so
any sigma or zoom is exact, including kernels wider than the image. `filter_separable` applies a
pair of them as two small matrix products (fast on every backend, batched by `vmap`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


_UNIT_LEVELS = (np.arange(256) / 255.0).astype(np.float32)


def to_unit(image: jax.Array) -> jax.Array:
    """uint8 `[..]` -> float32 `[..]` in [0, 1]: the reference's `np.array(x) / 255.` rounded to
    float32, looked up in a 256-entry table (XLA:CPU's float32 division is not correctly
    rounded: a division gives 126 of the 256 levels one ulp off)."""
    return jnp.asarray(_UNIT_LEVELS)[image]


def to_uint8(x: jax.Array) -> jax.Array:
    """float `[..]` on [0, 1] -> uint8: clip to [0, 1], scale by 255, truncate (as
    `np.uint8(np.clip(x, 0, 1) * 255)`)."""
    return (jnp.clip(x, 0.0, 1.0) * 255.0).astype(jnp.uint8)


def to_uint8_from_255(x: jax.Array) -> jax.Array:
    """float `[..]` on [0, 255] -> uint8: clip to [0, 255], truncate (as
    `np.uint8(np.clip(x, 0, 255))`)."""
    return jnp.clip(x, 0.0, 255.0).astype(jnp.uint8)


def host_rng(key) -> np.random.Generator:
    """A NumPy generator seeded from a `jax.random` key or its raw `key_data` (uint32 NumPy,
    as a host callback receives it), for the corruptions that run on the host: the same key
    gives the same generator, different keys independent ones."""
    if jnp.issubdtype(getattr(key, "dtype", np.uint32), jax.dtypes.prng_key):
        key = jax.random.key_data(key)
    return np.random.default_rng(np.asarray(key, np.uint32).ravel().tolist())


def fold_index(index: np.ndarray, size: int, mode: str) -> np.ndarray:
    """Map integer sample positions (any range) into `[0, size)` by SciPy's ndimage boundary
    `mode`: "reflect" (d c b a | a b c d | d c b a) or "nearest" (a a a | a b c d | d d d)."""
    index = np.asarray(index, np.int64)
    if mode == "nearest":
        return np.clip(index, 0, size - 1)
    if mode == "reflect":
        period = 2 * size
        i = np.mod(index, period)
        return np.where(i < size, i, period - 1 - i)
    raise ValueError(f"mode must be 'reflect' or 'nearest', got {mode!r}")


def gaussian_weights(sigma: float, truncate: float = 4.0) -> np.ndarray:
    """SciPy's `gaussian_filter1d` weights, float64 `[2r + 1]` with r = int(truncate·sigma + 0.5)."""
    radius = int(truncate * float(sigma) + 0.5)
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    w = np.exp(-0.5 / (float(sigma) ** 2) * x * x)
    return w / w.sum()


def correlation_matrix(size: int, weights: np.ndarray, mode: str) -> np.ndarray:
    """float64 `[size, size]` M with `M @ v` = SciPy's `correlate1d(v, weights, mode=mode)` (the
    kernel centred on its middle tap; `weights` of odd length)."""
    weights = np.asarray(weights, np.float64)
    radius = (len(weights) - 1) // 2
    rows = np.repeat(np.arange(size), len(weights))
    taps = (np.arange(size)[:, None] + np.arange(-radius, radius + 1)[None, :]).reshape(-1)
    m = np.zeros((size, size), np.float64)
    np.add.at(m, (rows, fold_index(taps, size, mode)), np.tile(weights, size))
    return m


def gaussian_matrix(size: int, sigma: float, *, mode: str = "nearest",
                    truncate: float = 4.0) -> np.ndarray:
    """float64 `[size, size]`: SciPy's / scikit-image's Gaussian filter along one axis.
    scikit-image's `filters.gaussian` defaults are mode "nearest", truncate 4."""
    if float(sigma) == 0.0:
        return np.eye(size)
    return correlation_matrix(size, gaussian_weights(sigma, truncate), mode)


def zoom_matrix(size: int, zoom: float) -> np.ndarray:
    """float64 `[round(c · zoom), size]` with c = ceil(size / zoom): the centre `c` samples of
    an axis of length `size` resampled by `scipy.ndimage.zoom(order=1)` (output sample `o`
    reads input `o · (c - 1) / (n - 1)`, linearly interpolated), every output sample kept."""
    crop = int(np.ceil(size / float(zoom)))
    top = (size - crop) // 2
    out = int(round(crop * float(zoom)))
    m = np.zeros((out, size), np.float64)
    if out == 1 or crop == 1:
        m[:, top] = 1.0
        return m
    coord = np.arange(out, dtype=np.float64) * ((crop - 1) / (out - 1))
    lo = np.floor(coord).astype(np.int64)
    frac = coord - lo
    hi = np.minimum(lo + 1, crop - 1)
    np.add.at(m, (np.arange(out), top + lo), 1.0 - frac)
    np.add.at(m, (np.arange(out), top + hi), frac)
    return m


def clipped_zoom_matrix(size: int, zoom: float) -> np.ndarray:
    """float64 `[size, size]`: the reference's `clipped_zoom` along one axis, `zoom_matrix`'s
    first `size` rows. Rows past the zoomed length are zero (the reference's out-of-shape
    case, where the layer only covers the top-left corner)."""
    m = zoom_matrix(size, zoom)[:size]
    return np.pad(m, ((0, size - len(m)), (0, 0)))


def filter_separable(x: jax.Array, rows: np.ndarray, cols: np.ndarray) -> jax.Array:
    """Apply `rows` `[H', H]` along axis 0 and `cols` `[W', W]` along axis 1 of `x`
    (`[H, W]` or `[H, W, C]`, float32); returns `[H', W']` or `[H', W', C]`, float32.
    Computed at full float32 precision (no TF32 / bf16 passes on accelerators)."""
    r = jnp.asarray(rows, jnp.float32)
    c = jnp.asarray(cols, jnp.float32)
    hi = jax.lax.Precision.HIGHEST
    if x.ndim == 2:
        return jnp.einsum("ih,hw,jw->ij", r, x, c, precision=hi)
    return jnp.einsum("ih,hwc,jw->ijc", r, x, c, precision=hi)

