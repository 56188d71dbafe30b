"""The CPU defaults' budget, measured: `nsjax iterate` with no config over 10,000 training
images of <= 32 px (1,000 labeled + 9,000 unlabeled) and a held-out test set, two student
generations; the issue asks for at most 20 minutes on a 2-core CPU with a real accuracy gain.

No public 10,000-image set ships offline, so the images are made from the real digits shipped
with nsjax: the 1,397 digits outside a 400-image held-out set, each drawn 7 or 8 times,
upscaled to 24 px (bicubic) inside a 28x28 grey frame at a random offset and rotation (+-12
degrees); the
test set is the held-out digits drawn the same way, once each. Only the training images are
augmented copies; no test digit or copy of one is ever trained on.

    python scripts/cpu_budget_check.py --out budget-run     # prints the table and the time
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

import numpy as np
from PIL import Image

from nsjax.loop._demo import DIGITS


def _draw(image: np.ndarray, rng: np.random.Generator, centred: bool) -> np.ndarray:
    """One 8x8 digit as a 28x28 grey image: upscaled to 24 px, rotated, placed."""
    big = Image.fromarray(image).resize((24, 24), Image.BICUBIC)
    if not centred:
        big = big.rotate(float(rng.uniform(-12, 12)), resample=Image.BILINEAR)
    top, left = (2, 2) if centred else rng.integers(0, 5, 2)
    out = np.zeros((28, 28), np.uint8)
    out[top:top + 24, left:left + 24] = np.asarray(big)
    return out


def make_data(folder: str, seed: int = 0) -> dict[str, str]:
    """Write labeled.npz (1,000), unlabeled.npz (9,000) and test.npz (400) into `folder`."""
    with np.load(DIGITS) as f:
        images, labels = f["images"], f["labels"].astype(np.int32)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(labels))
    test, train = order[:400], order[400:]
    copies = np.resize(train, 10_000)  # 7 or 8 drawings of each training digit
    rng.shuffle(copies)
    drawn = np.stack([_draw(images[i], rng, centred=False) for i in copies])
    by_class = [np.flatnonzero(labels[copies] == c)[:100] for c in range(10)]
    chosen = np.concatenate(by_class)
    rest = np.setdiff1d(np.arange(len(copies)), chosen)
    os.makedirs(folder, exist_ok=True)
    paths = {name: os.path.join(folder, f"{name}.npz") for name in ("labeled", "unlabeled", "test")}
    np.savez(paths["labeled"], images=drawn[chosen], labels=labels[copies[chosen]])
    np.savez(paths["unlabeled"], images=drawn[rest])
    np.savez(paths["test"], images=np.stack([_draw(images[i], rng, True) for i in test]),
             labels=labels[test])
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    paths = make_data(os.path.join(args.out, "data"))
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "nsjax.cli", "iterate", "--labeled", paths["labeled"],
                    "--unlabeled", paths["unlabeled"], "--test", paths["test"],
                    "--out", os.path.join(args.out, "run")], check=True)
    print(f"nsjax iterate with the defaults: {time.perf_counter() - start:.0f} s wall")


if __name__ == "__main__":
    main()
