"""Grain pipelines from a source to fixed-shape uint8 batches: training, evaluation and the
student's labeled + unlabeled stream.

Each process reads its `1/P` of the records (`source[index::P]`, before shuffling), decodes and
crops them in grain (threads, or worker processes with `workers > 0`) and batches them in the
main process. Batching after the workers is what makes the batches the same whatever the worker
count (grain's workers each take every `workers`-th element; the merged order is fixed) and
lets a bad record be skipped without changing the batch shape: the batcher just takes the next
good one. Every random choice of record `k` of the stream (its crop box, its flip) comes from a
generator seeded by `(seed, k)`, so it is the same in any worker.

The iterator's state (`get_state()`, a small JSON dict: grain's positions plus the report) is
what the engine checkpoints; after `set_state` the next batch is the one an uninterrupted run
would have produced.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import grain
import jax
import numpy as np

from nsjax import _checks
from nsjax.data._crops import EvalCrop, TrainCrop
from nsjax.data._decode import BadImage
from nsjax.data._report import DataReport
from nsjax.data._sources import Source

_STUDENT_KEYS = dict(images="unlabeled_images", targets="unlabeled_targets",
                     teacher_images="teacher_images")  # fmt: skip


# --------------------------------------------------------------------------- arguments


def _check_source(name: str, source: Any, *, labeled: bool | None = None) -> Source:
    if not isinstance(source, Source):
        raise TypeError(f"{name} must be a source (NpzSource, ImageFolderSource, ShardSource or "
                        f"any object with len, [i] -> record and describe()), got "
                        f"{type(source).__name__}")
    if labeled is not None and source.labeled != labeled:
        raise ValueError(f"{name} must be a {'labeled' if labeled else 'unlabeled'} source, got "
                         f"{source.describe()}")
    return source


def _shard(shard: tuple[int, int] | None) -> tuple[int, int]:
    """(index, count) of this process: jax's process index and count unless given."""
    if shard is None:
        return jax.process_index(), jax.process_count()
    if (not isinstance(shard, tuple) or len(shard) != 2
            or not all(isinstance(v, int) for v in shard) or not 0 <= shard[0] < shard[1]):
        raise ValueError(f"shard must be (index, count) ints with 0 <= index < count, got {shard!r}")
    return shard


def _local_batch(batch_size: int, count: int) -> int:
    _checks.check_positive_int("batch_size", batch_size)
    if batch_size % count:
        raise ValueError(f"batch_size must be a multiple of the process count {count}, got "
                         f"{batch_size}")
    return batch_size // count


def _check_targets(targets: Any, source: Source) -> None:
    if targets is None:
        return
    shape = _checks.shape_of(targets)
    if not shape or shape[0] != len(source):
        raise ValueError(f"targets must have one row per record of the source, shape "
                         f"[{len(source)}, ...], got {shape}")


def _read_options(threads: int, workers: int) -> tuple[grain.ReadOptions, int]:
    _checks.check_positive_int("threads", threads, minimum=0)
    _checks.check_positive_int("workers", workers, minimum=0)
    return grain.ReadOptions(num_threads=threads, prefetch_buffer_size=max(64, 4 * threads)), workers


def _in_workers(ds: grain.MapDataset, read: grain.ReadOptions, workers: int) -> grain.IterDataset:
    it = ds.to_iter_dataset(read)
    if workers == 0:
        return it
    from absl import flags  # grain 0.2.18 reads an absl flag in its workers (grain issue #1355)

    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()
    return it.mp_prefetch(grain.MultiprocessingOptions(num_workers=workers))


# --------------------------------------------------------------------------- elements


class _TrainElement:
    """(position `k` in the endless stream, source index) -> one cropped record.

    `epoch = k // records` of this process. Randomness: `np.random.default_rng([seed, k])`.
    """

    def __init__(self, source: Source, crop: TrainCrop, seed: int, records: int,
                 teacher_crop: EvalCrop | None):  # fmt: skip
        self.source, self.crop, self.seed, self.records = source, crop, seed, records
        self.teacher_crop = teacher_crop

    def __call__(self, k: int, index: int) -> dict[str, Any]:
        record = self.source[int(index)]
        element = dict(index=int(index), epoch=k // self.records, id=record["id"],
                       label=record["label"], error=record["error"], note=None, image=None)
        if record["error"] is None:
            try:
                element["image"], element["note"] = self.crop(
                    record["data"], np.random.default_rng([self.seed, k]))
                if self.teacher_crop is not None:
                    element["teacher_image"], _ = self.teacher_crop(record["data"])
            except BadImage as e:
                element["image"], element["error"] = None, e.reason
        return element


