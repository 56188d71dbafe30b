"""mCE, relative mCE, ImageNet-A logits, flip probability and mFR against float64 NumPy
definitions and the published constants."""

import hypothesis.extra.numpy as hnp
import hypothesis.strategies as st
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings

from nsjax.robustness._metrics import (
    ALEXNET_CLEAN_ERROR,
    ALEXNET_ERRORS,
    COMMON_CORRUPTIONS,
    IMAGENET_A_INDICES,
    IMAGENET_P_PERTURBATIONS,
    VALIDATION_CORRUPTIONS,
    corruption_errors,
    flip_probability,
    imagenet_a_logits,
    mce,
    mfr,
    relative_mce,
)

# AugMix's ALEXNET_ERR (imagenet.py): AlexNet's mean error over severities, benchmark order.
AUGMIX_ALEXNET_ERR = [0.886428, 0.894468, 0.922640, 0.819880, 0.826268, 0.785948, 0.798360,
                      0.866816, 0.826572, 0.819324, 0.564592, 0.853204, 0.646056, 0.717840,
                      0.606500]


def test_the_alexnet_table_averages_to_augmix_constants():
    means = [np.mean(ALEXNET_ERRORS[c]) for c in COMMON_CORRUPTIONS]
    np.testing.assert_allclose(means, AUGMIX_ALEXNET_ERR, atol=5e-7)
    assert set(ALEXNET_ERRORS) == set(COMMON_CORRUPTIONS) | set(VALIDATION_CORRUPTIONS)
    assert len(COMMON_CORRUPTIONS) == 15 and len(VALIDATION_CORRUPTIONS) == 4


def test_alexnet_scores_exactly_100():
    assert mce(ALEXNET_ERRORS) == 100.0
    assert relative_mce(ALEXNET_ERRORS, ALEXNET_CLEAN_ERROR) == pytest.approx(100.0, abs=1e-12)
    assert corruption_errors(ALEXNET_ERRORS) == pytest.approx(
        {c: 100.0 for c in COMMON_CORRUPTIONS}, abs=1e-12)


def test_mce_averages_only_the_15_benchmark_corruptions():
    errors = {c: [e * (0.5 if c in COMMON_CORRUPTIONS else 1.0) for e in v]
              for c, v in ALEXNET_ERRORS.items()}
    assert mce(errors) == pytest.approx(50.0, abs=1e-12)
    assert mce(errors, corruptions=VALIDATION_CORRUPTIONS) == pytest.approx(100.0, abs=1e-12)


error_rows = hnp.arrays(np.float64, (19, 5), elements=st.floats(0.0, 1.0))


@settings(max_examples=30, deadline=None)
@given(error_rows, st.floats(0.0, 0.4))
def test_mce_and_relative_mce_match_float64_definitions(rows, clean):
    names = list(ALEXNET_ERRORS)
    errors = {n: rows[i].tolist() for i, n in enumerate(names)}
    base = np.array([ALEXNET_ERRORS[c] for c in COMMON_CORRUPTIONS])
    own = np.array([errors[c] for c in COMMON_CORRUPTIONS])
    expected = 100 * np.mean(own.sum(1) / base.sum(1))
    assert mce(errors) == pytest.approx(expected, rel=1e-12, abs=1e-12)
    expected_rel = 100 * np.mean((own - clean).sum(1) / (base - ALEXNET_CLEAN_ERROR).sum(1))
    assert relative_mce(errors, clean) == pytest.approx(expected_rel, rel=1e-12, abs=1e-12)


def test_mce_refuses_incomplete_or_invalid_errors():
    errors = dict(ALEXNET_ERRORS)
    del errors["fog"]
    with pytest.raises(ValueError, match=r"errors lacks the corruptions \['fog'\]"):
        mce(errors)
    with pytest.raises(ValueError, match=r"errors\['fog'\] must be 5 errors"):
        mce({**ALEXNET_ERRORS, "fog": [0.5] * 4})
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        mce({**ALEXNET_ERRORS, "fog": [50.0] * 5})
    with pytest.raises(TypeError, match="errors must be a mapping"):
        mce([0.5] * 15)
    with pytest.raises(ValueError, match="clean_error must be in"):
        relative_mce(ALEXNET_ERRORS, 1.5)


