"""NumPy-only reference data for the timm EfficientNet parity test.

The weights of the reference models are never stored: they are regenerated here from a manifest of
timm state-dict keys and shapes, and so are the input images. Only the manifests and timm's logits
are committed (``tests/models/fixtures``, written by ``make_timm_fixtures.py``).
"""

import hashlib
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

FIXTURE_DIR = Path(__file__).parent / "fixtures"
"""Where ``<case>.json`` (manifest and metadata) and ``<case>.npz`` (timm logits) live."""

GAIN = 1.52
"""Multiplier on the ±sqrt(3/fan_in) bound of conv and linear weights."""

RESIDUAL_GAIN = 0.25
"""Multiplier used instead of ``GAIN`` for the projection conv of residual blocks.

Eval-mode BN does not normalise, so activation scale compounds over the blocks; damping the
residual branches keeps the block-output RMS within O(1)-O(10) for both cases, which a single
gain cannot (B0 has 9 residual blocks, the depth-0.5 model 3).
"""


@dataclass(frozen=True)
class Case:
    """One parity case: a timm model, the resolutions to run it at and the generator seeds."""

    name: str
    constructor: str
    num_classes: int
    resolutions: tuple[int, ...]
    batch: int
    weight_seed: int
    input_seed: int


CASES: tuple[Case, ...] = (
    Case(
        name="tf_efficientnet_b0",
        constructor="timm.create_model('tf_efficientnet_b0', pretrained=False)",
        num_classes=1000,
        resolutions=(224, 113),
        batch=2,
        weight_seed=0,
        input_seed=1,
    ),
    Case(
        name="b0_w0.5_d0.5_c10",
        constructor=(
            "timm.models.efficientnet._gen_efficientnet('tf_efficientnet_b0', "
            "channel_multiplier=0.5, depth_multiplier=0.5, pretrained=False, bn_eps=1e-3, "
            "pad_type='same', num_classes=10)"
        ),
        num_classes=10,
        resolutions=(64, 77),
        batch=2,
        weight_seed=2,
        input_seed=3,
    ),
)
"""The parity cases; ``constructor`` is evaluated with ``timm`` imported by the generator."""


def _uniform(rng: np.random.Generator, shape: tuple[int, ...], low: float, hi: float) -> np.ndarray:
    """Uniform float32 samples in [low, hi) from ``Generator.random``.

    NumPy promises identical streams only for the same build, but ``random`` (53 raw PCG64 bits
    per double) has not changed since NumPy 1.17; the fixtures' SHA-256 digests catch any drift.
    """
    return (low + (hi - low) * rng.random(shape)).astype(np.float32)


def _gain(key: str, manifest: dict[str, list[int]]) -> float:
    """``RESIDUAL_GAIN`` for the projection conv of a residual block, else ``GAIN``.

    In EfficientNet a block is residual iff it is not the first of its stage (``blocks.S.J`` with
    J > 0); its projection is ``conv_pwl`` (InvertedResidual) or ``conv_pw`` (DepthwiseSeparable,
    which has no ``conv_pwl``).
    """
    parts = key.split(".")
    if parts[0] != "blocks" or parts[2] == "0":
        return GAIN
    block = ".".join(parts[:3])
    projection = "conv_pwl" if f"{block}.conv_pwl.weight" in manifest else "conv_pw"
    return RESIDUAL_GAIN if parts[3] == projection else GAIN


def synthetic_weights(manifest: dict[str, list[int]], seed: int) -> dict[str, np.ndarray]:
    """Deterministic float32 weights for every key of a timm EfficientNet manifest.

    Each key draws from its own generator seeded by ``(seed, crc32(key))``, so a weight does not
    depend on the order of the keys. Conv/linear weights are uniform in ±gain·sqrt(3/fan_in)
    (fan_in = in/groups·kh·kw, gain from ``_gain``); BN gamma and running_var uniform in
    [0.5, 1.5]; every bias and running_mean uniform in ±0.1.
    """
    weights = {}
    for key, shape_list in manifest.items():
        shape = tuple(shape_list)
        rng = np.random.default_rng([seed, zlib.crc32(key.encode())])
        if key.endswith(".running_var") or (key.endswith(".weight") and len(shape) == 1):
            weights[key] = _uniform(rng, shape, 0.5, 1.5)
        elif key.endswith((".bias", ".running_mean")):
            weights[key] = _uniform(rng, shape, -0.1, 0.1)
        elif key.endswith(".weight") and len(shape) in (2, 4):
            bound = _gain(key, manifest) * np.sqrt(3.0 / np.prod(shape[1:]))
            weights[key] = _uniform(rng, shape, -bound, bound)
        else:
            raise ValueError(f"unexpected manifest entry {key} {shape}")
    return weights


def synthetic_images(batch: int, size: int, seed: int) -> np.ndarray:
    """Deterministic float32 NHWC images ``[batch, size, size, 3]``, uniform in [-2, 2)."""
    return _uniform(np.random.default_rng(seed), (batch, size, size, 3), -2.0, 2.0)


def digest(arrays: Iterable[np.ndarray]) -> str:
    """SHA-256 of the arrays' bytes in order; recorded in the fixtures to detect generator drift."""
    sha = hashlib.sha256()
    for array in arrays:
        sha.update(np.ascontiguousarray(array).tobytes())
    return sha.hexdigest()
