"""nsjax.data._decode: every Pillow mode to RGB uint8 with its note, the JPEG fast path against
Pillow, DCT reduction sizes, arrays, and broken files as BadImage with a reason."""

import io
import pickle
import struct
import zlib

import hypothesis.strategies as st
import numpy as np
import pytest
from hypothesis import example, given, settings
from PIL import Image

from nsjax.data._decode import BadImage, decode_image, image_size

SETTINGS = settings(max_examples=30, deadline=None)
RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 256, (20, 30, 3), dtype=np.uint8)


def _encode(image: Image.Image, format: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format, **options)
    return buffer.getvalue()


def _pillow_rgb(data: bytes) -> np.ndarray:
    """What torchvision's loader gives: Pillow's `convert("RGB")`."""
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def _png_rgb16(values: np.ndarray) -> bytes:
    """A 16-bit RGB PNG of `values` (uint16 [H, W, 3]); Pillow cannot write one."""
    height, width, _ = values.shape
    rows = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in values)

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)  # 16 bits, colour type RGB
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows))
            + chunk(b"IEND", b""))  # fmt: skip


def _decoded(data) -> tuple[np.ndarray, str | None]:
    """decode_image, checking the contract every result meets."""
    image, note = decode_image(data)
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    assert image.flags.c_contiguous
    if not isinstance(data, np.ndarray):
        assert image_size(data) == image.shape[:2]
    return image, note


# --------------------------------------------------------------------------- modes


def test_rgb_png_and_lossless_webp_are_exact_without_note():
    for data in (_encode(Image.fromarray(RGB), "PNG"),
                 _encode(Image.fromarray(RGB), "WEBP", lossless=True)):  # fmt: skip
        image, note = _decoded(data)
        np.testing.assert_array_equal(image, RGB)
        assert note is None


def test_rgb_jpeg_fast_path_matches_pillow():
    data = _encode(Image.fromarray(RGB), "JPEG", quality=90)
    image, note = _decoded(data)
    diff = np.abs(image.astype(int) - _pillow_rgb(data))
    assert diff.max() <= 2 and diff.mean() < 0.1, (diff.max(), diff.mean())
    assert note is None


def test_grey_jpeg_is_promoted():
    data = _encode(Image.fromarray(RGB).convert("L"), "JPEG", quality=90)
    image, note = _decoded(data)
    grey = np.asarray(Image.open(io.BytesIO(data)))
    assert np.abs(image.astype(int) - grey[..., None]).max() <= 2
    assert note == "grey promoted to RGB"


def test_cmyk_jpeg_is_converted_by_pillow():
    # libjpeg-turbo's own CMYK -> RGB is off by one level from Pillow's everywhere: Pillow decides.
    data = _encode(Image.fromarray(RGB).convert("CMYK"), "JPEG", quality=95)
    image, note = _decoded(data)
    np.testing.assert_array_equal(image, _pillow_rgb(data))
    assert note == "CMYK converted to RGB"


@pytest.mark.parametrize("mode, note", [
    ("P", "palette converted to RGB"),
    ("1", "1-bit promoted to RGB"),
    ("L", "grey promoted to RGB"),
    ("LA", "grey promoted to RGB, alpha dropped"),
])  # fmt: skip
def test_png_modes_convert_as_pillow(mode, note):
    data = _encode(Image.fromarray(RGB).convert(mode), "PNG")
    assert Image.open(io.BytesIO(data)).mode == mode
    image, got = _decoded(data)
    np.testing.assert_array_equal(image, _pillow_rgb(data))
    assert got == note


def test_alpha_is_dropped_not_composited():
    rgba = np.concatenate([RGB, np.zeros((20, 30, 1), np.uint8)], axis=2)  # fully transparent
    image, note = _decoded(_encode(Image.fromarray(rgba), "PNG"))
    np.testing.assert_array_equal(image, RGB)
    assert note == "alpha dropped"


def test_palette_with_per_entry_transparency_converts_without_warning():
    # Pillow warns ("should be converted to RGBA") on convert("RGB"); warnings are errors here.
    palette = Image.fromarray(RGB).convert("P")
    palette.info["transparency"] = bytes(range(256))
    data = _encode(palette, "PNG")
    image, note = _decoded(data)
    expected = np.asarray(Image.open(io.BytesIO(data)).convert("RGBA"))[..., :3]
    np.testing.assert_array_equal(image, expected)
    assert note == "palette converted to RGB"


