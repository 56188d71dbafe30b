"""nsjax.noise.ops: every RandAugment op against PIL (the default, exact) and against a NumPy
transcription of the TensorFlow reference (`tf_compat=True`, exact), plus how far the TF
arithmetic lies from PIL's."""

import math

import chex
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from PIL import Image, ImageEnhance, ImageFilter, ImageOps

from nsjax.noise import _image, _pil_geometry, _tf_geometry, ops
from tests.noise_images import make_images

SETTINGS = settings(deadline=None, max_examples=10)
F32 = np.float32
FACTORS = (0.0, 0.1, 0.5, 1.0, 1.9, 3.3, 4.96, 5.14)  # 1.8 L + 0.1 for M = 0, 5, 10, 27, 28


IMAGES = make_images(0, 6)


def pil_each(images: np.ndarray, fn) -> np.ndarray:
    return np.stack([np.asarray(fn(Image.fromarray(a))) for a in images])


def diff(a, b) -> np.ndarray:
    return np.abs(np.asarray(a, np.int32) - np.asarray(b, np.int32))


# --------------------------------------------------------------------------- TF transcriptions
# NumPy float32 evaluates one operation at a time, as TF1 did (no fused multiply-add).


def tf_blend(degenerate, image, factor) -> np.ndarray:
    d, x, f = np.asarray(degenerate, F32), np.asarray(image, F32), F32(factor)
    return np.clip(d + f * (x - d), 0, 255).astype(np.uint8)


def tf_gray(x) -> np.ndarray:
    u = np.asarray(x, F32) * F32(1.0 / 255.0)
    w = np.asarray([0.2989, 0.5870, 0.1140], F32)
    total = (u[..., 0] * w[0] + u[..., 1] * w[1]) + u[..., 2] * w[2]
    return (total * F32(255.5)).astype(np.uint8)


def tf_autocontrast(image) -> np.ndarray:
    out = np.empty_like(image)
    for c in range(3):
        ch = image[..., c]
        lo, hi = F32(ch.min()), F32(ch.max())
        if hi > lo:
            scale = F32(255.0) / (hi - lo)
            offset = -lo * scale
            out[..., c] = np.clip(ch.astype(F32) * scale + offset, 0, 255).astype(np.uint8)
        else:
            out[..., c] = ch
    return out


