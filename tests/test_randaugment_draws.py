"""RandAugment's random choices, pinned by rate and by independence, from the outputs alone.

Documented: every image draws, per layer, its op uniformly from `ops`, its own sign for
Rotate/Shear/Translate with p = 0.5, and its own Cutout centre uniform over the pixels; the op
draw is `randaugment_ops(jax.random.split(key, 4)[0], ...)`. Each test below reads the draws
back from the augmented images, so a wrong rate or a key shared between two draws fails.
"""

import jax
import jax.numpy as jnp
import numpy as np

from nsjax import noise
from nsjax.noise import ops

KEY = jax.random.key(7)
N = 2000  # images: 5 standard deviations of a rate of 1/4 are 0.048 at this count


def _distinct_pixels(n: int, side: int) -> np.ndarray:
    """`uint8[n, side, side, 3]` whose pixels differ from their neighbours (no shift is a no-op)."""
    rng = np.random.default_rng(0)
    return rng.integers(1, 255, (n, side, side, 3), dtype=np.uint8)


def test_translation_signs_are_fair_coins_independent_of_the_op_draw():
    x = _distinct_pixels(N, 6)
    # magnitude 10 and translate_const 1: a shift of exactly one pixel, left/up or right/down
    out = np.asarray(noise.randaugment(KEY, x, num_layers=1, magnitude=10.0, translate_const=1,
                                       ops=("TranslateX", "TranslateY")))
    candidates = np.stack([np.asarray(f(x, s)) for f in (ops.translate_x, ops.translate_y)
                           for s in (1.0, -1.0)])  # [4, N, ...]: (X, +), (X, -), (Y, +), (Y, -)
    match = (candidates == out[None]).reshape(4, N, -1).all(-1)
    assert (match.sum(0) == 1).all()  # every image is exactly one of the four
    category = match.argmax(0)
    op_is_y = category >= 2
    drawn = np.asarray(noise.randaugment_ops(jax.random.split(KEY, 4)[0], N, 1, 2))[0]
    np.testing.assert_array_equal(op_is_y, drawn == 1)  # the documented op draw
    counts = np.bincount(category, minlength=4) / N
    # each (op, sign) pair has probability 1/4: a biased coin, or a sign drawn from the op's
    # key (then sign and op are dependent), moves some pair far from it
    assert np.all(np.abs(counts - 0.25) < 5 * np.sqrt(0.25 * 0.75 / N)), counts


def test_cutout_centres_are_uniform_over_the_pixels_and_their_own_draw():
    side = 8
    x = _distinct_pixels(N, side)
    # magnitude 10, cutout_const 1: half-size 1, so the filled square is the centre pixel and
    # the pixels above and to its left: rows [cy - 1, cy + 1), columns [cx - 1, cx + 1)
    out = np.asarray(noise.randaugment(KEY, x, num_layers=1, magnitude=10.0, cutout_const=1,
                                       ops=("Cutout",), fill=0))
    filled = (out == 0).all(-1)  # the test images have no black pixel
    rows = filled.any(2)
    cols = filled.any(1)
    cy = side - 1 - np.argmax(rows[:, ::-1], axis=1)  # the last filled row is the centre's
    cx = side - 1 - np.argmax(cols[:, ::-1], axis=1)
    for centre in (cy, cx):
        counts = np.bincount(centre, minlength=side)
        expected = N / side
        chi2 = ((counts - expected) ** 2 / expected).sum()
        assert chi2 < 24.32, counts  # chi-square, 7 degrees of freedom, p = 0.001
    assert abs(np.corrcoef(cy, cx)[0, 1]) < 5 / np.sqrt(N)  # row and column drawn apart


def test_signs_differ_between_layers_and_images():
    # two layers of TranslateX by one pixel: the net shift is -2, 0 or +2 with probabilities
    # 1/4, 1/2, 1/4 when each layer draws its own sign
    x = _distinct_pixels(N, 6)
    out = np.asarray(noise.randaugment(KEY, x, num_layers=2, magnitude=10.0, translate_const=1,
                                       ops=("TranslateX",)))
    shifts = np.full(N, 99)
    for s in (-2, 0, 2):
        moved = np.asarray(jnp.roll(x, -s, axis=2))[:, :, 2:4]  # inside for every net shift
        shifts[(out[:, :, 2:4] == moved).reshape(N, -1).all(-1)] = s
    assert not (shifts == 99).any()
    freq = np.asarray([(shifts == s).mean() for s in (-2, 0, 2)])
    assert np.all(np.abs(freq - [0.25, 0.5, 0.25]) < 5 * np.sqrt(0.25 / N)), freq
