"""`nsjax demo`'s data and config: the whole loop on a small real dataset shipped inside the
package, on a CPU, in a few minutes.

The data are the 1,797 handwritten digits of the UCI "Optical Recognition of Handwritten
Digits" set (8x8 grey, 10 classes; the part scikit-learn ships as `load_digits`; CC BY 4.0),
stored as `nsjax/_data/digits.npz` (`scripts/make_digits_npz.py` wrote it). `digits_splits`
draws, per seed, a held-out test set, a small labeled set (a few images per class) and
leaves the rest unlabeled: the semi-supervised setting where pseudo-labels have something to
add.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from nsjax import _checks
from nsjax._io import atomic_write
from nsjax.data import Source
from nsjax.loop._auto import data_facts, iterate_defaults
from nsjax.loop._iterate import IterateConfig

DIGITS = os.path.join(os.path.dirname(os.path.dirname(__file__)), "_data", "digits.npz")
DEMO_MODELS = ("b0", "b0", "b0")
DEMO_LABELED_PER_CLASS = 10
DEMO_TEST = 400
# The labeled batch; the epochs (labeled passes) of the teacher and of each student: with 100
# labeled images an epoch is 3 steps, so each generation trains 150 steps (a student's read 32
# labeled + 32 pseudo-labeled images); and the students' width. The CPU default model is B0
# at width 0.25; the students are twice as wide (0.42M parameters against 0.13M), as the
# paper's students are larger than their teachers: an equal-size student gains little here
# (docs/results.md). The whole demo stays within 5 minutes on 2 cores.
DEMO_LABELED_BATCH = 32
DEMO_TEACHER_EPOCHS = 50.0
DEMO_STUDENT_EPOCHS = 50.0
DEMO_STUDENT_WIDTH = 0.5


def digits_splits(folder: str | os.PathLike, *, seed: int = 0,
                  labeled_per_class: int = DEMO_LABELED_PER_CLASS,
                  test: int = DEMO_TEST) -> dict[str, str]:  # fmt: skip
    """Write the digits as `labeled.npz`, `unlabeled.npz` and `test.npz` into `folder`.

    **Arguments:**

    - `folder`: created if missing; files already there from the same call are kept.
    - `seed`: draws the split (a permutation of the 1,797 images).
    - `labeled_per_class`: labeled images per class (the first of each class after the test
      set is taken), 1..100.
    - `test`: held-out images, 10..1000.

    **Returns:** `{"labeled": path, "unlabeled": path, "test": path}`: uint8 `[N, 8, 8]`
    grey `images`, int32 `labels` (labeled and test only).
    """
    _checks.check_positive_int("seed", seed, minimum=0)
    _checks.check_positive_int("labeled_per_class", labeled_per_class)
    _checks.check_positive_int("test", test, minimum=10)
    if labeled_per_class > 100 or test > 1000:
        raise ValueError(f"labeled_per_class must be <= 100 and test <= 1000 (the digits hold "
                         f"~180 per class), got {labeled_per_class} and {test}")
    with np.load(DIGITS) as f:
        images, labels = f["images"], f["labels"].astype(np.int32)
    order = np.random.default_rng(seed).permutation(len(labels))
    held_out, rest = order[:test], order[test:]
    chosen = np.concatenate([rest[labels[rest] == c][:labeled_per_class] for c in range(10)])
    parts = dict(labeled=np.sort(chosen), unlabeled=np.setdiff1d(rest, chosen),
                 test=np.sort(held_out))  # fmt: skip
    os.makedirs(folder, exist_ok=True)
    paths = {}
    for name, rows in parts.items():
        paths[name] = os.path.join(os.fspath(folder), f"{name}.npz")
        arrays = dict(images=images[rows], ids=np.array([f"digit{i}" for i in rows]))
        if name != "unlabeled":
            arrays["labels"] = labels[rows]
        atomic_write(paths[name], lambda f, a=arrays: np.savez(f, **a))
    return paths


def demo_config(labeled: Source, *, seed: int = 0,
                models: tuple[str, ...] = DEMO_MODELS) -> IterateConfig:  # fmt: skip
    """The demo's run: `nsjax iterate`'s defaults for these data on a CPU
    (`nsjax.loop._auto`), with the demo's labeled batch, epochs and student width (module
    constants), so that the whole loop takes a few minutes on 2 cores.

    **Arguments:** `labeled`: the labeled digits (`digits_splits`); `seed`: the run's seed;
    `models`: one model per generation, generation 0 the teacher.
    """
    fields = iterate_defaults(data_facts(labeled, platform="cpu"), models)
    student = dataclasses.replace(fields["student"], seed=seed,
                                  labeled_batch=DEMO_LABELED_BATCH)  # fmt: skip
    generations = tuple(
        {**{k: v for k, v in overrides.items() if k != "labeled_batch"},
         **(dict(epochs=DEMO_STUDENT_EPOCHS, width=DEMO_STUDENT_WIDTH) if g
            else dict(epochs=DEMO_TEACHER_EPOCHS))}
        for g, overrides in enumerate(fields["generations"]))  # fmt: skip
    return IterateConfig(student=student, generations=generations)
