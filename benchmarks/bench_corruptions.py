"""The 19 ImageNet-C corruptions at severity 3 on a batch of 224x224 uint8 images
(`nsjax.robustness.corrupt`, jitted, batched), beside `imagecorruptions` (bethgelab, the
package users reach for) run one image at a time in this process, in the same run.

The peer runs on one core; its "whole machine" figure is that throughput times the core count
(its `corrupt_images.py` parallelises over processes). nsjax uses every core (CPU) or the
accelerator; its host corruptions (`HOST_CORRUPTIONS`) run one image at a time on the host on
every backend. Without `imagecorruptions` installed, only nsjax is timed. The GPU image has neither
OpenCV nor `imagecorruptions`: benchmarks/gpu.sh says how to bring OpenCV.
"""

from __future__ import annotations

import os
import time

import jax
import numpy as np

from benchmarks._harness import Figure, Options, register, time_call
from benchmarks.peers import imagecorruptions_compat

SEVERITY = 3


def _photos(batch: int, side: int) -> np.ndarray:
    """uint8 [batch, side, side, 3]: crops of scikit-learn's sample photos when available (the
    corruptions' cost does not depend on content), else smooth random images."""
    rng = np.random.default_rng(0)
    try:
        from sklearn.datasets import load_sample_images

        pool = load_sample_images().images
    except ImportError:
        ramp = np.linspace(0, 255, 640)[None, :, None] * np.ones((480, 1, 3))
        pool = [np.clip(ramp + rng.normal(0, 20, ramp.shape), 0, 255).astype(np.uint8)]
    out = np.empty((batch, side, side, 3), np.uint8)
    for i in range(batch):
        src = pool[i % len(pool)]
        y, x = rng.integers(0, src.shape[0] - side), rng.integers(0, src.shape[1] - side)
        out[i] = src[y:y + side, x:x + side]
    return out


def _peer_seconds_per_image(module, images: np.ndarray, name: str, budget: float) -> float:
    """Median seconds per image of `imagecorruptions.corrupt`, over images until `budget` s."""
    times = []
    start = time.perf_counter()
    for i, image in enumerate(images):
        np.random.seed(i)
        t0 = time.perf_counter()
        module.corrupt(image, severity=SEVERITY, corruption_name=name)
        times.append(time.perf_counter() - t0)
        if time.perf_counter() - start > budget:
            break
    return float(np.median(times))


@register("corruptions")
def bench_corruptions(opts: Options) -> list[Figure]:
    # imported here: nsjax.robustness needs OpenCV, which the GPU image lacks, and a failed
    # import must fail this benchmark only, not every other one
    from nsjax.robustness import CORRUPTIONS, HOST_CORRUPTIONS, corrupt

    side = 224
    accel = jax.devices()[0].platform != "cpu"
    batch = 8 if opts.quick else (256 if accel else 32)
    images = _photos(batch, side)
    on_device = jax.device_put(images)
    key = jax.random.key(0)
    peer = imagecorruptions_compat.load()
    cores = os.cpu_count() or 1
    figures = []
    for name in CORRUPTIONS:
        seconds = time_call(lambda: corrupt(key, on_device, name, SEVERITY),
                            repeats=max(1, opts.repeats // (2 if name in HOST_CORRUPTIONS else 1)))
        peer_seconds, peer_name, extra = None, None, {}
        if peer is not None:
            one = _peer_seconds_per_image(peer, images, name, 0.5 if opts.quick else 2.0)
            extra["imagecorruptions_img_per_s_one_core"] = round(1.0 / one, 2)
            if accel:
                peer_name, peer_seconds = "imagecorruptions, 1 image/call, 1 core", batch * one
            else:
                peer_name = f"imagecorruptions, 1 image/call x {cores} cores"
                peer_seconds = batch * one / cores
        where = " (host)" if name in HOST_CORRUPTIONS else ""
        figures.append(Figure(f"corrupt {name}{where} s{SEVERITY} {batch}x{side}", seconds, batch,
                              "img", peer=peer_name, peer_seconds=peer_seconds, extra=extra))
    return figures
