"""The blur corruptions (`nsjax.robustness._blur`) against `imagecorruptions` 1.1.2.

Pixel comparisons: Gaussian, defocus and zoom blur (deterministic), motion blur at fixed angles
(private `_motion_blur_uint8`, on 40 x 32 images where the reference's `break` drops copies) and
glass blur given the reference's own offsets (private `_glass_blur`). Each output equals the
reference up to 1, with under 1% of the values off by one (float32 here, float64 there, at the
truncating cast; measured: at most 0.75%, on the smooth sky crop).

Statistics: the public, random `motion_blur` and `glass_blur` over many draws against the
reference's draws on the same images. Each tolerance is a few standard errors and well below the
gap between neighbouring severities.

Every program runs the five severities at once (`vmap` over the batch of the function at a static
severity, as the dispatcher does): compiling dominates the run time.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.stats import kstest

from nsjax.robustness import _blur
from tests.robustness._severities import SEVERITIES, all_severities

OFF_BY_ONE = 0.01  # largest fraction of values allowed to differ from the reference by 1
MOTION_ANGLES = (0.0, 17.3, -41.1, 44.9)  # degrees; none puts a shift on a rounding tie
DRAWS = 32


_DETERMINISTIC = {name: all_severities(_blur.ON_DEVICE[name])
                  for name in ("gaussian_blur", "defocus_blur", "zoom_blur")}
_RANDOM = {name: all_severities(_blur.ON_DEVICE[name]) for name in ("motion_blur", "glass_blur")}


def _assert_matches(got: np.ndarray, ref: np.ndarray, what: str) -> None:
    assert got.dtype == np.uint8 and got.shape == ref.shape, what
    diff = np.abs(got.astype(np.int16) - ref.astype(np.int16))
    assert diff.max() <= 1, f"{what}: max difference {diff.max()}"
    assert (diff > 0).mean() < OFF_BY_ONE, f"{what}: {(diff > 0).mean():.2%} off by one"


def _crops(photo: np.ndarray, height: int, width: int) -> np.ndarray:
    """uint8 `[3, height, width, 3]`: a textured crop (roof and trees), the smooth sky of the top
    left corner, uniform noise."""
    noise = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return np.stack([photo[100:100 + height, 200:200 + width], photo[:height, :width], noise])


@pytest.fixture(scope="module")
def images(photo) -> np.ndarray:
    """uint8 `[3, 48, 56, 3]` (`_crops`): non-square."""
    return _crops(photo, 48, 56)


@pytest.mark.parametrize("name", sorted(_DETERMINISTIC))
def test_deterministic_blurs_match_the_reference(imagecorruptions, images, name):
    keys = jax.random.split(jax.random.key(0), len(images))
    out = np.asarray(_DETERMINISTIC[name](keys, images))
    other_keys = np.asarray(_DETERMINISTIC[name](jax.random.split(jax.random.key(1), 3), images))
    np.testing.assert_array_equal(out, other_keys)  # no randomness
    for s in SEVERITIES:
        for i, image in enumerate(images):
            ref = imagecorruptions.corrupt(image, severity=s, corruption_name=name)
            _assert_matches(out[s - 1, i], ref, f"{name} severity {s} image {i}")


def test_zoom_factors_are_the_references_aranges():
    """The reference's `np.arange` zooms, 12, 16, 11, 13, 11 of them: float steps put its stop
    1.11 in the first (1.16 and 1.26 stay out of theirs). Checked on the reference's lines."""
    assert [len(z) for z in _blur.ZOOM_BLUR_FACTORS] == [12, 16, 11, 13, 11]
    ref = [np.arange(1, 1.11, 0.01), np.arange(1, 1.16, 0.01), np.arange(1, 1.21, 0.02),
           np.arange(1, 1.26, 0.02), np.arange(1, 1.31, 0.03)]
    for ours, theirs in zip(_blur.ZOOM_BLUR_FACTORS, ref):
        assert list(ours) == theirs.tolist()


