"""The EfficientNet / Noisy Student optimisation recipe, thin over optax: the learning-rate
schedule, the weight-decay mask, the optimizer and the parameter EMA, each TF-exact.

The reference is TF1 code: `build_learning_rate` / `build_optimizer` in the `utils.py` of
google-research/noisystudent (tensorflow/tpu `models/official/efficientnet`'s, plus a
`start_from_step` that is 0 by default) and the train op in its `main.py`. Where TF and optax differ, this module follows TF and says so.

**Step convention.** `step` is TF's `global_step`: the number of optimizer updates applied so
far. Update number `k` (0-based) uses the learning rate `schedule(k)` (TF reads `global_step`
before the optimizer increments it; optax's own update count is the same `k`), and the EMA
after it uses `ema_decay(k + 1, ...)` (see `ema_update`).

Bad arguments are refused before any work with a `TypeError` / `ValueError` naming them (the
conventions of `nsjax._checks`); a traced `step` or `decay` out of range gives NaN.
"""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import Array
from jax.typing import ArrayLike

from nsjax import _checks, fixres
from nsjax.models._layers import Conv2d, Dense
from nsjax.train._config import TrainConfig

__all__ = ["learning_rate_schedule", "current_learning_rate", "weight_decay_mask",
           "make_optimizer", "ema_decay", "ema_update"]  # fmt: skip


def _check_config(config) -> TrainConfig:
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
    return config


def _check_step(name: str, step) -> bool:
    """`step` is an integer scalar or array, >= 0 when concrete; returns whether it is traced
    (then the caller maps a negative step to NaN)."""
    if step is None or isinstance(step, (bool, np.bool_)):
        raise TypeError(f"{name} must be an int or an integer array, got {type(step).__name__}")
    if not hasattr(step, "dtype") and not isinstance(step, (int, np.integer)):
        raise TypeError(f"{name} must be an int or an integer array, got {type(step).__name__}")
    _checks.check_integer(name, step)
    if _checks.is_traced(step):
        return True
    if np.any(np.asarray(step) < 0):
        raise ValueError(f"{name} must be >= 0 (optimizer updates so far), got {np.asarray(step)}")
    return False


# --------------------------------------------------------------------------- learning rate


def learning_rate_schedule(config: TrainConfig) -> optax.Schedule:
    """The TF EfficientNet learning rate (`utils.build_learning_rate`) as an optax schedule.

    With `lr = config.learning_rate` (`base_learning_rate * labeled_batch / 256`),
    `s = steps_per_epoch` and `w = int(warmup_epochs * s)` (truncated, as TF; no warm-up when
    `warmup_epochs` is 0):

    - `step < w`: `lr * step / w` (linear from 0);
    - otherwise, `exponential`: `lr * decay_rate ** floor(step / (decay_epochs * s))`
      (staircase; the decay clock counts from step 0, it does not restart after the warm-up,
      unlike `optax.warmup_exponential_decay_schedule` and `optax.join_schedules`);
      `cosine`: `0.5 * lr * (1 + cos(pi * step / total_steps))`, unclamped as TF (past
      `total_steps` it rises again).

    Computed in float32 in TF's order of operations (the staircase `floor` of a float32
    quotient, as `tf.train.exponential_decay`).

    **Arguments:**

    - `config`: a `TrainConfig` with `steps_per_epoch` set (else a `ValueError`).

    **Returns:** a function of `step` (an int, or an integer array of any shape, traced or
    not; a concrete negative step is a `ValueError`, a traced one gives NaN) returning the
    float32 learning rate of `step`'s shape. Jit-able; pass it to optax as `learning_rate`.
    """
    _check_config(config)
    steps_per_epoch = config.require_steps_per_epoch()
    peak = config.learning_rate
    warmup_steps = int(config.warmup_epochs * steps_per_epoch) if config.warmup_epochs else 0

    if config.lr_decay == "exponential":
        decay_steps = steps_per_epoch * config.decay_epochs  # a float, as TF
        if config.decay_rate > 0:
            decayed = optax.exponential_decay(peak, decay_steps, config.decay_rate, staircase=True)
        else:  # optax gives a constant schedule for rate 0, TF `peak * 0 ** k`

            def decayed(s):
                k = jnp.floor(s.astype(jnp.float32) / np.float32(decay_steps))
                return np.float32(peak) * jnp.power(np.float32(0), k)
    else:
        total_steps = config.total_steps
        half_peak, pi = np.float32(0.5 * peak), np.float32(math.pi)

        def decayed(s):
            return half_peak * (1 + jnp.cos(pi * s.astype(jnp.float32) / np.float32(total_steps)))

    def schedule(step: ArrayLike) -> Array:
        traced = _check_step("step", step)
        s = jnp.asarray(step)
        lr = jnp.asarray(decayed(s), jnp.float32)
        if warmup_steps > 0:
            warm = np.float32(peak) * s.astype(jnp.float32) / np.float32(warmup_steps)
            lr = jnp.where(s < warmup_steps, warm, lr)
        return _checks.nan_unless(s >= 0, lr) if traced else lr

    return schedule


