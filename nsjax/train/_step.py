"""The pure steps: `train_step` (labeled + unlabeled in one forward pass, offline targets or an
online teacher), `eval_step` and `predict_step`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
from jax import Array

from nsjax import _checks, losses, noise
from nsjax.train._config import TrainConfig
from nsjax.train._recipe import ema_update, learning_rate_schedule, make_optimizer
from nsjax.train._state import TrainState, ema_model, running_bn_state
from nsjax.train._teacher import Teacher

Batch = Mapping[str, Any]
LABELED_KEYS = ("images", "labels")
UNLABELED_KEYS = ("unlabeled_images", "unlabeled_targets", "teacher_images")


def normalize(images: Array, mean, std, dtype) -> Array:
    """`(images - mean) / std` per channel, computed in float32 and cast to `dtype`.

    **Arguments:** `images`: uint8 `[B, H, W, 3]`; `mean`, `std`: 3 numbers on the 0-255 scale;
    `dtype`: the result's dtype.

    **Returns:** `dtype[B, H, W, 3]`.
    """
    x = images.astype(jnp.float32)
    mean, std = (jnp.asarray(v, jnp.float32).reshape(1, 1, 1, 3) for v in (mean, std))
    x = (x - mean) / std
    return x.astype(dtype)


# ----------------------------------------------------------------------------- batch checks
def check_batch(config: TrainConfig, batch: Batch, teacher: Teacher | None = None) -> None:
    """A training batch fits `config` (and `teacher`); raises before any work otherwise.

    A batch is a mapping: `images` uint8 `[B_l, S, S, 3]` and `labels` int `[B_l]` with
    `B_l = config.labeled_batch`, `S = config.image_size`; with `config.unlabeled_batch > 0`
    also `unlabeled_images` uint8 `[B_u, S, S, 3]` and either `unlabeled_targets` (offline:
    float `[B_u, C]` probabilities or int `[B_u]` classes) or a `teacher` (online), which
    reads `teacher_images` uint8 `[B_u, H_t, W_t, 3]` (its clean view) when present, else the
    un-augmented `unlabeled_images`.
    """
    if not isinstance(batch, Mapping):
        raise TypeError(f"batch must be a mapping of arrays, got {type(batch).__name__}")
    unknown = sorted(set(batch) - set(LABELED_KEYS + UNLABELED_KEYS))
    if unknown:
        raise ValueError(f"batch has unknown entries {unknown}; expected {LABELED_KEYS} "
                         f"and, for unlabeled data, {UNLABELED_KEYS}")
    for name in LABELED_KEYS:
        if name not in batch:
            raise ValueError(f"batch[{name!r}] is missing: a labeled batch needs 'images' "
                             f"uint8 [B_l, H, W, 3] and 'labels' int [B_l]")
    size = config.image_size
    _check_student_images("batch['images']", batch["images"], config.labeled_batch, size)
    labels = batch["labels"]
    _checks.check_integer("batch['labels']", labels)
    if _checks.shape_of(labels) != (config.labeled_batch,):
        raise ValueError(f"batch['labels'] must have shape [B_l] = ({config.labeled_batch},), "
                         f"got {_checks.shape_of(labels)}")
    b_u = config.unlabeled_batch
    if b_u == 0:
        extra = [k for k in UNLABELED_KEYS if k in batch]
        if extra:
            raise ValueError(f"batch has {extra} but config.unlabeled_ratio is 0 (supervised "
                             f"training); set unlabeled_ratio to train on unlabeled data")
        if teacher is not None:
            raise ValueError("a teacher was given but config.unlabeled_ratio is 0")
        return
    if "unlabeled_images" not in batch:
        raise ValueError(f"batch['unlabeled_images'] is missing: config.unlabeled_ratio = "
                         f"{config.unlabeled_ratio} asks for {b_u} unlabeled images per step")
    _check_student_images("batch['unlabeled_images']", batch["unlabeled_images"], b_u, size)
    if teacher is None:
        _check_offline_targets(config, batch, b_u)
    else:
        _check_teacher(config, batch, teacher, b_u)


def _check_student_images(name: str, images, batch_size: int, size: int) -> None:
    _checks.check_images(name, images, dtypes=("uint8",))
    shape = _checks.shape_of(images)
    if shape != (batch_size, size, size, 3):
        raise ValueError(f"{name} must be uint8 NHWC [{batch_size}, {size}, {size}, 3] (the "
                         f"config's batch and image size), got shape {shape}")


def _check_offline_targets(config: TrainConfig, batch: Batch, b_u: int) -> None:
    if "teacher_images" in batch:
        raise ValueError("batch['teacher_images'] is given but no teacher: pass teacher= for "
                         "online targets, or batch['unlabeled_targets'] for offline ones")
    if "unlabeled_targets" not in batch:
        raise ValueError("batch['unlabeled_targets'] is missing: offline training needs the "
                         "teacher's targets (float [B_u, C] or int [B_u]); or pass teacher=")
    targets = batch["unlabeled_targets"]
    shape = _checks.shape_of(targets)
    c = config.num_classes
    if _checks.dtype_of(targets).kind in "iu":
        ok, what = shape == (b_u,), f"int [{b_u}]"
    else:
        _checks.check_floating("batch['unlabeled_targets']", targets)
        ok, what = shape == (b_u, c), f"float [{b_u}, {c}]"
    if not ok:
        raise ValueError(f"batch['unlabeled_targets'] must be {what}, got shape {shape}")


def _check_teacher(config: TrainConfig, batch: Batch, teacher: Teacher, b_u: int) -> None:
    if not isinstance(teacher, Teacher):
        raise TypeError(f"teacher must be an nsjax.train.Teacher, got {type(teacher).__name__}")
    if teacher.num_classes != config.num_classes:
        raise ValueError(f"teacher must have the student's class count {config.num_classes}, "
                         f"got a teacher of {teacher.num_classes} classes")
    if "unlabeled_targets" in batch:
        raise ValueError("batch['unlabeled_targets'] is given with a teacher: use one source "
                         "of targets (offline targets or an online teacher)")
    if "teacher_images" in batch:
        _checks.check_images("batch['teacher_images']", batch["teacher_images"],
                             dtypes=("uint8",), min_side=32)  # fmt: skip
        got = _checks.shape_of(batch["teacher_images"])[0]
        if got != b_u:
            raise ValueError(f"batch['teacher_images'] must hold the {b_u} unlabeled images "
                             f"(the teacher's clean view), got {got}")


# ----------------------------------------------------------------------------- train step
def _targets(config: TrainConfig, batch: Batch, teacher: Teacher | None) -> Array:
    """The unlabeled images' targets, float32 `[B_u, C]`."""
    if teacher is None:
        targets = jnp.asarray(batch["unlabeled_targets"])
        if targets.ndim == 1:
            return jax.nn.one_hot(targets, config.num_classes, dtype=jnp.float32)
        return targets.astype(jnp.float32)
    clean = batch.get("teacher_images", batch["unlabeled_images"])
    dtype = jnp.dtype(config.compute_dtype)
    logits = teacher(normalize(clean, config.mean, config.std, dtype))
    return losses.pseudo_labels(jax.lax.stop_gradient(logits),
                                temperature=config.teacher_temperature, hard=config.hard_targets)


