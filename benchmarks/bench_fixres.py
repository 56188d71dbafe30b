"""FixRes resize and crops, 256 px uint8 -> 224 px, beside PIL looping over the same images.

The peer is what a PIL input pipeline does per image: `Image.resize(BICUBIC, box=...)` (a crop
box and a resize in one call) on one core, with the same boxes as nsjax (the random crop's
boxes come from nsjax's own sampler). Conversion to and from PIL images is not timed. It is
skipped where pillow is not installed (e.g. a bare GPU machine). The "whole machine" speedup
divides PIL's time by the host's cores (PIL per core x cores), against nsjax on all of them.

Each op also runs with jax.image's dense weight matrices (`nsjax.fixres._dense_crop_resize`,
what TPUs use and what every platform used before the sparse taps), as a second peer.
"""

from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks._harness import Figure, Options, register, time_call
from nsjax import fixres

try:
    from PIL import Image
except ImportError:  # the peer is optional
    Image = None

_SIDE, _OUT = 256, 224


def _pil_crop_resize(pil_images: list, boxes) -> list:
    """PIL's crop + bicubic resize of each image's (top, left, height, width) box."""
    return [im.resize((_OUT, _OUT), Image.BICUBIC, box=(int(x), int(y), int(x + w), int(y + h)))
            for im, (y, x, h, w) in zip(pil_images, boxes)]  # fmt: skip


@register("fixres")
def bench_fixres(opts: Options) -> list[Figure]:
    batch = 32 if opts.quick else 256
    host = np.random.default_rng(0).integers(0, 256, (batch, _SIDE, _SIDE, 3), dtype=np.uint8)
    images = jnp.asarray(host)
    key = jax.random.key(0)
    center = fixres._center_box(_SIDE, _SIDE, 0.875)
    random_boxes = np.asarray(fixres._sample_boxes(
        key, batch, _SIDE, _SIDE, (0.08, 1.0), (3 / 4, 4 / 3), center
    )).astype(int)  # fmt: skip
    cases = [  # name, nsjax function, its boxes, (top, left, height, width) per image for PIL
        ("resize", lambda x: fixres.resize(x, _OUT), (0, 0, _SIDE, _SIDE),
         [(0, 0, _SIDE, _SIDE)] * batch),
        ("center_crop_resize", lambda x: fixres.center_crop_resize(x, _OUT), center,
         [center] * batch),
        ("random_resized_crop", lambda x: fixres.random_resized_crop(key, x, _OUT),
         jnp.asarray(random_boxes, jnp.float32), random_boxes),
    ]  # fmt: skip
    pil_images = None if Image is None else [Image.fromarray(im) for im in host]
    figures = []
    for name, fn, nsjax_boxes, boxes in cases:
        seconds = time_call(functools.partial(jax.jit(fn), images), repeats=opts.repeats)
        dense = jax.jit(functools.partial(
            fixres._dense_crop_resize, boxes=nsjax_boxes, size=(_OUT, _OUT), method="bicubic"))
        dense_seconds = time_call(functools.partial(dense, images), repeats=opts.repeats)
        peer = peer_seconds = None
        extra = {"dense_jax_image_seconds": dense_seconds, "cores": os.cpu_count()}
        if pil_images is not None:
            peer = "PIL Image.resize(BICUBIC, box), 1 core"
            peer_seconds = time_call(
                functools.partial(_pil_crop_resize, pil_images, boxes), repeats=opts.repeats
            )
            extra["speedup_vs_pil_on_every_core"] = peer_seconds / os.cpu_count() / seconds
        figures.append(Figure(
            name=f"{name} uint8 {batch}x{_SIDE}x{_SIDE} -> {_OUT}", seconds=seconds, items=batch,
            item_unit="img", peer=peer, peer_seconds=peer_seconds, extra=extra,
        ))  # fmt: skip
        figures.append(Figure(
            name=f"{name}, sparse taps against dense jax.image", seconds=seconds, items=batch,
            item_unit="img", peer="nsjax.fixres dense (jax.image weights)",
            peer_seconds=dense_seconds,
        ))  # fmt: skip
    return figures
