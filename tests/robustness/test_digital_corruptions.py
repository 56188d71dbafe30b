"""The digital corruptions (`nsjax.robustness._digital`) against `imagecorruptions` 1.1.2,
pixel by pixel at every severity.

- pixelate (PIL's fixed-point BOX filter and NEAREST tables) and jpeg_compression (PIL itself)
  are exact, at sizes that exercise PIL's rounding of the reduced size and of the filter taps;
- contrast (float32) and brightness and saturate (the exact value of the reference's HSV round
  trip, in integers) may differ where the reference's float64 lands just below an integer and
  its truncating cast drops it by one. The tests check that every difference is of that kind,
  from the reference's own pre-cast floats, and bound how many there are.
"""

from __future__ import annotations

import functools

import jax
import numpy as np
import pytest
from PIL import Image

from nsjax.robustness import _digital
from tests.robustness._severities import SEVERITIES, all_severities

DEVICE_NAMES = tuple(_digital.ON_DEVICE)


@functools.lru_cache(maxsize=None)
def _all_severities(name: str):
    """The compiled all-severity program of corruption `name`."""
    return all_severities(_digital.ON_DEVICE[name])


def _run(name: str, images: np.ndarray, seed: int = 0) -> np.ndarray:
    keys = jax.random.split(jax.random.key(seed), len(images))
    out = np.asarray(_all_severities(name)(keys, images))
    assert out.dtype == np.uint8 and out.shape == (len(SEVERITIES), *images.shape)
    return out


@pytest.fixture(scope="module")
def images(photo) -> np.ndarray:
    """uint8 `[5, 48, 80, 3]`: three photo crops (sky, roof and trees, shadows), uniform noise,
    and all 256 grey levels (black and white included) on a ramp."""
    crops = [photo[150:198, 300:380], photo[200:248, 40:120], photo[370:418, 520:600]]
    noise = np.random.default_rng(0).integers(0, 256, (48, 80, 3), dtype=np.uint8)
    ramp = np.resize(np.arange(256, dtype=np.uint8), (48, 80))
    return np.stack([*crops, noise, np.repeat(ramp[..., None], 3, axis=-1)])


def _reference(imagecorruptions, name, severity, images) -> np.ndarray:
    return np.stack([imagecorruptions.corrupt(im, severity=severity, corruption_name=name)
                     for im in images])


@pytest.mark.parametrize("size", [(32, 32), (45, 71), (48, 80), (224, 224), (427, 640)])
def test_pixelate_is_exact(imagecorruptions, photo, size):
    """PIL's BOX reduction and NEAREST enlargement, pixel for pixel, at every severity."""
    height, width = size
    image = photo[:height, :width] if size != (48, 80) else photo[150:198, 300:380]
    noise = np.random.default_rng(1).integers(0, 256, image.shape, dtype=np.uint8)
    batch = np.stack([image, noise])
    ours = _run("pixelate", batch)
    for severity in SEVERITIES:
        np.testing.assert_array_equal(
            ours[severity - 1], _reference(imagecorruptions, "pixelate", severity, batch),
            err_msg=f"{size}, severity {severity}")


def _reference_floats(imagecorruptions, name, severity, images) -> np.ndarray:
    """The reference's values before its cast, float64 `[B, H, W, 3]` on [0, 255]; checked to
    give `corrupt`'s output under `np.uint8`."""
    fn = getattr(imagecorruptions.corruptions, name)
    floats = np.stack([fn(Image.fromarray(im), severity) for im in images])
    np.testing.assert_array_equal(np.uint8(floats),
                                  _reference(imagecorruptions, name, severity, images))
    return floats


def _assert_off_only_below_integers(ours, floats, max_fraction, where):
    """`ours` (uint8) equals the reference's `np.uint8(floats)` except where the reference's
    float lies within 1e-9 below an integer (its rounding error truncates down) and ours is
    that integer; at most `max_fraction` of the values are such."""
    off = ours != np.uint8(floats)
    nearest = np.round(floats[off])
    np.testing.assert_array_equal(ours[off], nearest, err_msg=where)
    gap = nearest - floats[off]
    assert np.all((gap > 0) & (gap < 1e-9)), (where, gap.max(initial=0))
    assert np.mean(off) <= max_fraction, (where, np.mean(off))


def test_contrast_matches_reference(imagecorruptions, images):
    """Equal, but for at most 0.5 % one higher where the reference's float64 falls just below
    an integer (measured: none on the photo crops and noise, 0.16 % of the grey ramp at
    severity 3, whose mean is exactly 127.5: `0.2 x + 102` is an integer for every fifth x)."""
    ours = _run("contrast", images)
    for severity in SEVERITIES:
        floats = _reference_floats(imagecorruptions, "contrast", severity, images)
        _assert_off_only_below_integers(ours[severity - 1], floats, 0.005,
                                        f"contrast severity {severity}")


# Fraction of values one below ours in the reference, per severity (measured on these images:
# brightness 0.2-0.5 %, saturate 0.8-1.8 %, and 16 % at saturate severity 3, whose integer
# scale 2 puts every coloured pixel's value on an integer).
ONE_BELOW_AT_MOST = {"brightness": (0.01,) * 5, "saturate": (0.02, 0.02, 0.25, 0.03, 0.03)}


@pytest.mark.parametrize("name", ["brightness", "saturate"])
def test_hsv_ops_match_reference(imagecorruptions, images, name):
    """Equal to the reference, except that the reference is one lower where its float64 value
    just below an integer truncates down while ours, exact, is that integer. Greys follow
    scikit-image's rule (hue and saturation 0) exactly."""
    ours = _run(name, images)
    for severity in SEVERITIES:
        floats = _reference_floats(imagecorruptions, name, severity, images)
        where = f"{name} severity {severity}"
        _assert_off_only_below_integers(ours[severity - 1], floats,
                                        ONE_BELOW_AT_MOST[name][severity - 1], where)
        np.testing.assert_array_equal(ours[severity - 1, -1], np.uint8(floats[-1]),
                                      err_msg=f"{where}: grey ramp")


def test_jpeg_compression_is_exact(imagecorruptions, images, photo):
    """PIL's encoder at the reference's quality, byte for byte after decoding, on the host;
    the generator is unused."""
    odd = photo[:45, :71]
    for severity in SEVERITIES:
        for image in [*images, odd]:
            out = _digital.jpeg_compression(np.random.default_rng(0), image, severity)
            assert out.dtype == np.uint8 and out.shape == image.shape
            np.testing.assert_array_equal(
                out, imagecorruptions.corrupt(image, severity=severity,
                                              corruption_name="jpeg_compression"))
        again = _digital.jpeg_compression(np.random.default_rng(1), odd, severity)
        np.testing.assert_array_equal(again, out)


@pytest.mark.parametrize("name", DEVICE_NAMES)
def test_device_ops_ignore_key(images, name):
    """Deterministic: another key gives the same output."""
    np.testing.assert_array_equal(_run(name, images, seed=0), _run(name, images, seed=1))
