"""`TrainState`: everything a run carries from one step to the next, as one pytree."""

from __future__ import annotations

import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
from jax import Array

from nsjax import _checks
from nsjax.models import EfficientNet, efficientnet_from_config
from nsjax.models._efficientnet import _check_state
from nsjax.train._config import TrainConfig
from nsjax.train._recipe import make_optimizer


class TrainState(eqx.Module):
    """One run's state; every field is an array (or a pytree of arrays), so the whole state
    is donated to the jitted step, sharded by `state_shardings` and checkpointed as is.

    **Fields:**

    - `model`: the student `EfficientNet` (float32 parameters).
    - `bn_state`: its BN running statistics (`eqx.nn.State`). With `config.bn_debias` these are
      zero-initialised accumulators; read them through `running_bn_state`.
    - `opt_state`: the optax state of `make_optimizer(config)`.
    - `ema_params`: the exponential moving average of the model's float arrays (a model
      pytree with None at non-float leaves).
    - `ema_bn_state`: the moving average of the (debiased) running statistics.
    - `step`: int32 `[]`, training steps done.
    - `key`: the run's `jax.random` key; step `t` uses `fold_in(key, t)`.
    - `config`: the `TrainConfig` (static).
    """

    model: EfficientNet
    bn_state: eqx.nn.State
    opt_state: optax.OptState
    ema_params: EfficientNet
    ema_bn_state: eqx.nn.State
    step: Array
    key: Array
    config: TrainConfig = eqx.field(static=True)


def _bn_pairs(state: eqx.nn.State, fn) -> eqx.nn.State:
    """Map `fn(mean, var) -> (mean, var)` over every BN's running statistics."""
    is_pair = lambda v: isinstance(v, tuple) and len(v) == 2  # noqa: E731
    return jax.tree.map(lambda p: fn(*p), state, is_leaf=is_pair)


def running_bn_state(state: TrainState) -> eqx.nn.State:
    """The BN running statistics the student's weights go with, for evaluation.

    With `config.bn_debias` the zero-initialised accumulators `r_t` are divided by
    `1 - momentum ** step` (Adam's and TF's `zero_debias` rule, Equinox BN's `mode="batch"`):
    the weighted mean of the batch statistics seen so far, whatever the run's length. At step 0
    the initial statistics (0, 1). Without it, the TF running average itself.
    """
    if not state.config.bn_debias:
        return state.bn_state
    t = state.step.astype(jnp.float32)
    scale = 1.0 - jnp.float32(state.config.bn_momentum) ** t
    started = state.step > 0
    safe = jnp.where(started, scale, 1.0)
    return _bn_pairs(state.bn_state, lambda m, v: (jnp.where(started, m / safe, 0.0),
                                                   jnp.where(started, v / safe, 1.0)))


def ema_model(state: TrainState) -> tuple[EfficientNet, eqx.nn.State]:
    """The moving-average model and its BN statistics: what evaluation, pseudo-labelling and
    teacher export use. **Returns:** `(model, bn_state)`."""
    return eqx.combine(state.ema_params, state.model), state.ema_bn_state


def init_state(config: TrainConfig, key: Array, *, model: EfficientNet | None = None,
               bn_state: eqx.nn.State | None = None) -> TrainState:  # fmt: skip
    """A fresh `TrainState`.

    **Arguments:**

    - `config`: a `TrainConfig` with `steps_per_epoch` set (the schedule needs it).
    - `key`: a `jax.random` key; the model's initial weights come from one split of it and the
      run's noise from the other.
    - `model`, `bn_state`: optional warm start (e.g. a loaded teacher's `model` and `state`),
      both or neither: an `EfficientNet` of `config.model_config()`'s architecture and
      `config.num_classes` classes and its BN statistics. Its config may differ from
      `config.model_config()` in `train_resolution` / `test_resolution` only (they change no
      weight: a FixRes fine-tune at another resolution); the state's model takes
      `config.model_config()`. The state holds copies, so training (which donates its state)
      leaves `model` and `bn_state` usable.

    The moving average starts at the initial weights and BN statistics: after a warm start the
    step-0 EMA model is `(model, bn_state)` itself. With `config.bn_debias` the running
    statistics are re-estimated from the run's own batches from step 0 (at a fine-tune's new
    resolution, the statistics that fit it); without, they continue from `bn_state` (TF's
    moving average).

    **Returns:** a `TrainState` at step 0.
    """
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
    _checks.check_key("key", key)
    config.require_steps_per_epoch()
    if (model is None) != (bn_state is None):
        raise ValueError("model and bn_state must be given together (a warm start) or not at "
                         f"all, got model={type(model).__name__}, bn_state={type(bn_state).__name__}")
    if isinstance(key, jax.Array) and key.dtype == jnp.uint32:
        key = jax.random.wrap_key_data(key)
    k_model, k_run = jax.random.split(key)
    if model is None:
        model, bn_state = efficientnet_from_config(config.model_config(), key=k_model,
                                                   num_classes=config.num_classes)  # fmt: skip
    else:
        model, bn_state = _warm_start(config, model, bn_state)
    params = eqx.filter(model, eqx.is_inexact_array)
    running = (_bn_pairs(bn_state, lambda m, v: (jnp.zeros_like(m), jnp.zeros_like(v)))
               if config.bn_debias else _copy(bn_state))  # fmt: skip
    return TrainState(
        model=model,
        bn_state=running,
        opt_state=make_optimizer(config).init(params),
        ema_params=_copy(params),
        ema_bn_state=_copy(bn_state),
        step=jnp.zeros((), jnp.int32),
        key=k_run,
        config=config,
    )


def _copy(tree):
    """`tree` with every array copied (a state owns its buffers: a step donates them)."""
    return jax.tree.map(lambda x: jnp.copy(x) if eqx.is_array(x) else x, tree)


def _warm_start(config: TrainConfig, model, bn_state) -> tuple[EfficientNet, eqx.nn.State]:
    """Copies of a warm start's `(model, bn_state)`, checked, the model's config replaced by
    `config.model_config()` (a static field: the arrays go into that config's structure)."""
    check_warm_start("model", config, model)
    _check_state(model, bn_state)
    want = config.model_config()
    if model.config != want:
        skeleton = eqx.filter_eval_shape(efficientnet_from_config, want, key=jax.random.key(0),
                                         num_classes=config.num_classes)[0]  # fmt: skip
        model = jax.tree.unflatten(jax.tree.structure(skeleton), jax.tree.leaves(model))
    return _copy(model), _copy(bn_state)


def check_warm_start(name: str, config: TrainConfig, model) -> None:
    """`model` (the argument `name`) can start a run of `config`: an `EfficientNet` of its
    architecture and class count, at any train / test resolution."""
    if not isinstance(model, EfficientNet):
        raise TypeError(f"{name} must be an nsjax EfficientNet, got {type(model).__name__}")
    want = config.model_config()
    got = dataclasses.replace(model.config, train_resolution=want.train_resolution,
                              test_resolution=want.test_resolution)  # fmt: skip
    if got != want or model.num_classes != config.num_classes:
        raise ValueError(
            f"{name} must have the config's architecture ({config.model!r}, "
            f"{config.num_classes} classes; any resolution), got a model of "
            f"{model.num_classes} classes with {_first_difference(want, got)}"
        )


def _first_difference(want, got) -> str:
    for f in dataclasses.fields(want):
        if getattr(want, f.name) != getattr(got, f.name):
            return f"{f.name}={getattr(got, f.name)!r} (expected {getattr(want, f.name)!r})"
    return "the same architecture"
