"""RandAugment on 256 uint8 images of 224x224 (N=2, M=27, the 16 official ops), jitted, beside
timm's PIL RandAugment and torchvision v2 from peers.py measured in the same run.

CPU: the peers run one image at a time on one core; the "whole machine" peer figure is that
throughput times the core count (the issue's target: nsjax >= 2x timm on the whole machine).
GPU: the peer is torchvision v2 on the GPU, one call per image (its only way to draw an op per
image).
"""

from __future__ import annotations

import functools
import os

import jax
import numpy as np

from benchmarks._harness import Figure, Options, register, time_call
from benchmarks.peers import run_peers
from nsjax import noise


@register("randaugment")
def bench_randaugment(opts: Options) -> list[Figure]:
    batch, side = (32 if opts.quick else 256), 224
    images = jax.numpy.asarray(
        np.random.default_rng(0).integers(0, 256, (batch, side, side, 3), dtype=np.uint8)
    )
    key = jax.random.key(0)
    accel = next(iter(images.devices())).platform != "cpu"  # where the timed calls run
    peers = {r["what"]: r for r in run_peers("gpu_aug" if accel else "cpu_aug", RES=side)}
    cores = os.cpu_count() or 1
    if accel:
        tv = peers.get("torchvision_v2_randaugment_per_image")
        peer_name, peer_rate = "torchvision v2 RandAugment, per image, GPU", tv and tv["img_per_s"]
    else:
        tm = peers.get("timm_pil_randaugment_rand-m27-n2-mmax27-p1.0")
        peer_name = f"timm PIL rand-m27-n2-mmax27-p1.0 x {cores} cores"
        peer_rate = tm and tm["img_per_s_one_core"] * cores
    extra = {k: round(v.get("img_per_s", v.get("img_per_s_one_core", 0.0)), 1)
             for k, v in peers.items() if "randaugment" in k}  # fmt: skip
    figures = []
    for name, kwargs in (("randaugment N=2 M=27", {}), ("randaugment N=2 M=27 tf_compat", {"tf_compat": True})):
        fn = jax.jit(functools.partial(noise.randaugment, num_layers=2, magnitude=27.0, **kwargs))
        seconds = time_call(lambda: fn(key, images), repeats=opts.repeats * 2)
        figures.append(Figure(
            f"{name} uint8 {batch}x{side}x{side}", seconds, batch, "img", peer=peer_name if peer_rate else None,
            peer_seconds=batch / peer_rate if peer_rate else None, extra={"peers_img_per_s": extra},
        ))  # fmt: skip
    svhn = jax.numpy.asarray(np.random.default_rng(1).integers(0, 256, (batch * 8, 32, 32, 3), dtype=np.uint8))
    fn = jax.jit(noise.svhn_augment)
    figures.append(Figure(f"svhn_augment uint8 {batch * 8}x32x32", time_call(lambda: fn(key, svhn),
                          repeats=opts.repeats * 2), batch * 8, "img"))  # fmt: skip
    return figures