def current_learning_rate(config: TrainConfig, step: ArrayLike) -> Array:
    """The learning rate of update `step`, for logging: `learning_rate_schedule(config)(step)`.

    **Arguments:**

    - `config`: a `TrainConfig` with `steps_per_epoch` set.
    - `step`: int or integer array (any shape), the optimizer updates applied so far.

    **Returns:** float32 of `step`'s shape.
    """
    return learning_rate_schedule(config)(step)


# --------------------------------------------------------------------------- weight decay


def weight_decay_mask(params):
    """Which parameters weight decay applies to: the kernels (`weight`) of every nsjax `Conv2d`
    (stem, expansion, depthwise, squeeze-excite, projection, head) and `Dense` (classifier).

    Decided by the module class and field, never by rank: biases, batch-norm `scale` /
    `offset` / running statistics and any other leaf are False. (TF's `main.py` decays every
    trainable variable whose name lacks `batch_normalization`, biases included; this recipe
    decays kernels only.)

    **Arguments:**

    - `params`: any pytree holding nsjax `Conv2d` / `Dense` modules, typically
      `eqx.filter(model, eqx.is_inexact_array)` (None leaves stay None), or the gradients of
      one. A pytree with no `Conv2d` / `Dense` weight (e.g. flattened to a dict or list, which
      loses the module classes) is a `ValueError`: nothing would decay.

    **Returns:** a pytree of Python bools with `params`' structure, usable as optax's `mask`.
    """
    found = []

    def is_layer(node) -> bool:
        return isinstance(node, (Conv2d, Dense))

    def leaf_mask(node):
        false = jax.tree.map(lambda _: False, node)
        if not is_layer(node) or node.weight is None:
            return false
        found.append(True)
        return eqx.tree_at(lambda layer: layer.weight, false, True)

    mask = jax.tree.map(leaf_mask, params, is_leaf=is_layer)
    if not found:
        raise ValueError(f"params must contain an nsjax Conv2d or Dense weight (the mask is "
                         f"decided by module class), got a {type(params).__name__} with none")
    return mask



# --------------------------------------------------------------------------- optimizer