def tf_equalize(image) -> np.ndarray:
    out = np.empty_like(image)
    for c in range(3):
        ch = image[..., c]
        hist = np.bincount(ch.ravel(), minlength=256)
        nonzero = hist[hist > 0]
        step = (nonzero.sum() - nonzero[-1]) // 255
        if step == 0:
            out[..., c] = ch
            continue
        lut = (np.cumsum(hist) + step // 2) // step
        lut = np.clip(np.concatenate([[0], lut[:-1]]), 0, 255)
        out[..., c] = lut[ch]
    return out


def tf_posterize(image, bits: int, tf_compat: bool) -> np.ndarray:
    shift = min((8 - bits) % 256, 7) if tf_compat else min(max(8 - bits, 0), 8)
    return ((image.astype(np.int64) >> shift) << shift).astype(np.uint8)


def tf_solarize(image, threshold: int, tf_compat: bool) -> np.ndarray:
    t = threshold % 256 if tf_compat else threshold
    return np.where(image.astype(np.int64) < t, image, 255 - image).astype(np.uint8)


def tf_solarize_add(image, addition: int, threshold: int = 128) -> np.ndarray:
    added = np.clip(image.astype(np.int64) + addition, 0, 255).astype(np.uint8)
    return np.where(image.astype(np.int64) < threshold, added, image)


def smooth_sum(image) -> np.ndarray:
    """3x3 sums with the [[1,1,1],[1,5,1],[1,1,1]] kernel over the valid interior (int)."""
    x = image.astype(np.int64)
    h, w = x.shape[:2]
    total = 4 * x[1:-1, 1:-1]
    for dy in range(3):
        for dx in range(3):
            total = total + x[dy:dy + h - 2, dx:dx + w - 2]
    return total


def tf_smooth(image) -> np.ndarray:
    out = image.copy()
    out[1:-1, 1:-1] = smooth_sum(image) // 13
    return out


def tf_contrast_degenerate(image) -> int:
    """The reference's "mean": sum(histogram) / 256, clipped to 255 and truncated."""
    h, w = image.shape[:2]
    return int(min(255.0, float(F32(h * w)) / 256.0))


def tf_round(v) -> np.ndarray:
    """std::round: half away from zero."""
    return np.where(v >= 0, np.floor(v + F32(0.5)), -np.floor(-v + F32(0.5)))


def tf_transform(image, matrix, fill: int) -> np.ndarray:
    """TF ImageProjectiveTransform, NEAREST, with wrap/unwrap fill (float32 coordinates)."""
    h, w = image.shape[:2]
    (a, b, c), (d, e, f) = np.asarray(matrix, F32)
    ys, xs = np.mgrid[:h, :w].astype(F32)
    sx = (a * xs + b * ys) + c
    sy = (d * xs + e * ys) + f
    ix, iy = tf_round(sx).astype(np.int64), tf_round(sy).astype(np.int64)
    inside = (ix >= 0) & (ix < w) & (iy >= 0) & (iy < h)
    out = np.full_like(image, fill)
    out[inside] = image[iy[inside], ix[inside]]
    return out


def per_image(fn, images, *params) -> np.ndarray:
    return np.stack([fn(x, *[p[i] for p in params]) for i, x in enumerate(images)])


# --------------------------------------------------------------------------- exact vs TF


def test_point_ops_equal_tf_transcription():
    x = IMAGES
    np.testing.assert_array_equal(ops.invert(x), 255 - x)
    np.testing.assert_array_equal(ops.auto_contrast(x, tf_compat=True),
                                  per_image(tf_autocontrast, x))
    np.testing.assert_array_equal(ops.equalize(x), per_image(tf_equalize, x))
    bits = np.asarray([0, 1, 4, 7, 8, 10])
    thresholds = np.asarray([0, 1, 128, 179, 256, 691])
    additions = np.asarray([0, 55, 110, 297, -30, 300])
    for compat in (False, True):
        want = per_image(lambda im, b, c=compat: tf_posterize(im, int(b), c), x, bits)
        np.testing.assert_array_equal(ops.posterize(x, bits, tf_compat=compat), want)
        want = per_image(lambda im, t, c=compat: tf_solarize(im, int(t), c), x, thresholds)
        np.testing.assert_array_equal(ops.solarize(x, thresholds, tf_compat=compat), want)
    want = per_image(lambda im, a: tf_solarize_add(im, int(a)), x, additions)
    np.testing.assert_array_equal(ops.solarize_add(x, additions), want)


@pytest.mark.parametrize("factor", FACTORS)
def test_enhance_ops_equal_tf_transcription(factor):
    x = IMAGES
    np.testing.assert_array_equal(ops.brightness(x, factor), tf_blend(0, x, factor))
    want = per_image(lambda im: tf_blend(tf_gray(im)[..., None], im, factor), x)
    np.testing.assert_array_equal(ops.color(x, factor, tf_compat=True), want)
    np.testing.assert_array_equal(ops.sharpness(x, factor, tf_compat=True),
                                  per_image(lambda im: tf_blend(tf_smooth(im), im, factor), x))
    want = per_image(lambda im: tf_blend(tf_contrast_degenerate(im), im, factor), x)
    np.testing.assert_array_equal(ops.contrast(x, factor, tf_compat=True), want)


def test_factor_zero_is_degenerate_and_one_is_identity():
    x = IMAGES
    for compat in (False, True):
        for fn in (ops.color, ops.contrast, ops.sharpness):
            np.testing.assert_array_equal(fn(x, 1.0, tf_compat=compat), x)
    np.testing.assert_array_equal(ops.brightness(x, 1.0), x)
    np.testing.assert_array_equal(ops.brightness(x, 0.0), np.zeros_like(x))
    np.testing.assert_array_equal(ops.color(x, 0.0, tf_compat=True),
                                  np.repeat(tf_gray(x)[..., None], 3, -1))


def test_grayscale_of_every_colour_equals_pil_and_tf():
    v = np.arange(256, dtype=np.uint8)
    colours = np.stack(np.meshgrid(v, v, v, indexing="ij"), -1).reshape(1, 4096, 4096, 3)
    pil = np.asarray(Image.fromarray(colours[0]).convert("L")).astype(np.int32)
    got = np.asarray(_image.grayscale(jnp.asarray(colours), tf_compat=False))[0]
    np.testing.assert_array_equal(got, pil)
    got_tf = np.asarray(_image.grayscale(jnp.asarray(colours), tf_compat=True))[0]
    np.testing.assert_array_equal(got_tf, tf_gray(colours[0]))
    below = pil - got_tf
    assert below.min() == 0 and below.max() == 1  # TF weights + truncation vs PIL's rounding
    assert 0.2 < below.mean() < 0.3  # 26% of all colours


@pytest.mark.parametrize("seed", [0, 1])
def test_geometric_ops_equal_tf_transcription(seed):
    x = make_images(seed, 6)
    rng = np.random.default_rng(seed)
    b, h, w = x.shape[:3]
    cases = [
        (ops.shear_x, _tf_geometry.shear_x, rng.choice([0.15, -0.3, 0.81, -0.84, 0.5], b)),
        (ops.shear_y, _tf_geometry.shear_y, rng.choice([0.15, -0.3, 0.81, -0.84, 0.5], b)),
        (ops.translate_x, lambda p: _tf_geometry.translate_x(p, w),
         rng.choice([4.0, -13.5, 50.0, 270.0, 0.3], b)),
        (ops.translate_y, lambda p: _tf_geometry.translate_y(p, h),
         rng.choice([4.0, -13.5, 50.0, -2.5, 0.7], b)),
        (ops.rotate, lambda d: _tf_geometry.rotation(d, h, w),
         rng.choice([15.0, -30.0, 45.0, 81.0, -84.0, 90.0, 7.3], b)),
    ]
    for fn, matrices, values in cases:
        values = values.astype(F32)
        m = np.asarray(matrices(jnp.asarray(values)))
        want = np.stack([tf_transform(x[i], m[i], 77) for i in range(b)])
        np.testing.assert_array_equal(fn(x, values, fill=77, tf_compat=True), want)


def test_rotation_matrices_follow_tf_formula():
    degrees = np.asarray([0.0, 15.0, -30.0, 81.0, -84.0, 90.0], F32)
    h, w = 32, 40
    m = np.asarray(_tf_geometry.rotation(jnp.asarray(degrees), h, w))
    radians = degrees * F32(math.pi / 180.0)
    cos, sin = np.cos(radians, dtype=F32), np.sin(radians, dtype=F32)
    np.testing.assert_allclose(m[:, 0, 0], cos, atol=1e-7)
    np.testing.assert_allclose(m[:, 1, 0], sin, atol=1e-7)
    np.testing.assert_array_equal(m[:, 0, 1], -m[:, 1, 0])
    c, s = m[:, 0, 0], m[:, 1, 0]  # exact offsets given the same cos and sin
    x_off = (F32(w - 1) - (c * F32(w - 1) - s * F32(h - 1))) / F32(2)
    y_off = (F32(h - 1) - (s * F32(w - 1) + c * F32(h - 1))) / F32(2)
    np.testing.assert_array_equal(m[:, 0, 2], x_off)
    np.testing.assert_array_equal(m[:, 1, 2], y_off)
    np.testing.assert_array_equal(ops.rotate(IMAGES, 0.0, tf_compat=True), IMAGES)


def test_cutout_fills_the_clipped_square():
    x = IMAGES
    centers = np.asarray([[0, 0], [5, 7], [31, 39], [16, 20], [10, 10], [3, 30]])
    half = np.asarray([3, 0, 5, 40, 1, 2])
    got = np.asarray(ops.cutout(x, centers, half, fill=9))
    for i, ((cy, cx), p) in enumerate(zip(centers, half)):
        want = x[i].copy()
        want[max(0, cy - p):min(32, cy + p), max(0, cx - p):min(40, cx + p)] = 9
        np.testing.assert_array_equal(got[i], want)
    np.testing.assert_array_equal(ops.cutout(x, (4, 4), 2), ops.cutout(x, np.full((6, 2), 4), 2))


# --------------------------------------------------------------------------- default == PIL


def test_point_ops_match_pil_exactly():
    x = IMAGES
    np.testing.assert_array_equal(ops.invert(x), pil_each(x, ImageOps.invert))
    np.testing.assert_array_equal(ops.equalize(x), pil_each(x, ImageOps.equalize))
    np.testing.assert_array_equal(ops.auto_contrast(x), pil_each(x, ImageOps.autocontrast))
    for bits in range(1, 9):
        np.testing.assert_array_equal(ops.posterize(x, bits),
                                      pil_each(x, lambda im: ImageOps.posterize(im, bits)))
    for t in (0, 1, 100, 128, 255, 256):
        np.testing.assert_array_equal(ops.solarize(x, t),
                                      pil_each(x, lambda im: ImageOps.solarize(im, t)))


def pil_autocontrast_table(lo: int, hi: int) -> np.ndarray:
    """ImageOps.autocontrast's table for one channel, transcribed (Python floats)."""
    scale = 255.0 / (hi - lo)
    offset = -lo * scale
    return np.asarray([min(255, max(0, int(v * scale + offset))) for v in range(256)])


def test_auto_contrast_tables_equal_pil_for_every_channel_range():
    lo, hi = np.triu_indices(256, 1)
    got = np.asarray(_image.pil_autocontrast_luts(jnp.asarray(lo), jnp.asarray(hi)))
    scale = 255.0 / (hi - lo).astype(np.float64)  # PIL's expression, vectorised in float64
    want = np.clip(np.trunc(np.arange(256) * scale[:, None] + (-lo * scale)[:, None]), 0, 255)
    np.testing.assert_array_equal(got, want)
    for pair in (0, 24, 1000, 32639):  # the vectorised form is PIL's own Python loop
        np.testing.assert_array_equal(got[pair], pil_autocontrast_table(lo[pair], hi[pair]))
    assert (got != np.clip(((np.arange(256) - lo[:, None]) * 255) // (hi - lo)[:, None],
                           0, 255)).sum() == 12094  # where float64 lands below a whole number
    same = np.asarray(_image.pil_autocontrast_luts(jnp.arange(256), jnp.arange(256)))
    np.testing.assert_array_equal(same, np.broadcast_to(np.arange(256), (256, 256)))


def test_auto_contrast_reproduces_pil_float64_misses():
    # Range [0, 25]: PIL maps 25 to int(25 * 10.2) = int(254.99999999999997) = 254.
    x = np.broadcast_to(np.arange(26, dtype=np.uint8)[None, :, None, None], (1, 26, 4, 3))
    got = np.asarray(ops.auto_contrast(x))
    np.testing.assert_array_equal(got, pil_each(x, ImageOps.autocontrast))
    assert got.max() == 254


@pytest.mark.parametrize("factor", FACTORS)
def test_enhance_ops_match_pil_exactly(factor):
    x = IMAGES
    for fn, enhancer in ((ops.brightness, ImageEnhance.Brightness),
                         (ops.color, ImageEnhance.Color), (ops.contrast, ImageEnhance.Contrast),
                         (ops.sharpness, ImageEnhance.Sharpness)):
        want = pil_each(x, lambda im, e=enhancer: e(im).enhance(float(F32(factor))))
        np.testing.assert_array_equal(fn(x, factor), want, err_msg=fn.__name__)


def test_smooth_rounds_as_pil_and_truncates_with_tf_compat():
    x = IMAGES
    pil = pil_each(x, lambda im: im.filter(ImageFilter.SMOOTH))
    np.testing.assert_array_equal(_image.smooth(jnp.asarray(x), tf_compat=False), pil)
    got_tf = np.asarray(_image.smooth(jnp.asarray(x), tf_compat=True))
    for i in range(len(x)):
        for c in range(3):
            s = smooth_sum(x[i, ..., c])
            np.testing.assert_array_equal(got_tf[i, 1:-1, 1:-1, c], s // 13)
            np.testing.assert_array_equal(pil[i, 1:-1, 1:-1, c], (s + 6) // 13)
    np.testing.assert_array_equal(got_tf[:, 0], pil[:, 0])  # both keep the border
    np.testing.assert_array_equal(got_tf[:, :, -1], pil[:, :, -1])


def pil_transform(image, data, fill) -> np.ndarray:
    im = Image.fromarray(image).transform((image.shape[1], image.shape[0]), Image.AFFINE, data,
                                          resample=Image.NEAREST, fillcolor=(fill,) * 3)
    return np.asarray(im)


def pil_rotate(image, degrees, fill) -> np.ndarray:
    return np.asarray(Image.fromarray(image).rotate(degrees, resample=Image.NEAREST,
                                                    fillcolor=(fill,) * 3))


@pytest.mark.parametrize("height,width", [(224, 224), (32, 40), (331, 300), (1, 1), (4096, 7)])
def test_rotation_coefficients_equal_pil(height, width):
    rng = np.random.default_rng(height)
    degrees = np.concatenate([rng.uniform(-400, 400, 3000), np.arange(-360, 361, 0.5),
                              rng.normal(0, 1e-3, 100), [1e-30, -1e-30, 1e6, -3e7, 359.99997]])
    degrees = degrees.astype(F32)
    got = np.asarray(_pil_geometry.rotation(jnp.asarray(degrees), height, width))
    np.testing.assert_array_equal(got, _pil_geometry.rotation_on_host(degrees, height, width))


def test_host_rotation_coefficients_give_pils_pixels():
    # rotation_on_host transcribes Pillow's formula; check it against Pillow's own pixels.
    x = make_images(4, 1, 37, 52)
    degrees = np.asarray([8.1, -30.0, 44.999996, 81.0, 200.5, -123.25], F32)
    m = _pil_geometry.rotation_on_host(degrees, 37, 52)
    assert m.shape == (6, 2, 3) and m.dtype == np.int32
    for d, coefficients in zip(degrees, m):
        got = np.asarray(_image.warp(jnp.asarray(x), jnp.asarray(coefficients[None]), 7))[0]
        np.testing.assert_array_equal(got, pil_rotate(x[0], float(d), 7))


def coordinate_image(height: int, width: int) -> np.ndarray:
    """R = column, G = row, B = 0: a warped pixel names its source; the fill is (255,)*3."""
    yy, xx = np.mgrid[:height, :width]
    return np.stack([xx, yy, np.zeros_like(xx)], -1).astype(np.uint8)[None]


@pytest.mark.parametrize("height,width", [(224, 224), (32, 40), (40, 32)])
def test_rotate_matches_pil_exactly(height, width):
    x = coordinate_image(height, width)
    degrees = np.asarray([s * 3.0 * m for m in range(31) for s in (1, -1)]  # M = 0..30
                         + [45.0, 90.0, -90.0, 180.0, 270.0, 360.0, 1e-20, 7.3, 123.456], F32)
    got = np.asarray(ops.rotate(np.repeat(x, len(degrees), 0), degrees, fill=255))
    want = np.stack([pil_rotate(x[0], float(d), 255) for d in degrees])
    np.testing.assert_array_equal(got, want)


def test_shear_and_translate_match_pil_exactly():
    x = coordinate_image(32, 40)
    shears = np.asarray([s * 0.3 * m / 10 for m in (1, 5, 10, 27, 28) for s in (1, -1)]
                        + [k / 64 for k in range(-60, 61, 7)] + [1e-9, 3.0, -7.5, 1e4], F32)
    pixels = np.asarray([-50.0, -4.5, -4.0, -0.5, 0.0, 0.49999997, 0.5, 3.0, 13.5, 270.0,
                         2.5e9], F32)
    cases = [
        (ops.shear_x, shears, lambda v: (1, v, 0, 0, 1, 0)),
        (ops.shear_y, shears, lambda v: (1, 0, 0, v, 1, 0)),
        (ops.translate_x, pixels, lambda v: (1, 0, v, 0, 1, 0)),
        (ops.translate_y, pixels, lambda v: (1, 0, 0, 0, 1, v)),
    ]
    for fn, values, data in cases:
        got = np.asarray(fn(np.repeat(x, len(values), 0), values, fill=255))
        want = np.stack([pil_transform(x[0], data(float(v)), 255) for v in values])
        np.testing.assert_array_equal(got, want, err_msg=fn.__name__)


@settings(deadline=None, max_examples=25)
@given(st.integers(1, 70), st.integers(1, 70), st.floats(-720, 720, width=32),
       st.floats(-2, 2, width=32), st.floats(-80, 80, width=32), st.integers(0, 255))
def test_geometric_ops_match_pil_for_any_size_and_parameter(height, width, degrees, shear,
                                                             pixels, fill):
    x = make_images(height * 71 + width, 1, height, width)
    checks = [
        (ops.rotate(x, degrees, fill=fill), pil_rotate(x[0], degrees, fill)),
        (ops.shear_x(x, shear, fill=fill), pil_transform(x[0], (1, shear, 0, 0, 1, 0), fill)),
        (ops.shear_y(x, shear, fill=fill), pil_transform(x[0], (1, 0, 0, shear, 1, 0), fill)),
        (ops.translate_x(x, pixels, fill=fill),
         pil_transform(x[0], (1, 0, pixels, 0, 1, 0), fill)),
        (ops.translate_y(x, pixels, fill=fill),
         pil_transform(x[0], (1, 0, 0, 0, 1, pixels), fill)),
    ]
    for got, want in checks:
        np.testing.assert_array_equal(np.asarray(got)[0], want)


# --------------------------------------------------------------------------- tf_compat vs PIL
# How far the TF reference's arithmetic lies from PIL's: what docs/randaugment.md reports.


def test_tf_auto_contrast_within_one_of_pil():
    # TF scales in float32, PIL in float64: a pixel value on a rounding boundary truncates to
    # one level apart (about 2% of these pixels).
    d = diff(ops.auto_contrast(IMAGES, tf_compat=True), pil_each(IMAGES, ImageOps.autocontrast))
    assert d.max() == 1 and d.mean() < 0.05


@pytest.mark.parametrize("factor", FACTORS)
def test_tf_enhance_ops_within_bound_of_pil(factor):
    # Only the degenerate image differs (by at most one grey level: TF's grayscale truncates
    # where PIL's L rounds; the smoothing truncates where PIL's SMOOTH rounds); the blend
    # scales that by |1 - factor|. (Contrast's degenerate is a different quantity in TF.)
    x = IMAGES
    bound = math.ceil(abs(1.0 - F32(factor))) if factor != 1.0 else 0
    for fn, enhancer in ((ops.color, ImageEnhance.Color), (ops.sharpness, ImageEnhance.Sharpness)):
        d = diff(fn(x, factor, tf_compat=True),
                 pil_each(x, lambda im, e=enhancer: e(im).enhance(factor)))
        assert d.max() <= bound, (fn.__name__, d.max(), bound)


def pil_affine_of_tf_matrix(image, matrix, fill) -> np.ndarray:
    """PIL's transform with TF's matrix moved to PIL's coordinates: PIL samples pixel centres
    (x + 0.5, y + 0.5) and floors, so shift the constant term by 0.5 - 0.5 (a + b)."""
    (a, b, c), (d, e, f) = np.asarray(matrix, np.float64)
    return pil_transform(image, (a, b, c + 0.5 - 0.5 * (a + b), d, e, f + 0.5 - 0.5 * (d + e)),
                         fill)


def assert_sources_adjacent(got: np.ndarray, want: np.ndarray) -> float:
    """Where the two warps disagree, both took a pixel (not the fill) and the sources are
    neighbours, or one took the fill at the image border. Returns the fraction that differ."""
    differ = (got != want).any(-1)
    g, p = got[differ].astype(int), want[differ].astype(int)
    g_fill, p_fill = (g == 255).all(-1), (p == 255).all(-1)
    both = ~g_fill & ~p_fill
    assert np.abs(g[both, :2] - p[both, :2]).max(initial=0) <= 1
    h, w = got.shape[-3:-1]
    other = np.where(g_fill[:, None], p, g)[g_fill ^ p_fill]
    on_border = ((other[:, 0] == 0) | (other[:, 0] == w - 1)
                 | (other[:, 1] == 0) | (other[:, 1] == h - 1))
    assert on_border.all()
    assert not (g_fill & p_fill).any()
    return float(differ.mean())


@pytest.mark.parametrize("height,width,bound", [(224, 224, 0.005), (32, 40, 0.015)])
def test_tf_rotate_differs_from_pil_only_at_ties(height, width, bound):
    # Different pixels are nearest-neighbour ties resolved differently (TF: float32 and half
    # away from zero; PIL: 16.16 fixed point and floor(x + 0.5)), so the source moves by one;
    # at +-45 degrees on small images many samples fall on exact ties.
    x = coordinate_image(height, width)
    degrees = np.asarray([s * 3.0 * m for m in range(31) for s in (1, -1)] + [45.0, -45.0], F32)
    got = np.asarray(ops.rotate(np.repeat(x, len(degrees), 0), degrees, fill=255,
                                tf_compat=True))
    m = np.asarray(_tf_geometry.rotation(jnp.asarray(degrees), height, width))
    fractions = [assert_sources_adjacent(got[i], pil_affine_of_tf_matrix(x[0], m[i], 255))
                 for i in range(len(degrees))]
    assert max(fractions) <= bound


def test_tf_shear_differs_from_pil_by_fixed_point_drift_and_ties():
    # In PIL's coordinates TF's shear is the same map; PIL rounds the shear to a multiple of
    # 2**-16 and adds it row by row, so rows where shear * y is within that drift of a half
    # pick the neighbouring column. Every difference is a one-pixel source shift.
    x = coordinate_image(32, 40)
    shears = np.asarray([s * 0.3 * m / 10 for m in (1, 5, 10, 27, 28) for s in (1, -1)], F32)
    for fn, matrices in ((ops.shear_x, _tf_geometry.shear_x),
                         (ops.shear_y, _tf_geometry.shear_y)):
        got = np.asarray(fn(np.repeat(x, len(shears), 0), shears, fill=255, tf_compat=True))
        m = np.asarray(matrices(jnp.asarray(shears)))
        fractions = [assert_sources_adjacent(got[i], pil_affine_of_tf_matrix(x[0], m[i], 255))
                     for i in range(len(shears))]
        assert max(fractions) <= 0.08


# --------------------------------------------------------------------------- properties


@settings(deadline=None, max_examples=6)
@given(st.sampled_from([(1, 1, 1), (2, 2, 5), (3, 17, 9)]), st.integers(0, 99))
def test_every_op_keeps_shape_and_dtype(shape, seed):
    batch, *size = shape
    x = make_images(seed, batch, *size)
    params = np.random.default_rng(seed).uniform(-2, 2, batch).astype(F32)
    results = [
        ops.auto_contrast(x), ops.equalize(x), ops.invert(x), ops.rotate(x, params * 40),
        ops.posterize(x, 3), ops.solarize(x, 100), ops.solarize_add(x, 40), ops.color(x, params),
        ops.contrast(x, params), ops.brightness(x, params), ops.sharpness(x, params),
        ops.shear_x(x, params), ops.shear_y(x, params), ops.translate_x(x, params * 3),
        ops.translate_y(x, params * 3), ops.cutout(x, (0, 0), 1),
    ]
    for r in results:
        chex.assert_shape(r, x.shape)
        chex.assert_type(r, jnp.uint8)


@settings(deadline=None, max_examples=4)
@given(st.integers(0, 99))
def test_per_image_parameters_equal_one_call_per_image(seed):
    x = make_images(seed, 4)
    rng = np.random.default_rng(seed)
    f = rng.uniform(0, 5, 4).astype(F32)
    t = rng.integers(0, 300, 4)
    for fn, p in ((ops.sharpness, f), (ops.color, f), (ops.rotate, f * 20), (ops.solarize, t)):
        batched = np.asarray(fn(x, p))
        for i in range(4):
            np.testing.assert_array_equal(batched[i], np.asarray(fn(x[i:i + 1], p[i]))[0])


class JitTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_ops_jit_with_traced_parameters(self):
        x = jnp.asarray(IMAGES)
        p = jnp.linspace(-1.0, 3.0, len(IMAGES))
        fn = self.variant(lambda x, p: (ops.rotate(x, 30 * p), ops.color(x, p),
                                        ops.posterize(x, (3 * p).astype(jnp.int32))))
        got = fn(x, p)
        want = (ops.rotate(IMAGES, 30 * np.asarray(p)), ops.color(IMAGES, np.asarray(p)),
                ops.posterize(IMAGES, (3 * np.asarray(p)).astype(np.int32)))
        chex.assert_trees_all_equal(got, want)


# --------------------------------------------------------------------------- argument checks


def test_bad_arguments_are_named():
    x = IMAGES
    with pytest.raises(TypeError, match="images must have dtype"):
        ops.invert(x.astype(np.float32))
    with pytest.raises(ValueError, match=r"images must have shape \[B, H, W, 3\]"):
        ops.equalize(x[..., :2])
    with pytest.raises(ValueError, match="images must have shape"):
        ops.invert(x[0])
    with pytest.raises(ValueError, match=r"factor must be a scalar or have shape \[B\] = \(6,\)"):
        ops.color(x, np.ones(5))
    with pytest.raises(TypeError, match="bits must have an integer dtype"):
        ops.posterize(x, 2.5)
    with pytest.raises(ValueError, match=r"fill must be in \[0, 255\], got 300"):
        ops.rotate(x, 10.0, fill=300)
    with pytest.raises(TypeError, match="tf_compat must be a bool"):
        ops.solarize(x, 3, tf_compat=1)
    with pytest.raises(ValueError, match=r"centers must have shape \[B, 2\]"):
        ops.cutout(x, np.zeros((6, 3), np.int32), 2)
    with pytest.raises(TypeError, match="degrees must be a number"):
        ops.rotate(x, "10")
    big = jax.ShapeDtypeStruct((1, 4097, 8, 3), jnp.uint8)
    with pytest.raises(ValueError, match=r"at most 4096 px .* got shape \(1, 4097, 8, 3\)"):
        ops.shear_x(big, 0.1)
    with pytest.raises(ValueError, match="at most 4096 px high and wide for contrast"):
        ops.contrast(big, 0.5)


def test_jax_array_inputs_and_scalar_broadcast():
    x = jnp.asarray(IMAGES)
    np.testing.assert_array_equal(ops.solarize(x, jnp.int32(128)), ops.solarize(IMAGES, 128))
    np.testing.assert_array_equal(ops.brightness(x, jnp.full((6,), 1.5)), ops.brightness(x, 1.5))
    assert jax.jit(ops.equalize)(x).dtype == jnp.uint8


def _every_op(x, p, *, fill=128):
    """Each public op once, with per-image parameter `p` (a scalar or `[B]`)."""
    return [
        ops.auto_contrast(x), ops.auto_contrast(x, tf_compat=True), ops.equalize(x),
        ops.invert(x), ops.posterize(x, 3), ops.solarize(x, 100), ops.solarize_add(x, 40),
        ops.color(x, p), ops.contrast(x, p), ops.brightness(x, p), ops.sharpness(x, p),
        ops.rotate(x, p * 40, fill=fill), ops.rotate(x, p * 40, fill=fill, tf_compat=True),
        ops.shear_x(x, p, fill=fill), ops.shear_y(x, p, fill=fill),
        ops.translate_x(x, p * 3, fill=fill), ops.translate_y(x, p * 3, fill=fill),
        ops.cutout(x, (1, 2), 2, fill=fill),
    ]


def test_every_op_accepts_an_empty_batch():
    x = np.zeros((0, 5, 6, 3), np.uint8)
    for p in (1.5, np.zeros((0,), F32)):
        for r in _every_op(x, p):
            chex.assert_shape(r, (0, 5, 6, 3))
            chex.assert_type(r, jnp.uint8)
    chex.assert_shape(ops.cutout(x, np.zeros((0, 2), np.int32), np.zeros((0,), np.int32)),
                      (0, 5, 6, 3))


def test_numbers_may_be_numpy_scalars_or_0d_arrays():
    x = IMAGES
    want = _every_op(x, 0.75)
    for p, fill in ((F32(0.75), np.uint8(128)), (np.array(0.75), np.array(128)),
                    (jnp.float32(0.75), np.int64(128))):
        chex.assert_trees_all_equal(_every_op(x, p, fill=fill), want)
    with pytest.raises(TypeError, match=r"fill must be an integer grey level in \[0, 255\]"):
        ops.rotate(x, 10.0, fill=127.5)
    with pytest.raises(TypeError, match="fill must be a concrete number"):
        jax.jit(lambda f: ops.rotate(x, 10.0, fill=f))(7)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_concrete_non_finite_float_parameters_are_refused(bad):
    x = IMAGES
    per_image = np.full(x.shape[0], 0.5, np.float32)
    per_image[-1] = bad
    for op, name in ((ops.color, "factor"), (ops.rotate, "degrees"), (ops.shear_x, "shear"),
                     (ops.translate_y, "pixels")):
        with pytest.raises(ValueError, match=f"{name} must be finite, got {bad}"):
            op(x, per_image)
        with pytest.raises(ValueError, match=f"{name} must be finite"):
            op(x, bad)
