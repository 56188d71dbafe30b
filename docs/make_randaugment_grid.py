"""Draw docs/images/randaugment_grid.png: one natural image under each RandAugment op at
magnitudes 5, 10 and 27, nsjax (left of each pair) beside PIL (right), and print how many
pixels of each pair differ (none, since nsjax computes the ops as PIL does).

The image is Grace Hopper's portrait (US Navy, public domain) that matplotlib ships as sample
data. Needs matplotlib and pillow:  python docs/make_randaugment_grid.py
Arguments are the ones the policy derives (`_level_rule`, the reference's level rule with the
ImageNet constants 100 and 40, positive signs): with L = M / 10, Rotate 30L deg, Shear 0.3L,
Translate 100L px, Cutout half-size int(40L), Posterize int(4L) bits, Solarize int(256L),
SolarizeAdd int(110L), enhance factor 1.8L + 0.1, float ones as float32.
"""

from __future__ import annotations

import os

import jax.numpy as jnp
import numpy as np
from matplotlib import cbook
from PIL import Image, ImageDraw, ImageEnhance, ImageOps

from nsjax.noise import DEFAULT_OPS, ops
from nsjax.noise._randaugment import _level_rule

SIDE, THUMB, MAGNITUDES = 224, 96, (5, 10, 27)
OUT = os.path.join(os.path.dirname(__file__), "images", "randaugment_grid.png")


def natural_image() -> np.ndarray:
    """uint8 [224, 224, 3]: the centre square of the sample portrait, resized."""
    with Image.open(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)) as im:
        w, h = im.size
        s = min(w, h)
        box = ((w - s) // 2, (h - s) // 2, (w + s) // 2, (h + s) // 2)
        return np.asarray(im.convert("RGB").resize((SIDE, SIDE), Image.BICUBIC, box=box))


def args(m: float) -> dict[str, float]:
    """The policy's arguments at magnitude `m` (Python numbers, so PIL gets the same)."""
    rule = _level_rule(float(m), 100.0, 40.0)
    a = {k: v.item() for k, v in rule.items()}
    return a | {"half": a.pop("cutout")}


def nsjax_op(name: str, x: np.ndarray, a: dict) -> np.ndarray:
    b = jnp.asarray(x[None])
    one = lambda v: jnp.asarray([v])  # noqa: E731  (a per-image parameter for a batch of one)
    fns = {
        "AutoContrast": lambda: ops.auto_contrast(b), "Equalize": lambda: ops.equalize(b),
        "Invert": lambda: ops.invert(b), "Rotate": lambda: ops.rotate(b, one(a["degrees"])),
        "Posterize": lambda: ops.posterize(b, one(a["bits"])),
        "Solarize": lambda: ops.solarize(b, one(a["threshold"])),
        "Color": lambda: ops.color(b, one(a["factor"])),
        "Contrast": lambda: ops.contrast(b, one(a["factor"])),
        "Brightness": lambda: ops.brightness(b, one(a["factor"])),
        "Sharpness": lambda: ops.sharpness(b, one(a["factor"])),
        "ShearX": lambda: ops.shear_x(b, one(a["shear"])), "ShearY": lambda: ops.shear_y(b, one(a["shear"])),
        "TranslateX": lambda: ops.translate_x(b, one(a["translate"])),
        "TranslateY": lambda: ops.translate_y(b, one(a["translate"])),
        "SolarizeAdd": lambda: ops.solarize_add(b, one(a["addition"])),
        "Cutout": lambda: ops.cutout(b, jnp.asarray([[SIDE // 2, SIDE // 2]]), one(a["half"])),
    }  # fmt: skip
    return np.asarray(fns[name]())[0]


def pil_op(name: str, x: np.ndarray, a: dict) -> np.ndarray:
    im, fill = Image.fromarray(x), (128, 128, 128)

    def affine(coeffs):
        return im.transform(im.size, Image.AFFINE, coeffs, Image.NEAREST, fillcolor=fill)

    def cutout():
        out = im.copy()
        c, h = SIDE // 2, a["half"]
        ImageDraw.Draw(out).rectangle((c - h, c - h, c + h - 1, c + h - 1), fill=fill)
        return out

    fns = {
        "AutoContrast": lambda: ImageOps.autocontrast(im), "Equalize": lambda: ImageOps.equalize(im),
        "Invert": lambda: ImageOps.invert(im),
        "Rotate": lambda: im.rotate(a["degrees"], Image.NEAREST, fillcolor=fill),
        "Posterize": lambda: ImageOps.posterize(im, a["bits"]) if a["bits"] < 8 else im,
        "Solarize": lambda: ImageOps.solarize(im, a["threshold"]),
        "Color": lambda: ImageEnhance.Color(im).enhance(a["factor"]),
        "Contrast": lambda: ImageEnhance.Contrast(im).enhance(a["factor"]),
        "Brightness": lambda: ImageEnhance.Brightness(im).enhance(a["factor"]),
        "Sharpness": lambda: ImageEnhance.Sharpness(im).enhance(a["factor"]),
        "ShearX": lambda: affine((1, a["shear"], 0, 0, 1, 0)),
        "ShearY": lambda: affine((1, 0, 0, a["shear"], 1, 0)),
        "TranslateX": lambda: affine((1, 0, a["translate"], 0, 1, 0)),
        "TranslateY": lambda: affine((1, 0, 0, 0, 1, a["translate"])),
        "SolarizeAdd": lambda: im.point(lambda v: min(255, v + a["addition"]) if v < 128 else v),
        "Cutout": cutout,
    }  # fmt: skip
    return np.asarray(fns[name]())


def main() -> None:
    x = natural_image()
    label_w, head_h = 110, 36
    cols = 2 * len(MAGNITUDES)
    grid = Image.new("RGB", (label_w + cols * THUMB, head_h + len(DEFAULT_OPS) * THUMB), "white")
    draw = ImageDraw.Draw(grid)
    for j, m in enumerate(MAGNITUDES):
        draw.text((label_w + 2 * j * THUMB + 4, 4), f"M={m}: nsjax | PIL", fill="black")
    for i, name in enumerate(DEFAULT_OPS):
        y = head_h + i * THUMB
        draw.text((4, y + THUMB // 2 - 6), name, fill="black")
        for j, m in enumerate(MAGNITUDES):
            a = args(m)
            pair = nsjax_op(name, x, a), pil_op(name, x, a)
            differ = int((pair[0] != pair[1]).any(-1).sum())
            print(f"{name:12s} M={m:2d}: {differ} of {SIDE * SIDE} pixels differ from PIL")
            for k, img in enumerate(pair):
                thumb = Image.fromarray(img).resize((THUMB, THUMB), Image.BILINEAR)
                grid.paste(thumb, (label_w + (2 * j + k) * THUMB, y))
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    grid.save(OUT, optimize=True)
    print(f"wrote {OUT} ({os.path.getsize(OUT) // 1024} KiB)")


if __name__ == "__main__":
    main()
