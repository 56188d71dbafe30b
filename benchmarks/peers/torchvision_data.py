"""torchvision's input pipeline, the peer of `benchmarks/bench_data.py`: `ImageFolder` +
`DataLoader` with PIL decode, `RandomResizedCrop(224)` (bilinear, antialiased), horizontal flip
and `PILToTensor` (uint8, as nsjax's batches), collated into batches. For 32-px arrays: the
CIFAR recipe, `RandomCrop(32, padding=4)` + flip on PIL images of a NumPy array.

Run with a Python that has torch and torchvision (`$PEERS_PYTHON`); settings from the
environment: `FOLDERS` (comma list of image folders), `NPZ` (an npz with `images`), `WORKERS`
(comma list of DataLoader worker counts; 0 decodes in the main process), `BATCH`, `IMAGES`
(images timed per figure). Prints one JSON line per figure: `{"what", "img_per_s", "workers"}`.
"""

import json
import os
import time

import numpy as np
import torch
from PIL import Image
from torchvision import datasets
from torchvision import transforms as T

torch.set_num_threads(1)
BATCH = int(os.environ.get("BATCH", "64"))
IMAGES = int(os.environ.get("IMAGES", "1024"))


class Arrays(torch.utils.data.Dataset):
    """A NumPy image array as PIL images (what torchvision's CIFAR10 dataset does)."""

    def __init__(self, images, transform):
        self.images, self.transform = images, transform

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.transform(Image.fromarray(self.images[i])), 0


def rate(dataset, workers: int) -> float:
    """Images per second of a shuffled DataLoader over `dataset`, after one warm-up batch."""
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=BATCH, shuffle=True, num_workers=workers, drop_last=True,
        persistent_workers=workers > 0)
    it = iter(loader)
    next(it)
    seen, t0 = 0, time.perf_counter()
    while seen < IMAGES:
        try:
            images, _ = next(it)
        except StopIteration:
            it = iter(loader)
            continue
        seen += len(images)
    return seen / (time.perf_counter() - t0)


def main() -> None:
    train = T.Compose([T.RandomResizedCrop(224), T.RandomHorizontalFlip(), T.PILToTensor()])
    cifar = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.PILToTensor()])
    datasets_ = {f"torchvision_imagefolder:{folder}": datasets.ImageFolder(folder, train)
                 for folder in filter(None, os.environ.get("FOLDERS", "").split(","))}
    if os.environ.get("NPZ"):
        datasets_["torchvision_cifar_arrays"] = Arrays(np.load(os.environ["NPZ"])["images"], cifar)
    for workers in (int(w) for w in os.environ.get("WORKERS", "0").split(",")):
        for what, dataset in datasets_.items():
            print(json.dumps(dict(what=what, img_per_s=rate(dataset, workers), workers=workers)),
                  flush=True)


if __name__ == "__main__":
    main()
