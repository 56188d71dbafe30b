"""Checkpoints of a training run: the array leaves of any Equinox pytree, plus each process's
input-pipeline state, over `orbax.checkpoint.CheckpointManager`.

Layout of `directory` (orbax's, one folder per step):

```
directory/
  <step>/                       a finished checkpoint (a writer's is `<step>.orbax-checkpoint-tmp`)
    _CHECKPOINT_METADATA        step metadata; its custom metadata names the typed PRNG keys
    state/                      the array leaves (orbax OCDBT / tensorstore), one flat dict
                                keyed by the leaf's path, e.g. `model.blocks.0.conv.weight`
    data/process_{i}-of-{n}.json   process i's `data_state`, as `{"data_state": ...}`
```

Atomicity comes from orbax: a step is written into `<step>.orbax-checkpoint-tmp`, which is
renamed to `<step>` only after every process has finished writing (on a local or POSIX file
system; on GCS orbax writes a `commit_success.txt` marker instead). Only finished step folders
are listed, so a crash mid-write leaves the previous checkpoints as they were, and the next
`Checkpointer` on the directory neither lists nor restores the broken one.
"""

from __future__ import annotations

import functools
import os
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from jax.sharding import NamedSharding, PartitionSpec, SingleDeviceSharding

from nsjax import _checks

__all__ = ["Checkpointer"]

_STATE, _DATA = "state", "data"
_KEYS = "prng_impls"  # custom step metadata: leaf name -> PRNG impl of each typed key