class _EvalElement:
    """Source index -> one centre-cropped record (deterministic)."""

    def __init__(self, source: Source, crop: EvalCrop):
        self.source, self.crop = source, crop

    def __call__(self, index: int) -> dict[str, Any]:
        record = self.source[int(index)]
        element = dict(index=int(index), epoch=0, id=record["id"], label=record["label"],
                       error=record["error"], note=None, image=None)
        if record["error"] is None:
            try:
                element["image"], element["note"] = self.crop(record["data"])
            except BadImage as e:
                element["error"] = e.reason
        return element


# --------------------------------------------------------------------------- batching


class _Batched(grain.IterDataset):
    """Elements -> batches of `batch` records, in the main process.

    Training (`pad_to=None`): a record that failed is reported and skipped, the next good one
    takes its place. Evaluation (`pad_to=n`): a failed record keeps its place as a zero image
    with `mask` False, and the stream is padded (zeros, `mask` False, `index` -1) to exactly `n`
    batches, so every process runs the same number of steps.
    """

    def __init__(self, parent: grain.IterDataset, batch: int, report: str, *, labeled: bool,
                 pad_to: int | None, image_shape: tuple[int, int, int],
                 targets: Any = None):  # fmt: skip
        super().__init__(parent)
        self.batch, self.report, self.labeled, self.pad_to = batch, report, labeled, pad_to
        self.image_shape, self.targets = image_shape, targets

    def __iter__(self) -> _BatchedIterator:
        return _BatchedIterator(self._parent.__iter__(), self)


class _BatchedIterator(grain.DatasetIterator):
    def __init__(self, parent: grain.DatasetIterator, spec: _Batched):
        super().__init__(parent)
        self.spec = spec
        self.report = DataReport(spec.report)
        self.batches = 0  # batches yielded (evaluation pads up to spec.pad_to)

    def __next__(self) -> dict[str, np.ndarray]:
        spec = self.spec
        if spec.pad_to is not None and self.batches >= spec.pad_to:
            raise StopIteration
        rows: list[dict[str, Any]] = []
        while len(rows) < spec.batch:
            try:
                element = next(self._parent)
            except StopIteration:
                if spec.pad_to is None:
                    raise
                break
            self.report.start_epoch(element["epoch"])
            if element["note"] is not None:
                self.report.convert(element["id"], element["note"], element["epoch"])
            if element["error"] is not None:
                self.report.skip(element["id"], element["error"], element["epoch"])
                if spec.pad_to is None:
                    continue
            rows.append(element)
        self.batches += 1
        return self._stack(rows)

    def _stack(self, rows: list[dict[str, Any]]) -> dict[str, np.ndarray]:
        spec, n = self.spec, len(rows)
        images = np.zeros((spec.batch, *spec.image_shape), np.uint8)
        for i, row in enumerate(rows):
            if row["image"] is not None:
                images[i] = row["image"]
        index = np.full(spec.batch, -1, np.int64)
        index[:n] = [row["index"] for row in rows]
        batch = dict(images=images, index=index)
        if spec.labeled:
            batch["labels"] = np.zeros(spec.batch, np.int32)
            batch["labels"][:n] = [row["label"] for row in rows]
        if rows and "teacher_image" in rows[0]:
            batch["teacher_images"] = np.stack([row["teacher_image"] for row in rows])
        if spec.targets is not None:
            batch["targets"] = np.asarray(spec.targets[np.maximum(index, 0)])
        if spec.pad_to is not None:
            batch["mask"] = np.zeros(spec.batch, bool)
            batch["mask"][:n] = [row["error"] is None for row in rows]
        return batch

    def get_state(self) -> dict[str, Any]:
        return dict(elements=self._parent.get_state(), batches=self.batches,
                    report=self.report.to_json())

    def set_state(self, state: dict[str, Any]) -> None:
        self._parent.set_state(state["elements"])
        self.batches = int(state["batches"])
        self.report = DataReport.from_json(state["report"])