def test_motion_blur_matches_the_reference_at_fixed_angles(imagecorruptions, photo):
    """40 x 32 images: at severity 5 (41 copies) the horizontal shifts reach the 32-pixel width
    at every angle below ~38°, and the reference drops the remaining copies (darkening)."""
    images = _crops(photo, 40, 32)
    angles = jnp.asarray(MOTION_ANGLES, jnp.float32)

    def per_image(image, severity):
        radius, sigma = _blur.MOTION_BLUR_RADIUS_SIGMA[severity - 1]
        blur = functools.partial(_blur._motion_blur_uint8, radius=radius, sigma=sigma)
        return jax.vmap(blur, (None, 0))(image, angles)

    out = np.asarray(all_severities(per_image)(images))  # [5, 3, angles, 40, 32, 3]
    motion_blur = imagecorruptions.corruptions._motion_blur
    for s in SEVERITIES:
        radius, sigma = _blur.MOTION_BLUR_RADIUS_SIGMA[s - 1]
        for i, image in enumerate(images):
            for a, angle in enumerate(MOTION_ANGLES):
                ref = np.uint8(np.clip(motion_blur(image, radius, sigma, angle), 0, 255))
                _assert_matches(out[s - 1, i, a], ref, f"severity {s} image {i} angle {angle}")
    # the break happened: at severity 5 the reference's copies lost weight
    ref = motion_blur(images[2], 20, 15, 0.0)
    assert ref.mean() < 0.97 * images[2].mean()


def test_glass_blur_matches_the_reference_given_its_offsets(imagecorruptions, images):
    """The reference draws `randint(-δ, δ, size=(2,))` per position in scan order; NumPy's legacy
    generator gives the same numbers in one `size=(iterations, H - 2δ, W - 2δ, 2)` draw."""
    height, width = images.shape[1:3]
    offsets, refs = [], []
    for s in SEVERITIES:
        _, delta, iterations = _blur.GLASS_BLUR_SIGMA_DELTA_ITERATIONS[s - 1]
        size = (iterations, height - 2 * delta, width - 2 * delta, 2)
        per_image, ref = [], []
        for i, image in enumerate(images):
            np.random.seed(100 * s + i)
            ref.append(imagecorruptions.corrupt(image, severity=s, corruption_name="glass_blur"))
            np.random.seed(100 * s + i)
            per_image.append(np.random.randint(-delta, delta, size=size))
        offsets.append(np.stack(per_image).astype(np.int32))
        refs.append(ref)
    program = jax.jit(lambda images, offsets: [
        jax.vmap(functools.partial(_blur._glass_blur, severity=s))(images, offsets[s - 1])
        for s in SEVERITIES])
    out = [np.asarray(o) for o in program(images, offsets)]
    for s in SEVERITIES:
        for i in range(len(images)):
            _assert_matches(out[s - 1][i], refs[s - 1][i], f"severity {s} image {i}")


@pytest.mark.parametrize("severity", SEVERITIES)
def test_glass_offsets_follow_the_reference_randint(severity):
    """`randint(-δ, δ)`: uniform on -δ … δ-1 (δ excluded), independent (dx, dy) pairs."""
    _, delta, iterations = _blur.GLASS_BLUR_SIGMA_DELTA_ITERATIONS[severity - 1]
    offsets = np.asarray(_blur._glass_offsets(jax.random.key(severity), (80, 96, 3), severity))
    assert offsets.shape == (iterations, 80 - 2 * delta, 96 - 2 * delta, 2)
    counts = np.bincount((offsets + delta).ravel(), minlength=2 * delta)
    assert len(counts) == 2 * delta  # nothing outside -δ … δ-1
    expected = offsets.size / (2 * delta)
    assert np.all(np.abs(counts - expected) < 5 * np.sqrt(expected))
    dx, dy = offsets[..., 0].ravel(), offsets[..., 1].ravel()
    assert abs(np.corrcoef(dx, dy)[0, 1]) < 5 / np.sqrt(dx.size)
    if iterations > 1:
        assert np.mean(offsets[0] == offsets[1]) < 0.5 / delta + 0.05


