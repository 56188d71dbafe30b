"""nsjax.data._crops: the boxes are nsjax.fixres's (NumPy and JAX give the same ones), the "pil"
resizer is Pillow's and agrees with fixres, the "opencv" resizer cuts the same box (DCT-reduced
when the box is large), draw order and flips, the pad crop, small images and bad arguments."""

import io
import pickle

import cv2
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from PIL import Image
from sklearn.datasets import load_sample_images

from nsjax import fixres
from nsjax.data import _crops
from nsjax.data._crops import EvalCrop, TrainCrop, sample_inception_box

SETTINGS = settings(max_examples=30, deadline=None)
NOISE = np.random.default_rng(0).integers(0, 256, (12, 16, 3), dtype=np.uint8)


def _encode(image: np.ndarray, format: str, **options) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format, **options)
    return buffer.getvalue()


def _pil_box_resize(image: np.ndarray, box, size: tuple[int, int]) -> np.ndarray:
    """Pillow's BICUBIC of the box (top, left, height, width) of `image` to `size`."""
    top, left, height, width = box
    resized = Image.fromarray(image).resize(
        size[::-1], Image.Resampling.BICUBIC, box=(left, top, left + width, top + height))
    return np.asarray(resized)


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    """A natural photo, 120x160."""
    china = load_sample_images().images[0]
    return np.asarray(Image.fromarray(china).resize((160, 120), Image.Resampling.BICUBIC))


@pytest.fixture(scope="module")
def big_jpeg() -> bytes:
    """A 2000x1600 JPEG of a natural photo."""
    china = load_sample_images().images[0]
    big = np.asarray(Image.fromarray(china).resize((1600, 2000), Image.Resampling.BICUBIC))
    return _encode(big, "JPEG", quality=90)


class _ReduceSpy:
    """Stands in for `_crops.decode_image`, recording every `reduce` asked for."""

    def __init__(self, monkeypatch):
        self.reduces: list[int] = []
        self.decode = _crops.decode_image
        monkeypatch.setattr(_crops, "decode_image", self)

    def __call__(self, data, *, reduce=1):
        self.reduces.append(reduce)
        return self.decode(data, reduce=reduce)


# --------------------------------------------------------------------------- boxes


@SETTINGS
@given(
    height=st.integers(1, 600), width=st.integers(1, 600),
    area_lo=st.floats(0.01, 1.0), area_hi=st.floats(0.0, 1.0),
    ratio_lo=st.floats(0.1, 3.0), ratio_span=st.floats(1.0, 4.0), seed=st.integers(0, 2**32 - 1),
)  # fmt: skip
def test_numpy_and_jax_boxes_are_identical(height, width, area_lo, area_hi, ratio_lo, ratio_span,
                                           seed):  # fmt: skip
    area = (area_lo, max(area_lo, area_hi))
    ratio = (ratio_lo, ratio_lo * ratio_span)
    u = np.random.default_rng(seed).random((64, 22), dtype=np.float32)
    fallback = fixres._center_box(height, width, 0.875)
    ours = fixres._boxes_from_uniforms(np, u, height, width, area, ratio, fallback)
    theirs = fixres._boxes_from_uniforms(jnp, jnp.asarray(u), height, width, area, ratio, fallback)
    assert ours.dtype == np.float32 and ours.shape == (64, 4)
    np.testing.assert_array_equal(ours, theirs)


@SETTINGS
@given(sizes=st.lists(st.tuples(st.integers(1, 900), st.integers(1, 900)), min_size=1, max_size=9),
       area_lo=st.floats(0.01, 1.0), ratio_lo=st.floats(0.1, 3.0), seed=st.integers(0, 2**32 - 1))
