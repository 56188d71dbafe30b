"""The weather corruptions of ImageNet-C other than snow: frost and fog on the device, spatter
(a validation corruption) on the host.

Each follows its function in `imagecorruptions` (hendrycks/robustness extended to any image
size): frost blends a random crop of one of five frost photographs (`nsjax/_data/frost/`,
rescaled on the host once per image shape), fog adds a random diamond-square plasma fractal.
Spatter runs on the host in NumPy and OpenCV because its water mode (severities 1-3) builds its
texture from Canny edges, a distance transform and histogram equalisation, which have no JAX
form; it reproduces the reference's arithmetic and dtypes, so equal draws give equal pixels.
"""

from __future__ import annotations

import functools
import os

import cv2
import jax
import jax.numpy as jnp
import numpy as np
from scipy import ndimage

from nsjax.robustness._common import to_uint8, to_unit

FROST_IMAGE_WEIGHT = (1.0, 0.8, 0.7, 0.65, 0.6)
FROST_OVERLAY_WEIGHT = (0.4, 0.6, 0.7, 0.7, 0.75)
FOG_THICKNESS = (1.5, 2.0, 2.5, 2.5, 3.0)
FOG_WIBBLE_DECAY = (2.0, 2.0, 1.7, 1.5, 1.4)
SPATTER_LIQUID_MEAN = (0.65, 0.65, 0.65, 0.65, 0.67)
SPATTER_LIQUID_STD = (0.3, 0.3, 0.3, 0.3, 0.4)
SPATTER_LIQUID_SIGMA = (4, 3, 2, 1, 1)
SPATTER_THRESHOLD = (0.69, 0.68, 0.68, 0.65, 0.65)
SPATTER_MUD = (False, False, False, True, True)
"""Severities 1-3 spatter water, 4-5 mud (the reference's `c[5]`)."""
SPATTER_WATER_INTENSITY = (0.6, 0.6, 0.5, None, None)
SPATTER_MUD_SIGMA = (None, None, None, 1.5, 1.5)

_FROST_DIR = os.path.join(os.path.dirname(os.path.dirname(__file__)), "_data", "frost")
_FROST_FILES = ("frost1.png", "frost2.png", "frost3.png", "frost4.jpg", "frost5.jpg")
_FROST_MARGIN = 1.1  # the reference rescales the frost image 10% past the image size
_PLASMA_WIBBLE = 100.0  # the fractal's initial random amplitude (plasma_fractal's `wibble`)
_WATER_COLOUR = (175 / 255.0, 238 / 255.0, 238 / 255.0)  # pale turquoise
_MUD_COLOUR = (63 / 255.0, 42 / 255.0, 20 / 255.0)  # mud brown
_EDGE_KERNEL = np.array([[-2, -1, 0], [-1, 1, 1], [0, 1, 2]])


# ----------------------------------------------------------------------------- frost


@functools.cache
def _frost_file(index: int) -> np.ndarray:
    """Frost photograph `index` (0-4) as `cv2.imread` gives it: uint8 `[fh, fw, 3]`, BGR."""
    image = cv2.imread(os.path.join(_FROST_DIR, _FROST_FILES[index]))
    if image is None:
        raise FileNotFoundError(f"cannot read {os.path.join(_FROST_DIR, _FROST_FILES[index])}")
    return image


