"""The snow corruption (`nsjax.robustness._snow`) against `imagecorruptions` 1.1.2.

Given the reference's own draws (its normal snow layer and blur angle, re-drawn from the same
NumPy seed), the private `_snow` equals the reference up to 1 with under 1% of the values off by
one (float32 here, float64 there). The public, random `snow` is compared by statistics over many
draws against the reference's on a flat grey image: each tolerance is 4 standard errors of the
difference of the two means.

Every program runs the five severities at once (`vmap` of the function at a static severity, as
the dispatcher does): compiling dominates the run time.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nsjax.robustness import _snow
from tests.robustness._severities import SEVERITIES, all_severities
from nsjax.robustness._common import clipped_zoom_matrix, zoom_matrix

PARAMS = _snow.SNOW_LOC_SCALE_ZOOM_THRESHOLD_RADIUS_SIGMA_BLEND
OFF_BY_ONE = 0.01
DRAWS = 32


@pytest.mark.parametrize("size", [32, 33, 48, 57, 224])
@pytest.mark.parametrize("zoom", sorted({p[2] for p in PARAMS}))
def test_zoom_matrix_is_the_references_clipped_zoom(imagecorruptions, size, zoom):
    """All `round(ceil(size / zoom) · zoom)` rows of SciPy's zoom (one more than `size` at 224
    for zooms 2.5, 3 and 4.5), and `_common.clipped_zoom_matrix` for the first `size`."""
    matrix = zoom_matrix(size, zoom)
    np.testing.assert_array_equal(matrix[:size], clipped_zoom_matrix(size, zoom))
    layer = np.random.default_rng(size).normal(size=(size, 40))
    zoomed = imagecorruptions.corruptions.clipped_zoom(layer[..., None], zoom)[:, :, 0]
    ours = matrix @ layer @ zoom_matrix(40, zoom).T
    np.testing.assert_allclose(ours, zoomed, rtol=0, atol=1e-12)


def test_snow_matches_the_reference_given_its_draws(imagecorruptions, photo):
    """Three 48 x 56 images (textured crop, smooth sky, noise) per severity. The angles drawn
    cover (-90°, -45°), where the streaks read the columns the zoom adds past the image."""
    noise_image = np.random.default_rng(0).integers(0, 256, (48, 56, 3), dtype=np.uint8)
    images = np.stack([photo[100:148, 200:256], photo[:48, :56], noise_image])
    noises, angles, refs = [], [], []
    for s in SEVERITIES:
        loc, scale = PARAMS[s - 1][:2]
        for i, image in enumerate(images):
            np.random.seed(10 * s + i)
            refs.append(imagecorruptions.corrupt(image, severity=s, corruption_name="snow"))
            np.random.seed(10 * s + i)
            noises.append(np.random.normal(size=image.shape[:2], loc=loc, scale=scale))
            angles.append(np.random.uniform(-135, -45))
    angles = np.asarray(angles, np.float32).reshape(len(SEVERITIES), len(images))
    assert (angles > -90).sum() >= 3 and (angles < -90).sum() >= 3
    noises = np.asarray(noises, np.float32).reshape(len(SEVERITIES), *images.shape[:3])
    program = jax.jit(lambda images, noises, angles: jnp.stack([
        jax.vmap(functools.partial(_snow._snow, severity=s))(images, noises[s - 1], angles[s - 1])
        for s in SEVERITIES]))
    out = np.asarray(program(images, noises, angles)).reshape(-1, *images.shape[1:])
    for k, (got, ref) in enumerate(zip(out, refs)):
        what = f"severity {k // len(images) + 1} image {k % len(images)}"
        assert got.dtype == np.uint8 and got.shape == ref.shape, what
        diff = np.abs(got.astype(np.int16) - ref.astype(np.int16))
        assert diff.max() <= 1, f"{what}: max difference {diff.max()}"
        assert (diff > 0).mean() < OFF_BY_ONE, f"{what}: {(diff > 0).mean():.2%} off by one"


def _statistics(outputs: np.ndarray) -> dict[str, np.ndarray]:
    """Per draw `[5, DRAWS]`: the mean (snow cover and brightening), the standard deviation and
    the ratio of horizontal to vertical gradients (the streaks are steeper than 45°)."""
    x = outputs.astype(np.float64)
    across = np.abs(np.diff(x, axis=3)).mean((2, 3, 4))
    along = np.abs(np.diff(x, axis=2)).mean((2, 3, 4))
    return {"mean": x.mean((2, 3, 4)), "std": x.std((2, 3, 4)), "steepness": across / along}


def test_snow_draws_match_the_reference(imagecorruptions):
    """DRAWS draws per severity on flat grey 60 (64 x 64). The mean separates all severities but
    2 and 3 (128 and 129), which the standard deviation separates (28 and 34)."""
    grey = np.full((DRAWS, 64, 64, 3), 60, np.uint8)
    keys = jax.random.split(jax.random.key(0), DRAWS)
    program = all_severities(_snow.snow)
    out = np.asarray(program(keys, grey))
    assert out.dtype == np.uint8 and out.shape == (len(SEVERITIES), *grey.shape)
    np.testing.assert_array_equal(out, np.asarray(program(keys, grey)))
    for s in SEVERITIES:
        assert len(np.unique(out[s - 1].reshape(DRAWS, -1), axis=0)) == DRAWS
    np.random.seed(0)
    ref = np.stack([[imagecorruptions.corrupt(im, severity=s, corruption_name="snow")
                     for im in grey] for s in SEVERITIES])
    ours, theirs = _statistics(out), _statistics(ref)
    for name in ours:
        standard_error = np.sqrt((ours[name].var(1) + theirs[name].var(1)) / DRAWS)
        gap = np.abs(ours[name].mean(1) - theirs[name].mean(1))
        assert np.all(gap < 4 * standard_error), (name, gap / standard_error)