def test_imagenet_a_indices_are_the_published_list():
    idx = IMAGENET_A_INDICES
    assert len(idx) == 200 and len(set(idx)) == 200 and list(idx) == sorted(idx)
    assert idx[:6] == (6, 11, 13, 15, 17, 22) and idx[-3:] == (986, 987, 988)
    start = idx.index(470)
    assert idx[start:start + 8] == (470, 472, 483, 486, 488, 492, 496, 514)


def test_imagenet_a_logits_takes_the_200_columns_in_label_order():
    logits = jnp.broadcast_to(jnp.arange(1000, dtype=jnp.float32), (2, 3, 1000))
    out = imagenet_a_logits(logits)
    assert out.shape == (2, 3, 200) and out.dtype == jnp.float32
    np.testing.assert_array_equal(out[1, 2], np.asarray(IMAGENET_A_INDICES, np.float32))
    with pytest.raises(ValueError, match=r"logits must have shape \[\.\.\., 1000\].*\(4, 999\)"):
        imagenet_a_logits(jnp.zeros((4, 999)))
    with pytest.raises(TypeError, match="logits must have a floating dtype"):
        imagenet_a_logits(jnp.zeros((4, 1000), jnp.int32))


def test_flip_probability_counts_as_imagenet_p():
    predictions = np.array([[1, 1, 2, 2, 1],
                            [3, 3, 3, 3, 3]])
    # consecutive frames: flips 0,1,0,1 and none -> 2 / 8
    assert flip_probability(predictions, noise=False) == pytest.approx(2 / 8)
    # against the first frame: 0,1,1,0 and none -> 2 / 8; frames 2 apart: (1,2),(1,2),(2,1) -> 3/6
    assert flip_probability(predictions, noise=True) == pytest.approx(2 / 8)
    assert flip_probability(predictions, noise=False, difficulty=2) == pytest.approx(3 / 6)
    drift = np.array([[0, 1, 2, 3]])
    assert flip_probability(drift, noise=False) == 1.0
    assert flip_probability(np.array([[0, 1, 1, 1]]), noise=True) == 1.0
    assert flip_probability(np.array([[0, 1, 1, 1]]), noise=False) == pytest.approx(1 / 3)


def test_flip_probability_refuses_bad_sequences():
    with pytest.raises(ValueError, match=r"predictions must have shape \[S, n\]"):
        flip_probability(np.zeros(5, np.int32), noise=False)
    with pytest.raises(TypeError, match="predictions must have an integer dtype"):
        flip_probability(np.zeros((2, 5)), noise=False)
    with pytest.raises(ValueError, match=">= 2 frames"):
        flip_probability(np.zeros((2, 1), np.int32), noise=False)
    with pytest.raises(ValueError, match="difficulty must be < the number of frames 3, got 3"):
        flip_probability(np.zeros((2, 3), np.int32), noise=False, difficulty=3)
    with pytest.raises(ValueError, match="difficulty must be 1 for a noise perturbation"):
        flip_probability(np.zeros((2, 5), np.int32), noise=True, difficulty=2)


def test_mfr_normalises_by_the_given_baseline():
    base = {p: 0.1 * (i + 1) / 10 for i, p in enumerate(IMAGENET_P_PERTURBATIONS)}
    assert mfr(base, base) == pytest.approx(100.0)
    half = {p: v / 2 for p, v in base.items()}
    assert mfr(half, base) == pytest.approx(50.0)
    one_doubled = {**base, "rotate": 2 * base["rotate"]}
    assert mfr(one_doubled, base) == pytest.approx(110.0)
    with pytest.raises(ValueError, match=r"baseline lacks the perturbations \['tilt'\]"):
        mfr(base, {p: v for p, v in base.items() if p != "tilt"})
    with pytest.raises(ValueError, match=r"baseline\['scale'\] must be in \(0, 1\]"):
        mfr(base, {**base, "scale": 0.0})
