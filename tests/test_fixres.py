"""nsjax.fixres: shapes and dtypes, PIL agreement, crop boxes, determinism, the FixRes mask."""

import functools

import chex
import equinox as eqx
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import example, given, settings

from nsjax import fixres

SETTINGS = settings(deadline=None, max_examples=10)
METHODS = ("bicubic", "bilinear", "nearest")

# Jitted once per static configuration: eager runs of the resampler take seconds each.
resize = jax.jit(fixres.resize, static_argnames=("size", "method"))
center_crop_resize = jax.jit(
    fixres.center_crop_resize, static_argnames=("size", "crop_fraction", "method")
)
random_resized_crop = jax.jit(
    fixres.random_resized_crop, static_argnames=("size", "area", "ratio", "method")
)
KEY = jax.random.key(0)


def _op(name, images, size, method):
    """Run one of the three image ops by name (random crop with KEY)."""
    if name == "resize":
        return resize(images, size=size, method=method)
    if name == "center":
        return center_crop_resize(images, size=size, method=method)
    return random_resized_crop(KEY, images, size=size, method=method)


def _noise(shape, seed=0, dtype=np.uint8):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, shape).astype(dtype)


def _smooth(h, w):
    """A photo-like uint8 image: gradients, a periodic pattern and hard wrap-around edges."""
    y, x = np.mgrid[0:h, 0:w]
    img = np.stack([127 + 120 * np.sin(x / 7 + y / 11), 127 + 120 * np.cos(x / 5 - y / 9),
                    (3 * x + 2 * y) % 256], -1)  # fmt: skip
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


def _coordinates(b, h, w):
    """Float images whose channels 0 and 1 hold each pixel's row and column."""
    y, x = np.mgrid[0:h, 0:w]
    img = np.stack([y, x, np.zeros_like(y)], -1).astype(np.float32)
    return jnp.asarray(np.broadcast_to(img, (b, h, w, 3)))


def _boxes_seen(out):
    """(top, left, height, width) per image of a nearest-resampled `_coordinates` batch that
    was sampled at least once per source pixel (output at least as large as every box)."""
    out = np.asarray(out)
    top, left = out[..., 0].min((1, 2)), out[..., 1].min((1, 2))
    return top, left, out[..., 0].max((1, 2)) - top + 1, out[..., 1].max((1, 2)) - left + 1


# --------------------------------------------------------------------------- shapes and values


@SETTINGS
@given(
    op=st.sampled_from(["resize", "center", "random"]),
    b=st.integers(1, 2), h=st.integers(1, 8), w=st.integers(1, 8),
    oh=st.integers(1, 8), ow=st.integers(1, 8),
    dtype=st.sampled_from([np.uint8, np.float32]), method=st.sampled_from(METHODS),
    seed=st.integers(0, 2**16),
)  # fmt: skip
def test_shape_dtype_and_range(op, b, h, w, oh, ow, dtype, method, seed):
    images = _noise((b, h, w, 3), seed, dtype)
    out = _op(op, jnp.asarray(images), (oh, ow), method)
    chex.assert_shape(out, (b, oh, ow, 3))
    chex.assert_type(out, dtype)
    chex.assert_tree_all_finite(out)
    if method != "bicubic":  # convex combinations: no value leaves the input's range
        assert images.min() <= np.asarray(out).min() and np.asarray(out).max() <= images.max()


def test_uint8_saturates_instead_of_wrapping():
    # Bicubic overshoots at a 0/255 edge; uint8 must clip to 255 and 0, not wrap around.
    edge = np.zeros((1, 8, 8, 3), np.uint8)
    edge[:, :, 4:] = 255
    out = np.asarray(resize(jnp.asarray(edge), size=32, method="bicubic")).astype(int)
    row = out[0, 0, :, 0]
    assert np.all(np.diff(row) >= 0)  # clipped overshoot keeps the edge monotone
    assert row[0] == 0 and row[-1] == 255