@functools.cache
def _frost_overlays(height: int, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The five frost photographs rescaled for `[height, width]` images as the reference's
    `frost` does (factor `1.1 · max(1, height / fh, width / fw)`, sizes rounded up,
    `cv2.INTER_CUBIC`), in RGB, zero-padded to a common size.

    Returns uint8 `[5, FH, FW, 3]` and the int32 `[5]` heights and widths before padding."""
    rescaled = []
    for index in range(len(_FROST_FILES)):
        frost = _frost_file(index)
        fh, fw = frost.shape[:2]
        scale = max(1.0, height / fh, width / fw) * _FROST_MARGIN
        size = (int(np.ceil(fw * scale)), int(np.ceil(fh * scale)))
        rescaled.append(cv2.resize(frost, dsize=size, interpolation=cv2.INTER_CUBIC)[..., ::-1])
    heights = np.array([f.shape[0] for f in rescaled], np.int32)
    widths = np.array([f.shape[1] for f in rescaled], np.int32)
    stack = np.zeros((len(rescaled), heights.max(), widths.max(), 3), np.uint8)
    for i, f in enumerate(rescaled):
        stack[i, : f.shape[0], : f.shape[1]] = f
    return stack, heights, widths


def _frost_draws(key: jax.Array, height: int, width: int) -> tuple[jax.Array, ...]:
    """The reference's draws for a `[height, width]` image: the frost photograph
    (`randint(5)`), then the crop's top and left corner (`randint(0, fh - height)` and
    `randint(0, fw - width)` of the rescaled photograph: the last position is never drawn).
    Returns three int32 scalars, each `floor(u · n)` of one of three uniforms (one draw
    compiles much faster than three `randint`s)."""
    _, heights, widths = _frost_overlays(height, width)
    u = jax.random.uniform(key, (3,))

    def below(v, n):
        return jnp.minimum(jnp.floor(v * n).astype(jnp.int32), n - 1)

    index = below(u[0], len(_FROST_FILES))
    top = below(u[1], jnp.asarray(heights)[index] - height)
    left = below(u[2], jnp.asarray(widths)[index] - width)
    return index, top, left


@functools.cache
def _frost_blend_table(severity: int) -> np.ndarray:
    """uint8 `[256 · 256]`: the reference's blend `np.uint8(np.clip(a · x + b · f, 0, 255))` in
    float64 for every image value `x` (major) and frost value `f`. A table lookup gives the
    reference's truncation exactly (in float32, `a · x + b · f` often lands just off the
    integers that float64 hits)."""
    values = np.arange(256, dtype=np.uint8)
    blend = (FROST_IMAGE_WEIGHT[severity - 1] * values[:, None]
             + FROST_OVERLAY_WEIGHT[severity - 1] * values[None, :])
    return np.uint8(np.clip(blend, 0, 255)).reshape(-1)


def _frost(image: jax.Array, index: jax.Array, top: jax.Array, left: jax.Array,
           severity: int) -> jax.Array:
    """uint8 `[H, W, 3]` -> uint8 `[H, W, 3]`: `a · x + b · crop` on [0, 255] with the crop of
    frost photograph `index` at (`top`, `left`) (int scalars)."""
    height, width = image.shape[:2]
    stack, _, _ = _frost_overlays(height, width)
    crop = jax.lax.dynamic_slice(jnp.asarray(stack), (index, top, left, 0),
                                 (1, height, width, 3))[0]
    pair = image.astype(jnp.int32) * 256 + crop.astype(jnp.int32)
    return jnp.asarray(_frost_blend_table(severity))[pair]


def frost(key: jax.Array, image: jax.Array, severity: int) -> jax.Array:
    """uint8 `[H, W, 3]` -> uint8 `[H, W, 3]`: the image seen through frost (reference `frost`):
    a random crop of one of the five frost photographs, rescaled to cover the image, blended
    as `a · x + b · frost` on [0, 255]."""
    return _frost(image, *_frost_draws(key, *image.shape[:2]), severity)


# ----------------------------------------------------------------------------- fog


def _plasma_fractal(uniforms: list[jax.Array], wibble_decay: float) -> jax.Array:
    """The reference's diamond-square `plasma_fractal` from its draws.

    `uniforms[l]` is float32 `[3, n, n]` U(-1, 1) with `n = 2^l` for levels l = 0..L-1: the
    square centres, then the two diamond sets, each added as `wibble · wibble · u` (the
    reference's `wibble · uniform(-wibble, wibble)`) to the mean of their four neighbours on
    the periodic grid; `wibble` starts at 100 and is divided by `wibble_decay` per level.
    Returns float32 `[2^L, 2^L]` scaled to [0, 1] by its minimum and maximum."""
    corners = jnp.zeros((1, 1), jnp.float32)
    wibble = _PLASMA_WIBBLE
    for u in uniforms:
        offsets = wibble * (wibble * u)
        squares = corners + jnp.roll(corners, -1, axis=0)
        squares = squares + jnp.roll(squares, -1, axis=1)
        centres = squares / 4 + offsets[0]
        across = centres + jnp.roll(centres, 1, axis=0) + corners + jnp.roll(corners, -1, axis=1)
        down = centres + jnp.roll(centres, 1, axis=1) + corners + jnp.roll(corners, -1, axis=0)
        across = across / 4 + offsets[1]
        down = down / 4 + offsets[2]
        n = corners.shape[0]
        corners = jnp.stack([jnp.stack([corners, across], axis=-1),
                             jnp.stack([down, centres], axis=-1)], axis=1).reshape(2 * n, 2 * n)
        wibble /= wibble_decay
    corners = corners - corners.min()
    return corners / corners.max()


def plasma_fractal(key: jax.Array, mapsize: int, wibble_decay: float) -> jax.Array:
    """float32 `[mapsize, mapsize]` in [0, 1]: a random diamond-square height map (reference
    `plasma_fractal`; `mapsize` a power of 2). The uniforms of all levels come from one draw
    (one draw per level multiplies the compile time)."""
    levels = int(mapsize).bit_length() - 1
    if mapsize != 2**levels:
        raise ValueError(f"mapsize must be a power of 2, got {mapsize}")
    flat = jax.random.uniform(key, (4**levels - 1,), minval=-1.0, maxval=1.0)
    uniforms, start = [], 0
    for level in range(levels):
        n = 2**level
        uniforms.append(flat[start:start + 3 * n * n].reshape(3, n, n))
        start += 3 * n * n
    return _plasma_fractal(uniforms, wibble_decay)


def _fog(image: jax.Array, plasma: jax.Array, severity: int) -> jax.Array:
    """uint8 `[H, W, 3]` and float32 `[M, M]` (M >= H, W) -> uint8 `[H, W, 3]`: the reference's
    fog blend `(x + c · plasma) · max(x) / (max(x) + c)` with the plasma's top-left corner."""
    height, width = image.shape[:2]
    thickness = FOG_THICKNESS[severity - 1]
    x = to_unit(image)
    peak = x.max()
    x = x + thickness * plasma[:height, :width, None]
    return to_uint8(x * peak / (peak + thickness))


def fog(key: jax.Array, image: jax.Array, severity: int) -> jax.Array:
    """uint8 `[H, W, 3]` -> uint8 `[H, W, 3]`: fog (reference `fog`): a plasma fractal of side
    the next power of 2 of the larger image side, added to the image and rescaled by the
    image's maximum."""
    mapsize = 1 << (max(image.shape) - 1).bit_length()
    return _fog(image, plasma_fractal(key, mapsize, FOG_WIBBLE_DECAY[severity - 1]), severity)


# ----------------------------------------------------------------------------- spatter


def _blur_nearest(x: np.ndarray, sigma: float) -> np.ndarray:
    """scikit-image's `filters.gaussian` (mode "nearest", truncate 4) on a 2-D array, in its
    dtype."""
    return ndimage.gaussian_filter(x, sigma, mode="nearest", truncate=4.0)


def _water_texture(liquid: np.ndarray) -> np.ndarray:
    """uint8 `[H, W]` liquid layer -> float32 `[H, W]`: the reference's water-drop shading
    (distance to the layer's Canny edges, truncated at 20, equalised and embossed) times the
    layer."""
    dist = cv2.distanceTransform(255 - cv2.Canny(liquid, 50, 150), cv2.DIST_L2, 5)
    _, dist = cv2.threshold(dist, 20, 20, cv2.THRESH_TRUNC)
    dist = cv2.equalizeHist(cv2.blur(dist, (3, 3)).astype(np.uint8))
    dist = cv2.filter2D(dist, cv2.CV_8U, _EDGE_KERNEL)
    return liquid * cv2.blur(dist, (3, 3)).astype(np.float32)


def _spatter(image: np.ndarray, normal: np.ndarray, severity: int) -> np.ndarray:
    """uint8 `[H, W, 3]` and float64 `[H, W]` standard normal draws -> uint8 `[H, W, 3]`: the
    reference's `spatter` with liquid layer `mean + std · normal`, in its dtypes.

    The one departure: where the water texture is zero everywhere (no liquid, or liquid without
    Canny edges: 2 % of 32 x 32 draws at severity 1), the reference divides 0 by 0 and returns
    a black image; here the image is returned unchanged."""
    s = severity - 1
    x = image.astype(np.float32) / 255.0
    liquid = _blur_nearest(SPATTER_LIQUID_MEAN[s] + SPATTER_LIQUID_STD[s] * normal,
                           SPATTER_LIQUID_SIGMA[s])
    liquid[liquid < SPATTER_THRESHOLD[s]] = 0
    if not SPATTER_MUD[s]:
        m = _water_texture((liquid * 255).astype(np.uint8))
        peak = m.max()
        if peak == 0:
            return image.copy()
        m = m / peak * SPATTER_WATER_INTENSITY[s]
        colour = np.asarray(_WATER_COLOUR, np.float32)
        return (np.clip(x + m[..., None] * colour, 0, 1) * 255).astype(np.uint8)
    m = _blur_nearest((liquid > SPATTER_THRESHOLD[s]).astype(np.float32), SPATTER_MUD_SIGMA[s])
    m[m < 0.8] = 0
    colour = np.asarray(_MUD_COLOUR) * m[..., None]
    return (np.clip(x * (1 - m[..., None]) + colour, 0, 1) * 255).astype(np.uint8)


def spatter(rng: np.random.Generator, image: np.ndarray, severity: int) -> np.ndarray:
    """NumPy uint8 `[H, W, 3]` -> uint8 `[H, W, 3]`, on the host: water (severities 1-3) or
    mud (4-5) spatter (reference `spatter`): a smoothed, thresholded normal liquid layer,
    shaded from its Canny edges (water) or blurred into blotches (mud)."""
    return _spatter(image, rng.standard_normal(image.shape[:2]), severity)


ON_DEVICE = {"frost": frost, "fog": fog}
ON_HOST = {"spatter": spatter}
