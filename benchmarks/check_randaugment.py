"""Bit-exactness of RandAugment on the accelerator: the policy and every op on the default
device against the CPU (per-image executor), in one process. Run by benchmarks/gpu.sh before
the timings and by `pytest -m accelerator` (tests/test_randaugment_accelerator.py); exits 1
on any differing pixel, 2 when `--require-accelerator` finds no GPU or TPU.

    python -m benchmarks.check_randaugment [--out results.json] [--require-accelerator]

On a machine without an accelerator the default device is the CPU, so the batched executor
(the one GPUs and TPUs run) is checked against the per-image one on the four policies instead,
and the single ops (which would compare the CPU with itself) are left out. Executors are chosen
with `randaugment(..., executor=...)`.
"""

from __future__ import annotations

import functools
import sys

import jax
import numpy as np

from benchmarks import _device_check
from benchmarks._device_check import accelerator
from nsjax import noise
from nsjax.noise import ops

SIDE = 64


def _images(seed: int, batch: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (batch, SIDE, SIDE, 3), dtype=np.uint8)


def _policy(images, key, executor: str, **kwargs) -> np.ndarray:
    """`randaugment`, N = 2, with an explicit executor ("auto" picks by platform)."""
    return np.asarray(noise.randaugment(key, images, num_layers=2, executor=executor, **kwargs))


def _op_cases(batch: int) -> dict[str, functools.partial]:
    rng = np.random.default_rng(7)
    degrees = rng.uniform(-90, 90, batch).astype(np.float32)
    shear = rng.uniform(-1, 1, batch).astype(np.float32)
    pixels = rng.uniform(-40, 40, batch).astype(np.float32)
    factor = rng.uniform(0, 5, batch).astype(np.float32)
    cases = {}
    for compat in (False, True):
        tag = " tf_compat" if compat else ""
        cases |= {
            f"rotate{tag}": functools.partial(ops.rotate, degrees=degrees, tf_compat=compat),
            f"shear_x{tag}": functools.partial(ops.shear_x, shear=shear, tf_compat=compat),
            f"translate_y{tag}": functools.partial(ops.translate_y, pixels=pixels,
                                                   tf_compat=compat),
            f"auto_contrast{tag}": functools.partial(ops.auto_contrast, tf_compat=compat),
            f"color{tag}": functools.partial(ops.color, factor=factor, tf_compat=compat),
            f"contrast{tag}": functools.partial(ops.contrast, factor=factor, tf_compat=compat),
            f"sharpness{tag}": functools.partial(ops.sharpness, factor=factor, tf_compat=compat),
        }
    cases["equalize"] = ops.equalize
    return cases


def check(batch: int = 64) -> list[dict]:
    """One row per case: how many pixels differ between the default device and the CPU."""
    cpu = jax.devices("cpu")[0]
    device = jax.devices()[0]
    subject = "auto" if accelerator() is not None else "batched"
    rows = []

    def record(name: str, got: np.ndarray, want: np.ndarray) -> None:
        differ = int((got != want).any(-1).sum())
        rows.append({"case": name, "device": device.platform, "pixels": int(want[..., 0].size),
                     "differ": differ})

    policies = {
        "randaugment M=27": {}, "randaugment M=10 tf_compat": {"magnitude": 10.0,
                                                               "tf_compat": True},
        "randaugment M=9 mstd=3": {"magnitude": 9.0, "magnitude_std": 3.0},
        "randaugment M=27 tf_compat mstd=5": {"tf_compat": True, "magnitude_std": 5.0},
    }
    for seed, (name, kwargs) in enumerate(policies.items()):
        x, key = _images(seed, batch), jax.random.key(seed)
        want = _policy(jax.device_put(x, cpu), jax.device_put(key, cpu), "per_image",
                       **dict(kwargs))
        got = _policy(jax.device_put(x, device), jax.device_put(key, device), subject,
                      **dict(kwargs))
        record(name, got, want)
    if device.platform == "cpu":  # the ops alone would compare the CPU with itself
        return rows
    x = _images(99, batch)
    for name, fn in _op_cases(batch).items():
        want = np.asarray(fn(jax.device_put(x, cpu)))
        got = np.asarray(fn(jax.device_put(x, device)))
        record(name, got, want)
    return rows


def main(argv: list[str] | None = None) -> int:
    return _device_check.main(
        argv, description=__doc__.splitlines()[0], check=check, batch=64,
        describe=lambda r: f"{r['case']:38s} {r['device']:5s} {r['differ']:7d} of {r['pixels']} "
                           f"pixels differ",
        passes=lambda r: r["differ"] == 0)


if __name__ == "__main__":
    sys.exit(main())