class Checkpointer:
    """Saves and restores a training state every so many steps, keeping the last few.

    `state` is any pytree (an `eqx.Module`, tuples, dicts, an `eqx.nn.State`, ...): its array
    leaves are saved (typed `jax.random` keys as their key data plus the impl's name); the
    rest (static fields, functions, Python numbers) is not, and comes back from the `like`
    given to `restore`. Arrays keep their dtype and values bitwise.

    **Multi-host:** every process must construct the `Checkpointer` (after
    `jax.distributed.initialize`) on the same shared `directory` and call `save`, `restore`,
    `wait` and `close` with the same arguments, in the same order: these are collective (orbax
    synchronises the processes with barriers, every process writes its own shards, and process
    0 commits the step once all have finished). Only `data_state` differs per process: each
    writes and reads back its own `data/process_{i}-of-{n}.json`, so a run must be resumed with
    the same process count.

    **Arguments:**

    - `directory`: the folder holding the checkpoints (created if missing).
    - `keep`: int >= 1, how many of the latest checkpoints are kept; older ones are deleted.
    - `async_save`: bool; True (default) writes in a background thread once the arrays are
      copied, so `save` returns early; `wait` (or the next `save`, `restore`, `close`) waits
      for it.

    Use as a context manager (`with Checkpointer(...) as ckpt:`) or call `close()`.
    """

    def __init__(self, directory: str | os.PathLike, *, keep: int, async_save: bool = True):
        if not isinstance(directory, (str, os.PathLike)):
            raise TypeError(f"directory must be a str or os.PathLike, got "
                            f"{type(directory).__name__}")  # fmt: skip
        keep = _checks.check_positive_int("keep", keep)
        async_save = _checks.check_bool("async_save", async_save)
        self._directory = os.path.abspath(os.fspath(directory))
        self._process = f"process {jax.process_index()} of {jax.process_count()}"
        options = ocp.CheckpointManagerOptions(
            preservation_policy=ocp.checkpoint_managers.LatestN(keep),
            enable_async_checkpointing=async_save,
        )
        self._manager = ocp.CheckpointManager(self._directory, options=options,
                                              handler_registry=_handler_registry())  # fmt: skip

    def save(self, step: int, state, *, data_state: dict | None = None,
             force: bool = False) -> bool:  # fmt: skip
        """Write a checkpoint for `step` (collective: every process calls it).

        **Arguments:**

        - `step`: int >= 0, newer than `latest_step()`: an older or equal step is skipped
          unless `force` (then an existing step raises `ValueError`).
        - `state`: a pytree; its array leaves (`eqx.is_array`) are saved.
        - `data_state`: this process's input-pipeline state (e.g. a grain iterator's
          `get_state()`), a JSON-able dict, or None.
        - `force`: bool, save a step that is not newer than the latest.

        **Returns:** whether a checkpoint was written (or, with `async_save`, started).
        """
        step = _checks.check_positive_int("step", step, minimum=0)
        force = _checks.check_bool("force", force)
        data = {"data_state": _json_copy("data_state", data_state)}
        arrays = _named_leaves("state", state, eqx.is_array)
        impls = {name: str(jax.random.key_impl(x)) for name, x in arrays.items() if _is_key(x)}
        arrays = {name: jax.random.key_data(x) if name in impls else x
                  for name, x in arrays.items()}  # fmt: skip
        args = ocp.args.Composite(**{_STATE: ocp.args.StandardSave(arrays),
                                     _DATA: ocp.args.JsonSave(data)})  # fmt: skip
        try:
            return self._manager.save(step, args=args, force=force,
                                      custom_metadata={_KEYS: impls})  # fmt: skip
        except ocp.checkpoint_manager.StepAlreadyExistsError as e:
            raise ValueError(f"step {step} is already saved in {self._directory}") from e

    def restore(self, like, *, step: int | None = None) -> tuple[Any, dict | None]:
        """Read a checkpoint back into the structure and shardings of `like` (collective).

        **Arguments:**

        - `like`: a pytree of the saved structure, e.g. the initial state or
          `eqx.filter_eval_shape` of its constructor. Its array leaves (`jax.Array`,
          `np.ndarray` or `jax.ShapeDtypeStruct`) give each restored leaf's shape, dtype and
          sharding (the device layout may differ from the one at save time; a leaf without
          a sharding lands on this process's first device, a NumPy leaf comes back as NumPy);
          its other leaves are returned as they are.
        - `step`: the step to read; None (default) for the latest.

        **Returns:** `(state, data_state)`: `like` with the saved arrays, and this process's
        `data_state` as saved (None if none was given).

        **Raises:** `FileNotFoundError` naming the directory when there is no checkpoint (for
        `step`); `ValueError` naming the leaves whose path, shape, dtype or PRNG impl differ
        between the checkpoint and `like`. Both before any array is read.
        """
        self._manager.wait_until_finished()
        step = self._existing_step(step)
        paths_leaves, treedef = jax.tree_util.tree_flatten_with_path(like)
        targets = _named_leaves("like", like, _is_array_like)
        saved, impls = self._saved_specs(step)
        _check_same_leaves(step, saved, targets)
        data_state = self._restore_data_state(step)
        abstract = {name: _abstract(saved[name], x) for name, x in targets.items()}
        restored = self._manager.restore(step, args=ocp.args.Composite(
            **{_STATE: ocp.args.StandardRestore(abstract)}))[_STATE]  # fmt: skip
        arrays = {name: _rewrap(restored[name], impls.get(name), x)
                  for name, x in targets.items()}  # fmt: skip
        leaves = [arrays[_leaf_name(p)] if _is_array_like(x) else x for p, x in paths_leaves]
        return jax.tree_util.tree_unflatten(treedef, leaves), data_state

    def latest_step(self) -> int | None:
        """The newest checkpoint's step (one still being written by this `Checkpointer`
        included), or None when there is none."""
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        """The kept checkpoints' steps, oldest first."""
        return sorted(self._manager.all_steps())

    def wait(self) -> None:
        """Block until an asynchronous save has been written and committed."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        """Wait for pending saves and deletions, then release orbax's resources."""
        self._manager.close()

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _existing_step(self, step: int | None) -> int:
        """`step`, or the latest, checked to be on disk."""
        steps = self.all_steps()
        if step is None:
            if not steps:
                raise FileNotFoundError(f"no checkpoint in {self._directory}")
            return steps[-1]
        step = _checks.check_positive_int("step", step, minimum=0)
        if step not in steps:
            raise FileNotFoundError(f"no checkpoint for step {step} in {self._directory}; "
                                    f"saved steps: {steps}")  # fmt: skip
        return step

    def _saved_specs(self, step: int) -> tuple[dict[str, jax.ShapeDtypeStruct], dict[str, str]]:
        """Each saved leaf's shape and dtype as the caller sees it (a typed key's, not its
        key data's), from the checkpoint's metadata; and the typed keys' PRNG impl names."""
        tree = self._manager.item_metadata(step)[_STATE].tree
        impls = self._manager.metadata(step).custom_metadata.get(_KEYS, {})
        specs = {name: jax.ShapeDtypeStruct(m.shape, m.dtype) for name, m in tree.items()}
        for name, impl in impls.items():
            specs[name] = jax.eval_shape(lambda d, i=impl: jax.random.wrap_key_data(d, impl=i),
                                         specs[name])  # fmt: skip
        return specs, impls

    def _restore_data_state(self, step: int) -> dict | None:
        args = ocp.args.Composite(**{_DATA: ocp.args.JsonRestore()})
        try:
            return self._manager.restore(step, args=args)[_DATA]["data_state"]
        except FileNotFoundError as e:
            raise FileNotFoundError(
                f"checkpoint step {step} in {self._directory} holds no data state for "
                f"{self._process} (saved by a run with another process count?)") from e