@SETTINGS
@given(h=st.integers(1, 9), w=st.integers(1, 9), method=st.sampled_from(METHODS),
       seed=st.integers(0, 2**16))  # fmt: skip
def test_resize_to_same_size_is_identity(h, w, method, seed):
    images = _noise((2, h, w, 3), seed)
    np.testing.assert_array_equal(resize(jnp.asarray(images), size=(h, w), method=method), images)
    floats = jnp.asarray(images, jnp.float32) / 7.0
    chex.assert_trees_all_close(resize(floats, size=(h, w), method=method), floats, atol=1e-5)


@SETTINGS
@given(
    op=st.sampled_from(["resize", "center", "random"]), value=st.integers(0, 255),
    dtype=st.sampled_from([np.uint8, np.float32]), method=st.sampled_from(METHODS),
    shape=st.sampled_from([(1, 5, 7, 16, 11), (2, 9, 9, 4, 4), (2, 6, 3, 6, 3)]),
)  # fmt: skip
def test_constant_images_stay_constant(op, value, dtype, method, shape):
    b, h, w, oh, ow = shape
    images = jnp.full((b, h, w, 3), value, dtype)
    out = _op(op, images, (oh, ow), method)
    chex.assert_trees_all_close(out, jnp.full((b, oh, ow, 3), value, dtype), rtol=1e-6, atol=1e-4)


def test_bfloat16_in_bfloat16_out():
    images = jnp.asarray(_noise((2, 12, 10, 3)), jnp.bfloat16)
    out = resize(images, size=7)
    chex.assert_type(out, jnp.bfloat16)
    ref = resize(images.astype(jnp.float32), size=7)
    chex.assert_trees_all_close(out.astype(jnp.float32), ref, rtol=1e-2, atol=0.5)


class JitTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_jit_matches_eager(self):
        images = jnp.asarray(_noise((2, 10, 12, 3)), jnp.float32)
        ops = {
            "resize": lambda x: fixres.resize(x, (7, 5)),
            "center": lambda x: fixres.center_crop_resize(x, 6, method="bilinear"),
            "random": lambda x: fixres.random_resized_crop(jax.random.key(3), x, 9),
        }
        for name, fn in ops.items():
            with self.subTest(name):
                reference = jax.jit(fn)(images)
                chex.assert_trees_all_close(self.variant(fn)(images), reference, atol=1e-3)


# --------------------------------------------------------------------------- PIL agreement

# Measured (Pillow 13, noise and photo-like images): max |diff| <= 2 grey levels, mean <= 0.08
# (bilinear 256 -> 224 on noise; ties at .5 after a pass); bicubic mean <= 0.02.
PIL_CASES = [  # (h, w, out_h, out_w)
    (64, 64, 56, 56),  # mild downsampling, the FixRes 256 -> 224 ratio
    (96, 80, 24, 24),  # strong downsampling, non-square input
    (20, 24, 56, 64),  # upsampling
    (48, 40, 60, 50),  # upsampling, the FixRes 224 -> 288 direction
    (40, 40, 35, 30),  # the crop keeps its height (a slice) and resamples its width
]


@pytest.mark.parametrize("h, w, oh, ow", PIL_CASES)
@pytest.mark.parametrize("method, pil_filter", [("bicubic", 3), ("bilinear", 2)])
@pytest.mark.parametrize("crop", [False, True])
def test_matches_pil(h, w, oh, ow, method, pil_filter, crop):
    from PIL import Image  # pillow is a test dependency: a missing one must fail, not skip
    images = np.stack([_noise((h, w, 3), seed=h), _smooth(h, w)])
    if crop:
        side = int(0.875 * min(h, w))
        top, left = (h - side + 1) // 2, (w - side + 1) // 2
        box = (left, top, left + side, top + side)
        ours = center_crop_resize(jnp.asarray(images), size=(oh, ow), method=method)
    else:
        box = None
        ours = resize(jnp.asarray(images), size=(oh, ow), method=method)
    pil = np.stack([np.asarray(Image.fromarray(im).resize((ow, oh), pil_filter, box=box))
                    for im in images])  # fmt: skip
    diff = np.abs(np.asarray(ours).astype(int) - pil.astype(int))
    assert diff.max() <= 2, diff.max()
    assert diff.mean() < 0.1, diff.mean()


