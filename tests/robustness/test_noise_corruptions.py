"""The noise corruptions (`nsjax.robustness._noise`) against `imagecorruptions` 1.1.2.

Our draws differ from the reference's (NumPy's and scikit-image's generators), so every severity
is compared by statistics over many elements: against the reference's own draws on the same
images, and against the exact laws where they are known (impulse noise's salt and pepper rates,
shot noise's Poisson frequencies). Each tolerance is a few standard errors of its statistic and
well below the gap between neighbouring severities.

All tests share one batch shape, and one program per corruption runs the five severities (as the
dispatcher does, `vmap` over (key, image) of the function at a static severity): the random
number generator dominates the compile time.
"""

from __future__ import annotations

import functools

import jax
import numpy as np
import pytest
from scipy.stats import poisson

from nsjax.robustness import _noise
from tests.robustness._severities import SEVERITIES, all_severities

NAMES = tuple(_noise.ON_DEVICE)
DRAWS = 16  # images per kind in a batch: 16 x 48 x 80 x 3 = 184320 elements
SHAPE = (2 * DRAWS, 48, 80, 3)  # every batch: non-square images


@functools.lru_cache(maxsize=None)
def _all_severities(name: str):
    """The compiled all-severity program of corruption `name`."""
    return all_severities(_noise.ON_DEVICE[name])


def _run(name: str, images: np.ndarray, seed: int = 0) -> np.ndarray:
    assert images.shape == SHAPE
    out = np.asarray(_all_severities(name)(jax.random.split(jax.random.key(seed), SHAPE[0]),
                                           images))
    assert out.dtype == np.uint8 and out.shape == (len(SEVERITIES), *SHAPE)
    return out


@pytest.fixture(scope="module")
def images(photo) -> np.ndarray:
    """uint8 SHAPE: DRAWS copies of a photo crop (sky, roof, trees), then DRAWS of flat grey
    128 (no clipping at the low severities)."""
    crop = photo[150:198, 300:380]
    grey = np.full_like(crop, 128)
    return np.concatenate([np.repeat(crop[None], DRAWS, 0), np.repeat(grey[None], DRAWS, 0)])


def _reference(imagecorruptions, name: str, severity: int, images: np.ndarray) -> np.ndarray:
    np.random.seed(severity)  # impulse noise draws from scikit-image's own unseeded generator
    return np.stack([imagecorruptions.corrupt(im, severity=severity, corruption_name=name)
                     for im in images])


def _per_element(out: np.ndarray, clean: np.ndarray) -> dict[str, np.ndarray]:
    """Per-element quantities whose means are compared, float64 `[n]` each."""
    change = out.astype(np.float64) - clean
    quantities = {f"change, channel {c}": change[..., c] for c in range(3)}
    quantities.update({"|change|": np.abs(change), "changed": change != 0, "at 0": out == 0,
                       "at 255": out == 255})
    return {k: np.asarray(v, np.float64).reshape(-1) for k, v in quantities.items()}


# Means of per-element quantities (the signed change per channel, |change|, the fractions
# changed, at 0 and at 255) must agree within Z standard errors of their difference; the noise
# is independent per element, and the spread over elements of different clean values only
# overstates the error. The change's standard deviation must agree within a relative STD_RTOL
# (measured: <= 0.7 %, 2.1 % for impulse noise, whose rare +-128 jumps make it noisy).
# Neighbouring severities differ by >= 16 % in mean |change| and std of change.
Z = 5.0
STD_RTOL = {"impulse_noise": 0.06}