class _Student(grain.IterDataset):
    """A labeled and an unlabeled stream -> the engine's batch: `images`, `labels`,
    `unlabeled_images`, and `unlabeled_targets` or `teacher_images`."""

    def __init__(self, labeled: grain.IterDataset, unlabeled: grain.IterDataset):
        super().__init__([labeled, unlabeled])

    def __iter__(self) -> _StudentIterator:
        return _StudentIterator(*(p.__iter__() for p in self._parents))


class _StudentIterator(grain.DatasetIterator):
    def __init__(self, labeled: grain.DatasetIterator, unlabeled: grain.DatasetIterator):
        super().__init__([labeled, unlabeled])
        self.labeled, self.unlabeled = labeled, unlabeled

    def __next__(self) -> dict[str, np.ndarray]:
        batch = {k: v for k, v in next(self.labeled).items() if k in ("images", "labels")}
        for name, value in next(self.unlabeled).items():
            if name in _STUDENT_KEYS:
                batch[_STUDENT_KEYS[name]] = value
        return batch

    def get_state(self) -> dict[str, Any]:
        return dict(labeled=self.labeled.get_state(), unlabeled=self.unlabeled.get_state())

    def set_state(self, state: dict[str, Any]) -> None:
        self.labeled.set_state(state["labeled"])
        self.unlabeled.set_state(state["unlabeled"])


# --------------------------------------------------------------------------- the iterator users get


class Batches(Iterator[dict[str, Any]]):
    """Batches of a pipeline, with a resumable state and the report of what was skipped.

    - `next(batches)`: a dict of NumPy arrays (or global `jax.Array`s when built with a `mesh`).
    - `get_state()` / `set_state(state)`: a small JSON-able dict; restoring it makes the next
      batch the one an uninterrupted run would have produced.
    - `reports`: `{stream name: DataReport}` as of the last batch returned.
    - `close()`: stops worker processes and threads (also on `with batches: ...` exit).
    """

    def __init__(self, dataset: grain.IterDataset):
        self._it = iter(dataset)

    def __next__(self) -> dict[str, Any]:
        return next(self._it)

    def get_state(self) -> dict[str, Any]:
        return self._it.get_state()

    def set_state(self, state: dict[str, Any]) -> None:
        self._it.set_state(state)

    @property
    def reports(self) -> dict[str, DataReport]:
        found: dict[str, DataReport] = {}

        def walk(state: Any) -> None:
            if isinstance(state, Mapping):
                if "report" in state and isinstance(state["report"], Mapping):
                    report = DataReport.from_json(state["report"])
                    found[report.name] = report
                for value in state.values():
                    walk(value)

        walk(self.get_state())
        return found

    def close(self) -> None:
        close = getattr(self._it, "close", None)
        if close is not None:
            close()

    def __enter__(self) -> Batches:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _finish(ds: grain.IterDataset, mesh: jax.sharding.Mesh | None, prefetch: int) -> Batches:
    """Optionally place each batch on `mesh` as global arrays, `prefetch` batches ahead."""
    if mesh is not None:
        from nsjax.train._mesh import shard_batch

        ds = ds.map(lambda batch: shard_batch(batch, mesh))
    if prefetch:
        ds = grain.experimental.ThreadPrefetchIterDataset(ds, prefetch_buffer_size=prefetch)
    return Batches(ds)


def _train_stream(source: Source, batch: int, crop: TrainCrop, *, seed: int, name: str,
                  shard: tuple[int, int], read: grain.ReadOptions, workers: int, targets: Any,
                  teacher_crop: EvalCrop | None) -> grain.IterDataset:  # fmt: skip
    index, count = shard
    rows = grain.MapDataset.range(len(source))[index::count]
    if len(rows) < batch:
        raise ValueError(f"{name}: each of the {count} processes must read at least one batch "
                         f"({batch} records), but {source.describe()} gives {len(rows)}")
    ds = rows.shuffle(seed=seed).repeat().map_with_index(
        _TrainElement(source, crop, seed, len(rows), teacher_crop))
    return _Batched(_in_workers(ds, read, workers), batch, name, labeled=source.labeled,
                    pad_to=None, image_shape=(*crop.size, 3), targets=targets)