def test_nearest_picks_the_pixel_under_each_output_centre():
    # Output i reads floor((i + 0.5) * in / out) (PIL differs only at exact ties).
    h, w, oh, ow = 14, 9, 4, 22
    images = _noise((1, h, w, 3))
    rows, cols = (2 * np.arange(oh) + 1) * h // (2 * oh), (2 * np.arange(ow) + 1) * w // (2 * ow)
    out = resize(jnp.asarray(images), size=(oh, ow), method="nearest")
    np.testing.assert_array_equal(out, images[:, rows][:, :, cols])


# --------------------------------------------------------------------------- sparse taps


def _dense_weights(in_size, out_size, start, length, method):
    """jax.image's weight matrix `[out, in]`: the dense path resampling the identity's rows."""
    eye = jnp.eye(in_size, dtype=jnp.float32)[:, :, None]
    return np.asarray(fixres._resample_axis_dense(eye, 0, out_size, start, length,
                                                  method=method))[:, :, 0]


@settings(deadline=None, max_examples=8)
@given(
    in_size=st.integers(1, 40), out_size=st.integers(1, 40), method=st.sampled_from(METHODS[:2]),
    start_frac=st.floats(0, 1), length_frac=st.floats(0.01, 1), traced=st.booleans(),
)  # fmt: skip
def test_taps_are_the_nonzero_part_of_jax_images_weights(
    in_size, out_size, method, start_frac, length_frac, traced
):
    # Every output pixel's taps, scattered back into a matrix, give jax.image's dense weights:
    # no nonzero weight is missed (the tap count and the first tap), none is added, and the
    # renormalisation over the image is the same.
    length = max(1, round(length_frac * in_size))
    start = min(round(start_frac * in_size), in_size - length)
    count = fixres._tap_count(method, in_size if traced else length, out_size)
    if traced:  # a per-image box: float32 scalars, the count for the largest box
        index, weight = jax.jit(functools.partial(
            fixres._taps, in_size, out_size, method=method, count=count))(
            jnp.float32(start), jnp.float32(length))  # fmt: skip
    else:
        index, weight = fixres._taps(in_size, out_size, start, length, method=method, count=count)
    index, weight = np.asarray(index), np.asarray(weight)
    assert index.shape == weight.shape == (out_size, count)
    assert index.dtype == np.int32 and weight.dtype == np.float32
    assert index.min() >= 0 and index.max() < in_size
    rebuilt = np.zeros((out_size, in_size), np.float64)
    np.add.at(rebuilt, (np.arange(out_size)[:, None], index), weight)
    np.testing.assert_allclose(rebuilt, _dense_weights(in_size, out_size, start, length, method),
                               atol=2e-5)


def _per_image_boxes(key, b, h, w):
    center = fixres._center_box(h, w, 0.875)
    return fixres._sample_boxes(key, b, h, w, (0.05, 1.0), (0.5, 2.0), center)