def make_optimizer(config: TrainConfig) -> optax.GradientTransformation:
    """The optimizer of `config`, built from optax pieces with `learning_rate_schedule(config)`.

    First `optax.clip_by_global_norm(grad_clip_norm)` when `grad_clip_norm` is not None, then:

    - `rmsprop` (the reference): `optax.add_decayed_weights(weight_decay, weight_decay_mask)`
      (TF's coupled L2 in the loss: its gradient `weight_decay * w` added to the kernels'
      gradients), then `optax.rmsprop(decay=rmsprop_decay, eps=epsilon, momentum=momentum,
      initial_scale=1.0, eps_in_sqrt=True)`: TF1's `RMSPropOptimizer`, `ms = rho * ms +
      (1 - rho) g^2` (ms starts at 1), `mom = mu * mom + lr_t * g / sqrt(ms + eps)`,
      `w -= mom`. optax applies the learning rate before the momentum trace, so `lr_t` enters
      the accumulator at its own step exactly as in TF, also while the schedule changes
      (agreement with a float64 TF1 transcription is at float32 rounding,
      `tests/train/test_recipe.py`).
    - `sgd`: the same decayed weights, then `optax.sgd(momentum=momentum, nesterov=True)`.
    - `adamw`: `optax.adamw(weight_decay=weight_decay, mask=weight_decay_mask)` (decoupled
      decay, scaled by the learning rate; optax's default betas and eps).

    A zero `weight_decay` leaves the decay out (the mask is then never consulted).

    With `freeze_blocks > 0` (the FixRes fine-tune) all of the above applies to the trainable
    leaves only: `optax.multi_transform({True: <the above>, False: optax.set_to_zero()},
    <the nsjax.fixres.fixres_trainable mask>)`, so the stem and the first `freeze_blocks`
    blocks get exactly zero updates (no weight decay either) and no optimizer state; the
    gradient clipping norm is the trainable leaves'. (`optax.masked` would pass the frozen
    leaves' raw gradients through as updates.)

    **Arguments:**

    - `config`: a `TrainConfig` with `steps_per_epoch` set.

    **Returns:** an `optax.GradientTransformation`; `init(params)` and `update(grads, state,
    params)` take pytrees holding the model's `Conv2d` / `Dense` modules (see
    `weight_decay_mask`), with the model's attribute paths (`.stem.weight`,
    `.blocks[0].depthwise.weight`, ...: `eqx.filter(model, eqx.is_inexact_array)`) when
    `freeze_blocks > 0`. Its learning rate at update `step` is `current_learning_rate`.
    """
    _check_config(config)
    schedule = learning_rate_schedule(config)
    parts = []
    if config.grad_clip_norm is not None:
        parts.append(optax.clip_by_global_norm(config.grad_clip_norm))
    decays = config.weight_decay > 0
    if config.optimizer == "adamw":
        parts.append(optax.adamw(schedule, weight_decay=config.weight_decay,
                                 mask=weight_decay_mask if decays else None))
    else:
        if decays:
            parts.append(optax.add_decayed_weights(config.weight_decay, mask=weight_decay_mask))
        if config.optimizer == "rmsprop":
            parts.append(optax.rmsprop(schedule, decay=config.rmsprop_decay, eps=config.epsilon,
                                       momentum=config.momentum, initial_scale=1.0,
                                       eps_in_sqrt=True))  # fmt: skip
        else:
            parts.append(optax.sgd(schedule, momentum=config.momentum, nesterov=True))
    optimizer = optax.chain(*parts)
    if not config.freeze_blocks:
        return optimizer
    patterns = _frozen_patterns(config)
    return optax.multi_transform(
        {True: optimizer, False: optax.set_to_zero()},
        lambda params: fixres.fixres_trainable(params, freeze=patterns))


def _frozen_patterns(config: TrainConfig) -> tuple[str, str]:
    """What `config.freeze_blocks` (>= 1) freezes, as regular expressions over the model's
    `jax.tree_util.keystr` parameter paths (`nsjax.fixres.fixres_trainable`'s `freeze`): the
    stem (`.stem`, `.bn_stem`) and `.blocks[i]` for `i < freeze_blocks`, as the official
    `fix_layer_num`."""
    blocks = "|".join(str(i) for i in range(config.freeze_blocks))
    return r"^\.(stem|bn_stem)\.", rf"^\.blocks\[({blocks})\]\."


# --------------------------------------------------------------------------- EMA