def test_sixteen_bit_grey_is_scaled_not_clipped():
    values = RNG.integers(0, 65536, (20, 30)).astype(np.uint16)
    data = _encode(Image.fromarray(values), "PNG")
    assert Image.open(io.BytesIO(data)).mode == "I;16"
    image, note = _decoded(data)
    np.testing.assert_array_equal(image, np.repeat((values >> 8)[..., None], 3, 2))
    assert note == "16-bit scaled to 8-bit; grey promoted to RGB"


def test_sixteen_bit_rgb_is_scaled():
    values = RNG.integers(0, 65536, (20, 30, 3)).astype(np.uint16)
    image, note = _decoded(_png_rgb16(values))  # Pillow reads it as RGB, keeping the high byte
    np.testing.assert_array_equal(image, values >> 8)
    assert note == "16-bit scaled to 8-bit"


def test_thirty_two_bit_integers_in_sixteen_bit_range_are_scaled():
    values = RNG.integers(0, 65536, (20, 30)).astype(np.int32)
    image, note = _decoded(_encode(Image.fromarray(values), "TIFF"))
    np.testing.assert_array_equal(image[..., 0], values >> 8)
    assert note == "32-bit integer scaled to 8-bit; grey promoted to RGB"
    for outside in (-1, 65536):
        values[3, 4] = outside
        with pytest.raises(BadImage, match=r"outside \[0, 65535\]"):
            decode_image(_encode(Image.fromarray(values), "TIFF"))


def test_float_image_is_refused():
    with pytest.raises(BadImage, match="float image mode F") as info:
        decode_image(_encode(Image.fromarray(RGB[..., 0].astype(np.float32)), "TIFF"))
    assert info.value.reason == "float image mode F"


def test_gif_gives_its_first_frame():
    frames = [Image.fromarray(np.full((20, 30, 3), v, np.uint8)) for v in (40, 200)]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:])
    assert Image.open(io.BytesIO(buffer.getvalue())).n_frames == 2
    image, note = _decoded(buffer.getvalue())
    np.testing.assert_array_equal(image, np.full((20, 30, 3), 40, np.uint8))
    assert note == "palette converted to RGB"


def test_exif_orientation_is_not_applied():
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees"
    image, _ = _decoded(_encode(Image.fromarray(RGB), "JPEG", exif=exif))
    assert image.shape == (20, 30, 3)


# --------------------------------------------------------------------------- arrays


def test_rgb_array_passes_through_and_grey_arrays_are_promoted():
    image, note = _decoded(RGB)
    assert image is RGB and note is None
    for grey in (RGB[..., 0], RGB[..., :1]):
        image, note = _decoded(grey)
        np.testing.assert_array_equal(image, np.repeat(RGB[..., :1], 3, 2))
        assert note == "grey promoted to RGB"
    image, _ = _decoded(RGB[:, ::2])  # a strided view becomes contiguous
    np.testing.assert_array_equal(image, RGB[:, ::2])


@pytest.mark.parametrize("array, match", [
    (RGB.astype(np.float32), "float32"),
    (RGB.astype(np.uint16), "uint16"),
    (np.zeros((20, 30, 4), np.uint8), r"\(20, 30, 4\)"),
    (np.zeros((5, 20, 30, 3), np.uint8), r"\(5, 20, 30, 3\)"),
    (np.zeros(100, np.uint8), r"\(100,\)"),
    (np.zeros((0, 30, 3), np.uint8), r"\(0, 30, 3\)"),
])  # fmt: skip
def test_bad_arrays_are_refused_naming_shape_and_dtype(array, match):
    with pytest.raises(BadImage, match=match):
        decode_image(array)


# --------------------------------------------------------------------------- DCT reduction


@SETTINGS
@given(height=st.integers(1, 70), width=st.integers(1, 70), reduce=st.sampled_from([1, 2, 4, 8]),
       grey=st.booleans())  # fmt: skip