@settings(deadline=None, max_examples=6)
@given(
    h=st.integers(2, 48), w=st.integers(2, 48), oh=st.integers(1, 48), ow=st.integers(1, 48),
    method=st.sampled_from(METHODS[:2]), box=st.sampled_from(["whole", "center", "per-image"]),
    dtype=st.sampled_from([np.float32, np.uint8]), seed=st.integers(0, 2**16),
)  # fmt: skip
# An output centre on a whole pixel (3 -> 41: column 20 samples pixel 2 exactly): with the
# first tap floored in float32, XLA rounded the indices' and the weights' copies of the centre
# differently and shifted the weights by one pixel (a 99-level error, found by this test).
@example(h=4, w=4, oh=1, ow=41, method="bicubic", box="center", dtype=np.float32, seed=0)
def test_sparse_resampling_equals_the_dense_contraction(h, w, oh, ow, method, box, dtype, seed):
    # The CPU/GPU path (taps) against the TPU path (jax.image's dense matrices), the one that
    # resampled everywhere before: float images to float32 rounding; uint8 images differ only
    # where the two summation orders round a value at a tie (x.5) apart, by one level.
    boxes = {"whole": (0, 0, h, w), "center": fixres._center_box(h, w, 0.875),
             "per-image": _per_image_boxes(jax.random.key(seed), 3, h, w)}[box]  # fmt: skip
    kwargs = dict(boxes=boxes, size=(oh, ow), method=method)
    images = jnp.asarray(_noise((3, h, w, 3), seed=seed, dtype=dtype))
    sparse = np.asarray(jax.jit(functools.partial(fixres._sparse_crop_resize, **kwargs))(images))
    dense = np.asarray(jax.jit(functools.partial(fixres._dense_crop_resize, **kwargs))(images))
    assert sparse.dtype == dense.dtype == dtype and sparse.shape == dense.shape == (3, oh, ow, 3)
    diff = np.abs(sparse.astype(np.float64) - dense)
    if dtype == np.uint8:  # ties are common in small outputs (one row of bilinear halves: 5%)
        assert diff.max() <= 1 and diff.mean() < 0.1, (diff.max(), diff.mean())
    else:
        assert diff.max() < 2e-3, diff.max()


def test_sparse_resampling_of_a_256_batch_matches_the_dense_one_at_fixres_sizes():
    # The benchmark's case, 256 -> 224, whole image and per-image boxes, plus 224 -> 288.
    images = jnp.asarray(_noise((4, 256, 256, 3), seed=3))
    for boxes, size in [((0, 0, 256, 256), (224, 224)), ((16, 16, 224, 224), (288, 288)),
                        (_per_image_boxes(KEY, 4, 256, 256), (224, 224))]:  # fmt: skip
        kwargs = dict(boxes=boxes, size=size, method="bicubic")
        sparse = jax.jit(functools.partial(fixres._sparse_crop_resize, **kwargs))(images)
        dense = jax.jit(functools.partial(fixres._dense_crop_resize, **kwargs))(images)
        diff = np.abs(np.asarray(sparse).astype(int) - np.asarray(dense))
        assert diff.max() <= 1 and (diff > 0).mean() < 1e-3, (diff.max(), (diff > 0).mean())


def test_materialized_is_f_of_x_under_jit_and_eagerly():
    f = lambda x: (x * 2, x.sum())  # noqa: E731  (a tuple result, as for the taps)
    for x in (jnp.arange(6.0).reshape(2, 3), jnp.zeros((0, 3))):
        for g in (functools.partial(fixres._materialized, f), jax.jit(
                lambda x: fixres._materialized(f, x))):  # fmt: skip
            got = g(x)
            chex.assert_trees_all_equal(got, f(x))


# --------------------------------------------------------------------------- crops


@pytest.mark.parametrize(
    "h, w, fraction", [(16, 16, 0.875), (17, 23, 0.875), (20, 11, 0.5), (5, 5, 1.0)]
)
def test_center_crop_box_follows_the_reference_rule(h, w, fraction):
    side = int(fraction * min(h, w))
    top, left = (h - side + 1) // 2, (w - side + 1) // 2
    images = _noise((2, h, w, 3))
    out = center_crop_resize(jnp.asarray(images), size=side, crop_fraction=fraction,
                             method="nearest")  # fmt: skip
    np.testing.assert_array_equal(out, images[:, top:top + side, left:left + side])


def test_random_crop_is_deterministic_per_key_and_varies():
    images = jnp.asarray(np.broadcast_to(_smooth(24, 32), (8, 24, 32, 3)))
    a = random_resized_crop(jax.random.key(1), images, size=12)
    np.testing.assert_array_equal(a, random_resized_crop(jax.random.key(1), images, size=12))
    b = random_resized_crop(jax.random.key(2), images, size=12)
    assert not np.array_equal(a, b)
    # The images are identical, so distinct outputs mean distinct boxes.
    assert len({np.asarray(x).tobytes() for x in a}) == a.shape[0]


