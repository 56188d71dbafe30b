"""RandAugment's constants on small images: the reference's (translate 100 px, cutout 40 px at
level 1, set for 224-px crops) empty 32-px images; `relative_constants` scales them with the
image side and equals them at 224 px."""

import jax
import numpy as np
import pytest

from nsjax import noise
from tests.noise_images import make_images


def test_relative_constants_are_the_reference_at_224_px_and_scale_with_the_shorter_side():
    assert noise.relative_constants(224, 224) == {"translate_const": 100.0, "cutout_const": 40.0}
    assert noise.relative_constants(448, 600) == {"translate_const": 200.0, "cutout_const": 80.0}
    small = noise.relative_constants(32, 40)
    assert small == pytest.approx({"translate_const": 100 * 32 / 224,
                                   "cutout_const": 40 * 32 / 224})
    assert noise.relative_constants(np.int64(32), np.array(32)) == noise.relative_constants(32, 32)
    with pytest.raises(ValueError, match="height must be >= 1"):
        noise.relative_constants(0, 32)


def _mostly_fill(images: np.ndarray, fill: int = 128) -> np.ndarray:
    """Per image: whether at least 90% of its pixels are the fill grey."""
    return (images == fill).all(-1).mean((1, 2)) >= 0.9


def test_reference_constants_grey_out_small_images_relative_ones_do_not():
    # M = 10 (level 1): TranslateX/Y move 100 px, Cutout covers 80 px, all beyond a 32-px
    # image; 3 of the 16 ops in either of 2 layers: 1 - (13/16)**2 = 34% of the images.
    x = make_images(21, 128, 32, 32)
    key = jax.random.key(8)
    reference = np.asarray(noise.randaugment(key, x, magnitude=10.0))
    relative = np.asarray(noise.randaugment(key, x, magnitude=10.0,
                                            **noise.relative_constants(32, 32)))
    assert 0.25 <= _mostly_fill(reference).mean() <= 0.45
    assert _mostly_fill(relative).mean() <= 0.02
    assert not _mostly_fill(x).any()
