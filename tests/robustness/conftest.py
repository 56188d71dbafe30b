"""Fixtures of the robustness tests: the reference `imagecorruptions` (a test-only dependency,
patched to run on NumPy 2 and current scikit-image by `benchmarks.peers.imagecorruptions_compat`)
and a natural photo."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.peers import imagecorruptions_compat


@pytest.fixture(scope="session")
def imagecorruptions():
    """The `imagecorruptions` module: `corrupt(image, severity=s, corruption_name=name)` after
    `np.random.seed(...)`; `.corruptions` holds the individual functions and helpers."""
    module = imagecorruptions_compat.load()
    if module is None:
        pytest.fail("imagecorruptions is not installed: pip install -e '.[dev]'")
    return module


@pytest.fixture(scope="session")
def photo() -> np.ndarray:
    """scikit-learn's sample photo `china.jpg`, uint8 `[427, 640, 3]`."""
    from sklearn.datasets import load_sample_image

    return load_sample_image("china.jpg")