def test_per_image_sizes_give_each_image_its_own_box(sizes, area_lo, ratio_lo, seed):
    """One vectorised call over images of different sizes (the host pipeline's chunks) gives
    every row the box a call for that image alone gives."""
    area, ratio = (area_lo, 1.0), (ratio_lo, 2 * ratio_lo)
    u = np.random.default_rng(seed).random((len(sizes), 22), dtype=np.float32)
    heights, widths = (np.array(v) for v in zip(*sizes))
    fallback = np.array([fixres._center_box(h, w, 0.875) for h, w in sizes], np.float32)
    together = fixres._boxes_from_uniforms(np, u, heights, widths, area, ratio, fallback)
    for i, (h, w) in enumerate(sizes):
        alone = fixres._boxes_from_uniforms(np, u[i:i + 1], h, w, area, ratio, fallback[i])
        np.testing.assert_array_equal(together[i], alone[0])


def test_crop_many_is_each_crop_alone(photo):
    """`crop_many` (vectorised boxes) gives what one call per image gives, bad images in
    place, whatever the mix of sizes and formats."""
    data = [_encode(photo, "JPEG", quality=90), _encode(photo[:50, :70], "PNG"), b"junk",
            photo[10:90, 5:125].copy(), _encode(photo, "JPEG")[:300]]
    for crop in (TrainCrop(32), TrainCrop(24, resize="pil", area=(0.3, 0.6)),
                 TrainCrop(16, crop="pad")):
        many = crop.crop_many(data, [np.random.default_rng([7, i]) for i in range(len(data))])
        for i, item in enumerate(data):
            rng = np.random.default_rng([7, i])
            if isinstance(many[i], _crops.BadImage):
                with pytest.raises(_crops.BadImage, match=many[i].reason[:10]):
                    crop(item, rng)
            else:
                image, note = crop(item, rng)
                np.testing.assert_array_equal(many[i][0], image)
                assert many[i][1] == note
        assert [isinstance(m, _crops.BadImage) for m in many] == [False, False, True, False, True]


@pytest.mark.parametrize("height, width, area, ratio", [
    (375, 500, (0.08, 1.0), (3 / 4, 4 / 3)),  # an ImageNet photo, the reference's ranges
    (31, 17, (0.02, 1.0), (0.5, 2.0)),  # a small image and wide ranges: every rounding counts
])  # fmt: skip
def test_numpy_boxes_equal_fixres_jitted_sampler(height, width, area, ratio):
    key = jax.random.key(height)
    fallback = fixres._center_box(height, width, 0.875)
    sample = jax.jit(fixres._sample_boxes, static_argnums=(1, 2, 3, 4, 5, 6))
    jitted = sample(key, 512, height, width, area, ratio, fallback)
    u = np.asarray(jax.random.uniform(key, (512, 22)))  # the draw _sample_boxes makes
    ours = fixres._boxes_from_uniforms(np, u, height, width, area, ratio, fallback)
    np.testing.assert_array_equal(ours, jitted)


def test_sample_inception_box_is_one_draw_of_22_float32_uniforms():
    for seed in range(20):
        box = sample_inception_box(np.random.default_rng(seed), 60, 80, area=(0.2, 0.9))
        u = np.random.default_rng(seed).random((1, 22), dtype=np.float32)
        expected = fixres._boxes_from_uniforms(np, u, 60, 80, (0.2, 0.9), (3 / 4, 4 / 3),
                                               fixres._center_box(60, 80, 0.875))
        assert box == tuple(int(v) for v in expected[0])
        assert all(isinstance(v, int) for v in box)


# --------------------------------------------------------------------------- "pil" resizer


