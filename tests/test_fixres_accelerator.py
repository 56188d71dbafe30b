"""FixRes resampling on a GPU or TPU equals the CPU's up to float32 rounding ties
(`pytest -m accelerator`; benchmarks/check_fixres.py, which benchmarks/gpu.sh also runs)."""

import pytest

from benchmarks import check_fixres
from benchmarks._device_check import accelerator

pytestmark = pytest.mark.accelerator


def test_accelerator_resampling_equals_the_cpu():
    if accelerator() is None:
        pytest.skip("needs a GPU or TPU: jax's default device is a CPU")
    rows = check_fixres.check(batch=4)
    assert len(rows) == 16 and all(r["values"] > 0 for r in rows)
    bad = {f"{r['case']} {r['dtype']}": (r["differ"], r["max_diff"])
           for r in rows if not check_fixres.within_bounds(r)}
    assert not bad, f"(values differing, max difference) from the CPU per case: {bad}"
