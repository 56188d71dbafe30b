"""Host input pipelines (`nsjax.data`), images per second per host core, beside torchvision's
`ImageFolder` + `DataLoader` with the same number of workers, measured in the same run
(`benchmarks/peers/torchvision_data.py`, run by the peer Python):

- (a) ImageNet-like JPEGs (about 400x350, quality 90, cut from scikit-learn's two sample
  photos) to a 224 training crop (Inception crop + flip);
- (b) the same images stored at short side 256: nsjax in ArrayRecord shards (`write_shards`),
  torchvision in a folder of the same resized JPEGs;
- (c) an npz of 32-px images to the 32-px training crop (pad 4 + random crop + flip).

Each figure is the median of 3 rounds (1 with `--quick`), nsjax and the peer alternating. Two
figures per case: on one core (nsjax decoding in the main thread, torchvision's DataLoader
without workers) and on every core (nsjax in `cores` threads of one process and in `cores`
worker processes, the faster compared; torchvision with `cores` DataLoader workers).
Needs grain (not on the GPU image: this benchmark is for CPU hosts).
"""

from __future__ import annotations

import collections
import importlib.util
import os
import statistics
import sys
import tempfile
import time

import numpy as np

from benchmarks._harness import Figure, Options, register
from benchmarks.peers import run_script

PEER = os.path.join(os.path.dirname(__file__), "peers", "torchvision_data.py")


def _photos() -> list[np.ndarray]:
    from sklearn.datasets import load_sample_images

    return list(load_sample_images().images)


def make_jpegs(root: str, count: int, *, classes: int = 4, seed: int = 0) -> None:
    """`count` JPEGs of about 400x350 (each side +-20 px), quality 90, in `classes` folders."""
    from PIL import Image

    photos, rng = _photos(), np.random.default_rng(seed)
    for i in range(count):
        photo = photos[i % len(photos)]
        h, w = int(rng.integers(330, 371)), int(rng.integers(380, 421))
        top, left = int(rng.integers(0, photo.shape[0] - h)), int(rng.integers(0, photo.shape[1] - w))
        folder = os.path.join(root, f"class{i % classes}")
        os.makedirs(folder, exist_ok=True)
        Image.fromarray(photo[top:top + h, left:left + w]).save(
            os.path.join(folder, f"{i:05d}.jpg"), "JPEG", quality=90)


def resize_folder(src: str, dst: str, short_side: int) -> None:
    """The JPEGs of `src` with their short side resized to `short_side` (quality 95), for the
    peer of (b)."""
    from PIL import Image

    for folder, _, files in os.walk(src):
        out = os.path.join(dst, os.path.relpath(folder, src))
        os.makedirs(out, exist_ok=True)
        for name in files:
            image = Image.open(os.path.join(folder, name))
            scale = short_side / min(image.size)
            image.resize((round(image.size[0] * scale), round(image.size[1] * scale)),
                         Image.BICUBIC).save(os.path.join(out, name), "JPEG", quality=95)


def pipeline_rate(source, crop, *, images: int, batch: int, workers: int, threads: int) -> float:
    """Images per second of `train_pipeline` over `source`, after one warm-up batch."""
    from nsjax.data import train_pipeline

    with train_pipeline(source, batch, crop, seed=0, workers=workers, threads=threads,
                        prefetch=0) as batches:  # fmt: skip
        next(batches)
        t0, seen = time.perf_counter(), 0
        while seen < images:
            seen += len(next(batches)["images"])
        return seen / (time.perf_counter() - t0)


@register("data")
def bench_data(opts: Options) -> list[Figure]:
    if importlib.util.find_spec("grain") is None:  # the GPU image: a host benchmark anyway
        print("[data] skipped: grain is not installed", file=sys.stderr)
        return []
    from nsjax.data import ImageFolderSource, NpzSource, ShardSource, TrainCrop, write_shards

    cores = os.cpu_count() or 1
    count, images, batch = (128, 256, 32) if opts.quick else (512, 1536, 64)
    figures = []
    with tempfile.TemporaryDirectory() as tmp:
        jpegs, small, shards = (os.path.join(tmp, d) for d in ("jpegs", "jpegs256", "shards"))
        make_jpegs(jpegs, count)
        resize_folder(jpegs, small, 256)
        write_shards(ImageFolderSource(jpegs), shards, short_side=256, records_per_shard=128)
        tiny = np.random.default_rng(0).integers(0, 256, (count * 8, 32, 32, 3), dtype=np.uint8)
        npz = os.path.join(tmp, "tiny.npz")
        np.savez(npz, images=tiny, labels=np.zeros(len(tiny), np.int64))
        cases = [
            ("(a) JPEG ~400x350 -> 224", ImageFolderSource(jpegs), TrainCrop(224),
             f"torchvision_imagefolder:{jpegs}"),
            ("(b) shards, short side 256 -> 224", ShardSource(shards), TrainCrop(224),
             f"torchvision_imagefolder:{small}"),
            ("(c) npz 32 px -> 32 pad crop", NpzSource(npz), TrainCrop(32, crop="pad"),
             "torchvision_cifar_arrays"),
        ]  # fmt: skip
        configs = {"1 core": (0, 0), "threads": (0, cores), "workers": (cores, 1)}
        rates: dict[tuple[str, ...], list[float]] = collections.defaultdict(list)
        for _ in range(1 if opts.quick else 3):  # rounds, peer and nsjax alternating
            for r in run_script(PEER, FOLDERS=f"{jpegs},{small}", NPZ=npz, WORKERS=f"0,{cores}",
                                BATCH=batch, IMAGES=images):  # fmt: skip
                rates[r["what"], str(r["workers"])].append(r["img_per_s"])
            for name, source, crop, _ in cases:
                for config, (workers, threads) in configs.items():
                    rates[name, config].append(pipeline_rate(
                        source, crop, images=images, batch=batch, workers=workers,
                        threads=threads))  # fmt: skip
        median = {k: statistics.median(v) for k, v in rates.items()}
        for name, _, _, peer in cases:
            threaded, processes = median[name, "threads"], median[name, "workers"]
            for label, rate, peer_rate, peer_name, used in (
                ("1 core", median[name, "1 core"], median.get((peer, "0")),
                 "torchvision, DataLoader in-process", 1),
                (f"{cores} cores", max(threaded, processes), median.get((peer, str(cores))),
                 f"torchvision, {cores} DataLoader workers", cores),
            ):  # fmt: skip
                figures.append(Figure(
                    f"{name}, {label}", images / rate, images, "img",
                    peer=peer_name if peer_rate else None,
                    peer_seconds=images / peer_rate if peer_rate else None,
                    extra=dict(img_per_s_per_core=round(rate / used, 1),
                               peer_img_per_s_per_core=peer_rate and round(peer_rate / used, 1),
                               **({} if used == 1 else dict(threads_img_per_s=round(threaded, 1),
                                                             workers_img_per_s=round(processes, 1))))))
    return figures
