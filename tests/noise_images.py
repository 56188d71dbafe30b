"""Test images for the RandAugment tests: half uniform noise, half smooth noisy ramps in a
random [lo, hi] grey range, so AutoContrast and Equalize have work to do."""

import numpy as np


def make_images(seed: int, batch: int = 8, height: int = 32, width: int = 40) -> np.ndarray:
    """uint8 `[batch, height, width, 3]`, deterministic per seed."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (batch, height, width, 3), dtype=np.uint8)
    yy, xx = np.mgrid[:height, :width]
    for i in range(batch // 2):
        lo, hi = np.sort(rng.integers(0, 256, 2))
        ramp = lo + (hi - lo) * (((xx + 0.7 * yy + 13 * i) % 97) / 97.0)
        noisy = ramp[..., None] + rng.integers(-20, 21, (height, width, 3))
        x[i] = np.clip(noisy, lo, hi).astype(np.uint8)
    return x
