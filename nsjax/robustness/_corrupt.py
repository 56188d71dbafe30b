"""`corrupt`: the 19 ImageNet-C corruptions at severities 1-5 on a batch, by name.

Each corruption is a per-image function in a private module (`_noise`, `_blur`, `_snow`,
`_weather`, `_elastic`, `_digital`); those that have a JAX form run on the device, vmapped over
the batch; the others (`HOST_CORRUPTIONS`) run on the host in NumPy / OpenCV / Pillow through
`jax.pure_callback` (one thread per core over the images), so `corrupt` works the same under
`jax.jit` for every name.
"""

from __future__ import annotations

import concurrent.futures
import functools
import os

import jax
import jax.numpy as jnp
import numpy as np

from nsjax import _checks
from nsjax.robustness import _blur, _digital, _elastic, _noise, _snow, _weather
from nsjax.robustness._common import host_rng
from nsjax.robustness._metrics import COMMON_CORRUPTIONS, VALIDATION_CORRUPTIONS

CORRUPTIONS: tuple[str, ...] = COMMON_CORRUPTIONS + VALIDATION_CORRUPTIONS
"""All 19 names: the 15 benchmark corruptions, then the 4 validation ones (ImageNet-C's and
`imagecorruptions`' order)."""

_MODULES = (_noise, _blur, _snow, _weather, _elastic, _digital)
_ON_DEVICE = {name: fn for m in _MODULES for name, fn in m.ON_DEVICE.items()}
_ON_HOST = {name: fn for m in _MODULES for name, fn in m.ON_HOST.items()}
assert sorted(_ON_DEVICE | _ON_HOST) == sorted(CORRUPTIONS) and not set(_ON_DEVICE) & set(_ON_HOST)

HOST_CORRUPTIONS: tuple[str, ...] = tuple(n for n in CORRUPTIONS if n in _ON_HOST)
"""The corruptions computed on the host (no JAX form: JPEG coding, OpenCV's edge and distance
transforms), in `CORRUPTIONS` order."""

MIN_SIDE = 32
"""The smallest image side accepted (as `imagecorruptions`)."""


def corrupt(key: jax.Array, images: jax.Array, name: str, severity: int) -> jax.Array:
    """ImageNet-C corruption `name` at `severity` on every image, each with its own draws.

    The parameters are hendrycks/robustness's, at any image size as `imagecorruptions` extends
    them (`docs/robustness.md` lists what follows which, and the tests compare every
    corruption with `imagecorruptions`). Image `i` of a batch of B uses
    `jax.random.split(key, B)[i]`.

    **Arguments:**

    - `key`: a `jax.random` key.
    - `images`: uint8 `[B, H, W, 3]` or `[H, W, 3]`, H, W >= 32.
    - `name`: one of `CORRUPTIONS`.
    - `severity`: an int in 1..5 (concrete).

    **Returns:** uint8, the shape of `images`.
    """
    if not isinstance(name, str) or name not in CORRUPTIONS:
        raise ValueError(f"name must be one of {CORRUPTIONS}, got {name!r}")
    if isinstance(severity, (float, np.floating)):
        raise TypeError(f"severity must be an int in 1..5, got {severity!r}")
    severity = _checks.check_positive_int("severity", severity)
    if severity > 5:
        raise ValueError(f"severity must be an int in 1..5, got {severity}")
    _checks.check_key("key", key)
    single = np.ndim(images) == 3
    batch = images[None] if single else images
    _checks.check_images("images", batch, dtypes=("uint8",), min_side=MIN_SIDE)
    out = _batched(name, severity)(key, batch)
    return out[0] if single else out


@functools.cache
def _batched(name: str, severity: int):
    """The jitted `(key, uint8 [B, H, W, 3]) -> uint8 [B, H, W, 3]` of one name and severity."""
    if name in _ON_DEVICE:
        per_image = functools.partial(_ON_DEVICE[name], severity=severity)

        def on_device(key, images):
            return jax.vmap(per_image)(jax.random.split(key, images.shape[0]), images)

        return jax.jit(on_device)
    per_image_on_host = _ON_HOST[name]

    def host(key_data: np.ndarray, images: np.ndarray) -> np.ndarray:
        images = np.asarray(images)
        out = np.empty_like(images)

        def one(i: int) -> None:
            out[i] = per_image_on_host(host_rng(key_data[i]), images[i], severity)

        # Pillow's codecs and OpenCV release the GIL: one thread per core
        with concurrent.futures.ThreadPoolExecutor(os.cpu_count()) as pool:
            list(pool.map(one, range(images.shape[0])))
        return out

    def on_host(key, images):
        keys = jax.random.key_data(jax.random.split(key, images.shape[0]))
        return jax.pure_callback(host, jax.ShapeDtypeStruct(images.shape, jnp.uint8), keys,
                                 images, vmap_method="sequential")

    return jax.jit(on_host)
