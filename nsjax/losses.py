"""Cross entropies and pseudo labels for Noisy Student training.

All losses are computed in float32 from logits of any float dtype (bfloat16 included) through a
stable log-softmax, and return per-example values so callers choose the reduction.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import Array
from jax.typing import ArrayLike

from nsjax import _checks

__all__ = ["soft_cross_entropy", "hard_cross_entropy", "pseudo_labels", "noisy_student_loss"]


def _check_smoothing(label_smoothing: float) -> float:
    return _checks.check_probability("label_smoothing", label_smoothing, allow_one=False)


def _check_logits(name: str, logits: ArrayLike) -> None:
    _checks.check_rank(name, logits, 2, "[B, C]")
    _checks.check_floating(name, logits)


def soft_cross_entropy(
    logits: ArrayLike,
    targets: ArrayLike,
    *,
    label_smoothing: float = 0.0,
    where: ArrayLike | None = None,
) -> Array:
    """Per-example cross entropy against probability targets.

    **Arguments:**
    - `logits`: float `[B, C]`, any float dtype; upcast to float32.
    - `targets`: float `[B, C]`, each row a probability distribution.
    - `label_smoothing`: in [0, 1); targets become `(1 - s) * targets + s / C`.
    - `where`: optional bool `[B]`; examples where it is False get loss 0 (and gradient 0).

    **Returns:** float32 `[B]`, `-sum_c t_c log softmax(logits)_c`. Its gradient with respect
    to the logits is `softmax(logits) - t` for rows of `t` that sum to one.
    """
    _check_logits("logits", logits)
    _checks.check_floating("targets", targets)
    _checks.check_same_dims("logits", logits, "targets", targets)
    smoothing = _check_smoothing(label_smoothing)
    if where is not None:
        _checks.check_rank("where", where, 1, "[B]")
        _checks.check_dtype_in("where", where, ("bool",))
        _checks.check_same_dims("where", where, "logits", logits, axes=(0,))

    log_probs = jax.nn.log_softmax(jnp.asarray(logits, jnp.float32), axis=-1)
    targets = jnp.asarray(targets, jnp.float32)
    if smoothing:
        targets = (1.0 - smoothing) * targets + smoothing / targets.shape[-1]
    loss = -jnp.sum(targets * log_probs, axis=-1)
    return loss if where is None else jnp.where(where, loss, 0.0)


def hard_cross_entropy(
    logits: ArrayLike, labels: ArrayLike, *, label_smoothing: float = 0.0
) -> Array:
    """Per-example cross entropy against integer labels, with optional label smoothing.

    Equal to `soft_cross_entropy(logits, one_hot(labels), label_smoothing=...)` without building
    the one-hot matrix.

    **Arguments:**
    - `logits`: float `[B, C]`, any float dtype; upcast to float32.
    - `labels`: int `[B]` in `[0, C)`.
    - `label_smoothing`: in [0, 1).

    **Returns:** float32 `[B]`.
    """
    _check_logits("logits", logits)
    _checks.check_rank("labels", labels, 1, "[B]")
    _checks.check_integer("labels", labels)
    _checks.check_same_dims("labels", labels, "logits", logits, axes=(0,))
    smoothing = _check_smoothing(label_smoothing)

    log_probs = jax.nn.log_softmax(jnp.asarray(logits, jnp.float32), axis=-1)
    true_class = jnp.take_along_axis(log_probs, jnp.asarray(labels)[:, None], axis=-1)[:, 0]
    loss = -true_class
    if smoothing:
        loss = (1.0 - smoothing) * loss - smoothing * jnp.mean(log_probs, axis=-1)
    return loss


def pseudo_labels(
    teacher_logits: ArrayLike, *, temperature: float = 1.0, hard: bool = False
) -> Array:
    """Teacher pseudo labels: `softmax(logits / temperature)` (soft, the paper's default) or the
    one-hot argmax (hard; ties go to the lowest class).

    **Arguments:**
    - `teacher_logits`: float `[B, C]`.
    - `temperature`: > 0; ignored when `hard`.

    **Returns:** float32 `[B, C]`, rows summing to one.
    """
    _check_logits("teacher_logits", teacher_logits)
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)):
        raise TypeError(f"temperature must be a number, got {type(temperature).__name__}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")

    logits = jnp.asarray(teacher_logits, jnp.float32)
    if hard:
        return jax.nn.one_hot(jnp.argmax(logits, axis=-1), logits.shape[-1], dtype=jnp.float32)
    return jax.nn.softmax(logits / temperature, axis=-1)


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
    """The official Noisy Student data loss (scalar float32).

    `mean_labeled(CE(labels, smoothing)) + unlabeled_ratio * mean_unlabeled(CE(soft_targets))`,
    which equals the official code's sum over both batches divided by the labeled batch size
    when the unlabeled batch is `unlabeled_ratio` times the labeled one.

    **Arguments:**
    - `student_logits_labeled`: float `[B_l, C]`; `labels`: int `[B_l]`.
    - `student_logits_unlabeled`: float `[B_u, C]`; `soft_targets`: float `[B_u, C]`, teacher
      pseudo labels (see `pseudo_labels`).
    - `unlabeled_ratio`: >= 0, the weight of the unlabeled term (the reference: `B_u / B_l`).
    - `label_smoothing`: on the labeled term (the reference: 0.1).
    - `unlabeled_label_smoothing`: on the pseudo labels; the official code smooths hard pseudo
      labels (0.1) and not soft ones (0.0, the default).

    Weight decay is not part of this loss: add it in the optimizer.
    """
    if isinstance(unlabeled_ratio, bool) or not isinstance(unlabeled_ratio, (int, float)):
        raise TypeError(f"unlabeled_ratio must be a number, got {type(unlabeled_ratio).__name__}")
    if not unlabeled_ratio >= 0:
        raise ValueError(f"unlabeled_ratio must be >= 0, got {unlabeled_ratio}")
    _check_logits("student_logits_labeled", student_logits_labeled)
    _check_logits("student_logits_unlabeled", student_logits_unlabeled)
    _checks.check_same_dims(
        "student_logits_labeled", student_logits_labeled,
        "student_logits_unlabeled", student_logits_unlabeled, axes=(1,),
    )  # fmt: skip
    labeled = hard_cross_entropy(
        student_logits_labeled, labels, label_smoothing=label_smoothing
    )
    unlabeled = soft_cross_entropy(
        student_logits_unlabeled, soft_targets, label_smoothing=unlabeled_label_smoothing
    )
    return jnp.mean(labeled) + unlabeled_ratio * jnp.mean(unlabeled)