def test_eval_crop_pil_is_pillow_and_agrees_with_fixres(photo):
    images = np.stack([photo[:, :150], NOISE.repeat(10, 0).repeat(10, 1)[:120, :150]])
    side = int(0.875 * 120)  # the reference's rule, written out
    box = ((120 - side + 1) // 2, (150 - side + 1) // 2, side, side)
    crop = EvalCrop(56)
    ours = np.stack([crop(image)[0] for image in images])
    pillow = np.stack([_pil_box_resize(image, box, (56, 56)) for image in images])
    np.testing.assert_array_equal(ours, pillow)
    jitted = jax.jit(fixres.center_crop_resize, static_argnames=("size",))
    diff = np.abs(np.asarray(jitted(jnp.asarray(images), size=56)).astype(int) - ours)
    assert diff.max() <= 2 and diff.mean() < 0.1, (diff.max(), diff.mean())  # fixres's bound


def test_train_crop_pil_is_pillow_on_the_box_then_the_flip(photo):
    # Pins the draw order: 22 float32 uniforms for the box, then one float for the flip.
    data = _encode(photo, "PNG")
    mirrored = 0
    for seed in range(12):
        out, note = TrainCrop(48, resize="pil")(data, np.random.default_rng(seed))
        rng = np.random.default_rng(seed)
        expected = _pil_box_resize(photo, sample_inception_box(rng, 120, 160), (48, 48))
        if rng.random() < 0.5:
            expected, mirrored = expected[:, ::-1], mirrored + 1
        np.testing.assert_array_equal(out, expected)
        assert note is None
    assert 0 < mirrored < 12


# --------------------------------------------------------------------------- "opencv" resizer


def test_opencv_crop_of_an_array_is_the_box_cut_then_cv2(photo):
    for seed in range(12):
        out, _ = TrainCrop((40, 30), flip=False)(photo, np.random.default_rng(seed))
        top, left, h, w = sample_inception_box(np.random.default_rng(seed), 120, 160)
        kind = cv2.INTER_AREA if h >= 80 or w >= 60 else cv2.INTER_CUBIC
        expected = cv2.resize(photo[top:top + h, left:left + w], (30, 40), interpolation=kind)
        np.testing.assert_array_equal(out, expected)
    # At the box's own size nothing is resampled: the output is exactly the centre cut.
    side = int(0.875 * 120)
    top, left = (120 - side + 1) // 2, (160 - side + 1) // 2
    out, _ = EvalCrop(side, resize="opencv")(photo)
    np.testing.assert_array_equal(out, photo[top:top + side, left:left + side])


def test_opencv_and_pil_crop_the_same_box(photo, monkeypatch):
    spy = _ReduceSpy(monkeypatch)
    data = _encode(photo, "JPEG", quality=90)
    for seed in range(10):
        a, _ = TrainCrop(100)(data, np.random.default_rng(seed))
        b, _ = TrainCrop(100, resize="pil")(data, np.random.default_rng(seed))
        assert np.abs(a.astype(int) - b).mean() < 3  # kernels differ; a wrong box differs a lot
    a, b = EvalCrop(100, resize="opencv")(data)[0], EvalCrop(100)(data)[0]
    assert np.abs(a.astype(int) - b).mean() < 3
    assert set(spy.reduces) == {1}  # no box is twice the output: full-size decodes


def test_large_jpeg_is_dct_reduced_and_close_to_a_full_decode(big_jpeg, monkeypatch):
    full, _ = _crops.decode_image(big_jpeg)
    spy = _ReduceSpy(monkeypatch)
    out, _ = EvalCrop(64, resize="opencv")(big_jpeg)
    assert spy.reduces == [8]  # the 1400 px centre box shrinks to 175 px, still >= 64
    box = fixres._center_box(2000, 1600, 0.875)
    expected = _crops._resize(full, box, (64, 64), "opencv")  # full size, INTER_AREA
    assert np.abs(out.astype(int) - expected).mean() < 4
    for seed in range(3):
        out, _ = TrainCrop(64, flip=False)(big_jpeg, np.random.default_rng(seed))
        assert spy.reduces[-1] > 1
        box = sample_inception_box(np.random.default_rng(seed), 2000, 1600)
        expected = _crops._resize(full, box, (64, 64), "opencv")
        assert np.abs(out.astype(int) - expected).mean() < 4
    EvalCrop(64)(big_jpeg)  # "pil" stays exactly fixres: it never reduces
    assert spy.reduces[-1] == 1


# --------------------------------------------------------------------------- randomness


@pytest.mark.parametrize("resize", ["opencv", "pil"])
def test_train_crop_is_deterministic_per_seed(photo, resize):
    data = _encode(photo, "JPEG", quality=90)
    crop = TrainCrop(32, resize=resize)
    a, b = crop(data, np.random.default_rng(5))[0], crop(data, np.random.default_rng(5))[0]
    np.testing.assert_array_equal(a, b)
    outputs = {crop(data, np.random.default_rng(seed))[0].tobytes() for seed in range(8)}
    assert len(outputs) == 8


@pytest.mark.parametrize("resize", ["opencv", "pil"])
def test_flip_mirrors_half_of_the_crops(resize):
    mirrored, n = 0, 400
    for seed in range(n):
        rng_flip, rng_plain = np.random.default_rng(seed), np.random.default_rng(seed)
        flipped, _ = TrainCrop(6, resize=resize)(NOISE, rng_flip)
        plain, _ = TrainCrop(6, flip=False, resize=resize)(NOISE, rng_plain)
        assert flipped.flags.c_contiguous
        assert rng_flip.random() == rng_plain.random()  # the flip is drawn either way
        if not np.array_equal(flipped, plain):
            np.testing.assert_array_equal(flipped, plain[:, ::-1])
            mirrored += 1
    assert abs(mirrored - n / 2) < 4.5 * np.sqrt(n / 4), mirrored  # binomial(400, 1/2)


def test_pad_crop_offsets_are_uniform_over_all_positions():
    image = NOISE[:8, :8]
    pad, n = 2, 250
    padded = np.pad(image, ((pad, pad), (pad, pad), (0, 0)), mode="reflect")
    windows = {padded[t:t + 8, l:l + 8].tobytes(): (t, l)
               for t in range(2 * pad + 1) for l in range(2 * pad + 1)}  # fmt: skip
    assert len(windows) == (2 * pad + 1) ** 2
    tops, lefts = np.zeros(2 * pad + 1, int), np.zeros(2 * pad + 1, int)
    crop = TrainCrop(8, crop="pad", pad=pad, flip=False)
    for seed in range(n):
        out, note = crop(image, np.random.default_rng(seed))
        assert out.flags.c_contiguous
        top, left = windows[out.tobytes()]  # a KeyError: not a window of the padded image
        tops[top] += 1
        lefts[left] += 1
        assert note is None
    expected = n / (2 * pad + 1)  # 50 each, sd about 6.3
    assert np.all(np.abs(tops - expected) < 25) and np.all(np.abs(lefts - expected) < 25)


def test_pad_crop_draws_offsets_then_flip_and_resizes_other_sizes_first():
    crop = TrainCrop(8, crop="pad", pad=3)
    out, _ = crop(NOISE[:8, :8], np.random.default_rng(3))
    rng = np.random.default_rng(3)
    top, left = rng.integers(0, 7, size=2)
    expected = np.pad(NOISE[:8, :8], ((3, 3), (3, 3), (0, 0)), mode="reflect")
    expected = expected[top:top + 8, left:left + 8]
    np.testing.assert_array_equal(out, expected[:, ::-1] if rng.random() < 0.5 else expected)
    out, note = crop(NOISE, np.random.default_rng(0))
    assert out.shape == (8, 8, 3) and note == "resized 12x16 to 8x8 before the pad crop"
    out, _ = TrainCrop(8, crop="pad", pad=0, flip=False)(NOISE[:8, :8], np.random.default_rng(0))
    np.testing.assert_array_equal(out, NOISE[:8, :8])


# --------------------------------------------------------------------------- any image


@pytest.mark.parametrize("crop", [
    TrainCrop(8), TrainCrop(8, resize="pil"), EvalCrop(8), EvalCrop(8, resize="opencv"),
])  # fmt: skip
def test_tiny_images_are_upscaled_with_a_note(crop):
    dot = np.full((1, 1, 3), 77, np.uint8)
    for data in (dot, _encode(dot, "JPEG"), _encode(np.full((2, 3, 3), 77, np.uint8), "PNG")):
        args = (data, np.random.default_rng(0)) if isinstance(crop, TrainCrop) else (data,)
        out, note = crop(*args)
        assert out.shape == (8, 8, 3)
        assert np.abs(out.astype(int) - 77).max() <= 1  # a constant image stays constant
        assert note.startswith("upscaled: ") and note.endswith("smaller than the crop 8x8")
    assert crop(*args)[1] == "upscaled: 2x3 smaller than the crop 8x8"
    wide = np.full((1, 20, 3), 77, np.uint8)  # smaller on one axis is enough
    args = (wide, np.random.default_rng(0)) if isinstance(crop, TrainCrop) else (wide,)
    assert crop(*args)[1] == "upscaled: 1x20 smaller than the crop 8x8"


@SETTINGS
@given(
    height=st.integers(1, 24), width=st.integers(1, 24), out=st.tuples(st.integers(1, 24),
    st.integers(1, 24)), kind=st.sampled_from(["inception", "pad", "eval"]),
    resize=st.sampled_from(["opencv", "pil"]), format=st.sampled_from([None, "PNG", "JPEG"]),
    seed=st.integers(0, 2**32 - 1),
)  # fmt: skip
def test_every_crop_is_uint8_of_the_output_size(height, width, out, kind, resize, format, seed):
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    data = image if format is None else _encode(image, format)
    if kind == "eval":
        result, _ = EvalCrop(out, resize=resize)(data)
    else:
        result, _ = TrainCrop(out, crop=kind, resize=resize)(data, rng)
    assert result.shape == (*out, 3) and result.dtype == np.uint8 and result.flags.c_contiguous


def test_crops_pickle_and_keep_their_settings(photo):
    crop = TrainCrop((20, 24), area=(0.3, 0.9), ratio=(0.5, 2.0), flip=False, resize="pil")
    copy = pickle.loads(pickle.dumps(crop))
    assert repr(copy) == repr(crop)
    np.testing.assert_array_equal(copy(photo, np.random.default_rng(1))[0],
                                  crop(photo, np.random.default_rng(1))[0])  # fmt: skip
    assert repr(pickle.loads(pickle.dumps(EvalCrop(9)))) == repr(EvalCrop(9))


# --------------------------------------------------------------------------- bad arguments

RNG = np.random.default_rng(0)


@pytest.mark.parametrize("make, exc, match", [
    (lambda: TrainCrop(0), ValueError, "size must be >= 1, got 0"),
    (lambda: TrainCrop(2.5), TypeError, "size must be an int"),
    (lambda: TrainCrop((4, 4, 4)), ValueError, "size"),
    (lambda: TrainCrop((4, 0)), ValueError, r"size\[1\]"),
    (lambda: TrainCrop(8, crop="centre"), ValueError, "crop must be one of"),
    (lambda: TrainCrop(8, area=(0.0, 1.0)), ValueError, r"area\[0\]"),
    (lambda: TrainCrop(8, area=(0.5, 0.2)), ValueError, "area must satisfy"),
    (lambda: TrainCrop(8, area=(0.1, 1.5)), ValueError, r"area\[1\]"),
    (lambda: TrainCrop(8, ratio=(2.0, 1.0)), ValueError, "ratio"),
    (lambda: TrainCrop(8, ratio=1.0), ValueError, "ratio must be a pair"),
    (lambda: TrainCrop(8, pad=-1), ValueError, "pad must be >= 0, got -1"),
    (lambda: TrainCrop(8, pad=1.5), TypeError, "pad must be an int"),
    (lambda: TrainCrop(8, flip="yes"), TypeError, "flip must be a bool"),
    (lambda: TrainCrop(8, resize="cv2"), ValueError, "resize must be one of"),
    (lambda: EvalCrop(8, crop_fraction=0.0), ValueError, "crop_fraction"),
    (lambda: EvalCrop(8, crop_fraction=1.5), ValueError, "crop_fraction"),
    (lambda: EvalCrop(8, resize="bicubic"), ValueError, "resize must be one of"),
    (lambda: EvalCrop(-3), ValueError, "size"),
    (lambda: TrainCrop(8)(NOISE, np.random.RandomState(0)), TypeError, "rng must be"),
    (lambda: TrainCrop(8)(NOISE, None), TypeError, "rng must be"),
    (lambda: sample_inception_box(RNG, 0, 5), ValueError, "height"),
    (lambda: sample_inception_box(RNG, 5, 5, ratio=(0, 1)), ValueError, "ratio"),
    (lambda: sample_inception_box(0, 5, 5), TypeError, "rng must be"),
])  # fmt: skip
def test_bad_arguments_are_rejected_by_name(make, exc, match):
    with pytest.raises(exc, match=match):
        make()
