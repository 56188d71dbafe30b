"""Image decoding for `nsjax.data`: encoded bytes or decoded arrays to RGB `uint8 [H, W, 3]`.

JPEGs in YCbCr, RGB or grey take libjpeg-turbo through `simplejpeg` (1.5-2x faster than
Pillow here, with the same pixels: both run libjpeg-turbo's accurate DCT and fancy upsampling),
optionally downscaled by 2, 4 or 8 inside the DCT. Everything else is read by Pillow: other
formats, CMYK and YCCK JPEGs (libjpeg-turbo's own CMYK conversion is one grey level off
Pillow's), and JPEGs that libjpeg-turbo's strict mode refuses (a truncated stream, extraneous
bytes). Pillow's modes become RGB as in timm and torchvision, with two exceptions: 16-bit and
32-bit integer images are scaled to 8 bits (`>> 8`) instead of clipped at 255, and palette
images with per-entry transparency are converted without Pillow's warning. EXIF orientation is
not applied (neither torchvision's loader nor the TensorFlow reference applies it).

Whatever cannot become an RGB image raises `BadImage` with a short `reason`, so a pipeline can
count and skip broken files: empty or truncated files, unknown formats, float images,
decompression bombs (Pillow's `Image.MAX_IMAGE_PIXELS` limit, applied to JPEGs too).
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator

import numpy as np
import simplejpeg
from PIL import Image, UnidentifiedImageError

from nsjax import _checks

__all__ = ["BadImage", "decode_image", "image_size"]

_JPEG_MAGIC = b"\xff\xd8\xff"
_MAGIC_NUMBERS = ((_JPEG_MAGIC, "JPEG"), (b"\x89PNG\r\n\x1a\n", "PNG"), (b"GIF8", "GIF"))
_REDUCTIONS = (1, 2, 4, 8)
_FAST_JPEG_COLORSPACES = ("YCbCr", "RGB", "Gray")  # what simplejpeg decodes as Pillow does
_CONVERSION_NOTES = {  # Pillow mode -> note of its conversion to RGB
    "RGB": None,
    "1": "1-bit promoted to RGB",
    "L": "grey promoted to RGB",
    "LA": "grey promoted to RGB, alpha dropped",
    "P": "palette converted to RGB",
    "PA": "palette converted to RGB, alpha dropped",
    "RGBA": "alpha dropped",
    "RGBX": "padding channel dropped",
    "CMYK": "CMYK converted to RGB",
    "YCbCr": "YCbCr converted to RGB",
}
_INTEGER_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")  # scaled to 8 bits by >> 8
_SIXTEEN_BITS = "16-bit scaled to 8-bit"
_THIRTY_TWO_BITS = "32-bit integer scaled to 8-bit"


class BadImage(ValueError):
    """An input that cannot be decoded to an RGB image.

    **Attributes:**

    - `reason`: a short human reason, e.g. "truncated JPEG", "not an image (cannot identify
      format)" or "float image mode F"; also the exception's message.
    """

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def image_size(data: bytes) -> tuple[int, int]:
    """The size of an encoded image, read from its header only.

    **Arguments:**

    - `data`: encoded bytes (or another bytes-like object) of any format Pillow reads.

    **Returns:** `(height, width)`, in pixels of the full-size image.

    **Raises:** `BadImage` when the header cannot be read.
    """
    data = _as_bytes(data)
    if _is_jpeg(data):
        try:
            height, width, _, _ = simplejpeg.decode_jpeg_header(data)
            return height, width
        except ValueError:
            pass  # Pillow reads some headers libjpeg-turbo refuses, or says why it cannot
    return _pillow_size(data)


def decode_image(data: bytes | np.ndarray, *, reduce: int = 1) -> tuple[np.ndarray, str | None]:
    """Decode an image to RGB `uint8`.

    Alpha is dropped (not composited), palettes, grey, CMYK and YCbCr become RGB, 16-bit and
    32-bit integer images are scaled to 8 bits by `>> 8`; a multi-frame image (GIF, APNG)
    gives its first frame. EXIF orientation is not applied (torchvision's loader and the
    TensorFlow reference do not apply it either).

    **Arguments:**

    - `data`: encoded bytes (JPEG, PNG, WebP, GIF, anything Pillow reads; any bytes-like
      object), or a decoded `uint8` array `[H, W, 3]`, `[H, W, 1]` or `[H, W]` (grey).
    - `reduce`: 1, 2, 4 or 8. A JPEG on the fast path is decoded at `1/reduce` scale inside
      libjpeg-turbo's DCT, giving `ceil(H / reduce) x ceil(W / reduce)`; arrays, other
      formats and JPEGs read by Pillow ignore it, so read the scale off the returned shape.

    **Returns:** `(image, note)`: a C-contiguous `uint8 [H', W', 3]` array (the input array
    itself when it already is one) and `None`, or a short note of what was converted, e.g.
    "grey promoted to RGB", "alpha dropped", "16-bit scaled to 8-bit".

    **Raises:** `BadImage` for anything that is not an image this function can decode, with the
    reason; `TypeError`/`ValueError` for a `data` of another type or a bad `reduce`.
    """
    if _checks.check_positive_int("reduce", reduce) not in _REDUCTIONS:
        raise ValueError(f"reduce must be one of {_REDUCTIONS}, got {reduce}")
    if isinstance(data, np.ndarray):
        return _from_array(data)
    data = _as_bytes(data)
    if _is_jpeg(data):
        decoded = _decode_jpeg_fast(data, reduce)
        if decoded is not None:
            return decoded
    return _decode_with_pillow(data)


def _is_jpeg(data: bytes | np.ndarray) -> bool:
    """Whether `data` is bytes-like and starts like a JPEG."""
    return isinstance(data, (bytes, bytearray, memoryview)) and bytes(data[:3]) == _JPEG_MAGIC


# --------------------------------------------------------------------------- inputs


def _as_bytes(data: object) -> bytes:
    """`data` as `bytes`; BadImage when it is empty, TypeError when it is not bytes-like."""
    if isinstance(data, (bytearray, memoryview)):
        data = bytes(data)
    if not isinstance(data, bytes):
        raise TypeError(f"data must be encoded bytes or a uint8 array, got {type(data).__name__}")
    if not data:
        raise BadImage("empty file (0 bytes)")
    return data


def _from_array(array: np.ndarray) -> tuple[np.ndarray, str | None]:
    """A decoded `uint8` array `[H, W, 3]`, `[H, W, 1]` or `[H, W]` as `[H, W, 3]`."""
    shape = array.shape
    grey = array.ndim == 2 or (array.ndim == 3 and shape[2] == 1)
    if array.dtype != np.uint8 or not (grey or (array.ndim == 3 and shape[2] == 3)) or (
            0 in shape[:2]):
        raise BadImage(f"array images must be uint8 [H, W, 3], [H, W, 1] or [H, W] with "
                       f"H, W >= 1, got {array.dtype} {shape}")
    if grey:
        rgb = np.repeat(array.reshape(shape[0], shape[1], 1), 3, axis=2)
        return rgb, _CONVERSION_NOTES["L"]
    return np.ascontiguousarray(array), None


# --------------------------------------------------------------------------- JPEG fast path


def _decode_jpeg_fast(data: bytes, reduce: int) -> tuple[np.ndarray, str | None] | None:
    """libjpeg-turbo's decode at `1/reduce` scale, or None where Pillow must read the file."""
    try:
        height, width, colorspace, _ = simplejpeg.decode_jpeg_header(data)
    except ValueError:
        return None
    if colorspace not in _FAST_JPEG_COLORSPACES:
        return None  # CMYK, YCCK: Pillow's conversion, as torchvision
    _check_not_a_bomb(height, width)
    try:
        image = simplejpeg.decode_jpeg(data, colorspace="RGB", min_height=-(-height // reduce),
                                       min_width=-(-width // reduce))  # fmt: skip
    except ValueError:
        return None  # truncated or corrupt: Pillow decodes what it can or says why not
    return image, _CONVERSION_NOTES["L"] if colorspace == "Gray" else None


def _check_not_a_bomb(height: int, width: int) -> None:
    """Pillow's decompression-bomb error, for images Pillow does not open."""
    limit = Image.MAX_IMAGE_PIXELS
    if limit is not None and height * width > 2 * limit:
        raise BadImage(f"decompression bomb ({height}x{width} pixels, over twice Pillow's "
                       f"MAX_IMAGE_PIXELS = {limit})")


# --------------------------------------------------------------------------- Pillow


def _pillow_size(data: bytes) -> tuple[int, int]:
    image = _pillow_open(data)
    return image.height, image.width


def _pillow_open(data: bytes) -> Image.Image:
    """Pillow's lazy open (the header only). An image over `Image.MAX_IMAGE_PIXELS` decodes
    with Pillow's `DecompressionBombWarning` (not silenced here: `warnings.catch_warnings` is
    not thread-safe, and the pipelines decode in threads); only Pillow's error, at twice the
    limit, refuses it."""
    with _pillow_errors(data):
        return Image.open(io.BytesIO(data))


def _decode_with_pillow(data: bytes) -> tuple[np.ndarray, str | None]:
    image = _pillow_open(data)
    with _pillow_errors(data, image.format):
        sixteen_bits = any(";16" in str(tile.args) for tile in image.tile)  # load clears tiles
        image.load()
    mode = image.mode
    if mode in _INTEGER_MODES:
        return _scale_integer_image(np.asarray(image), mode)
    if mode not in _CONVERSION_NOTES:
        raise BadImage(f"{'float' if mode == 'F' else 'unsupported'} image mode {mode}")
    if mode == "RGB":
        pixels = np.array(image)
    elif mode in ("RGBA", "RGBX") or (mode == "P" and "transparency" in image.info):
        # Pillow warns when a palette's transparency is dropped: go through RGBA instead.
        rgba = image.convert("RGBA") if mode == "P" else image
        pixels = np.ascontiguousarray(np.asarray(rgba)[..., :3])
    else:
        pixels = np.array(image.convert("RGB"))
    note = _CONVERSION_NOTES[mode]
    return pixels, _join_notes(_SIXTEEN_BITS, note) if sixteen_bits else note


def _scale_integer_image(values: np.ndarray, mode: str) -> tuple[np.ndarray, str]:
    """A 16-bit grey image (or a 32-bit one with values in [0, 65535]), `>> 8`, as RGB."""
    if mode == "I" and (values.min() < 0 or values.max() > 65535):
        raise BadImage(f"32-bit integer image with values in [{values.min()}, {values.max()}], "
                       "outside [0, 65535]")
    grey = (values.astype(np.uint32) >> 8).astype(np.uint8)
    note = _join_notes(_THIRTY_TWO_BITS if mode == "I" else _SIXTEEN_BITS, _CONVERSION_NOTES["L"])
    return np.repeat(grey[:, :, None], 3, axis=2), note


@contextlib.contextmanager
def _pillow_errors(data: bytes, format: str | None = None) -> Iterator[None]:
    """Pillow's failures on `data` raised as BadImage naming its format (`format`, else one
    guessed from the first bytes)."""
    format = format or _guess_format(data) or "image"
    try:
        yield
    except BadImage:
        raise
    except Image.DecompressionBombError as e:
        raise BadImage(f"decompression bomb: {e}") from e
    except UnidentifiedImageError as e:
        if format != "image":
            raise BadImage(f"truncated or broken {format} (cannot read its header)") from e
        raise BadImage(_unidentified_reason(data)) from e
    except Exception as e:  # a broken file can make a Pillow decoder raise almost anything
        if "truncated" in str(e).lower():
            raise BadImage(f"truncated {format}") from e
        raise BadImage(f"broken {format} ({type(e).__name__}: {e})") from e


def _guess_format(data: bytes) -> str | None:
    """JPEG, PNG, GIF or WEBP (Pillow's names) from the first bytes; None for anything else."""
    for magic, format in _MAGIC_NUMBERS:
        if data.startswith(magic):
            return format
    return "WEBP" if data.startswith(b"RIFF") and data[8:12] == b"WEBP" else None


def _unidentified_reason(data: bytes) -> str:
    """Why Pillow found no format, quoting the start of the file when it is text (an HTML
    error page saved as .jpg, say)."""
    head = data[:24]
    if all(32 <= byte < 127 or byte in b"\t\n\r" for byte in head):
        return f"not an image (cannot identify format; starts with text {head.decode()!r})"
    return "not an image (cannot identify format)"


def _join_notes(*notes: str | None) -> str | None:
    """The notes that are not None, joined by "; " (None when there are none)."""
    return "; ".join(note for note in notes if note is not None) or None