def _train_crop(crop: Any) -> TrainCrop:
    if isinstance(crop, int) and not isinstance(crop, bool):
        return TrainCrop(crop)
    if not isinstance(crop, TrainCrop):
        raise TypeError(f"crop must be an int (output side) or a TrainCrop, got {crop!r}")
    return crop


def _eval_crop(name: str, crop: Any) -> EvalCrop:
    if isinstance(crop, int) and not isinstance(crop, bool):
        return EvalCrop(crop)
    if not isinstance(crop, EvalCrop):
        raise TypeError(f"{name} must be an int (output side) or an EvalCrop, got {crop!r}")
    return crop


# --------------------------------------------------------------------------- public pipelines


def train_pipeline(source: Source, batch_size: int, crop: int | TrainCrop, *, seed: int,
                   targets: Any = None, workers: int = 0, threads: int = 8,
                   shard: tuple[int, int] | None = None, mesh: jax.sharding.Mesh | None = None,
                   prefetch: int = 2) -> Batches:  # fmt: skip
    """Endless training batches: shuffled every epoch, decoded, Inception-cropped and flipped.

    **Arguments:**

    - `source`: an `NpzSource`, `ImageFolderSource`, `ShardSource` or any `Source`.
    - `batch_size`: the global batch size, a multiple of the process count; each process
      yields `batch_size / P` records per batch.
    - `crop`: the output side (a default `TrainCrop(crop)`), or a `TrainCrop`.
    - `seed`: shuffling and cropping seed; the same seed gives the same batches.
    - `targets`: optional array with one row per source record (e.g. a teacher's
      pseudo-labels), gathered into `batch["targets"]`.
    - `workers`: decode in this many worker processes (0: in threads of this process).
    - `threads`: decode threads per process (Pillow, simplejpeg and OpenCV release the GIL).
    - `shard`: `(index, count)` of this process; jax's process index and count by default.
    - `mesh`: place every batch on it as global arrays (`jax.make_array_from_process_local_data`).
    - `prefetch`: batches made ahead in a background thread (0: none).

    **Returns:** `Batches` of dicts: `images` uint8 `[b, h, w, 3]`, `index` int64 `[b]` (the
    source index of each row), `labels` int32 `[b]` (labeled sources), `targets` (with
    `targets`); `b = batch_size / P`. A record that cannot be read or decoded is skipped and
    reported (`batches.reports["train"]`), never a crash or a short batch.
    """
    source = _check_source("source", source)
    _checks.check_positive_int("seed", seed, minimum=0)
    _check_targets(targets, source)
    index, count = _shard(shard)
    local = _local_batch(batch_size, count)
    _checks.check_positive_int("prefetch", prefetch, minimum=0)
    read, workers = _read_options(threads, workers)
    stream = _train_stream(source, local, _train_crop(crop), seed=seed, name="train",
                           shard=(index, count), read=read, workers=workers, targets=targets,
                           teacher_crop=None)
    return _finish(stream, mesh, prefetch)