@pytest.mark.parametrize("area, ratio", [((0.08, 1.0), (3 / 4, 4 / 3)), ((0.3, 0.5), (0.5, 2.0)),
                                         ((0.5, 0.75), (1.0, 1.0))])  # fmt: skip
def test_random_boxes_respect_area_ratio_and_bounds(area, ratio):
    b, h, w = 256, 30, 40
    out = random_resized_crop(jax.random.key(7), _coordinates(b, h, w), size=(h, w), area=area,
                              ratio=ratio, method="nearest")  # fmt: skip
    top, left, bh, bw = _boxes_seen(out)
    frac = bh * bw / (h * w)
    assert np.all(frac >= area[0] - 1e-6) and np.all(frac <= area[1] + 1e-6)
    # width = round(height * ratio): the ratio is off by at most half a pixel of width.
    assert np.all(bw / bh >= ratio[0] - 0.5 / bh) and np.all(bw / bh <= ratio[1] + 0.5 / bh)
    assert len(set(zip(top, left, bh, bw))) > b // 2  # boxes vary across the batch
    inner = (bh < h) & (bw < w)  # offsets of boxes that can move reach both edges
    assert (top[inner] == 0).any() and (top + bh == h)[inner].any()
    assert (left[inner] == 0).any() and (left + bw == w)[inner].any()


def test_random_crop_of_whole_square_image_is_a_plain_resize():
    images = jnp.asarray(_noise((3, 12, 12, 3)))
    crop = functools.partial(random_resized_crop, KEY, size=7, area=(1.0, 1.0), ratio=(1.0, 1.0))
    np.testing.assert_array_equal(crop(images), resize(images, size=7))
    floats = images.astype(jnp.float32)  # per-image weights vs shared ones: rounding only
    chex.assert_trees_all_close(crop(floats), resize(floats, size=7), rtol=1e-5)
    # At the same size, the traced-box resampler is the identity too.
    same = functools.partial(random_resized_crop, KEY, size=12, area=(1.0, 1.0), ratio=(1.0, 1.0))
    np.testing.assert_array_equal(same(images), images)
    chex.assert_trees_all_close(same(floats), floats, atol=1e-4)


@pytest.mark.parametrize("side, area, ratio", [
    (16, (1.0, 1.0), (2.0, 2.0)),  # no 2:1 box covers the whole of a square image
    (10, (0.5, 0.5), (1.0, 1.0)),  # no integer square has area 50
])  # fmt: skip
def test_random_crop_falls_back_to_the_center_crop(side, area, ratio):
    images = jnp.asarray(_noise((3, side, side, 3)))
    got = random_resized_crop(KEY, images, size=8, area=area, ratio=ratio)
    np.testing.assert_array_equal(got, center_crop_resize(images, size=8))


# --------------------------------------------------------------------------- bad input

GOOD = jnp.zeros((2, 8, 8, 3), jnp.uint8)


