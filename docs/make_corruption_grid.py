"""Draw docs/images/corruptions.png: one natural photo under each of the 19 ImageNet-C
corruptions (rows) at severities 1-5 (columns, the clean photo first), as `nsjax.robustness.
corrupt` computes them.

The photo is scikit-learn's sample image `china.jpg`, prepared as ImageNet-C prepares its
images: resized so its short side is 256 (bilinear), then the centre 224 x 224. Each tile is
shown at 112 px. Needs scikit-learn and pillow:  python docs/make_corruption_grid.py
"""

from __future__ import annotations

import os

import jax
import numpy as np
from PIL import Image, ImageDraw

from nsjax.robustness import CORRUPTIONS, HOST_CORRUPTIONS, corrupt

SIDE, THUMB, LABEL_WIDTH, HEADER = 224, 112, 150, 22
OUT = os.path.join(os.path.dirname(__file__), "images", "corruptions.png")


def photo() -> np.ndarray:
    """uint8 [224, 224, 3]: scikit-learn's china.jpg, short side 256, centre crop."""
    from sklearn.datasets import load_sample_image

    im = Image.fromarray(load_sample_image("china.jpg"))
    w, h = im.size
    scale = 256 / min(w, h)
    im = im.resize((round(w * scale), round(h * scale)), Image.BILINEAR)
    w, h = im.size
    left, top = (w - SIDE) // 2, (h - SIDE) // 2
    return np.asarray(im.crop((left, top, left + SIDE, top + SIDE)))


def grid(image: np.ndarray, key: jax.Array) -> Image.Image:
    """The figure: a header row, then one row per corruption."""
    cols = 6
    out = Image.new("RGB", (LABEL_WIDTH + cols * THUMB, HEADER + len(CORRUPTIONS) * THUMB),
                    "white")
    draw = ImageDraw.Draw(out)
    for c, title in enumerate(["clean"] + [f"severity {s}" for s in range(1, 6)]):
        draw.text((LABEL_WIDTH + c * THUMB + 8, 5), title, fill="black")
    for r, name in enumerate(CORRUPTIONS):
        y = HEADER + r * THUMB
        where = " (host)" if name in HOST_CORRUPTIONS else ""
        draw.text((6, y + THUMB // 2 - 6), name + where, fill="black")
        tiles = [image] + [np.asarray(corrupt(jax.random.fold_in(key, r), image, name, s))
                           for s in range(1, 6)]
        for c, tile in enumerate(tiles):
            thumb = Image.fromarray(tile).resize((THUMB, THUMB), Image.BILINEAR)
            out.paste(thumb, (LABEL_WIDTH + c * THUMB, y))
    return out


def main() -> None:
    figure = grid(photo(), jax.random.key(0))
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    figure.save(OUT, optimize=True)  # full colour: a 256-colour palette posterises saturate
    print(f"wrote {OUT} ({os.path.getsize(OUT) / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