def _augment(config: TrainConfig, key: Array, images: Array) -> Array:
    if config.randaugment_magnitude is None or config.randaugment_layers == 0:
        return images
    _, height, width, _ = images.shape
    return noise.randaugment(key, images, num_layers=config.randaugment_layers,
                             magnitude=config.randaugment_magnitude,
                             **noise.relative_constants(height, width))  # fmt: skip


def _interleave(labeled: Array, unlabeled: Array, groups: int) -> Array:
    """`[B_l, ...]` and `[B_u, ...]` as `groups` consecutive groups of `B_l / groups` labeled
    then `B_u / groups` unlabeled rows (one group: labeled then unlabeled)."""
    split = lambda a: a.reshape((groups, a.shape[0] // groups) + a.shape[1:])  # noqa: E731
    both = jnp.concatenate([split(labeled), split(unlabeled)], axis=1)
    return both.reshape((-1,) + labeled.shape[1:])


def _deinterleave(rows: Array, b_l: int, groups: int) -> Array:
    """The inverse of `_interleave`: the labeled rows first, then the unlabeled ones."""
    grouped = rows.reshape((groups, -1) + rows.shape[1:])
    per = b_l // groups
    parts = (grouped[:, :per], grouped[:, per:])
    return jnp.concatenate([p.reshape((-1,) + rows.shape[1:]) for p in parts], axis=0)


def train_step(state: TrainState, batch: Batch, teacher: Teacher | None = None
               ) -> tuple[TrainState, dict[str, Array]]:  # fmt: skip
    """One optimisation step of the student under noise.

    Labeled and unlabeled images are augmented (RandAugment, per image, inside the step),
    normalised and concatenated into **one** forward pass in `config.compute_dtype`, so BN
    statistics are shared between them as in the official code (per group of
    `config.bn_groups`, each holding its share of both); dropout and drop-path come
    from the model in train mode. The loss is `nsjax.losses.noisy_student_loss` (labeled CE
    with `label_smoothing` + `unlabeled_ratio` x unlabeled CE), or the labeled CE alone when
    `unlabeled_ratio` is 0. Then the optimizer update, the EMA of the parameters and of the
    (debiased) BN statistics, and `step + 1`. Step `t`'s randomness is `fold_in(key, t)`, so a
    resumed run draws what an uninterrupted one would.

    **Arguments:**

    - `state`: a `TrainState`.
    - `batch`: a mapping of arrays, see `check_batch` (checked before any work).
    - `teacher`: a frozen `Teacher` for online targets (eval mode, on the clean view of the
      unlabeled images, `softmax(logits / teacher_temperature)` or one-hot with
      `hard_targets`); None for offline targets from the batch.

    **Returns:** `(state, metrics)`: the next state and float32 scalars `loss`,
    `labeled_loss`, `unlabeled_loss` (0 without unlabeled data), `accuracy` (top-1 on the
    labeled part, before the update), `learning_rate` (this step's) and `grad_norm`.
    """
    if not isinstance(state, TrainState):
        raise TypeError(f"state must be a TrainState, got {type(state).__name__}")
    config = state.config
    check_batch(config, batch, teacher)
    b_l, b_u = config.labeled_batch, config.unlabeled_batch
    k_aug, k_model = jax.random.split(jax.random.fold_in(state.key, state.step))

    groups = config.bn_groups
    images = batch["images"]
    if b_u:
        targets = _targets(config, batch, teacher)
        images = _interleave(images, batch["unlabeled_images"], groups)
    x = normalize(_augment(config, k_aug, images), config.mean, config.std,
                  jnp.dtype(config.compute_dtype))  # fmt: skip
    labels = jnp.asarray(batch["labels"])
    params, static = eqx.partition(state.model, eqx.is_inexact_array)

    def loss_fn(params):
        model = eqx.combine(params, static)
        logits, bn_state = model(x, state.bn_state, key=k_model, train=True, bn_groups=groups)
        if b_u:
            logits = _deinterleave(logits, b_l, groups)
        labeled_loss = jnp.mean(losses.hard_cross_entropy(
            logits[:b_l], labels, label_smoothing=config.label_smoothing))
        if not b_u:
            return labeled_loss, (bn_state, logits, labeled_loss, jnp.zeros((), jnp.float32))
        loss = losses.noisy_student_loss(
            logits[:b_l], labels, logits[b_l:], targets, unlabeled_ratio=config.unlabeled_ratio,
            label_smoothing=config.label_smoothing,
            unlabeled_label_smoothing=config.unlabeled_label_smoothing)
        unlabeled_loss = (loss - labeled_loss) / config.unlabeled_ratio
        return loss, (bn_state, logits[:b_l], labeled_loss, unlabeled_loss)

    (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    bn_state, labeled_logits, labeled_loss, unlabeled_loss = aux
    updates, opt_state = make_optimizer(config).update(grads, state.opt_state, params)
    model = eqx.apply_updates(state.model, updates)
    new = eqx.tree_at(lambda s: (s.model, s.bn_state, s.opt_state, s.step), state,
                      (model, bn_state, opt_state, state.step + 1))  # fmt: skip
    ema_params = ema_update(state.ema_params, eqx.filter(model, eqx.is_inexact_array),
                            state.step + 1, config.ema_decay)
    ema_bn = ema_update(state.ema_bn_state, running_bn_state(new), state.step + 1, config.ema_decay)
    new = eqx.tree_at(lambda s: (s.ema_params, s.ema_bn_state), new, (ema_params, ema_bn))
    metrics = dict(
        loss=loss,
        labeled_loss=labeled_loss,
        unlabeled_loss=unlabeled_loss,
        accuracy=jnp.mean((jnp.argmax(labeled_logits, -1) == labels).astype(jnp.float32)),
        learning_rate=jnp.asarray(learning_rate_schedule(config)(state.step), jnp.float32),
        grad_norm=optax.tree.norm(grads),
    )
    return new, metrics


# ----------------------------------------------------------------------------- precise BN
def batch_bn_statistics(model, bn_state: eqx.nn.State, config: TrainConfig, images: Array,
                        key: Array) -> eqx.nn.State:  # fmt: skip
    """Every BN's statistics on one batch, as training computes them (train mode: drop-path on,
    RandAugment off), in `bn_state`'s structure.

    **Arguments:** `model`, `bn_state`: an `EfficientNet` and a state of its structure (the
    values are not used); `config`: for `mean`, `std`, `compute_dtype`; `images`: uint8
    `[B, H, W, 3]`, `B >= 1`; `key`: a `jax.random` key.

    **Returns:** an `eqx.nn.State` holding each BN's batch mean and (biased) variance.
    """
    zeros = jax.tree.map(jnp.zeros_like, bn_state)
    x = normalize(images, config.mean, config.std, jnp.dtype(config.compute_dtype))
    _, moved = model(x, zeros, key=key, train=True)  # from 0, one update moves to (1 - m) * stats
    return jax.tree.map(lambda v: v / (1.0 - config.bn_momentum), moved)


# ----------------------------------------------------------------------------- eval / predict
def _model_logits(model, bn_state, config: TrainConfig, images) -> Array:
    x = normalize(images, config.mean, config.std, jnp.dtype(config.compute_dtype))
    return model(x, bn_state, train=False)[0]


def eval_step(state: TrainState, batch: Batch) -> dict[str, Array]:
    """Top-1 and top-5 correct counts of the EMA model (eval mode) on one batch.

    **Arguments:**

    - `state`: a `TrainState`.
    - `batch`: `images` uint8 `[B, H, W, 3]` (any `H, W >= 32`; evaluation runs at the test
      resolution the pipeline crops to), `labels` int `[B]`, and optionally `mask` bool `[B]`
      (False on the padding of a final partial batch; those images are not counted).

    **Returns:** float32 scalars `top1` and `top5` (correct counts) and `count` (images
    counted); accumulate them over batches and divide.
    """
    images, labels = batch["images"], batch["labels"]
    batch_size, _, _ = _checks.check_images("batch['images']", images, dtypes=("uint8",),
                                            min_side=32)  # fmt: skip
    _checks.check_integer("batch['labels']", labels)
    if _checks.shape_of(labels) != (batch_size,):
        raise ValueError(f"batch['labels'] must have shape ({batch_size},), got "
                         f"{_checks.shape_of(labels)}")
    mask = batch.get("mask")
    mask = jnp.ones((batch_size,), bool) if mask is None else jnp.asarray(mask, bool)
    if mask.shape != (batch_size,):
        raise ValueError(f"batch['mask'] must have shape ({batch_size},), got {mask.shape}")
    model, bn_state = ema_model(state)
    logits = _model_logits(model, bn_state, state.config, images)
    k = min(5, logits.shape[-1])
    top = jax.lax.top_k(logits, k)[1]
    hit = top == jnp.asarray(labels)[:, None]
    weight = mask.astype(jnp.float32)
    return dict(top1=jnp.sum(hit[:, 0] * weight), top5=jnp.sum(jnp.any(hit, -1) * weight),
                count=jnp.sum(weight))


def predict_step(model, bn_state, config: TrainConfig, images: Array, *, top_k: int | None = None
                 ) -> Array | tuple[Array, Array]:  # fmt: skip
    """Eval-mode predictions of any model (e.g. `ema_model(state)` or a `Teacher`'s).

    **Arguments:**

    - `model`, `bn_state`: an `EfficientNet` and its BN statistics.
    - `config`: the `TrainConfig` whose `mean`, `std` and `compute_dtype` to use.
    - `images`: uint8 `[B, H, W, 3]`, `H, W >= 32`.
    - `top_k`: None for the full probabilities, else an int in [1, C].

    **Returns:** float32 `[B, C]` probabilities, or `(probabilities float32 [B, k], classes
    int32 [B, k])`, largest first.
    """
    _checks.check_images("images", images, dtypes=("uint8",), min_side=32)
    probs = jax.nn.softmax(_model_logits(model, bn_state, config, images), axis=-1)
    if top_k is None:
        return probs
    top_k = _checks.check_positive_int("top_k", top_k)
    if top_k > probs.shape[-1]:
        raise ValueError(f"top_k must be <= the class count {probs.shape[-1]}, got {top_k}")
    return jax.lax.top_k(probs, top_k)