@pytest.mark.parametrize("call, exc, match", [
    (lambda: fixres.resize(jnp.zeros((8, 8, 3), jnp.uint8), 4), ValueError, "images"),
    (lambda: fixres.resize(jnp.zeros((2, 8, 8, 1), jnp.uint8), 4), ValueError, "images"),
    (lambda: fixres.resize(jnp.zeros((2, 0, 8, 3), jnp.uint8), 4), ValueError, "images"),
    (lambda: fixres.resize(jnp.zeros((2, 8, 8, 3), jnp.int32), 4), TypeError, "images"),
    (lambda: fixres.resize(GOOD, 0), ValueError, "size"),
    (lambda: fixres.resize(GOOD, 2.5), TypeError, "size"),
    (lambda: fixres.resize(GOOD, True), TypeError, "size"),
    (lambda: fixres.resize(GOOD, (4, 4, 4)), ValueError, "size"),
    (lambda: fixres.resize(GOOD, (4, -1)), ValueError, r"size\[1\]"),
    (lambda: fixres.resize(GOOD, 4, method="lanczos3"), ValueError, "method"),
    (lambda: fixres.center_crop_resize(GOOD, 4, crop_fraction=0.0), ValueError, "crop_fraction"),
    (lambda: fixres.center_crop_resize(GOOD, 4, crop_fraction=1.5), ValueError, "crop_fraction"),
    (lambda: fixres.center_crop_resize(GOOD, 4, crop_fraction="a"), TypeError, "crop_fraction"),
    (lambda: fixres.center_crop_resize(GOOD, 4, method="cubic"), ValueError, "method"),
    (lambda: fixres.random_resized_crop(KEY, jnp.zeros((2, 8, 8)), 4), ValueError, "images"),
    (lambda: fixres.random_resized_crop(KEY, GOOD, 0), ValueError, "size"),
    (lambda: fixres.random_resized_crop(KEY, GOOD, 4, area=(0.0, 1.0)), ValueError, "area"),
    (lambda: fixres.random_resized_crop(KEY, GOOD, 4, area=(0.5, 0.2)), ValueError, "area"),
    (lambda: fixres.random_resized_crop(KEY, GOOD, 4, area=(0.1, 1.5)), ValueError, "area"),
    (lambda: fixres.random_resized_crop(KEY, GOOD, 4, area=0.5), ValueError, "area"),
    (lambda: fixres.random_resized_crop(KEY, GOOD, 4, area=("a", 1)), TypeError, "area"),
    (lambda: fixres.random_resized_crop(KEY, GOOD, 4, ratio=(0.0, 1.0)), ValueError, "ratio"),
    (lambda: fixres.random_resized_crop(KEY, GOOD, 4, ratio=(2.0, 1.0)), ValueError, "ratio"),
    (lambda: fixres.random_resized_crop(KEY, GOOD, 4, ratio=(1, np.inf)), ValueError, "ratio"),
    (lambda: fixres.random_resized_crop(KEY, GOOD, 4, method="area"), ValueError, "method"),
    (lambda: fixres.random_resized_crop(None, GOOD, 4), TypeError, "key must be a jax.random key"),
    (lambda: fixres.random_resized_crop(KEY, GOOD, 4, area=(0.1, np.nan)), ValueError, r"area\[1\]"),
])  # fmt: skip
def test_bad_input_is_rejected_by_name(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_empty_batch_gives_empty_result_and_numpy_numbers_are_accepted():
    empty = jnp.zeros((0, 9, 7, 3), jnp.uint8)
    for out in (fixres.resize(empty, 4), fixres.center_crop_resize(empty, 4),
                fixres.random_resized_crop(KEY, empty, 4)):
        chex.assert_shape(out, (0, 4, 4, 3))
        chex.assert_type(out, jnp.uint8)
    a = fixres.random_resized_crop(KEY, GOOD, 4, area=(np.float32(0.25), np.asarray(1.0)))
    b = fixres.random_resized_crop(KEY, GOOD, 4, area=(0.25, 1.0))
    np.testing.assert_array_equal(a, b)




# --------------------------------------------------------------------------- fixres_trainable


class _Net(eqx.Module):
    """Stem conv, two conv blocks, BatchNorm, linear head: the shape of an EfficientNet."""

    stem: eqx.nn.Conv2d
    blocks: list
    bn: eqx.nn.BatchNorm
    head: eqx.nn.Linear

    def __init__(self, key):
        k = jax.random.split(key, 4)
        self.stem = eqx.nn.Conv2d(3, 4, 3, padding=1, key=k[0])
        self.blocks = [eqx.nn.Conv2d(4, 4, 3, padding=1, key=k[i]) for i in (1, 2)]
        self.bn = eqx.nn.BatchNorm(4, "batch", mode="batch")
        self.head = eqx.nn.Linear(4, 2, key=k[3])

    def __call__(self, x, state):
        x = self.stem(x)
        for block in self.blocks:
            x = jax.nn.relu(block(x))
        x, state = self.bn(x, state)
        return self.head(x.mean((1, 2))), state


FREEZE = [r"^\.stem\.", r"^\.blocks\[0\]\."]


@pytest.fixture(scope="module")
def net():
    return eqx.nn.make_with_state(_Net)(jax.random.key(0))


def test_mask_marks_frozen_and_trainable_leaves(net):
    model, _ = net
    params = eqx.filter(model, eqx.is_inexact_array)
    mask = fixres.fixres_trainable(params, freeze=FREEZE)
    assert jax.tree.structure(mask) == jax.tree.structure(params)
    got = {jax.tree_util.keystr(p): v for p, v in jax.tree_util.tree_leaves_with_path(mask)}
    assert got == {
        ".stem.weight": False, ".stem.bias": False,
        ".blocks[0].weight": False, ".blocks[0].bias": False,
        ".blocks[1].weight": True, ".blocks[1].bias": True,
        ".bn.weight": True, ".bn.bias": True, ".head.weight": True, ".head.bias": True,
    }  # fmt: skip
    # A callable and a ShapeDtypeStruct skeleton give the same mask.
    def frozen(path):
        return path.startswith((".stem.", ".blocks[0]."))

    assert fixres.fixres_trainable(params, freeze=frozen) == mask
    assert fixres.fixres_trainable(jax.eval_shape(lambda: params), freeze=FREEZE) == mask


def test_mask_is_false_on_non_array_leaves_and_covers_state(net):
    model, state = net
    full = fixres.fixres_trainable(model, freeze=FREEZE)  # unfiltered: BN's axis_name, inference
    assert full.bn.axis_name is False and full.bn.inference is False and full.head.weight is True
    state_mask = fixres.fixres_trainable(state, freeze=[])
    assert jax.tree.structure(state_mask) == jax.tree.structure(state)
    assert all(jax.tree.leaves(state_mask))


def test_one_step_moves_only_trainable_leaves(net):
    model, state = net
    params, static = eqx.partition(model, eqx.is_inexact_array)
    mask = fixres.fixres_trainable(params, freeze=FREEZE)
    # An Equinox-shaped mask is itself a (callable) Module: hand it to optax behind a lambda.
    opt = optax.multi_transform({True: optax.sgd(0.1), False: optax.set_to_zero()}, lambda _: mask)
    opt_state = opt.init(params)

    def loss(params, state, x):
        m = eqx.combine(params, static)
        batched = jax.vmap(m, axis_name="batch", in_axes=(0, None), out_axes=(0, None))
        logits, state = batched(x, state)
        return jnp.mean(logits**2), state

    x = jax.random.normal(jax.random.key(1), (4, 3, 6, 6))
    grads, _ = jax.jit(jax.grad(loss, has_aux=True))(params, state, x)
    updates, _ = opt.update(grads, opt_state, params)
    new = eqx.apply_updates(params, updates)
    for trainable, old, moved in zip(jax.tree.leaves(mask), jax.tree.leaves(params),
                                     jax.tree.leaves(new)):  # fmt: skip
        assert np.array_equal(old, moved) != trainable


@pytest.mark.parametrize("freeze, exc, match", [
    ([r"^\.stme\."], ValueError, "freeze"),  # a typo matches nothing
    (["blocks[0"], ValueError, "freeze"),  # not a regular expression
    (3, TypeError, "freeze"),
    ([r"^\.stem", 3], TypeError, "freeze"),
])  # fmt: skip
def test_bad_freeze_is_rejected(net, freeze, exc, match):
    params = eqx.filter(net[0], eqx.is_inexact_array)
    with pytest.raises(exc, match=match):
        fixres.fixres_trainable(params, freeze=freeze)


def test_single_pattern_string_is_one_pattern(net):
    params = eqx.filter(net[0], eqx.is_inexact_array)
    mask = fixres.fixres_trainable(params, freeze=r"^\.head\.")
    assert mask.head.weight is False and mask.stem.weight is True

