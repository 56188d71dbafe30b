"""The elastic transform of ImageNet-C, on the device.

It follows hendrycks/robustness (`ImageNet-C/imagenet_c/imagenet_c/corruptions.py`,
`elastic_transform`, the function that made the ImageNet-C benchmark): a random affine warp
(three points jittered, `cv2.warpAffine`, bilinear, border reflect-101), then a random
displacement field (`U(-1, 1)` noise per pixel, Gaussian-smoothed with mode "reflect" and
truncate 3, times `alpha`) resampled bilinearly with mode "reflect"
(`scipy.ndimage.map_coordinates(order=1)`). The constants are the reference's, in pixels for
224 x 224 images (including its "244 should have been 224" factor). The warp interpolates at
the exact source positions, as OpenCV 5 does for float images; OpenCV 3 and 4 first round them
to 1/32 pixel (at most 1/64 pixel apart).

It does NOT follow `imagecorruptions`' `elastic_transform`, which re-parameterises the
corruption (no affine step; sigma 1% of each side, alpha 250 · (.05 .. .12), noise amplitude
0.5% of the height), so the two differ at every severity.

Other sizes (Hendrycks' code assumes 224 x 224): with `k = min(H, W) / 224` the affine jitter and
the smoothing sigma are multiplied by `k` and alpha by `k²`. The smoothed noise shrinks as
`1 / sigma`, so this scales every displacement by `k`: the corruption of a k-times larger image
looks like that of the 224 image, enlarged. The affine's anchor points are the reference's,
including its quirk of giving OpenCV `(row, col)` pairs as `(x, y)` points (no effect on square
images).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.ndimage import map_coordinates

from nsjax.robustness._common import filter_separable, gaussian_matrix, to_uint8, to_unit

ELASTIC_ALPHA = (244 * 2, 244 * 2, 244 * 0.05, 244 * 0.07, 244 * 0.12)
ELASTIC_SIGMA = (244 * 0.7, 244 * 0.08, 244 * 0.01, 244 * 0.01, 244 * 0.01)
ELASTIC_AFFINE_JITTER = (244 * 0.1, 244 * 0.2, 244 * 0.02, 244 * 0.02, 244 * 0.02)

_REFERENCE_SIDE = 224
_TRUNCATE = 3.0


def _size_scale(height: int, width: int) -> float:
    """`min(H, W) / 224`: the factor from the reference's 224-pixel constants to this size."""
    return min(height, width) / _REFERENCE_SIDE


def _anchor_points(height: int, width: int) -> np.ndarray:
    """float32 `[3, 2]`: the reference's three affine anchors, the corners of a square of half
    side `min(H, W) // 3` about `[H // 2, W // 2]`, used by OpenCV as `(x, y)` points."""
    centre = np.float32([height, width]) // 2
    half = min(height, width) // 3
    return np.float32([centre + half, [centre[0] + half, centre[1] - half], centre - half])


def _sample(image: jax.Array, rows: jax.Array, cols: jax.Array, mode: str) -> jax.Array:
    """Bilinear samples of float32 `[H, W, C]` at float32 `[H', W']` positions, boundary `mode`
    as `scipy.ndimage.map_coordinates` ("reflect", or "mirror": OpenCV's BORDER_REFLECT_101);
    returns float32 `[H', W', C]`.

    A float32 weighted sum of the four neighbours: where they are equal it can miss their
    value by an ulp that the truncation to uint8 turns into a level (~0.4 % of a photo's
    values). Two lerps and a third would be exact there, but run ~30 % slower on CPU.

    The positions must come out of a matrix product or a single addition: XLA recomputes a
    cheap elementwise producer inside each fusion that consumes it, and a multiply-add
    contracted to an FMA in one fusion and not in another would give a position within rounding
    of an integer the gather index of one side and the weights of the other (a pixel's jump)."""
    def channel(x):
        return map_coordinates(x, (rows, cols), order=1, mode=mode)

    return jax.vmap(channel, in_axes=2, out_axes=2)(image)


