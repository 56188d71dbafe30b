"""RandAugment on a GPU or TPU equals the CPU bit for bit (`pytest -m accelerator`): the policy
in both numerics, with and without sampled magnitudes, and every op with per-image parameters
(benchmarks/check_randaugment.py, which benchmarks/gpu.sh also runs)."""

import pytest

from benchmarks import check_randaugment

pytestmark = pytest.mark.accelerator


def test_accelerator_output_equals_the_cpu_bit_for_bit():
    if check_randaugment.accelerator() is None:
        pytest.skip("needs a GPU or TPU: jax's default device is a CPU")
    rows = check_randaugment.check(batch=16)
    assert len(rows) == 19 and all(r["pixels"] > 0 for r in rows)
    differ = {r["case"]: r["differ"] for r in rows if r["differ"]}
    assert not differ, f"pixels differing from the CPU per case: {differ}"