@example(height=5, width=9, reduce=2, grey=False)  # libjpeg-turbo also scales by 3/8, 5/8...:
@example(height=9, width=2, reduce=4, grey=True)  # asking for floor sizes would pick those
def test_jpeg_reduce_gives_ceil_sizes(height, width, reduce, grey):
    image = Image.fromarray(RNG.integers(0, 256, (height, width, 3), dtype=np.uint8))
    data = _encode(image.convert("L") if grey else image, "JPEG")
    decoded, _ = decode_image(data, reduce=reduce)
    assert decoded.shape == (-(-height // reduce), -(-width // reduce), 3)
    assert decoded.flags.c_contiguous


def test_reduced_jpeg_is_a_downscaled_image():
    smooth = np.asarray(Image.fromarray(RGB).resize((240, 160), Image.Resampling.BICUBIC))
    data = _encode(Image.fromarray(smooth), "JPEG", quality=95)
    reduced, _ = decode_image(data, reduce=4)
    expected = np.asarray(Image.fromarray(smooth).resize((60, 40), Image.Resampling.BOX))
    assert np.abs(reduced.astype(int) - expected).mean() < 3


def test_reduce_is_ignored_outside_the_jpeg_fast_path():
    for data in (_encode(Image.fromarray(RGB), "PNG"),
                 _encode(Image.fromarray(RGB).convert("CMYK"), "JPEG")):  # fmt: skip
        assert decode_image(data, reduce=8)[0].shape == (20, 30, 3)
    assert decode_image(RGB, reduce=2)[0].shape == (20, 30, 3)


@pytest.mark.parametrize("reduce, exc", [(3, ValueError), (0, ValueError), (2.0, TypeError),
                                         (16, ValueError)])  # fmt: skip
def test_bad_reduce_is_rejected(reduce, exc):
    with pytest.raises(exc, match="reduce"):
        decode_image(RGB, reduce=reduce)


# --------------------------------------------------------------------------- broken files

JPEG = _encode(Image.fromarray(RGB), "JPEG", quality=90)
PNG = _encode(Image.fromarray(RGB), "PNG")


@pytest.mark.parametrize("data, reason", [
    (b"", "empty file (0 bytes)"),
    (RNG.integers(0, 256, 500, dtype=np.uint8).tobytes(), "not an image (cannot identify format)"),
    (b"name,label\ncat.jpg,3\n", "not an image (cannot identify format; starts with text"),
    (b"<!DOCTYPE html><html><body>Not Found</body></html>", "starts with text '<!DOCTYPE html>"),
    (JPEG[: len(JPEG) // 2], "truncated JPEG"),
    (JPEG[:-20], "truncated JPEG"),
    (JPEG[:120], "truncated JPEG"),
    (JPEG[:5], "truncated or broken JPEG"),
    (PNG[: len(PNG) // 2], "truncated PNG"),
    (PNG[:40], "truncated or broken PNG"),
])  # fmt: skip
def test_broken_files_raise_bad_image_with_a_reason(data, reason):
    with pytest.raises(BadImage) as info:
        decode_image(data)
    assert info.value.reason.startswith(reason) or reason in info.value.reason, info.value.reason
    assert str(info.value) == info.value.reason


def test_image_size_refuses_what_has_no_header():
    for data in (b"", b"plain text", JPEG[:5]):
        with pytest.raises(BadImage):
            image_size(data)
    assert image_size(JPEG[: len(JPEG) // 2]) == (20, 30)  # the header alone is enough


def test_bytes_likes_are_accepted_and_other_types_refused():
    for data in (bytearray(JPEG), memoryview(JPEG)):
        np.testing.assert_array_equal(decode_image(data)[0], decode_image(JPEG)[0])
        assert image_size(data) == (20, 30)
    with pytest.raises(TypeError, match="data"):
        decode_image("photo.jpg")


def test_decompression_bombs(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 400)  # RGB has 600 pixels
    with pytest.warns(Image.DecompressionBombWarning):  # over the limit: Pillow warns, decodes
        image, _ = _decoded(PNG)
    np.testing.assert_array_equal(image, RGB)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 250)  # over twice the limit: refused
    for data in (PNG, JPEG):
        with pytest.raises(BadImage, match="decompression bomb"):
            decode_image(data)


def test_bad_image_pickles_with_its_reason():
    # grain sends exceptions from worker processes.
    error = pickle.loads(pickle.dumps(BadImage("truncated JPEG")))
    assert isinstance(error, BadImage) and error.reason == "truncated JPEG"
