"""FixRes resampling on the accelerator against the CPU: `resize`, `center_crop_resize` and
`random_resized_crop` (bicubic and bilinear, uint8 and float32) on the default device and on
the CPU, in one process. Both run the same float32 taps (`nsjax.fixres._sparse_crop_resize`);
only the order in which a compiler contracts a multiply-add can move a value sitting on a
rounding tie, so uint8 pixels may differ by one level, on at most `MAX_TIES` of them, and float
pixels by float32 rounding. Run by benchmarks/gpu.sh and by `pytest -m accelerator`
(tests/test_fixres_accelerator.py); exits 1 beyond those bounds, 2 when
`--require-accelerator` finds no GPU or TPU.

    python -m benchmarks.check_fixres [--out results.json] [--require-accelerator]
"""

from __future__ import annotations

import sys

import jax
import numpy as np

from benchmarks import _device_check
from nsjax import fixres

MAX_TIES = 1e-4  # fraction of uint8 values allowed one level apart
FLOAT_TOLERANCE = 1e-3  # absolute, on values in [0, 255]


def _cases(key):
    for method in ("bicubic", "bilinear"):
        yield f"resize 256->224 {method}", lambda x, m=method: fixres.resize(x, 224, method=m)
        yield f"resize 224->288 {method}", lambda x, m=method: fixres.resize(
            x[:, :224, :224], 288, method=m)
        yield f"center_crop_resize {method}", lambda x, m=method: fixres.center_crop_resize(
            x, 224, method=m)
        yield f"random_resized_crop {method}", lambda x, m=method: fixres.random_resized_crop(
            key, x, 224, method=m)


def check(batch: int = 16) -> list[dict]:
    """One row per case and dtype: how many values differ between the default device and the
    CPU, and by how much."""
    cpu, device = jax.devices("cpu")[0], jax.devices()[0]
    images = np.random.default_rng(0).integers(0, 256, (batch, 256, 256, 3), dtype=np.uint8)
    rows = []
    for name, fn in _cases(jax.random.key(0)):
        for dtype in (np.uint8, np.float32):
            x = images.astype(dtype)
            want = np.asarray(jax.jit(fn)(jax.device_put(x, cpu)), np.float64)
            got = np.asarray(jax.jit(fn)(jax.device_put(x, device)), np.float64)
            diff = np.abs(got - want)
            rows.append({"case": name, "dtype": np.dtype(dtype).name, "device": device.platform,
                         "values": int(diff.size), "differ": int((diff > 0).sum()),
                         "max_diff": float(diff.max())})  # fmt: skip
    return rows


def within_bounds(row: dict) -> bool:
    if row["dtype"] == "uint8":
        return row["max_diff"] <= 1 and row["differ"] <= MAX_TIES * row["values"]
    return row["max_diff"] <= FLOAT_TOLERANCE


def main(argv: list[str] | None = None) -> int:
    return _device_check.main(
        argv, description=__doc__.splitlines()[0], check=check, passes=within_bounds, batch=16,
        describe=lambda r: f"{r['case']:34s} {r['dtype']:7s} {r['device']:5s} {r['differ']:8d} "
                           f"of {r['values']} values differ, max {r['max_diff']:.3g}")


if __name__ == "__main__":
    sys.exit(main())