def ema_decay(step: ArrayLike, decay: float) -> Array:
    """TF's `ExponentialMovingAverage(decay, num_updates=step)` decay:
    `min(decay, (1 + step) / (10 + step))`, in float32.

    **Arguments:**

    - `step`: int or integer array (any shape, may be traced), TF's `num_updates`: the
      optimizer updates applied so far, including the one just applied (see `ema_update`).
      A concrete negative step is a `ValueError`, a traced one gives NaN.
    - `decay`: a number in [0, 1] (may be traced: NaN outside).

    **Returns:** float32 of `step`'s shape.
    """
    traced = _check_step("step", step)
    decay = _checks.check_number("decay", decay, minimum=0.0, maximum=1.0, traced_ok=True)
    n = jnp.asarray(step).astype(jnp.float32)
    d = jnp.asarray(decay, jnp.float32)
    out = jnp.minimum(d, (1.0 + n) / (10.0 + n))
    if traced:
        out = _checks.nan_unless(n >= 0, out)
    if _checks.is_traced(decay):
        out = _checks.nan_unless((d >= 0) & (d <= 1), out)
    return out


def ema_update(ema, new, step: ArrayLike, decay: float):
    """One step of the parameter (and batch-norm statistics) moving average, as TF's
    `ema.apply`: `ema - (1 - d) * (ema - new)` with `d = ema_decay(step, decay)`, in TF's
    form (`assign_moving_average`'s `assign_sub(shadow, (shadow - value) * (1 - d))`), which
    leaves the average of an unchanged value (a frozen parameter) exactly unchanged; optax's
    `incremental_update` (`(1 - d) * new + d * ema`) can move it by a rounding.

    **Which step.** Pass the optimizer updates applied so far *including* the one that produced
    `new`: `step + 1` in a train step whose update number is `step` (the value the learning-rate
    schedule received). The first call gets 1, so `d = 2 / 11`. Evidence: in Noisy Student's
    `main.py` (as tensorflow/tpu EfficientNet's), `ema = ExponentialMovingAverage(decay,
    num_updates=global_step)` and `with tf.control_dependencies([train_op]): train_op =
    ema.apply(ema_vars)`; `apply` builds its `cast(num_updates)` read inside that block, so
    after `train_op`, which ends with `optimizer.minimize(..., global_step)`'s
    `assign_add(global_step, 1)`; TPUEstimator's global step is a resource variable
    (`use_resource=True`), whose read is a new op honouring the control dependency. So the
    EMA sees the post-increment value. Start `ema` at the initial parameters (TF initialises
    the average slots to the variables' initial values).

    **Arguments:**

    - `ema`: a pytree of float arrays (None leaves allowed), the average so far.
    - `new`: a pytree of `ema`'s structure and shapes, the current values.
    - `step`: int or integer scalar (may be traced), TF's `num_updates` (see above).
    - `decay`: a number in [0, 1] (`config.ema_decay`, 0.9999).

    **Returns:** the new average, `ema`'s structure, each leaf in `ema`'s dtype.
    """
    ema_def, new_def = jax.tree.structure(ema), jax.tree.structure(new)
    if ema_def != new_def:
        raise ValueError(f"ema and new must have the same pytree structure, got {ema_def} and "
                         f"{new_def}")
    for (path, e), n in zip(jax.tree_util.tree_leaves_with_path(ema), jax.tree.leaves(new)):
        where = jax.tree_util.keystr(path)
        _checks.check_floating(f"ema{where}", e)
        _checks.check_floating(f"new{where}", n)
        _checks.check_same_dims(f"ema{where}", e, f"new{where}", n)
    if np.ndim(step) != 0:
        raise ValueError(f"step must be a scalar, got shape {_checks.shape_of(step)}")
    rate = 1 - ema_decay(step, decay)
    return jax.tree.map(lambda e, n: (e - rate * (e - n)).astype(e.dtype), ema, new)