def eval_pipeline(source: Source, batch_size: int, crop: int | EvalCrop, *, workers: int = 0,
                  threads: int = 8, shard: tuple[int, int] | None = None,
                  mesh: jax.sharding.Mesh | None = None, prefetch: int = 2) -> Batches:  # fmt: skip
    """One pass over `source` in order, centre-cropped: evaluation and teacher inference.

    **Arguments:**

    - `source`: any `Source`.
    - `batch_size`: the global batch size, a multiple of the process count.
    - `crop`: the output side (a default `EvalCrop(crop)`, crop fraction 0.875), or an
      `EvalCrop`.
    - `workers`, `threads`, `shard`, `mesh`, `prefetch`: as in `train_pipeline`.

    **Returns:** `Batches` of dicts: `images` uint8 `[b, h, w, 3]`, `index` int64 `[b]`,
    `mask` bool `[b]`, `labels` int32 `[b]` (labeled sources). Each process yields the same
    number of batches, `ceil(ceil(N / P) / b)`; the last are padded (`mask` False, `index` -1).
    A record that cannot be decoded keeps its row with `mask` False and is reported
    (`batches.reports["eval"]`): no image is dropped or counted twice.
    """
    source = _check_source("source", source)
    index, count = _shard(shard)
    local = _local_batch(batch_size, count)
    _checks.check_positive_int("prefetch", prefetch, minimum=0)
    crop = _eval_crop("crop", crop)
    read, workers = _read_options(threads, workers)
    rows = grain.MapDataset.range(len(source))[index::count]
    per_process = -(-len(source) // count)
    ds = _in_workers(rows.map(_EvalElement(source, crop)), read, workers)
    batched = _Batched(ds, local, "eval", labeled=source.labeled, pad_to=-(-per_process // local),
                       image_shape=(*crop.size, 3))
    return _finish(batched, mesh, prefetch)


def student_pipeline(labeled: Source, unlabeled: Source, *, labeled_batch: int,
                     unlabeled_ratio: int, crop: int | TrainCrop, seed: int,
                     targets: Any = None, teacher_crop: int | EvalCrop | None = None,
                     workers: int = 0, threads: int = 8, shard: tuple[int, int] | None = None,
                     mesh: jax.sharding.Mesh | None = None, prefetch: int = 2) -> Batches:  # fmt: skip
    """The Noisy Student step's input: `labeled_batch` labeled and `unlabeled_ratio` times as
    many unlabeled images per step, two streams each shuffled and epoch-cycled independently
    (as the official code did).

    **Arguments:**

    - `labeled`, `unlabeled`: a labeled and an unlabeled `Source`.
    - `labeled_batch`: global labeled images per step (a multiple of the process count).
    - `unlabeled_ratio`: unlabeled images per labeled image (the paper's 3, or any `>= 1`).
    - `crop`: the student's training crop (side or `TrainCrop`), for both streams.
    - `seed`: the labeled stream uses `seed`, the unlabeled one `seed + 1`.
    - `targets`: offline pseudo-labels, one row per unlabeled record
      (`batch["unlabeled_targets"]`), or
    - `teacher_crop`: the clean view an online teacher reads (`batch["teacher_images"]`, an
      `EvalCrop` or side); one of `targets` and `teacher_crop` is needed.
    - `workers`, `threads`, `shard`, `mesh`, `prefetch`: as in `train_pipeline`.

    **Returns:** `Batches` of the engine's batch dicts (`nsjax.train.train_step`): `images`
    uint8 `[b, h, w, 3]`, `labels` int32 `[b]`, `unlabeled_images` uint8 `[r b, h, w, 3]`, and
    `unlabeled_targets` `[r b, ...]` or `teacher_images` uint8 `[r b, h_t, w_t, 3]`; its state
    holds both streams' positions and `reports` has "labeled" and "unlabeled".
    """
    labeled = _check_source("labeled", labeled, labeled=True)
    unlabeled = _check_source("unlabeled", unlabeled)
    _checks.check_positive_int("unlabeled_ratio", unlabeled_ratio)
    _checks.check_positive_int("seed", seed, minimum=0)
    if (targets is None) == (teacher_crop is None):
        raise ValueError("give exactly one of targets (offline pseudo-labels, one row per "
                         "unlabeled record) and teacher_crop (the online teacher's view), got "
                         f"{'both' if targets is not None else 'neither'}")
    _check_targets(targets, unlabeled)
    index, count = _shard(shard)
    local = _local_batch(labeled_batch, count)
    _checks.check_positive_int("prefetch", prefetch, minimum=0)
    crop = _train_crop(crop)
    read, workers = _read_options(threads, workers)
    common = dict(shard=(index, count), read=read, workers=workers)
    lab = _train_stream(labeled, local, crop, seed=seed, name="labeled", targets=None,
                        teacher_crop=None, **common)
    unl = _train_stream(unlabeled, local * unlabeled_ratio, crop, seed=seed + 1,
                        name="unlabeled", targets=targets,
                        teacher_crop=None if teacher_crop is None
                        else _eval_crop("teacher_crop", teacher_crop), **common)
    return _finish(_Student(lab, unl), mesh, prefetch)
