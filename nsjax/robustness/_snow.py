"""The snow corruption of ImageNet-C, on the device.

It follows `snow` in hendrycks/robustness (`imagecorruptions.corruptions`) at any image size: a
layer of normal noise, zoomed (`clipped_zoom`), thresholded and clipped, motion blurred
(`_blur._motion_blur`) and rounded to uint8 levels, is added twice (as is and turned 180°) to the
image brightened towards its OpenCV greyscale. Float32 here where the reference mixes float32
and float64, ending in its truncating cast.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from nsjax.robustness._blur import _motion_blur
from nsjax.robustness._common import filter_separable, to_uint8, to_unit, zoom_matrix

SNOW_LOC_SCALE_ZOOM_THRESHOLD_RADIUS_SIGMA_BLEND = (
    (0.1, 0.3, 3, 0.5, 10, 4, 0.8),
    (0.2, 0.3, 2, 0.5, 12, 4, 0.7),
    (0.55, 0.3, 4, 0.9, 12, 8, 0.7),
    (0.55, 0.3, 4.5, 0.85, 12, 8, 0.65),
    (0.55, 0.3, 2.5, 0.85, 12, 12, 0.55),
)
_GREY_WEIGHTS = (0.299, 0.587, 0.114)  # cv2.COLOR_RGB2GRAY on float32 images


def _snow_layer(noise: jax.Array, angle: jax.Array, severity: int) -> jax.Array:
    """float32 `[H, W]` noise (the reference's `normal(loc, scale)` draws) and blur angle (float32
    scalar, degrees) -> float32 `[H, W]` snow layer on uint8 levels / 255: clipped zoom,
    threshold, clip to [0, 1], `_motion_blur` at the zoomed size, round, crop."""
    params = SNOW_LOC_SCALE_ZOOM_THRESHOLD_RADIUS_SIGMA_BLEND[severity - 1]
    _, _, zoom, threshold, radius, sigma, _ = params
    h, w = noise.shape
    rows, cols = zoom_matrix(h, zoom), zoom_matrix(w, zoom)  # the blur sees every row
    layer = filter_separable(noise, rows, cols)
    layer = jnp.clip(jnp.where(layer < threshold, 0.0, layer), 0.0, 1.0)
    layer = _motion_blur(layer, angle, radius, sigma)
    return (jnp.round(layer * 255.0) / 255.0)[:h, :w]


def _snow(image: jax.Array, noise: jax.Array, angle: jax.Array, severity: int) -> jax.Array:
    """uint8 `[H, W, 3]` -> uint8 `[H, W, 3]`: the reference's `snow` given its draws, `noise`
    float32 `[H, W]` and `angle` (`_snow_layer`). The image is blended towards `max(x, 1.5·grey
    + 0.5)`, then the layer and the layer turned 180° are added."""
    blend = SNOW_LOC_SCALE_ZOOM_THRESHOLD_RADIUS_SIGMA_BLEND[severity - 1][-1]
    layer = jnp.stack([_snow_layer(noise, angle, severity)] * 3, axis=-1)  # a broadcast would
    # have XLA fuse the blur's gathers into every channel: 3x the work, 3x the compile time
    x = to_unit(image)
    grey = sum(w * x[..., c] for c, w in enumerate(_GREY_WEIGHTS))[..., None]
    x = blend * x + (1 - blend) * jnp.maximum(x, grey * 1.5 + 0.5)
    return to_uint8(x + layer + layer[::-1, ::-1])


def snow(key: jax.Array, image: jax.Array, severity: int) -> jax.Array:
    """uint8 `[H, W, 3]` -> uint8 `[H, W, 3]`: snow flakes streaked at an angle drawn from
    U(-135°, -45°) over a brightened image (reference `snow`, `_snow`)."""
    loc, scale = SNOW_LOC_SCALE_ZOOM_THRESHOLD_RADIUS_SIGMA_BLEND[severity - 1][:2]
    noise_key, angle_key = jax.random.split(key)
    h, w = image.shape[:2]
    noise = loc + scale * jax.random.normal(noise_key, (h * w,), jnp.float32).reshape(h, w)
    angle = jax.random.uniform(angle_key, (), jnp.float32, -135.0, -45.0)
    return _snow(image, noise, angle, severity)


ON_DEVICE = {"snow": snow}
ON_HOST = {}
