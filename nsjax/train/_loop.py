"""`fit`: the training loop. Read top to bottom: check the inputs, build or resume the state,
step, log, evaluate, checkpoint, export the EMA model as the next teacher."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any

import equinox as eqx
import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from nsjax import _checks
from nsjax.train._batches import check_arrays, eval_batches, train_batches
from nsjax.train._checkpoint import Checkpointer
from nsjax._io import atomic_write_text
from nsjax.train._config import TrainConfig
from nsjax.train._mesh import jit_steps, make_mesh, place, shard_batch, state_shardings
from nsjax.train._state import TrainState, check_warm_start, ema_model, init_state
from nsjax.train._step import LABELED_KEYS, UNLABELED_KEYS
from nsjax.train._teacher import Teacher, export_teacher

Arrays = Mapping[str, np.ndarray]


class NonFiniteLossError(FloatingPointError):
    """The loss or the gradient norm became NaN or infinite; the run stopped."""


# ----------------------------------------------------------------------------- inputs
@dataclasses.dataclass(frozen=True)
class Inputs:
    """What `fit` reads, for data that is not a few arrays in memory (`nsjax.data.fit_inputs`
    builds one from sources).

    - `train()`: a new endless iterator of step batches (dicts holding at least the keys
      `train_step` reads: `images`, `labels`, and `unlabeled_images` with `unlabeled_targets`
      or `teacher_images`; other keys are ignored), with `get_state()` / `set_state(state)`
      (a JSON-able dict, checkpointed with the run).
    - `bn()`: a new iterator of un-augmented labeled batches (`images`) for precise BN.
    - `test()`: None, or a new finite iterable of `images`, `labels`, `mask` batches.
    - `labeled_size`: the number of labeled records (sets `steps_per_epoch` when the config
      leaves it None).
    """

    train: Callable[[], Any]
    bn: Callable[[], Any]
    test: Callable[[], Any] | None
    labeled_size: int


class _Zipped:
    """The labeled and unlabeled array iterators as one step-batch iterator."""

    def __init__(self, labeled_it, unlabeled_it):
        self.labeled_it, self.unlabeled_it = labeled_it, unlabeled_it

    def __next__(self) -> dict[str, np.ndarray]:
        batch = dict(next(self.labeled_it))
        if self.unlabeled_it is not None:
            names = dict(images="unlabeled_images", targets="unlabeled_targets",
                         teacher_images="teacher_images")  # fmt: skip
            batch.update({names[k]: v for k, v in next(self.unlabeled_it).items()})
        return batch

    def get_state(self) -> dict[str, Any]:
        state = dict(labeled=self.labeled_it.get_state())
        if self.unlabeled_it is not None:
            state["unlabeled"] = self.unlabeled_it.get_state()
        return state

    def set_state(self, state: dict[str, Any]) -> None:
        self.labeled_it.set_state(state["labeled"])
        if self.unlabeled_it is not None:
            self.unlabeled_it.set_state(state["unlabeled"])

    def close(self) -> None:
        _close(self.labeled_it)
        _close(self.unlabeled_it)


def array_inputs(config: TrainConfig, labeled: Arrays, unlabeled: Arrays | None = None,
                 test: Arrays | None = None) -> Inputs:  # fmt: skip
    """`Inputs` over arrays in memory (already at the training resolution): shuffled, repeated
    per-process batches (`train_batches`), padded test batches (`eval_batches`)."""
    def train():
        return _Zipped(train_batches(labeled, config.labeled_batch, seed=config.seed),
                       None if unlabeled is None else
                       train_batches(unlabeled, config.unlabeled_batch, seed=config.seed + 1))

    return Inputs(
        train=train, bn=lambda: train_batches(labeled, config.labeled_batch, seed=config.seed + 2),
        test=None if test is None else lambda: eval_batches(test, config.labeled_batch),
        labeled_size=_checks.shape_of(labeled["labels"])[0])


# ----------------------------------------------------------------------------- input checks
def _check_inputs(config: TrainConfig, labeled: Arrays, unlabeled: Arrays | None,
                  test: Arrays | None, teacher: Teacher | None) -> None:  # fmt: skip
    """Everything `fit` can check before any work, each error naming the argument."""
    size, c = config.image_size, config.num_classes
    n = check_arrays("labeled", labeled, image_keys=("images",))
    if set(labeled) != {"images", "labels"}:
        raise ValueError(f"labeled must hold exactly 'images' and 'labels', got {sorted(labeled)}")
    _check_size("labeled['images']", labeled["images"], size)
    _check_labels("labeled['labels']", labeled["labels"], c)
    if n < config.labeled_batch:
        raise ValueError(f"labeled must hold at least one batch ({config.labeled_batch}), got {n}")
    if config.unlabeled_batch == 0:
        if unlabeled is not None:
            raise ValueError("unlabeled data was given but config.unlabeled_ratio is 0 "
                             "(supervised training)")
    else:
        if unlabeled is None:
            raise ValueError(f"unlabeled must be given: config.unlabeled_ratio = "
                             f"{config.unlabeled_ratio}")
        allowed = {"images", "teacher_images"} | ({"targets"} if teacher is None else set())
        check_arrays("unlabeled", unlabeled, image_keys=("images", "teacher_images"))
        if "images" not in unlabeled or not set(unlabeled) <= allowed:
            raise ValueError(f"unlabeled must hold 'images' and {sorted(allowed - {'images'})} "
                             f"({'offline' if teacher is None else 'online teacher'}), got "
                             f"{sorted(unlabeled)}")
        _check_size("unlabeled['images']", unlabeled["images"], size)
        if teacher is None and "targets" not in unlabeled:
            raise ValueError("unlabeled['targets'] is missing: offline training needs the "
                             "teacher's targets, or pass teacher= for online targets")
        if "targets" in unlabeled and np.ndim(unlabeled["targets"]) == 1:
            _check_labels("unlabeled['targets']", unlabeled["targets"], c)
    if test is not None:
        check_arrays("test", test, image_keys=("images",))
        if set(test) != {"images", "labels"}:
            raise ValueError(f"test must hold exactly 'images' and 'labels', got {sorted(test)}")
        _check_labels("test['labels']", test["labels"], c)


def _check_run(config: TrainConfig, teacher: Teacher | None, init: Teacher | None) -> None:
    """The config, the teacher and the warm start, whatever the inputs."""
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
    if init is not None:
        if not isinstance(init, Teacher):
            raise TypeError(f"init must be an nsjax.train.Teacher (e.g. load_teacher(path)), "
                            f"got {type(init).__name__}")
        check_warm_start("init", config, init.model)
    if teacher is None:
        return
    if config.unlabeled_batch == 0:
        raise ValueError("a teacher was given but config.unlabeled_ratio is 0 (supervised "
                         "training)")
    if not isinstance(teacher, Teacher):
        raise TypeError(f"teacher must be an nsjax.train.Teacher, got {type(teacher).__name__}")
    if teacher.num_classes != config.num_classes:
        raise ValueError(f"teacher must have the student's class count {config.num_classes}, "
                         f"got a teacher of {teacher.num_classes} classes")


def _check_size(name: str, images, size: int) -> None:
    got = _checks.shape_of(images)[1:3]
    if got != (size, size):
        raise ValueError(f"{name} must be {size}x{size} (the student's training resolution, "
                         f"config.image_size), got {got[0]}x{got[1]}")


def _check_labels(name: str, labels, num_classes: int) -> None:
    _checks.check_integer(name, labels)
    labels = np.asarray(labels)
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"{name} must be class indices in [0, {num_classes}), got values in "
                         f"[{labels.min()}, {labels.max()}]")


# ----------------------------------------------------------------------------- run folder
def _prepare_out_dir(out_dir: str, config: TrainConfig) -> None:
    """Create `out_dir` and save the config; a folder holding another run's config is refused
    (resuming needs the same config)."""
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, "config.json")
    if os.path.exists(path):
        saved = TrainConfig.load(path)
        if saved != config:
            diff = [f.name for f in dataclasses.fields(config)
                    if getattr(saved, f.name) != getattr(config, f.name)]  # fmt: skip
            raise ValueError(f"out_dir {out_dir!r} holds a run with another config (fields "
                             f"{diff} differ); resume with the same config or use a new out_dir")
    elif jax.process_index() == 0:
        config.save(path)


class _Log:
    """Metrics as JSON lines in `out_dir/metrics.jsonl` and a progress display (process 0)."""

    def __init__(self, out_dir: str, total: int, start: int, enabled: bool):
        self.enabled = enabled
        self.path = os.path.join(out_dir, "metrics.jsonl")
        self.bar = None
        if enabled and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=start, unit="step", dynamic_ncols=True)

    def write(self, record: dict[str, Any], done: int) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self.bar is not None:
            self.bar.set_postfix({k: f"{v:.4g}" for k, v in record.items()
                                  if k in ("loss", "learning_rate", "images_per_second",
                                           "test_top1")})  # fmt: skip
            self.bar.update(done - self.bar.n)
        else:
            print(" ".join(f"{k}={v:.5g}" if isinstance(v, float) else f"{k}={v}"
                           for k, v in record.items()), file=sys.stderr, flush=True)  # fmt: skip

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class _StopRequest:
    """Ctrl-C (SIGINT) asks the loop to stop after the current step and checkpoint."""

    def __init__(self):
        self.requested = False
        self.previous = None

    def __enter__(self):
        try:
            self.previous = signal.signal(signal.SIGINT, self._handle)
        except ValueError:  # not the main thread: no handler, Ctrl-C behaves as usual
            self.previous = None
        return self

    def _handle(self, *_):
        self.requested = True

    def __exit__(self, *exc):
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)


# ----------------------------------------------------------------------------- the loop
def evaluate(steps, state: TrainState, test: Any) -> dict[str, float]:
    """Top-1 / top-5 accuracy (fractions) of the EMA model over `test`, an iterable of
    `images`, `labels`, `mask` batches (e.g. `Inputs.test()`), closed at the end."""
    totals = np.zeros(3)
    try:
        for batch in test:
            batch = {k: batch[k] for k in ("images", "labels", "mask")}
            counts = steps.eval(state, shard_batch(batch, steps.mesh))
            totals += [float(counts["top1"]), float(counts["top5"]), float(counts["count"])]
    finally:
        _close(test)
    return dict(test_top1=totals[0] / totals[2], test_top5=totals[1] / totals[2])


def precise_bn(steps, state: TrainState, batches: Any) -> TrainState:
    """`state` with the EMA model's BN statistics re-estimated over
    `config.precise_bn_batches` un-augmented labeled batches: the average of each batch's
    mean and variance with the final weights (fvcore's `update_bn_stats` rule). The moving
    averages lag the weights by ~1 / (1 - momentum) steps, which after a short run costs
    eval-mode accuracy; this does not. The training state itself is not changed. `batches`:
    an iterator of labeled batches with `images` (e.g. `Inputs.bn()`), closed at the end."""
    config = state.config
    if config.precise_bn_batches == 0:
        _close(batches)
        return state
    key = jax.random.fold_in(jax.random.key(config.seed), 2**31 - 1)
    total = None
    try:
        for i in range(config.precise_bn_batches):
            images = shard_batch({"images": next(batches)["images"]}, steps.mesh)["images"]
            stats = steps.bn_statistics(state, images, jax.random.fold_in(key, i))
            total = stats if total is None else jax.tree.map(jax.numpy.add, total, stats)
    finally:
        _close(batches)
    average = jax.tree.map(lambda t: t / config.precise_bn_batches, total)
    return eqx.tree_at(lambda s: s.ema_bn_state, state, average)


def _step_batch(batches) -> dict[str, np.ndarray]:
    """The next step batch, without the keys `train_step` does not read (e.g. `index`)."""
    return {k: v for k, v in next(batches).items() if k in LABELED_KEYS + UNLABELED_KEYS}


def fit(config: TrainConfig, labeled: Arrays | None = None, unlabeled: Arrays | None = None,
        test: Arrays | None = None, *, inputs: Inputs | None = None,
        teacher: Teacher | None = None, init: Teacher | None = None, out_dir: str,
        key: jax.Array | None = None, mesh: jax.sharding.Mesh | None = None
        ) -> tuple[TrainState, dict[str, Any]]:  # fmt: skip
    """Train a student; rerun the same call after a crash or a kill to continue.

    Writes into `out_dir`: `config.json`, `metrics.jsonl` (one JSON object per log step and
    per evaluation), `checkpoints/` (orbax: the whole `TrainState` and the input iterators'
    positions, every `checkpoint_every` steps and at the end, the last `keep_checkpoints`
    kept), `teacher.eqx` (the EMA model, `load_teacher` reads it as the next generation's
    teacher) and `summary.json`. A folder holding a checkpoint of the same config resumes from
    it, bitwise as if never stopped. A non-finite loss stops the run (`NonFiniteLossError`,
    the last good checkpoint kept); Ctrl-C checkpoints, then raises `KeyboardInterrupt`.

    **Arguments:**

    - `config`: the run's `TrainConfig`; `steps_per_epoch` None is set to
      `len(labeled) // labeled_batch`.
    - `labeled`: `images` uint8 `[N, S, S, 3]` (`S = config.image_size`, already cropped) and
      `labels` int `[N]`.
    - `unlabeled`: with `config.unlabeled_ratio > 0`: `images` uint8 `[M, S, S, 3]` and either
      `targets` (offline: float `[M, C]` or int `[M]`) or, with a `teacher`, optionally
      `teacher_images` uint8 `[M, H_t, W_t, 3]` (the teacher's clean view).
    - `test`: `images` uint8 `[T, H, W, 3]` and `labels` int `[T]`, evaluated with the EMA
      model every `eval_every` steps and at the end.
    - `inputs`: instead of `labeled`, `unlabeled` and `test`: an `Inputs` (e.g.
      `nsjax.data.fit_inputs` over image folders, npz files or shards).
    - `teacher`: a `Teacher` for online targets.
    - `init`: a warm start, e.g. `load_teacher(path)` (the official `--init_model`): its
      `model` and `state` are the starting weights and BN statistics (`init_state`'s `model`
      and `bn_state`), checked before any work: `config`'s architecture and class count, at
      any resolution (a FixRes fine-tune). Ignored when `out_dir` holds a checkpoint.
    - `out_dir`: the run's folder.
    - `key`: the run's `jax.random` key (default `jax.random.key(config.seed)`).
    - `mesh`: default `make_mesh()` over every device of every process.

    **Returns:** `(state, summary)`: the final `TrainState` and the dict in `summary.json`.
    """
    _check_run(config, teacher, init)
    if inputs is None:
        _check_inputs(config, labeled, unlabeled, test, teacher)
        inputs = array_inputs(config, labeled, unlabeled, test)
    elif not isinstance(inputs, Inputs) or (labeled, unlabeled, test) != (None, None, None):
        raise TypeError(f"give either arrays (labeled, unlabeled, test) or inputs= (an "
                        f"nsjax.train.Inputs), not both; got inputs of type "
                        f"{type(inputs).__name__}")
    if config.steps_per_epoch is None:
        config = dataclasses.replace(
            config, steps_per_epoch=max(1, inputs.labeled_size // config.labeled_batch))
    key = jax.random.key(config.seed) if key is None else key
    _checks.check_key("key", key)
    mesh = make_mesh() if mesh is None else mesh
    for name in ("labeled_batch", "unlabeled_batch"):
        if getattr(config, name) % mesh.size:
            raise ValueError(f"config.{name} ({getattr(config, name)}) must be divisible by "
                             f"the mesh's device count {mesh.size} (batches split over all)")
    _prepare_out_dir(out_dir, config)
    writer = jax.process_index() == 0

    steps = jit_steps(eqx.filter_eval_shape(init_state, config, key), mesh)
    if teacher is not None:
        teacher = place(teacher, state_shardings(teacher, mesh, fsdp=config.fsdp))
    batches = inputs.train()
    checkpoint_dir = os.path.join(out_dir, "checkpoints")
    checkpoints = Checkpointer(checkpoint_dir, keep=config.keep_checkpoints)
    state = _start(checkpoints, steps, config, key, batches, init)

    total = config.total_steps
    log = _Log(out_dir, total, int(state.step), writer)
    t_start, start_step = time.perf_counter(), int(state.step)
    t_log, step_log = t_start, start_step
    images_per_step = config.labeled_batch + config.unlabeled_batch
    record: dict[str, Any] = {}
    try:
        with _StopRequest() as stop:
            for step in range(start_step, total):
                batch = shard_batch(_step_batch(batches), mesh)
                state, metrics = steps.train(state, batch, teacher)
                done = step + 1
                last = done == total
                if done % config.log_every == 0 or last or stop.requested:
                    record = {k: float(v) for k, v in jax.device_get(metrics).items()}
                    _check_finite(record, done, checkpoints, checkpoint_dir)
                    now = time.perf_counter()
                    record.update(step=done, images_per_second=(done - step_log)
                                  * images_per_step / max(now - t_log, 1e-9))  # fmt: skip
                    t_log, step_log = now, done
                    log.write(record, done)
                if (inputs.test is not None and config.eval_every
                        and done % config.eval_every == 0 and not last):
                    scores = evaluate(steps, precise_bn(steps, state, inputs.bn()),
                                      inputs.test())  # fmt: skip
                    log.write(dict(step=done, **scores), done)
                if (config.checkpoint_every and done % config.checkpoint_every == 0) or stop.requested:
                    if done % config.log_every:
                        _check_finite({k: float(v) for k, v in jax.device_get(metrics).items()},
                                      done, checkpoints, checkpoint_dir)  # fmt: skip
                    _save(checkpoints, done, state, batches)
                if stop.requested:
                    checkpoints.wait()
                    raise KeyboardInterrupt(f"stopped at step {done}; checkpoint saved in "
                                            f"{checkpoint_dir}; rerun to resume")
        _save(checkpoints, total, state, batches)
        checkpoints.wait()
    finally:
        log.close()
        checkpoints.close()
        _close(batches)

    summary = dict(steps=int(state.step), train_seconds=time.perf_counter() - t_start,
                   final=record)  # fmt: skip
    state = precise_bn(steps, state, inputs.bn())
    if inputs.test is not None:
        summary.update(evaluate(steps, state, inputs.test()))
        log.write(dict(step=int(state.step), **{k: summary[k] for k in ("test_top1", "test_top5")}),
                  int(state.step))
    model, bn_state = _replicated(ema_model(state), mesh)  # every process: a collective
    if writer:
        export_teacher(os.path.join(out_dir, "teacher.eqx"), model, bn_state,
                       metadata=dict(train_config=json.loads(config.to_json()),
                                     **{k: v for k, v in summary.items() if k != "final"}))
        atomic_write_text(os.path.join(out_dir, "summary.json"), json.dumps(summary, indent=1) + "\n")
    return state, summary


def _close(batches: Any) -> None:
    """Stop an input iterator's threads or worker processes, if it has any."""
    close = getattr(batches, "close", None)
    if close is not None:
        close()


def _replicated(tree: Any, mesh) -> Any:
    """`tree` with every array whole on every device (FSDP-sharded weights gathered), so that
    process 0 can write them."""
    arrays, static = eqx.partition(tree, eqx.is_array)
    whole = NamedSharding(mesh, PartitionSpec())
    return eqx.combine(jax.jit(lambda a: a, out_shardings=whole)(arrays), static)


def _start(checkpoints: Checkpointer, steps, config: TrainConfig, key, batches,
           init: Teacher | None) -> TrainState:  # fmt: skip
    """The latest checkpoint's state and input position, or a fresh state (from `init`'s
    weights if given)."""
    if checkpoints.latest_step() is None:
        warm = {} if init is None else dict(model=init.model, bn_state=init.state)
        return steps.place(init_state(config, key, **warm))
    like = jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
                        eqx.filter_eval_shape(init_state, config, key), steps.shardings)
    state, data_state = checkpoints.restore(like)
    batches.set_state(data_state)
    return state


def _save(checkpoints: Checkpointer, step: int, state, batches) -> None:
    checkpoints.save(step, state, data_state=batches.get_state())


def _check_finite(record: dict[str, float], step: int, checkpoints: Checkpointer,
                  checkpoint_dir: str) -> None:  # fmt: skip
    bad = {k: v for k, v in record.items() if k in ("loss", "grad_norm") and not math.isfinite(v)}
    if bad:
        last = checkpoints.latest_step()
        raise NonFiniteLossError(
            f"{', '.join(f'{k} = {v}' for k, v in bad.items())} at step {step}: the run stopped. "
            f"The last good checkpoint is "
            f"{'none' if last is None else f'step {last} in {checkpoint_dir}'}; lower "
            f"the learning rate or check the data before resuming."
        )