def _dot_and_noise(height: int = 64, width: int = 64) -> np.ndarray:
    """uint8 `[2, H, W, 3]`: a white dot at (H/2, W - 4) on black (the motion blur draws the
    line of its copies, pointing left at the angle), and uniform noise."""
    dot = np.zeros((height, width, 3), np.uint8)
    dot[height // 2, width - 4] = 255
    noise = np.random.default_rng(1).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return np.stack([dot, noise])


def _streak_angle(blurred_dot: np.ndarray) -> np.ndarray:
    """Degrees `[...]` from float `[..., H, W, 3]` outputs of `_dot_and_noise`'s dot: the
    direction of the intensity centroid from the dot, θ = atan2(rows up, columns left)."""
    height, width = blurred_dot.shape[-3:-1]
    weight = blurred_dot.mean(-1)
    weight[..., height // 2, width - 4] = 0
    rows, cols = np.mgrid[:height, :width]
    total = weight.sum((-2, -1))
    up = (height // 2 - (weight * rows).sum((-2, -1)) / total)
    left = (width - 4 - (weight * cols).sum((-2, -1)) / total)
    return np.degrees(np.arctan2(up, left))


def test_motion_blur_draws_match_the_reference(imagecorruptions):
    """Per severity, DRAWS draws of the dot and of noise against as many of the reference's: the
    angle, estimated from the streak within ~1°, is uniform on (-45°, 45°) (as the estimate from
    the reference's outputs); the dot keeps the weight of the unshifted copy, 255·w_0 truncated,
    which the severity alone sets; the noise's standard deviation (the blur's strength) agrees
    within 4 standard errors; the draws differ (shifts are integers, so a few angles coincide)."""
    base = _dot_and_noise()
    batch = np.repeat(base, DRAWS, axis=0)  # dot, dot, …, noise, noise, …
    keys = jax.random.split(jax.random.key(0), len(batch))
    out = np.asarray(_RANDOM["motion_blur"](keys, batch))
    assert out.dtype == np.uint8 and out.shape == (len(SEVERITIES), *batch.shape)
    np.testing.assert_array_equal(out, np.asarray(_RANDOM["motion_blur"](keys, batch)))
    np.random.seed(0)
    ref = np.stack([[imagecorruptions.corrupt(im, severity=s, corruption_name="motion_blur")
                     for im in batch] for s in SEVERITIES])
    dot = (base.shape[1] // 2, base.shape[2] - 4)
    np.testing.assert_array_equal(out[:, :DRAWS, dot[0], dot[1]], ref[:, :DRAWS, dot[0], dot[1]])
    ours_angles = _streak_angle(out[:, :DRAWS].astype(np.float64))
    ref_angles = _streak_angle(ref[:, :DRAWS].astype(np.float64))
    for angles in (ours_angles, ref_angles):
        assert angles.min() > -46.5 and angles.max() < 46.5
        assert all(kstest(a, "uniform", args=(-45, 90)).pvalue > 1e-3 for a in angles)
    for s in SEVERITIES:
        assert len(np.unique(out[s - 1, DRAWS:].reshape(DRAWS, -1), axis=0)) > DRAWS // 2
    ours_std = out[:, DRAWS:].astype(np.float64).std((2, 3, 4))
    ref_std = ref[:, DRAWS:].astype(np.float64).std((2, 3, 4))
    standard_error = np.sqrt((ours_std.var(1) + ref_std.var(1)) / DRAWS)
    assert np.all(np.abs(ours_std.mean(1) - ref_std.mean(1)) < 4 * standard_error)


def test_glass_blur_draws_match_the_reference(imagecorruptions, images):
    """Per severity, 8 draws on the textured crop against the reference's: the mean absolute
    change from the clean image and the mean absolute gradient (sharpness; it falls by 0.8 or
    more from one severity to the next) agree within 0.4 (about 4 standard errors). The draws
    differ and repeat with their keys."""
    draws = 8
    batch = np.repeat(images[:1], draws, axis=0)
    keys = jax.random.split(jax.random.key(0), draws)
    out = np.asarray(_RANDOM["glass_blur"](keys, batch))
    assert out.dtype == np.uint8 and out.shape == (len(SEVERITIES), *batch.shape)
    np.testing.assert_array_equal(out, np.asarray(_RANDOM["glass_blur"](keys, batch)))
    np.random.seed(0)
    ref = np.stack([[imagecorruptions.corrupt(im, severity=s, corruption_name="glass_blur")
                     for im in batch] for s in SEVERITIES])

    def change_and_gradient(x):
        x = x.astype(np.float64)
        change = np.abs(x - images[0]).mean((2, 3, 4))
        gradient = np.abs(np.diff(x, axis=2)).mean((2, 3, 4)) + np.abs(np.diff(x, axis=3)).mean(
            (2, 3, 4))
        return np.stack([change.mean(1), gradient.mean(1)])

    ours, theirs = change_and_gradient(out), change_and_gradient(ref)
    assert np.all(np.diff(theirs[1]) < -0.8)
    np.testing.assert_allclose(ours, theirs, atol=0.4)
    for s in SEVERITIES:
        assert len(np.unique(out[s - 1].reshape(draws, -1), axis=0)) == draws
