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


def initial_bn_state(bn_state: eqx.nn.State) -> eqx.nn.State:
    """The reference's initial statistics, mean 0 and variance 1, in `bn_state`'s structure."""
    return _bn_pairs(bn_state, lambda m, v: (jnp.zeros_like(m), jnp.ones_like(v)))


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
    - `model`, `bn_state`: optional warm start (e.g. a loaded teacher's weights); both or
      neither, of `config.model_config()`'s architecture. With `config.bn_debias` the student
      re-estimates its running statistics from its own batches from step 0.

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
        _check_warm_start(config, model)
    params = eqx.filter(model, eqx.is_inexact_array)
    running = (_bn_pairs(bn_state, lambda m, v: (jnp.zeros_like(m), jnp.zeros_like(v)))
               if config.bn_debias else bn_state)  # fmt: skip
    return TrainState(
        model=model,
        bn_state=running,
        opt_state=make_optimizer(config).init(params),
        ema_params=jax.tree.map(jnp.copy, params),
        ema_bn_state=initial_bn_state(bn_state) if config.bn_debias else bn_state,
        step=jnp.zeros((), jnp.int32),
        key=k_run,
        config=config,
    )


def _check_warm_start(config: TrainConfig, model) -> None:
    if not isinstance(model, EfficientNet):
        raise TypeError(f"model must be an nsjax EfficientNet, got {type(model).__name__}")
    want = config.model_config()
    if model.config != want or model.num_classes != config.num_classes:
        raise ValueError(
            f"model must have the config's architecture ({config.model!r}, {config.num_classes} "
            f"classes), got a model of {model.num_classes} classes with "
            f"{_first_difference(want, model.config)}"
        )


def _first_difference(want, got) -> str:
    for f in dataclasses.fields(want):
        if getattr(want, f.name) != getattr(got, f.name):
            return f"{f.name}={getattr(got, f.name)!r} (expected {getattr(want, f.name)!r})"
    return "the same architecture"
