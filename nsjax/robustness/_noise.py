"""The noise corruptions of ImageNet-C: Gaussian, shot (Poisson), impulse (salt and pepper) and
speckle noise, all on the device.

Each follows its function in hendrycks/robustness (`imagecorruptions.corruptions`): independent
noise per element (pixel and channel) on the [0, 1] scale, then the reference's clip, scale by
255 and truncating cast (`_common.to_uint8`). The draws are the reference's distributions from
`jax.random`; one key per image.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from nsjax.robustness._common import to_uint8, to_unit

GAUSSIAN_NOISE_STD = (0.08, 0.12, 0.18, 0.26, 0.38)
SHOT_NOISE_PHOTONS = (60, 25, 12, 5, 3)
IMPULSE_NOISE_AMOUNT = (0.03, 0.06, 0.09, 0.17, 0.27)
SPECKLE_NOISE_STD = (0.15, 0.2, 0.35, 0.45, 0.6)

_SALT_VS_PEPPER = 0.5  # scikit-image's `random_noise` default, which the reference keeps


def _normal(key: jax.Array, image: jax.Array) -> jax.Array:
    """Standard normal draws, float32 of the image's shape."""
    return jax.random.normal(key, image.shape, jnp.float32)


def gaussian_noise(key: jax.Array, image: jax.Array, severity: int) -> jax.Array:
    """uint8 `[H, W, 3]` -> uint8 `[H, W, 3]`: `x + N(0, c²)` per element (reference
    `gaussian_noise`)."""
    x = to_unit(image)
    return to_uint8(x + GAUSSIAN_NOISE_STD[severity - 1] * _normal(key, image))


@functools.lru_cache(maxsize=None)
def _poisson_cdf(photons: int) -> np.ndarray:
    """Poisson CDFs for the rate `photons · v / 255` of each pixel value v (the reference's
    float64 `x * c`), at counts 0 .. photons - 1, float32 `[256, K]` with K the next power of
    two above `photons`; the padding holds 2 (above any uniform draw)."""
    rate = np.arange(256) / 255.0 * photons
    ratios = rate[:, None] / np.arange(1, photons)[None, :]  # pmf(k) / pmf(k - 1)
    steps = np.concatenate([np.ones((256, 1)), ratios], axis=1)
    pmf = np.exp(-rate)[:, None] * np.cumprod(steps, axis=1)
    table = np.full((256, 1 << int(photons).bit_length()), 2.0, np.float32)
    table[:, :photons] = np.cumsum(pmf, axis=1)
    return table


def _poisson_clipped(key: jax.Array, image: jax.Array, photons: int) -> jax.Array:
    """`min(Poisson(photons · v / 255), photons)` per element of uint8 `image`, int32 of its
    shape: one uniform draw inverted through the CDF row of its pixel value (a branchless
    binary search, exact up to the float32 CDF). Counts above `photons` would clip to 1 anyway."""
    table = _poisson_cdf(photons)
    width = table.shape[1]
    flat = jnp.asarray(table.reshape(-1))
    u = jax.random.uniform(key, image.shape)
    start = image.astype(jnp.int32) * width
    count = jnp.zeros(image.shape, jnp.int32)
    step = width // 2
    while step:
        count = jnp.where(flat[start + count + step - 1] <= u, count + step, count)
        step //= 2
    return count


def shot_noise(key: jax.Array, image: jax.Array, severity: int) -> jax.Array:
    """uint8 `[H, W, 3]` -> uint8 `[H, W, 3]`: `Poisson(c·x) / c` per element (reference
    `shot_noise`; c counts photons at full intensity). The counts map to pixels through the
    reference's float64 `uint8(clip(k / c, 0, 1) · 255)`."""
    photons = SHOT_NOISE_PHOTONS[severity - 1]
    pixels = (np.arange(photons + 1) / float(photons) * 255.0).astype(np.uint8)
    return jnp.asarray(pixels)[_poisson_clipped(key, image, photons)]


def impulse_noise(key: jax.Array, image: jax.Array, severity: int) -> jax.Array:
    """uint8 `[H, W, 3]` -> uint8 `[H, W, 3]`: salt and pepper (reference `impulse_noise`, i.e.
    scikit-image's `random_noise(mode='s&p', amount=c)`).

    As scikit-image, each element independently is replaced with probability `c`, by 255
    (salt) or 0 (pepper) with probability 1/2 each; other elements keep their value (the
    reference's `/ 255`, `* 255` and cast return every uint8 unchanged).
    scikit-image draws two uniforms per element (`u1 <= c` flips, `u2 <= 1/2` salts); one
    uniform `u` gives the same joint law: salt if `u <= c/2`, pepper if `c/2 < u <= c`."""
    amount = IMPULSE_NOISE_AMOUNT[severity - 1]
    u = jax.random.uniform(key, image.shape)
    noise = jnp.where(u <= amount * _SALT_VS_PEPPER, jnp.uint8(255), jnp.uint8(0))
    return jnp.where(u <= amount, noise, image)


def speckle_noise(key: jax.Array, image: jax.Array, severity: int) -> jax.Array:
    """uint8 `[H, W, 3]` -> uint8 `[H, W, 3]`: `x + x · N(0, c²)` per element (reference
    `speckle_noise`)."""
    x = to_unit(image)
    return to_uint8(x + x * (SPECKLE_NOISE_STD[severity - 1] * _normal(key, image)))


ON_DEVICE = {
    "gaussian_noise": gaussian_noise,
    "shot_noise": shot_noise,
    "impulse_noise": impulse_noise,
    "speckle_noise": speckle_noise,
}
ON_HOST = {}