def _affine(image: jax.Array, targets: jax.Array) -> jax.Array:
    """`cv2.warpAffine` of float32 `[H, W, C]` by the affine map taking the anchor points to
    float32 `[3, 2]` `targets` (bilinear, border reflect-101)."""
    height, width = image.shape[:2]
    anchors = jnp.asarray(_anchor_points(height, width))
    # The inverse map, targets -> anchors, gives each output pixel its source (x, y) position.
    inverse = jnp.linalg.solve(jnp.concatenate([targets, jnp.ones((3, 1))], axis=1), anchors)
    cols, rows = np.meshgrid(np.arange(width), np.arange(height))
    pixels = np.stack([cols, rows, np.ones_like(cols)], axis=-1).astype(np.float32)
    source = jnp.einsum("hwk,kd->dhw", pixels, inverse, precision=jax.lax.Precision.HIGHEST)
    return _sample(image, source[1], source[0], "mirror")


def _elastic(image: jax.Array, jitter: jax.Array, noise_cols: jax.Array, noise_rows: jax.Array,
             severity: int) -> jax.Array:
    """uint8 `[H, W, 3]` -> uint8 `[H, W, 3]` given the draws: the anchors' jitter float32
    `[3, 2]` (pixels, already scaled) and the U(-1, 1) noise float32 `[H, W]` of the column and
    row displacements (the reference's `dx`, `dy`)."""
    height, width = image.shape[:2]
    scale = _size_scale(height, width)
    sigma = ELASTIC_SIGMA[severity - 1] * scale
    alpha = ELASTIC_ALPHA[severity - 1] * scale**2
    warped = _affine(to_unit(image), jnp.asarray(_anchor_points(height, width)) + jitter)
    # A matrix product (here by the identity, exact) materialises the warped image: XLA would
    # otherwise fuse the warp into the second sampling and recompute it for each of its four
    # taps (twice the run time on CPU).
    warped = jnp.einsum("hwc,cd->hwd", warped, np.eye(3, dtype=np.float32),
                        precision=jax.lax.Precision.HIGHEST)
    # alpha goes into the matrix, so that the positions below are one addition (see `_sample`).
    smooth_rows = alpha * gaussian_matrix(height, sigma, mode="reflect", truncate=_TRUNCATE)
    smooth_cols = gaussian_matrix(width, sigma, mode="reflect", truncate=_TRUNCATE)
    dx = filter_separable(noise_cols, smooth_rows, smooth_cols)
    dy = filter_separable(noise_rows, smooth_rows, smooth_cols)
    rows, cols = np.meshgrid(np.arange(height, dtype=np.float32),
                             np.arange(width, dtype=np.float32), indexing="ij")
    return to_uint8(_sample(warped, rows + dy, cols + dx, "reflect"))


def _elastic_draws(key: jax.Array, height: int, width: int,
                   severity: int) -> tuple[jax.Array, jax.Array, jax.Array]:
    """The reference's draws for a `[height, width]` image: the anchors' jitter float32 `[3, 2]`
    U(-j, j) (j the severity's jitter times `min(H, W) / 224`), then the column and row noise
    float32 `[H, W]` U(-1, 1). One draw of uniforms (separate draws multiply the compile
    time)."""
    jitter_max = ELASTIC_AFFINE_JITTER[severity - 1] * _size_scale(height, width)
    u = jax.random.uniform(key, (6 + 2 * height * width,), minval=-1.0, maxval=1.0)
    noise = u[6:].reshape(2, height, width)
    return jitter_max * u[:6].reshape(3, 2), noise[0], noise[1]


def elastic_transform(key: jax.Array, image: jax.Array, severity: int) -> jax.Array:
    """uint8 `[H, W, 3]` -> uint8 `[H, W, 3]`: hendrycks/robustness's `elastic_transform`
    (random affine warp, then a smooth random displacement field; see the module docstring for
    sizes other than 224)."""
    return _elastic(image, *_elastic_draws(key, *image.shape[:2], severity), severity)


ON_DEVICE = {"elastic_transform": elastic_transform}
ON_HOST: dict = {}