@pytest.mark.parametrize("name", NAMES)
def test_statistics_match_reference(imagecorruptions, images, name):
    """Every severity: output statistics on the photo crop and on flat grey agree with the
    reference's."""
    ours = _run(name, images)
    for severity in SEVERITIES:
        ref = _reference(imagecorruptions, name, severity, images)
        for part in (slice(0, DRAWS), slice(DRAWS, None)):
            where = f"{name} severity {severity}, {'photo' if part.start == 0 else 'grey'}"
            mine = _per_element(ours[severity - 1, part], images[part])
            theirs = _per_element(ref[part], images[part])
            for stat, a in mine.items():
                b = theirs[stat]
                se = np.sqrt((a.var() + b.var()) / a.size)
                assert abs(a.mean() - b.mean()) <= Z * se + 1e-12, (where, stat, a.mean(),
                                                                    b.mean(), se)
            std_a = np.sqrt(  # of the signed change, pooled over the channels
                np.mean([mine[f"change, channel {c}"].var() for c in range(3)]))
            std_b = np.sqrt(np.mean([theirs[f"change, channel {c}"].var() for c in range(3)]))
            np.testing.assert_allclose(std_a, std_b, rtol=STD_RTOL.get(name, 0.03),
                                       err_msg=f"{where}: std of change")


def test_impulse_noise_rates():
    """Salt (255) and pepper (0) each replace a fraction c/2 of the elements, per channel and
    independently across channels; every other element is unchanged (values 1..254 in, so
    salt and pepper are visible)."""
    clean = np.random.default_rng(0).integers(1, 255, SHAPE, dtype=np.uint8)
    outs = _run("impulse_noise", clean)
    for out, amount in zip(outs, _noise.IMPULSE_NOISE_AMOUNT, strict=True):
        salt, pepper = out == 255, out == 0
        hit = salt | pepper
        np.testing.assert_array_equal(out[~hit], clean[~hit])
        se = np.sqrt(amount / 2 / out.size)  # binomial standard error of a rate near c/2
        assert abs(salt.mean() - amount / 2) < 5 * se, (amount, salt.mean())
        assert abs(pepper.mean() - amount / 2) < 5 * se, (amount, pepper.mean())
        for channel in range(3):
            assert abs(hit[..., channel].mean() - amount) < 15 * se, (amount, channel)
        both = hit[..., 0] & hit[..., 1]
        assert abs(both.mean() - amount**2) < 10 * se, (amount, "channels independent")


def test_shot_noise_is_poisson():
    """On flat images of value v the output is `uint8(min(k, c) / c · 255)`, k ~ Poisson(c v /
    255): only those values occur, at the Poisson frequencies."""
    values = np.array([1, 40, 128, 230, 255], np.uint8)
    which = np.arange(SHAPE[0]) % len(values)
    clean = np.broadcast_to(values[which][:, None, None, None], SHAPE).copy()
    outs = _run("shot_noise", clean, seed=1)
    for out, photons in zip(outs, _noise.SHOT_NOISE_PHOTONS, strict=True):
        counts = np.arange(photons + 1)
        pixel = np.uint8(np.clip(counts / float(photons), 0, 1) * 255)  # the reference's cast
        for i, v in enumerate(values):
            o = out[which == i]
            assert np.isin(o, pixel).all(), (photons, v)
            rate = v / 255.0 * photons
            expected = poisson.pmf(counts, rate)
            expected[-1] = poisson.sf(photons - 1, rate)
            freq = (o.reshape(-1, 1) == pixel[None, :]).mean(axis=0)
            tol = 5 * np.sqrt(expected * (1 - expected) / o.size) + 1e-4
            np.testing.assert_array_less(np.abs(freq - expected), tol,
                                         err_msg=f"c = {photons}, value {v}")


@pytest.mark.parametrize("name", NAMES)
def test_keys(name):
    """Same key, same output; another key, another output; the images of one batch get
    independent draws (their changes are uncorrelated)."""
    clean = np.full(SHAPE, 128, np.uint8)
    a, b, c = _run(name, clean, seed=7), _run(name, clean, seed=7), _run(name, clean, seed=8)
    np.testing.assert_array_equal(a, b)
    for severity in SEVERITIES:
        assert np.mean(a[severity - 1] != c[severity - 1]) > 0.01, severity
        change = a[severity - 1, :4].reshape(4, -1).astype(np.float64) - 128
        corr = np.corrcoef(change)[np.triu_indices(4, 1)]
        assert np.all(np.abs(corr) < 0.05), (severity, corr)
