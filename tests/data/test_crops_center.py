"""`TrainCrop(crop="center")`, the FixRes fine-tune's unaugmented training crop: the pixels of
`EvalCrop` (both resizers, arrays and encoded images, one at a time or many), mirrored only
with `flip=True` and then by the one draw every training crop makes for its flip."""

import io
import pickle

import hypothesis.strategies as st
import numpy as np
import pytest
from hypothesis import given, settings
from PIL import Image

from nsjax.data import BadImage, EvalCrop, TrainCrop

RNG = np.random.default_rng(0)
IMAGE = RNG.integers(0, 256, (50, 70, 3), dtype=np.uint8)  # not square: the box is centred


def _jpeg(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


@settings(max_examples=25, deadline=None)
@given(height=st.integers(1, 80), width=st.integers(1, 80), size=st.integers(1, 40),
       fraction=st.floats(0.1, 1.0), resize=st.sampled_from(["pil", "opencv"]),
       encoded=st.booleans(), seed=st.integers(0, 2**32 - 1))  # fmt: skip
def test_the_center_crop_is_the_eval_crop(height, width, size, fraction, resize, encoded, seed):
    image = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    data = _jpeg(image) if encoded else image
    crop = TrainCrop(size, crop="center", crop_fraction=fraction, flip=False, resize=resize)
    want = EvalCrop(size, crop_fraction=fraction, resize=resize)(data)
    got = crop(data, np.random.default_rng(seed))
    np.testing.assert_array_equal(got[0], want[0])
    assert got[1] == want[1]  # the same note (e.g. an upscale)


def test_crop_many_is_each_crop_alone():
    crop = TrainCrop(24, crop="center", crop_fraction=0.6)
    data = [IMAGE, _jpeg(IMAGE), IMAGE[:20], b"not an image"]
    many = crop.crop_many(data, [np.random.default_rng(i) for i in range(len(data))])
    for i, d in enumerate(data[:3]):
        alone = crop(d, np.random.default_rng(i))
        np.testing.assert_array_equal(many[i][0], alone[0])
    assert isinstance(many[3], BadImage)


@pytest.mark.parametrize("resize", ["pil", "opencv"])
def test_flip_only_when_asked_and_by_the_one_flip_draw(resize):
    want, _ = EvalCrop(16, resize=resize)(IMAGE)
    flips = []
    for seed in range(16):
        for flip in (True, False):
            rng, twin = np.random.default_rng(seed), np.random.default_rng(seed)
            out, _ = TrainCrop(16, crop="center", flip=flip, resize=resize)(IMAGE, rng)
            mirrored = twin.random() < 0.5 and flip  # one draw, the flip's, either way
            np.testing.assert_array_equal(out, want[:, ::-1] if mirrored else want)
            assert rng.random() == twin.random()  # nothing else drawn
            flips.append(mirrored)
    assert 0 < sum(flips) < 16  # both cases seen


def test_crop_fraction_is_checked_and_kept():
    with pytest.raises(ValueError, match="crop_fraction"):
        TrainCrop(8, crop="center", crop_fraction=0.0)
    with pytest.raises(ValueError, match="crop_fraction"):
        TrainCrop(8, crop="center", crop_fraction=1.5)
    crop = TrainCrop((20, 24), crop="center", crop_fraction=0.5, flip=False, resize="pil")
    copy = pickle.loads(pickle.dumps(crop))
    assert repr(copy) == repr(crop) and "crop_fraction=0.5" in repr(crop)
    np.testing.assert_array_equal(copy(IMAGE, np.random.default_rng(1))[0],
                                  EvalCrop((20, 24), crop_fraction=0.5)(IMAGE)[0])  # fmt: skip
