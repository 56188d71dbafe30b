"""Host-side crops for `nsjax.data`: the training crop (Inception crop, the 32-px pad crop or,
for a FixRes fine-tune, the centre crop; then a random horizontal flip) and the evaluation
centre crop, from encoded bytes or arrays to `uint8 [h, w, 3]`, with the boxes and rules of
`nsjax.fixres`.

Two resizers. "pil" is Pillow's antialiased bicubic (Keys a = -0.5) over a box of the full-size
image: exactly what `nsjax.fixres` matches, for evaluation and comparisons. "opencv" follows the
official EfficientNet / Noisy Student training crop, which cuts the box out while decoding
(`decode_and_crop_jpeg`) and resizes it with TensorFlow's unantialiased bicubic (Keys
a = -0.75): OpenCV's `INTER_CUBIC` is that kernel. It first lets libjpeg-turbo shrink a JPEG by
2, 4 or 8 inside the DCT, as far as the box stays at least the output size, which antialiases
large reductions and skips most of the decoding work; what remains is a factor under 2
(`INTER_CUBIC`), or, for other formats, possibly more (`INTER_AREA` from a factor of 2). On this
project's CPU a 300x280 box to 224 px takes about 0.15 ms with OpenCV against 1.5-1.8 ms with
Pillow, which makes "opencv" the training default.

Importing this module sets OpenCV to one thread (`cv2.setNumThreads(1)`) for the process: the
pipeline's parallelism is its worker processes, not threads inside every resize.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import cv2
import numpy as np
from PIL import Image

from nsjax import _checks, fixres
from nsjax.data._decode import BadImage, _is_jpeg, _join_notes, decode_image, image_size

__all__ = ["EvalCrop", "Resize", "TrainCrop", "sample_inception_box"]

cv2.setNumThreads(1)

Resize = Literal["pil", "opencv"]
Box = tuple[int, int, int, int]  # (top, left, height, width) in pixels

_RESIZES = ("pil", "opencv")
_CROPS = ("inception", "pad", "center")
_DCT_REDUCTIONS = (8, 4, 2)  # largest first
_FALLBACK_FRACTION = 0.875  # the centre crop when no Inception candidate fits, as fixres


def sample_inception_box(
    rng: np.random.Generator,
    height: int,
    width: int,
    *,
    area: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> Box:
    """One Inception crop box, by `nsjax.fixres.random_resized_crop`'s algorithm.

    TF's `sample_distorted_bounding_box` with 10 attempts, the centre 0.875 crop as fallback;
    the same 22 float32 uniforms give the same box as `fixres` (it is the same code, run on
    NumPy).

    **Arguments:**

    - `rng`: a NumPy `Generator`; one draw, `rng.random((1, 22), dtype=np.float32)`.
    - `height`, `width`: the image size, ints >= 1.
    - `area`: (lo, hi) with 0 < lo <= hi <= 1, fractions of the image area.
    - `ratio`: (lo, hi) with 0 < lo <= hi, width / height.

    **Returns:** `(top, left, height, width)` of the box, ints, inside the image.
    """
    _check_rng(rng)
    height = _checks.check_positive_int("height", height)
    width = _checks.check_positive_int("width", width)
    area = fixres._check_range("area", area, upper=1.0)
    ratio = fixres._check_range("ratio", ratio, upper=None)
    return _inception_box(rng, height, width, area, ratio)


class TrainCrop:
    """The training crop: an Inception crop (or the 32-px reference's pad crop, or the
    evaluation centre crop), resized to `size`, then a horizontal flip with probability 1/2.

    Each call draws from its `rng`, in this order: 22 float32 uniforms for the box
    (`rng.random((1, 22), dtype=np.float32)`, see `sample_inception_box`), then one float for
    the flip (`rng.random() < 0.5` mirrors). The "pad" crop draws its two offsets instead of
    the box (`rng.integers(0, 2 * pad + 1, size=2)`: top, left), then the flip; the "center"
    crop draws only the flip. The flip is drawn even when `flip=False`, so the flag changes
    nothing else.

    An image smaller than `size` is upscaled, noted "upscaled: HxW smaller than the crop ...".
    Picklable (grain sends it to its worker processes).

    **Arguments:**

    - `size`: output side (square) or `(height, width)`.
    - `crop`: "inception" (a random box of the image, as `nsjax.fixres.random_resized_crop`),
      "pad" (reflect-pad `pad` pixels on each side, then a random `size` window; an image
      that is not `size` is resized to it first, and noted) or "center" (`EvalCrop`'s
      centre square of side `int(crop_fraction * min(H, W))`: the FixRes fine-tune's
      unaugmented images, the official `remove_aug`). The reference's 32-px (SVHN) path is
      `TrainCrop(32, crop="pad", flip=False)`; the fine-tune's with the evaluation's pixels,
      `TrainCrop(size, crop="center", flip=False, resize="pil")`.
    - `area`: (lo, hi) with 0 < lo <= hi <= 1, fractions of the image area ("inception").
    - `ratio`: (lo, hi) with 0 < lo <= hi, width / height of the box ("inception").
    - `pad`: pixels of reflection padding on each side, >= 0 ("pad").
    - `crop_fraction`: in (0, 1], the centre square's side over the image's shorter side
      ("center"; 0.875, as `EvalCrop`).
    - `flip`: whether to mirror half of the crops.
    - `resize`: "opencv" (the reference's unantialiased bicubic after DCT downscaling) or "pil"
      (Pillow's antialiased bicubic on the full-size image, as `nsjax.fixres`); see the
      module's description.

    **Example:**

    >>> crop = TrainCrop(224)
    >>> image, note = crop(jpeg_bytes, np.random.default_rng([seed, step]))  # uint8 [224, 224, 3]
    """

    def __init__(
        self,
        size: int | tuple[int, int],
        *,
        crop: Literal["inception", "pad", "center"] = "inception",
        area: tuple[float, float] = (0.08, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        pad: int = 4,
        crop_fraction: float = 0.875,
        flip: bool = True,
        resize: Resize = "opencv",
    ):
        self.size = fixres._check_size(size)
        self.crop = _checks.check_choice("crop", crop, _CROPS)
        self.area = fixres._check_range("area", area, upper=1.0)
        self.ratio = fixres._check_range("ratio", ratio, upper=None)
        self.pad = _checks.check_positive_int("pad", pad, minimum=0)
        self.flip = _checks.check_bool("flip", flip)
        self.resize = _checks.check_choice("resize", resize, _RESIZES)
        self.center = EvalCrop(self.size, crop_fraction=crop_fraction, resize=self.resize)

    def __call__(self, data: bytes | np.ndarray, rng: np.random.Generator
                 ) -> tuple[np.ndarray, str | None]:  # fmt: skip
        """Crop one image.

        **Arguments:**

        - `data`: encoded bytes or a decoded `uint8` array, as `decode_image` takes.
        - `rng`: a NumPy `Generator`, drawn from in the order of the class description.

        **Returns:** `(image, note)`: C-contiguous `uint8 [height, width, 3]` and `None` or a
        note of what was converted or upscaled. **Raises:** `BadImage` as `decode_image`.
        """
        result = self.crop_many([data], [rng])[0]
        if isinstance(result, BadImage):
            raise result
        return result

    def crop_many(self, data: Sequence[bytes | np.ndarray], rngs: Sequence[np.random.Generator]
                  ) -> list[tuple[np.ndarray, str | None] | BadImage]:  # fmt: skip
        """Crop many images, each exactly as `self(data[i], rngs[i])` would, but with the
        Inception boxes of all of them sampled in one vectorised call (the box sampler is a few
        dozen small NumPy operations: per image they cost as much as the resize).

        **Returns:** per image, `(image, note)` or the `BadImage` it raised.
        """
        for rng in rngs:
            _check_rng(rng)
        if self.crop == "pad":
            results = [_attempt(self._pad_crop, d, rng) for d, rng in zip(data, rngs)]
        elif self.crop == "center":
            results = [_attempt(self.center, d) for d in data]
        else:
            results = [_attempt(_Opened, d, self.resize) for d in data]
            opened = [i for i, r in enumerate(results) if not isinstance(r, BadImage)]
            if opened:
                sizes = np.array([results[i].size for i in opened], np.int64).reshape(-1, 2)
                boxes = _inception_boxes(np.concatenate([
                    rngs[i].random((1, fixres._UNIFORMS_PER_BOX), dtype=np.float32)
                    for i in opened]), sizes[:, 0], sizes[:, 1], self.area, self.ratio)
                for i, box in zip(opened, boxes):
                    results[i] = _attempt(results[i].finish, box, self.size, self.resize)
        for i, rng in enumerate(rngs):
            if not isinstance(results[i], BadImage):
                image, note = results[i]
                if rng.random() < 0.5 and self.flip:
                    image = cv2.flip(image, 1)  # a new C-contiguous array; 30x faster than NumPy
                results[i] = (image, note)
        return results

    def _pad_crop(self, data: bytes | np.ndarray, rng: np.random.Generator
                  ) -> tuple[np.ndarray, str | None]:  # fmt: skip
        image, note = decode_image(data)
        height, width = image.shape[:2]
        out_height, out_width = self.size
        if (height, width) != self.size:
            image = _resize(image, (0, 0, height, width), self.size, self.resize)
            note = _join_notes(note, f"resized {height}x{width} to {out_height}x{out_width} "
                                     "before the pad crop")  # fmt: skip
        p = self.pad  # reflection without repeating the edge, NumPy's "reflect" (10x faster)
        padded = cv2.copyMakeBorder(image, p, p, p, p, cv2.BORDER_REFLECT_101)
        top, left = rng.integers(0, 2 * p + 1, size=2)
        return np.ascontiguousarray(padded[top:top + out_height, left:left + out_width]), note

    def __repr__(self) -> str:
        return (f"TrainCrop(size={self.size}, crop={self.crop!r}, area={self.area}, "
                f"ratio={self.ratio}, pad={self.pad}, "
                f"crop_fraction={self.center.crop_fraction}, flip={self.flip}, "
                f"resize={self.resize!r})")


class EvalCrop:
    """The evaluation crop of the EfficientNet reference, as `nsjax.fixres.center_crop_resize`:
    a centred square of side `int(crop_fraction * min(H, W))`, resized to `size`.

    Deterministic and picklable. An image smaller than `size` is upscaled, and noted.

    **Arguments:**

    - `size`: output side (square) or `(height, width)`.
    - `crop_fraction`: in (0, 1]; the reference uses `size / (size + 32)`, 0.875 at 224 px.
    - `resize`: "pil" (Pillow's antialiased bicubic, as `nsjax.fixres` and timm) or "opencv"
      (DCT downscaling, then OpenCV's bicubic); see the module's description.

    **Example:**

    >>> image, note = EvalCrop(224)(jpeg_bytes)  # uint8 [224, 224, 3]
    """

    def __init__(self, size: int | tuple[int, int], *, crop_fraction: float = 0.875,
                 resize: Resize = "pil"):  # fmt: skip
        self.size = fixres._check_size(size)
        self.crop_fraction = fixres._check_crop_fraction(crop_fraction)
        self.resize = _checks.check_choice("resize", resize, _RESIZES)

    def __call__(self, data: bytes | np.ndarray) -> tuple[np.ndarray, str | None]:
        """Crop one image.

        **Arguments:**

        - `data`: encoded bytes or a decoded `uint8` array, as `decode_image` takes.

        **Returns:** `(image, note)`: C-contiguous `uint8 [height, width, 3]` and `None` or a
        note of what was converted or upscaled. **Raises:** `BadImage` as `decode_image`.
        """
        opened = _Opened(data, self.resize)
        box = fixres._center_box(*opened.size, self.crop_fraction)
        return opened.finish(box, self.size, self.resize)

    def __repr__(self) -> str:
        return (f"EvalCrop(size={self.size}, crop_fraction={self.crop_fraction}, "
                f"resize={self.resize!r})")


# --------------------------------------------------------------------------- helpers


def _check_rng(rng: Any) -> None:
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator (np.random.default_rng(seed)), "
                        f"got {type(rng).__name__}")


def _inception_box(rng: np.random.Generator, height: int, width: int,
                   area: tuple[float, float], ratio: tuple[float, float]) -> Box:  # fmt: skip
    """`sample_inception_box` on checked arguments."""
    u = rng.random((1, fixres._UNIFORMS_PER_BOX), dtype=np.float32)
    return _inception_boxes(u, np.array([height]), np.array([width]), area, ratio)[0]


def _inception_boxes(u: np.ndarray, heights: np.ndarray, widths: np.ndarray,
                     area: tuple[float, float], ratio: tuple[float, float]) -> list[Box]:  # fmt: skip
    """The boxes of images of sizes `heights x widths` (`[n]`) from their uniforms `u`
    (float32 `[n, 22]`): fixres's sampler on NumPy, one call for all."""
    fallback = np.array([fixres._center_box(int(h), int(w), _FALLBACK_FRACTION)
                         for h, w in zip(heights, widths)], np.float32)
    boxes = fixres._boxes_from_uniforms(np, u, heights, widths, area, ratio, fallback)
    return [tuple(int(v) for v in box) for box in boxes]


def _attempt(fn: Any, *args: Any) -> Any:
    """`fn(*args)`, or the `BadImage` it raised."""
    try:
        return fn(*args)
    except BadImage as e:
        return e


class _Opened:
    """An image whose size is known: decoded, or (a JPEG for "opencv") only its header read,
    so the decode can wait for the box and shrink inside the DCT."""

    def __init__(self, data: bytes | np.ndarray, resize: str):
        self.data, self.image, self.note = data, None, None
        if resize == "opencv" and _is_jpeg(data):
            self.size = image_size(data)
        else:
            self.image, self.note = decode_image(data)
            self.size = self.image.shape[:2]

    def finish(self, box: Box, size: tuple[int, int], resize: str
               ) -> tuple[np.ndarray, str | None]:  # fmt: skip
        """The box (in full-size coordinates) resized to `size`, and the note."""
        image, note = self.image, self.note
        if image is None:
            image, note = decode_image(self.data, reduce=_dct_reduction(box, size))
            box = _scale_box(box, self.size, image.shape[:2])
        height, width = self.size
        if height < size[0] or width < size[1]:
            note = _join_notes(note, f"upscaled: {height}x{width} smaller than the crop "
                                     f"{size[0]}x{size[1]}")  # fmt: skip
        return _resize(image, box, size, resize), note


def _dct_reduction(box: Box, size: tuple[int, int]) -> int:
    """The largest of 8, 4, 2 that shrinks the box to no less than `size` on both axes, else 1."""
    _, _, height, width = box
    return next((r for r in _DCT_REDUCTIONS if height >= r * size[0] and width >= r * size[1]), 1)


def _scale_box(box: Box, original: tuple[int, int], decoded: tuple[int, int]) -> Box:
    """`box` of the original image mapped onto its decoded (DCT-scaled) version: the smallest
    pixel box covering it, at least one pixel."""
    top, left, height, width = box
    scale_y, scale_x = decoded[0] / original[0], decoded[1] / original[1]
    y0, x0 = math.floor(top * scale_y), math.floor(left * scale_x)
    y1, x1 = math.ceil((top + height) * scale_y), math.ceil((left + width) * scale_x)
    y0, x0 = min(y0, decoded[0] - 1), min(x0, decoded[1] - 1)
    return y0, x0, max(min(y1, decoded[0]) - y0, 1), max(min(x1, decoded[1]) - x0, 1)


def _resize(image: np.ndarray, box: Box, size: tuple[int, int], resize: str) -> np.ndarray:
    """The box of `image` resized to `size`: C-contiguous `uint8 [size[0], size[1], 3]`.

    "pil": Pillow's bicubic over the box of the whole image (kernels near the box's edges read
    the pixels outside it). "opencv": the box cut out, then `INTER_CUBIC` when it shrinks by
    less than 2 on both axes, else `INTER_AREA`.
    """
    top, left, height, width = box
    out_height, out_width = size
    if resize == "pil":
        resized = Image.fromarray(image).resize(
            (out_width, out_height), Image.Resampling.BICUBIC,
            box=(left, top, left + width, top + height))  # fmt: skip
        return np.array(resized)
    shrinks_twice = height >= 2 * out_height or width >= 2 * out_width
    interpolation = cv2.INTER_AREA if shrinks_twice else cv2.INTER_CUBIC
    crop = image[top:top + height, left:left + width]
    return cv2.resize(crop, (out_width, out_height), interpolation=interpolation)
