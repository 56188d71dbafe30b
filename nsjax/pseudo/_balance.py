"""Balancing a pseudo-label store: the rows of the store the student reads, and a report.

A thin layer over `nsjax.balance.balance_classes` (the paper's rule by default, the official
script's on request) that refuses a selection too small to train on, with the threshold and the
per-class counts, instead of letting a student train on (almost) nothing but labels.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

from nsjax import _checks
from nsjax._io import atomic_write, atomic_write_text
from nsjax.balance import BalanceResult, balance_classes
from nsjax.pseudo._store import PseudoLabels


class EmptySelectionError(ValueError):
    """The teacher was too unconfident: balancing kept fewer rows than a student needs."""


def balance(store: PseudoLabels, *, per_class: int, min_confidence: float = 0.3,
            mode: str = "topk", seed: int = 0, min_rows: int = 1) -> BalanceResult:  # fmt: skip
    """The balanced selection of a store's rows (`nsjax.balance.balance_classes` over its
    predicted classes and confidences).

    **Arguments:**

    - `store`: a `PseudoLabels` (e.g. `read_labels(out_dir)`).
    - `per_class`: rows wanted per class (the ImageNet recipe: 130,000).
    - `min_confidence`: the official threshold, 0.3; no row below it is kept.
    - `mode`: "topk" (the paper's rule) or "official" (the released `filter_unlabel.py` rule).
    - `seed`: seeds every random choice.
    - `min_rows`: fewer selected rows than this is an error (e.g. one unlabeled batch).

    **Returns:** the `BalanceResult`; its `indices` are rows of `store` (read the images at
    `store.index[indices]`, the targets with `store.soft_labels(rows=indices)`).

    **Raises:** `EmptySelectionError` (a `ValueError`) when fewer than `min_rows` rows are
    selected, naming the threshold, the store's size and the candidates per class.
    """
    if not isinstance(store, PseudoLabels):
        raise TypeError(f"store must be a PseudoLabels, got {type(store).__name__}")
    min_rows = _checks.check_positive_int("min_rows", min_rows, minimum=0)
    result = balance_classes(store.classes, store.confidence, per_class=per_class,
                             min_confidence=min_confidence, mode=mode, seed=seed,
                             num_classes=store.num_classes)  # fmt: skip
    if result.indices.size < min_rows:
        raise EmptySelectionError(
            f"balancing kept {result.indices.size} rows, fewer than the {min_rows} needed: "
            f"the teacher is not confident enough. Of {len(store)} images, candidates "
            f"(confidence >= min_confidence {min_confidence}) per class: "
            f"{result.candidates.tolist()}; highest confidence "
            f"{float(store.confidence.max()) if len(store) else float('nan'):.3f}. Lower "
            f"min_confidence, train a better teacher, or add unlabeled data.")
    return result


def balance_report(result: BalanceResult) -> dict[str, Any]:
    """A JSON-able report of a balanced selection: sizes and, per class, candidates, unique
    rows kept, copies and the lowest confidence kept."""
    lowest = [None if np.isnan(v) else float(v) for v in result.lowest_confidence_kept]
    return dict(mode=result.mode, per_class=result.per_class, rows=int(result.indices.size),
                unique=int(result.kept_unique.sum()),
                empty_classes=result.empty_classes.tolist(),
                candidates=result.candidates.tolist(), kept_unique=result.kept_unique.tolist(),
                copies=result.copies.tolist(), lowest_confidence_kept=lowest)  # fmt: skip


def save_balance(out_dir: str | os.PathLike, result: BalanceResult) -> None:
    """Write `balance.npz` (the selected rows) and `balance.json` (`balance_report`) into
    `out_dir`, atomically (`load_balance` reads the rows back)."""
    out_dir = os.fspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    atomic_write(os.path.join(out_dir, "balance.npz"),
                 lambda f: np.savez(f, indices=result.indices))
    atomic_write_text(os.path.join(out_dir, "balance.json"),
                      json.dumps(balance_report(result), indent=1) + "\n")


def load_balance(out_dir: str | os.PathLike) -> np.ndarray:
    """The selected rows (int64 `[M]`) that `save_balance` wrote into `out_dir`."""
    with np.load(os.path.join(os.fspath(out_dir), "balance.npz")) as f:
        return f["indices"]
