"""The device mesh, the shardings of the state (replicated or FSDP) and of batches, and the
jitted, donating, sharded steps."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from typing import Any

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

from nsjax import _checks
from nsjax.train._state import TrainState
from nsjax.train._state import ema_model
from nsjax.train._step import batch_bn_statistics, eval_step, predict_step, train_step

DATA, MODEL = "data", "model"
FSDP_MIN_SIZE = 2**12


def make_mesh(*, model: int = 1, devices: Any = None) -> Mesh:
    """A `("data", "model")` mesh over all devices of all processes, `Auto` axis types.

    Batches are split over every device (both axes); FSDP shards the state along `model` when
    it is larger than 1 (hybrid sharding: FSDP within groups of `model` devices, data parallel
    across them; use it when no dimension of the weights divides the device count), else
    along `data`. (`Auto` axes: Equinox's stateful layers and `filter_shard`
    fail under the `Explicit` axes that `jax.make_mesh` defaults to.)

    **Arguments:**

    - `model`: int >= 1 dividing the device count, the size of the `model` axis.
    - `devices`: the devices to use (default `jax.devices()`: every process's).

    **Returns:** a `jax.sharding.Mesh` of shape `(devices / model, model)`.
    """
    devices = list(jax.devices() if devices is None else devices)
    model = _checks.check_positive_int("model", model)
    if len(devices) % model:
        raise ValueError(f"model must divide the device count {len(devices)}, got {model}")
    return jax.make_mesh((len(devices) // model, model), (DATA, MODEL),
                         axis_types=(AxisType.Auto, AxisType.Auto), devices=devices)  # fmt: skip


def fsdp_spec(shape: tuple[int, ...], axis_size: int, axis: str, *,
              min_size: int = FSDP_MIN_SIZE) -> P:  # fmt: skip
    """How FSDP shards one array: its largest dimension divisible by `axis_size` along `axis`
    (the first such when several tie), or replicated (`P()`) when the array has fewer than
    `min_size` elements or no dimension divides."""
    if axis_size == 1 or math.prod(shape) < min_size:
        return P()
    divisible = [(size, -i) for i, size in enumerate(shape) if size % axis_size == 0]
    if not divisible:
        return P()
    _, neg_dim = max(divisible)
    spec = [None] * len(shape)
    spec[-neg_dim] = axis
    return P(*spec)


def state_shardings(state: Any, mesh: Mesh, *, fsdp: bool,
                    min_size: int = FSDP_MIN_SIZE) -> Any:  # fmt: skip
    """A pytree of `NamedSharding`s for `state` (a `TrainState`, a `Teacher`, any pytree):
    replicated, or with `fsdp` every array of at least `min_size` elements sharded as
    `fsdp_spec` says (optimizer moments and EMA shaped like the parameters shard the same)."""
    axis = MODEL if mesh.shape[MODEL] > 1 else DATA
    size = mesh.shape[axis]

    def one(leaf):
        if not fsdp or not hasattr(leaf, "shape"):
            return NamedSharding(mesh, P())
        return NamedSharding(mesh, fsdp_spec(tuple(leaf.shape), size, axis, min_size=min_size))

    return jax.tree.map(one, state)


def place(tree: Any, shardings: Any) -> Any:
    """`tree`'s arrays with `shardings` (a matching pytree). One process: `jax.device_put`.
    Several: `device_put` cannot target other processes' devices, so a jitted identity with
    these output shardings builds the global arrays from each process's (identical) copy."""
    if jax.process_count() == 1:
        return jax.device_put(tree, shardings)
    return jax.jit(lambda t: t, out_shardings=shardings)(tree)


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Batches are split along their first axis over every device (`data` x `model`)."""
    return NamedSharding(mesh, P((DATA, MODEL)))


def shard_batch(batch: Mapping[str, Any], mesh: Mesh) -> dict[str, jax.Array]:
    """Global arrays from this process's share of a batch (`jax.make_array_from_process_local_data`):
    in a one-process run the whole batch; in a P-process run each process passes its `1/P`.
    Every array's first axis must divide over the mesh's devices."""
    sharding = batch_sharding(mesh)
    devices = mesh.size
    out = {}
    for name, local in batch.items():
        local = np.asarray(local)
        global_rows = local.shape[0] * jax.process_count()
        if global_rows % devices:
            raise ValueError(f"batch[{name!r}] must have a batch size divisible by the mesh's "
                             f"device count {devices}, got {global_rows}")
        out[name] = jax.make_array_from_process_local_data(
            sharding, local, (global_rows,) + local.shape[1:])
    return out


@dataclasses.dataclass(frozen=True)
class Steps:
    """`train_step` and `eval_step` jitted once for one state layout on one mesh: the state
    is donated (its buffers are reused for the next state) and keeps its shardings.

    Build with `jit_steps(state, mesh)`; place a state with `place(state)`, batches with
    `shard_batch`.
    """

    mesh: Mesh
    shardings: Any
    train: Callable[..., tuple[TrainState, dict[str, jax.Array]]]
    eval: Callable[..., dict[str, jax.Array]]
    predict: Callable[..., Any]
    bn_statistics: Callable[..., Any]

    def place(self, state: TrainState) -> TrainState:
        """`state` (the same on every process, e.g. from `init_state` with one key) on the
        mesh with these shardings. The result may share buffers with `state`: once
        `train` has donated it, `state` is spent too."""
        return place(state, self.shardings)


def jit_steps(state: TrainState, mesh: Mesh) -> Steps:
    """The jitted steps for `state`'s config on `mesh` (FSDP when `state.config.fsdp`).

    **Arguments:** `state`: a `TrainState` (or its `eqx.filter_eval_shape`); `mesh`: from
    `make_mesh`.

    **Returns:** a `Steps`: `steps.train(state, batch, teacher=None) -> (state, metrics)`
    (donates `state`), `steps.eval(state, batch) -> counts`.
    """
    if not isinstance(state, TrainState):
        raise TypeError(f"state must be a TrainState, got {type(state).__name__}")
    shardings = state_shardings(state, mesh, fsdp=state.config.fsdp)
    replicated = NamedSharding(mesh, P())
    train = jax.jit(train_step, donate_argnums=0, out_shardings=(shardings, replicated))
    evaluate = jax.jit(eval_step, out_shardings=replicated)

    def ema_statistics(state, images, key):
        model, bn_state = ema_model(state)
        return batch_bn_statistics(model, bn_state, state.config, images, key)

    def ema_predict(state, images, top_k=None):
        model, bn_state = ema_model(state)
        return predict_step(model, bn_state, state.config, images, top_k=top_k)

    return Steps(mesh=mesh, shardings=shardings, train=train, eval=evaluate,
                 predict=jax.jit(ema_predict, static_argnames="top_k"),
                 bn_statistics=jax.jit(ema_statistics, out_shardings=replicated))

