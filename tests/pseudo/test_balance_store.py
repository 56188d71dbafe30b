"""Balancing a store: the selection is balance_classes' over the store's classes and
confidences, a too-small selection stops with the threshold and per-class counts, and the
selection and its report are saved and read back."""

import json

import numpy as np
import pytest

from nsjax.balance import balance_classes
from nsjax.pseudo._balance import (EmptySelectionError, balance, balance_report, load_balance,
                                   save_balance)
from nsjax.pseudo._store import from_logits


def store(n=200, classes=5, sharpness=3.0, seed=0):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, classes)) * sharpness
    return from_logits(logits, index=np.arange(n) * 2, ids=[f"u{i}" for i in range(n)], top_k=2)


@pytest.mark.parametrize("mode", ["topk", "official"])
def test_selection_is_balance_classes_over_the_store(mode):
    labels = store()
    result = balance(labels, per_class=30, mode=mode, seed=4)
    expected = balance_classes(labels.classes, labels.confidence, per_class=30, mode=mode, seed=4,
                               num_classes=5)
    np.testing.assert_array_equal(result.indices, expected.indices)
    if mode == "topk":
        counts = np.bincount(labels.classes[result.indices], minlength=5)
        assert (counts[expected.candidates > 0] == 30).all()
    assert (labels.confidence[result.indices] >= 0.3).all()


def test_an_unconfident_teacher_stops_with_the_threshold_and_counts():
    flat = store(sharpness=0.01)  # every confidence ~0.2 < 0.3
    with pytest.raises(EmptySelectionError, match=r"kept 0 rows, fewer than the 1 needed.*"
                       r"min_confidence 0.3\) per class: \[0, 0, 0, 0, 0\]"):
        balance(flat, per_class=10)
    result = balance(flat, per_class=10, min_confidence=0.1)  # lowered: it trains
    assert result.indices.size == 50
    with pytest.raises(EmptySelectionError, match="kept 50 rows, fewer than the 64 needed"):
        balance(flat, per_class=10, min_confidence=0.1, min_rows=64)


def test_saved_selection_and_report(tmp_path):
    result = balance(store(), per_class=20, seed=1)
    save_balance(tmp_path / "run", result)
    np.testing.assert_array_equal(load_balance(tmp_path / "run"), result.indices)
    report = json.loads((tmp_path / "run" / "balance.json").read_text())
    assert report == json.loads(json.dumps(balance_report(result)))
    assert report["rows"] == result.indices.size and len(report["candidates"]) == 5
    assert sum(report["copies"]) == report["rows"]


def test_bad_arguments():
    with pytest.raises(TypeError, match="store must be a PseudoLabels"):
        balance(np.zeros(3), per_class=1)
    with pytest.raises(ValueError, match="per_class"):
        balance(store(), per_class=0)
