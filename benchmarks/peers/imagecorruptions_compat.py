"""`imagecorruptions` 1.1.2 (bethgelab), the reference and peer of `nsjax.robustness.corrupt`,
made to run on current NumPy and scikit-image.

It was written for NumPy 1.x and scikit-image < 0.19: it calls `np.float_` (removed in NumPy 2)
and `skimage.filters.gaussian(..., multichannel=True)` (now `channel_axis=-1`). `load` supplies
both names as they were, changing no computation, and silences the deprecation warnings its
imports raise (`pkg_resources`, `scipy.ndimage.interpolation`).
"""

from __future__ import annotations

import importlib
import importlib.util
import warnings
from types import ModuleType

import numpy as np


class _NumpyWithFloat:
    """NumPy as seen by `imagecorruptions.corruptions`, with `np.float_` = `np.float64`."""

    float_ = np.float64

    def __getattr__(self, name):
        return getattr(np, name)


def load() -> ModuleType | None:
    """The patched `imagecorruptions` module, or None when it is not installed."""
    if importlib.util.find_spec("imagecorruptions") is None:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        module = importlib.import_module("imagecorruptions")
        corruptions = importlib.import_module("imagecorruptions.corruptions")
    if getattr(corruptions, "_nsjax_patched", False):
        return module
    skimage_gaussian = corruptions.gaussian

    def gaussian(image, *args, multichannel=None, **kwargs):
        if multichannel:
            kwargs["channel_axis"] = -1
        return skimage_gaussian(image, *args, **kwargs)

    corruptions.gaussian = gaussian
    if not hasattr(np, "float_"):
        corruptions.np = _NumpyWithFloat()
    corruptions._nsjax_patched = True
    return module
