"""Small image sets made in the tests (nothing is downloaded): npz files whose image `i` is the
constant `i` (so any crop of it still says which record it was), and folders of JPEGs."""

from __future__ import annotations

import io
import os

import numpy as np
from PIL import Image


def constant_images(n: int, side: int = 16, *, grey: bool = False) -> np.ndarray:
    """uint8 `[n, side, side, 3]` (or `[n, side, side]`) with image `i` equal to `i`."""
    images = np.broadcast_to(np.arange(n, dtype=np.uint8)[:, None, None, None], (n, side, side, 3))
    return np.ascontiguousarray(images[..., 0] if grey else images)


def write_npz(path: str, n: int, *, side: int = 16, num_classes: int = 3, labeled: bool = True,
              compressed: bool = False, grey: bool = False) -> str:
    arrays = dict(images=constant_images(n, side, grey=grey))
    if labeled:
        arrays["labels"] = np.arange(n) % num_classes
    (np.savez_compressed if compressed else np.savez)(path, **arrays)
    return path


def jpeg_bytes(value: int, size: tuple[int, int] = (40, 48), mode: str = "RGB") -> bytes:
    """A JPEG of a constant image (height, width) = size of grey level `value`."""
    image = Image.new(mode, size[::-1], value if mode == "L" else (value,) * len(mode))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=95)
    return buffer.getvalue()


def write_folder(root: str, counts: dict[str, int], *, size: tuple[int, int] = (40, 48)) -> str:
    """`root/<class>/<i>.jpg` for each class and count; image values 10, 20, ... in order."""
    value = 10
    for name, count in counts.items():
        os.makedirs(os.path.join(root, name), exist_ok=True)
        for i in range(count):
            with open(os.path.join(root, name, f"{i:03d}.jpg"), "wb") as fh:
                fh.write(jpeg_bytes(value, size))
            value = (value + 10) % 250
    return root