def _handler_registry() -> ocp.handlers.DefaultCheckpointHandlerRegistry:
    """Arrays through orbax's standard handler; the data state through its JSON handler, one
    file per process (grain's `process_{i}-of-{n}.json` naming): `primary_host=None` makes
    every process write its own file (the default writes on process 0 only)."""
    data = ocp.JsonCheckpointHandler(
        f"process_{jax.process_index()}-of-{jax.process_count()}.json",
        multiprocessing_options=ocp.options.MultiprocessingOptions(primary_host=None),
    )
    registry = ocp.handlers.DefaultCheckpointHandlerRegistry()
    registry.add(_STATE, ocp.args.StandardSave)
    registry.add(_STATE, ocp.args.StandardRestore)
    registry.add(_DATA, ocp.args.JsonSave, data)
    registry.add(_DATA, ocp.args.JsonRestore, data)
    return registry


def _json_copy(name: str, value: dict | None) -> dict | None:
    """A deep copy of a JSON-able dict (so later changes by the caller are not saved)."""
    return None if value is None else _checks.check_json_dict(name, value)


def _is_key(x) -> bool:
    return jnp.issubdtype(x.dtype, jax.dtypes.prng_key)


def _is_array_like(x) -> bool:
    return eqx.is_array(x) or isinstance(x, jax.ShapeDtypeStruct)


def _leaf_name(path) -> str:
    """A leaf's path as a dotted name (`model.blocks.0.weight`); `root` for a bare array."""
    return jax.tree_util.keystr(path, simple=True, separator=".") or "root"


def _named_leaves(what: str, tree, keep) -> dict[str, Any]:
    """The leaves of `tree` that pass `keep`, by name, in flattening order."""
    out = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        if keep(leaf):
            name = _leaf_name(path)
            if name in out:
                raise ValueError(f"{what} has two array leaves named {name!r} (keys such as 1 "
                                 f"and '1' collide); rename one")  # fmt: skip
            out[name] = leaf
    if not out:
        raise ValueError(f"{what} must hold at least one array, got none")
    return out


def _spec_text(x) -> str:
    return f"{x.dtype}{list(x.shape)}"


def _check_same_leaves(step: int, saved: dict, targets: dict) -> None:
    """`targets` (from `like`) has exactly the saved leaves, with their shapes and dtypes."""
    problems = [f"{name}: not in the checkpoint (like has {_spec_text(x)})"
                for name, x in targets.items() if name not in saved]  # fmt: skip
    problems += [f"{name}: in the checkpoint ({_spec_text(x)}) but not in like"
                 for name, x in saved.items() if name not in targets]  # fmt: skip
    problems += [f"{name}: checkpoint has {_spec_text(saved[name])}, like has {_spec_text(x)}"
                 for name, x in targets.items()
                 if name in saved and _spec_text(saved[name]) != _spec_text(x)]  # fmt: skip
    if problems:
        raise ValueError(
            f"like does not match checkpoint step {step} ({len(problems)} difference"
            f"{'s' if len(problems) > 1 else ''}): "
            + "; ".join(problems[:3]) + ("; ..." if len(problems) > 3 else "")
        )  # fmt: skip


def _sharding(target) -> jax.sharding.Sharding:
    """Where a leaf of `like` is restored: its sharding, else this process's first device."""
    return getattr(target, "sharding", None) or SingleDeviceSharding(jax.local_devices()[0])


def _abstract(saved: jax.ShapeDtypeStruct, target):
    """What orbax restores a leaf as: NumPy for a NumPy target; otherwise a `jax.Array` in the
    target's sharding (a typed key's data replicated on the target's devices)."""
    if isinstance(target, np.ndarray):
        return target
    sharding = _sharding(target)
    if not _is_key(saved):
        return jax.ShapeDtypeStruct(target.shape, target.dtype, sharding=sharding)
    data = jax.eval_shape(jax.random.key_data, saved)
    if isinstance(sharding, NamedSharding):
        sharding = NamedSharding(sharding.mesh, PartitionSpec())
    return jax.ShapeDtypeStruct(data.shape, data.dtype, sharding=sharding)


def _rewrap(value, impl: str | None, target):
    """A restored leaf as the caller's: a typed key's data wrapped in the saved PRNG impl
    (which the check made equal to `target`'s) and placed in `target`'s sharding."""
    if impl is None:
        return value
    wrap = functools.partial(jax.random.wrap_key_data, impl=impl)
    return jax.jit(wrap, out_shardings=_sharding(target))(value)
