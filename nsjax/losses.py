"""Cross entropies and pseudo labels for Noisy Student training.

All losses are computed in float32 from logits of any float dtype (bfloat16 included) through a
stable log-softmax, and return per-example values so callers choose the reduction.

Bad values never give a plausible finite loss. A concrete argument (a Python or NumPy number,
a NumPy array, a `jax.Array` outside a transformation) is checked before any work and refused
with a `ValueError` naming it. Under `jax.jit` / `grad` / `vmap` the values are unknown while
tracing: then an example whose label is outside `[0, C)` or whose target row is negative or does
not sum to one gets loss NaN, and a scalar argument out of its range (a traced `temperature <= 0`,
`label_smoothing` outside [0, 1), `unlabeled_ratio < 0`, NaN) makes the whole result NaN.

Empty batches: the per-example functions accept `B = 0` and return empty results;
`noisy_student_loss`, a mean over each batch, refuses an empty one.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array
from jax.typing import ArrayLike

from nsjax import _checks

__all__ = ["soft_cross_entropy", "hard_cross_entropy", "pseudo_labels", "noisy_student_loss"]


def _check_logits(name: str, logits: ArrayLike) -> None:
    _checks.check_rank(name, logits, 2, "[B, C]")
    _checks.check_floating(name, logits)
    if _checks.shape_of(logits)[1] < 1:
        raise ValueError(f"{name} must have at least one class, got shape {_checks.shape_of(logits)}")


def _check_smoothing(name: str, label_smoothing) -> Array | float:
    return _checks.check_number(name, label_smoothing, minimum=0.0, maximum=1.0, max_open=True,
                                traced_ok=True)


def _smoothing_ok(smoothing) -> Array | bool:
    """True for a checked Python value; for a traced one, whether it lies in [0, 1)."""
    return True if isinstance(smoothing, float) else (smoothing >= 0) & (smoothing < 1)


def _sum_tolerance(dtype) -> float:
    """How far from one a valid target row may sum: rounding each entry of an exactly
    normalised row to `dtype` moves the sum by at most half an epsilon; 1e-4 covers float32
    softmax outputs of 10^5 classes."""
    return max(1e-4, float(jnp.finfo(dtype).eps))


def _valid_targets(targets, tolerance: float, xp=jnp):
    """`bool[B]`: the row is a probability distribution (no negative or NaN entry, sums to one).
    `xp`: `jnp`, or `np` for the concrete check (inside a trace `jnp` would stage it)."""
    nonnegative = xp.all(targets >= 0, axis=-1)  # NaN compares False
    return nonnegative & (xp.abs(xp.sum(targets, axis=-1) - 1.0) <= tolerance)


def soft_cross_entropy(
    logits: ArrayLike,
    targets: ArrayLike,
    *,
    label_smoothing: float = 0.0,
    where: ArrayLike | None = None,
) -> Array:
    """Per-example cross entropy against probability targets.

    `-sum_c t_c log softmax(logits)_c`. Its gradient with respect to the logits is
    `softmax(logits) - t`.

    **Arguments:**

    - `logits`: float `[B, C]`, any float dtype; upcast to float32.
    - `targets`: float `[B, C]`, each row a probability distribution: no negative entry, summing
      to one within `max(1e-4, eps(dtype))`. A concrete bad row is a `ValueError`; under a
      transformation its loss is NaN. Rows masked out by `where` are not checked.
    - `label_smoothing`: a number in [0, 1) (traced: NaN outside); targets become
      `(1 - s) * targets + s / C`.
    - `where`: optional bool `[B]`; examples where it is False get loss 0 (and gradient 0).

    **Returns:** float32 `[B]`.
    """
    _check_logits("logits", logits)
    _checks.check_floating("targets", targets)
    _checks.check_same_dims("logits", logits, "targets", targets)
    smoothing = _check_smoothing("label_smoothing", label_smoothing)
    if where is not None:
        _checks.check_rank("where", where, 1, "[B]")
        _checks.check_dtype_in("where", where, ("bool",))
        _checks.check_same_dims("where", where, "logits", logits, axes=(0,))
    tolerance = _sum_tolerance(_checks.dtype_of(targets))
    if not _checks.is_traced(targets) and not _checks.is_traced(where):
        rows = np.asarray(targets, np.float64)
        bad = ~_valid_targets(rows, tolerance, np)
        if where is not None:
            bad &= np.asarray(where)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(
                f"targets must hold probability rows (entries >= 0, summing to 1 within "
                f"{tolerance:g}); {int(bad.sum())} rows do not, e.g. row {i} sums to "
                f"{rows[i].sum():.6g} with minimum {rows[i].min():.6g}")

    log_probs = jax.nn.log_softmax(jnp.asarray(logits, jnp.float32), axis=-1)
    targets = jnp.asarray(targets, jnp.float32)
    valid = _valid_targets(targets, tolerance) & _smoothing_ok(smoothing)
    if not isinstance(smoothing, float) or smoothing:
        targets = (1.0 - smoothing) * targets + smoothing / targets.shape[-1]
    loss = _checks.nan_unless(valid, -jnp.sum(targets * log_probs, axis=-1))
    return loss if where is None else jnp.where(where, loss, 0.0)


def hard_cross_entropy(
    logits: ArrayLike, labels: ArrayLike, *, label_smoothing: float = 0.0
) -> Array:
    """Per-example cross entropy against integer labels, with optional label smoothing.

    Equal to `soft_cross_entropy(logits, one_hot(labels), label_smoothing=...)` without building
    the one-hot matrix: `(1 - s) (-log p_y) + s mean_c(-log p_c)`.

    **Arguments:**

    - `logits`: float `[B, C]`, any float dtype; upcast to float32.
    - `labels`: int `[B]` in `[0, C)`. A concrete label outside is a `ValueError`; under a
      transformation its example's loss is NaN (never another class's loss).
    - `label_smoothing`: a number in [0, 1) (traced: NaN outside).

    **Returns:** float32 `[B]`.
    """
    _check_logits("logits", logits)
    _checks.check_rank("labels", labels, 1, "[B]")
    _checks.check_integer("labels", labels)
    _checks.check_same_dims("labels", labels, "logits", logits, axes=(0,))
    smoothing = _check_smoothing("label_smoothing", label_smoothing)
    num_classes = _checks.shape_of(logits)[1]
    if not _checks.is_traced(labels):
        values = np.asarray(labels)
        outside = (values < 0) | (values >= num_classes)
        if outside.any():
            raise ValueError(
                f"labels must be in [0, {num_classes}) (C = {num_classes} classes of logits), "
                f"got {int(outside.sum())} outside, e.g. {values[outside][0]} at index "
                f"{int(np.flatnonzero(outside)[0])}")

    log_probs = jax.nn.log_softmax(jnp.asarray(logits, jnp.float32), axis=-1)
    labels = jnp.asarray(labels)
    valid = (labels >= 0) & (labels < num_classes) & _smoothing_ok(smoothing)
    index = jnp.clip(labels, 0, num_classes - 1)[:, None].astype(jnp.int32)
    loss = -jnp.take_along_axis(log_probs, index, axis=-1)[:, 0]
    if not isinstance(smoothing, float) or smoothing:
        loss = (1.0 - smoothing) * loss - smoothing * jnp.mean(log_probs, axis=-1)
    return _checks.nan_unless(valid, loss)


def pseudo_labels(
    teacher_logits: ArrayLike, *, temperature: float = 1.0, hard: bool = False
) -> Array:
    """Teacher pseudo labels: `softmax(logits / temperature)` (soft, the paper's default) or the
    one-hot argmax (hard).

    **Arguments:**

    - `teacher_logits`: float `[B, C]`.
    - `temperature`: a number > 0 (a traced one gives NaN rows when not > 0); ignored when
      `hard`.
    - `hard`: a Python bool. Hard labels put 1 on the largest logit; among equal largest logits
      the lowest class index wins.

    **Returns:** float32 `[B, C]`, rows summing to one.
    """
    _check_logits("teacher_logits", teacher_logits)
    temperature = _checks.check_number("temperature", temperature, minimum=0.0, min_open=True,
                                       traced_ok=True)
    hard = _checks.check_bool("hard", hard)

    logits = jnp.asarray(teacher_logits, jnp.float32)
    if hard:
        return jax.nn.one_hot(jnp.argmax(logits, axis=-1), logits.shape[-1], dtype=jnp.float32)
    probs = jax.nn.softmax(logits / temperature, axis=-1)
    return probs if isinstance(temperature, float) else _checks.nan_unless(temperature > 0, probs)


def noisy_student_loss(
    student_logits_labeled: ArrayLike,
    labels: ArrayLike,
    student_logits_unlabeled: ArrayLike,
    soft_targets: ArrayLike,
    *,
    unlabeled_ratio: float,
    label_smoothing: float = 0.1,
    unlabeled_label_smoothing: float = 0.0,
) -> Array:
    """The official Noisy Student data loss, a float32 scalar.

    `mean_labeled(CE(labels, smoothing)) + unlabeled_ratio * mean_unlabeled(CE(soft_targets))`,
    which equals the official code's sum over both batches divided by the labeled batch size
    when the unlabeled batch is `unlabeled_ratio` times the labeled one. Weight decay is not part
    of this loss: add it in the optimizer.

    **Arguments:**

    - `student_logits_labeled`: float `[B_l, C]`, `B_l >= 1`; `labels`: int `[B_l]`.
    - `student_logits_unlabeled`: float `[B_u, C]`, `B_u >= 1`; `soft_targets`: float
      `[B_u, C]`, teacher pseudo labels (see `pseudo_labels`), checked as in
      `soft_cross_entropy`.
    - `unlabeled_ratio`: a number >= 0 (traced: NaN when negative), the weight of the unlabeled
      term (the reference: `B_u / B_l`).
    - `label_smoothing`: on the labeled term (the reference: 0.1).
    - `unlabeled_label_smoothing`: on the pseudo labels; the official code smooths hard pseudo
      labels (0.1) and not soft ones (0.0, the default).

    **Returns:** float32 `[]`.
    """
    ratio = _checks.check_number("unlabeled_ratio", unlabeled_ratio, minimum=0.0, traced_ok=True)
    _check_logits("student_logits_labeled", student_logits_labeled)
    _check_logits("student_logits_unlabeled", student_logits_unlabeled)
    _checks.check_same_dims(
        "student_logits_labeled", student_logits_labeled,
        "student_logits_unlabeled", student_logits_unlabeled, axes=(1,),
    )  # fmt: skip
    for name, logits in (("student_logits_labeled", student_logits_labeled),
                         ("student_logits_unlabeled", student_logits_unlabeled)):
        if _checks.shape_of(logits)[0] == 0:
            raise ValueError(f"{name} must hold at least one example (the loss averages over "
                             f"it), got shape {_checks.shape_of(logits)}")
    labeled = hard_cross_entropy(
        student_logits_labeled, labels, label_smoothing=label_smoothing
    )
    unlabeled = soft_cross_entropy(
        student_logits_unlabeled, soft_targets, label_smoothing=unlabeled_label_smoothing
    )
    loss = jnp.mean(labeled) + ratio * jnp.mean(unlabeled)
    return loss if isinstance(ratio, float) else _checks.nan_unless(ratio >= 0, loss)
