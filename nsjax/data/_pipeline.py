"""Grain pipelines from a source to fixed-shape uint8 batches: training, evaluation and the
student's labeled + unlabeled stream.

Each process reads its `1/P` of the records (`source[index::P]`, before shuffling), decodes and
crops them in grain, `_CHUNK` consecutive records of the stream per grain element (threads, or
worker processes with `workers > 0`; one hand-off and one vectorised box draw per chunk), and
batches them in the main process. Batching after the workers is what makes the batches the same
whatever the worker count (grain's workers each take every `workers`-th element; the merged
order is fixed) and lets a bad record be skipped without changing the batch shape: the batcher
just takes the next good one. Every random choice of record `k` of the stream (its crop box,
its flip) comes from a generator seeded by `(seed, k)`, so it is the same in any worker.

The iterator's state (`get_state()`, a small JSON dict: grain's positions plus the report) is
what the engine checkpoints; after `set_state` the next batch is the one an uninterrupted run
would have produced.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import grain
import jax
import numpy as np

from nsjax import _checks, noise
from nsjax.data._crops import EvalCrop, TrainCrop, _attempt
from nsjax.data._decode import BadImage
from nsjax.data._report import DataReport
from nsjax.data._sources import Record, Source

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


def _local_batch(batch_size: int, count: int, name: str = "batch_size") -> int:
    _checks.check_positive_int(name, batch_size)
    if batch_size % count:
        raise ValueError(f"{name} must be a multiple of the process count {count}, got "
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
    # the buffer counts chunks of _CHUNK records: enough to keep every thread busy
    return grain.ReadOptions(num_threads=threads, prefetch_buffer_size=max(2, 2 * threads)), workers


def _in_workers(ds: grain.MapDataset, read: grain.ReadOptions, workers: int) -> grain.IterDataset:
    it = ds.to_iter_dataset(read)
    if workers == 0:
        return it
    from absl import flags  # grain 0.2.18 reads an absl flag in its workers (grain issue #1355)

    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()
    return it.mp_prefetch(grain.MultiprocessingOptions(num_workers=workers))


# --------------------------------------------------------------------------- chunks

_CHUNK = 32  # records decoded per grain element: one hand-off per chunk, not per image


def _empty_chunk(count: int, shape: tuple[int, int, int]) -> dict[str, Any]:
    return dict(images=np.zeros((count, *shape), np.uint8), labels=np.zeros(count, np.int32),
                index=np.zeros(count, np.int64), epoch=np.zeros(count, np.int64),
                ids=[""] * count, errors=[None] * count, notes=[None] * count)


def _fill(chunk: dict[str, Any], row: int, record: Record, result: Any) -> bool:
    """Row `row` of `chunk` from `record` and its crop `result` (`(image, note)`, a
    `BadImage`, or None when the record was unreadable); True when the row has an image."""
    chunk["ids"][row], chunk["labels"][row] = record["id"], record["label"]
    if record["error"] is not None or isinstance(result, BadImage):
        chunk["errors"][row] = record["error"] or result.reason
        return False
    chunk["images"][row], chunk["notes"][row] = result
    return True


class _TrainChunk:
    """(chunk number `j`, source indices `[c]`) -> `c` cropped records, stacked.

    Record `k = j * _CHUNK + i` of the endless stream draws from
    `np.random.default_rng([seed, k])`; its epoch is `k // records` (records of this process).
    """

    def __init__(self, source: Source, crop: TrainCrop, seed: int, records: int,
                 teacher_crop: EvalCrop | None):  # fmt: skip
        self.source, self.crop, self.seed, self.records = source, crop, seed, records
        self.teacher_crop = teacher_crop

    def __call__(self, j: int, indices: np.ndarray) -> dict[str, Any]:
        records = [self.source[int(index)] for index in indices]
        positions = j * _CHUNK + np.arange(len(indices))
        readable = [row for row, record in enumerate(records) if record["error"] is None]
        crops = self.crop.crop_many(
            [records[row]["data"] for row in readable],
            [np.random.default_rng([self.seed, int(positions[row])]) for row in readable])
        results = dict(zip(readable, crops))
        chunk = _empty_chunk(len(indices), (*self.crop.size, 3))
        chunk["index"][:], chunk["epoch"][:] = indices, positions // self.records
        if self.teacher_crop is not None:
            chunk["teacher_images"] = np.zeros((len(indices), *self.teacher_crop.size, 3), np.uint8)
        for row, record in enumerate(records):
            if _fill(chunk, row, record, results.get(row)) and self.teacher_crop is not None:
                try:
                    chunk["teacher_images"][row], _ = self.teacher_crop(record["data"])
                except BadImage as e:
                    chunk["errors"][row] = e.reason
        return chunk


class _EvalChunk:
    """Source indices `[c]` -> `c` centre-cropped records (deterministic)."""

    def __init__(self, source: Source, crop: EvalCrop):
        self.source, self.crop = source, crop

    def __call__(self, indices: np.ndarray) -> dict[str, Any]:
        chunk = _empty_chunk(len(indices), (*self.crop.size, 3))
        chunk["index"][:] = indices
        for row, index in enumerate(indices):
            record = self.source[int(index)]
            result = None if record["error"] else _attempt(self.crop, record["data"])
            _fill(chunk, row, record, result)
        return chunk


# --------------------------------------------------------------------------- batching

_ROW_KEYS = ("images", "labels", "index", "teacher_images")


class _Batched(grain.IterDataset):
    """Chunks of records -> batches of `batch` records, in the main process, in stream order.

    Training (`pad_to=None`): a record that failed is reported and skipped, the next good one
    takes its place; a whole epoch (`records`) of failures in a row raises. Evaluation (`pad_to=n`): a failed record keeps its place as a zero image
    with `mask` False, and the stream is padded (zeros, `mask` False, `index` -1) to exactly `n`
    batches, so every process runs the same number of steps.
    """

    def __init__(self, parent: grain.IterDataset, batch: int, report: str, *, labeled: bool,
                 records: int, pad_to: int | None, image_shape: tuple[int, int, int],
                 targets: Any = None,
                 randaugment: tuple[int, float, int] | None = None):  # fmt: skip
        super().__init__(parent)
        self.batch, self.report, self.labeled, self.pad_to = batch, report, labeled, pad_to
        self.records, self.image_shape, self.targets = records, image_shape, targets
        self.randaugment = randaugment

    def __iter__(self) -> _BatchedIterator:
        return _BatchedIterator(self._parent.__iter__(), self)


class _BatchedIterator(grain.DatasetIterator):
    """State: grain's position before the chunk being read, the rows of it already used, the
    batches yielded and the report. Restoring re-reads that chunk and skips the used rows."""

    def __init__(self, parent: grain.DatasetIterator, spec: _Batched):
        super().__init__(parent)
        self.spec = spec
        self.report = DataReport(spec.report)
        self.batches = 0
        self._chunk: dict[str, Any] | None = None
        self._used = 0  # rows of _chunk consumed
        self._before_chunk: Any = None  # parent state before _chunk was read
        self._bad_in_a_row = 0  # a whole epoch of them: nothing can be read, stop

    def _next_chunk(self) -> bool:
        before = self._parent.get_state()
        try:
            self._chunk = next(self._parent)
        except StopIteration:
            self._chunk = None
            return False
        self._before_chunk, self._used = before, 0
        return True

    def __next__(self) -> dict[str, np.ndarray]:
        spec = self.spec
        if spec.pad_to is not None and self.batches >= spec.pad_to:
            raise StopIteration
        parts: list[tuple[dict[str, Any], list[int]]] = []
        wanted = spec.batch
        while wanted:
            if self._chunk is None or self._used == len(self._chunk["index"]):
                if not self._next_chunk():
                    if spec.pad_to is None:
                        raise StopIteration
                    break
            rows = self._take(wanted)
            parts.append((self._chunk, rows))
            wanted -= len(rows)
        batch = self._assemble(parts)
        self.batches += 1
        return batch

    def _take(self, wanted: int) -> list[int]:
        """Up to `wanted` usable rows of the current chunk, reporting what each row says."""
        chunk, rows = self._chunk, []
        while self._used < len(chunk["index"]) and len(rows) < wanted:
            row, self._used = self._used, self._used + 1
            epoch, ident = int(chunk["epoch"][row]), chunk["ids"][row]
            self.report.start_epoch(epoch)
            if chunk["notes"][row] is not None:
                self.report.convert(ident, chunk["notes"][row], epoch)
            if chunk["errors"][row] is not None:
                self.report.skip(ident, chunk["errors"][row], epoch)
                if self.spec.pad_to is None:
                    self._bad_in_a_row += 1
                    if self._bad_in_a_row >= self.spec.records:
                        raise ValueError(
                            f"{self.spec.report}: none of this process's {self.spec.records} "
                            f"records can be read; first skipped: {self.report.skipped[:3]}")
                    continue
            self._bad_in_a_row = 0
            rows.append(row)
        return rows

    def _assemble(self, parts: list[tuple[dict[str, Any], list[int]]]) -> dict[str, np.ndarray]:
        spec = self.spec
        missing = spec.batch - sum(len(rows) for _, rows in parts)
        if missing:  # the end of an evaluation pass: padding rows, masked out
            padding = _empty_chunk(missing, spec.image_shape)
            padding["index"][:], padding["errors"] = -1, ["padding"] * missing
            parts = parts + [(padding, list(range(missing)))]
        keys = [k for k in _ROW_KEYS if k in parts[0][0]]
        chunk, rows = parts[0]
        if len(parts) == 1 and len(chunk["index"]) == spec.batch:
            batch = {k: chunk[k] for k in keys}  # one whole chunk: no copy
        else:
            batch = {k: np.concatenate([c[k][r] for c, r in parts]) for k in keys}
        if not spec.labeled:
            del batch["labels"]
        if spec.targets is not None:
            batch["targets"] = np.asarray(spec.targets[np.maximum(batch["index"], 0)])
        if spec.pad_to is not None:
            batch["mask"] = np.array([c["errors"][i] is None for c, r in parts for i in r])
            batch["ids"] = np.array([c["ids"][i] for c, r in parts for i in r])
        if spec.randaugment is not None:
            batch["images"] = _host_randaugment(batch["images"], *spec.randaugment, self.batches)
        return batch

    def get_state(self) -> dict[str, Any]:
        partial = self._chunk is not None and self._used < len(self._chunk["index"])
        return dict(elements=self._before_chunk if partial else self._parent.get_state(),
                    used=self._used if partial else 0, batches=self.batches,
                    report=self.report.to_json())

    def set_state(self, state: dict[str, Any]) -> None:
        self._parent.set_state(state["elements"])
        self._chunk, self._used = None, 0
        if state["used"]:
            self._next_chunk()
            self._used = int(state["used"])
        self.batches = int(state["batches"])
        self.report = DataReport.from_json(state["report"])


@functools.cache
def _randaugment_on_cpu(layers: int, magnitude: float) -> Callable[..., jax.Array]:
    return jax.jit(functools.partial(noise.randaugment, num_layers=layers, magnitude=magnitude))


def _host_randaugment(images: np.ndarray, layers: int, magnitude: float, seed: int,
                      batch_number: int) -> np.ndarray:
    """`nsjax.noise.randaugment` on this host's CPU, keyed by `fold_in(key(seed), batch)`."""
    cpu = jax.devices("cpu")[0]
    key = jax.random.fold_in(jax.random.key(seed), batch_number)
    augment = _randaugment_on_cpu(layers, magnitude)
    return np.asarray(augment(jax.device_put(key, cpu), jax.device_put(images, cpu)))


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

        def place(batch: dict[str, np.ndarray]) -> dict[str, Any]:
            arrays = shard_batch({k: v for k, v in batch.items() if k != "ids"}, mesh)
            return {**arrays, **({"ids": batch["ids"]} if "ids" in batch else {})}

        ds = ds.map(place)
    if prefetch:
        ds = grain.experimental.ThreadPrefetchIterDataset(ds, prefetch_buffer_size=prefetch)
    return Batches(ds)


def _train_stream(source: Source, batch: int, crop: TrainCrop, *, seed: int, name: str,
                  shard: tuple[int, int], read: grain.ReadOptions, workers: int, targets: Any,
                  teacher_crop: EvalCrop | None,
                  randaugment: tuple[int, float] | None) -> grain.IterDataset:  # fmt: skip
    index, count = shard
    rows = grain.MapDataset.range(len(source))[index::count]
    if len(rows) < batch:
        raise ValueError(f"{name}: each of the {count} processes must read at least one batch "
                         f"({batch} records), but {source.describe()} gives {len(rows)}")
    chunks = rows.shuffle(seed=seed).repeat().batch(_CHUNK).map_with_index(
        _TrainChunk(source, crop, seed, len(rows), teacher_crop))
    return _Batched(_in_workers(chunks, read, workers), batch, name, labeled=source.labeled,
                    records=len(rows), pad_to=None, image_shape=(*crop.size, 3), targets=targets,
                    randaugment=None if randaugment is None else (*randaugment, seed))


def _check_randaugment(randaugment: Any) -> tuple[int, float] | None:
    if randaugment is None:
        return None
    if not isinstance(randaugment, tuple) or len(randaugment) != 2:
        raise TypeError(f"randaugment must be None or (layers, magnitude), e.g. (2, 27.0), got "
                        f"{randaugment!r}")
    return (_checks.check_positive_int("randaugment[0] (layers)", randaugment[0]),
            _checks.check_number("randaugment[1] (magnitude)", randaugment[1], minimum=0.0))


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
                   targets: Any = None, randaugment: tuple[int, float] | None = None,
                   workers: int = 0, threads: int = 8,
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
    - `randaugment`: `(layers, magnitude)` to apply `nsjax.noise.randaugment` to every batch
      here, on this host's CPU (key `fold_in(key(seed), batch number)`), instead of in the
      train step (then set the config's `randaugment_magnitude=None`); None (default): the
      step does it.
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
                           teacher_crop=None, randaugment=_check_randaugment(randaugment))
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
    `ids` str `[b]` (the records' ids, "" for padding; kept on the host with a `mesh`),
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
    chunks = _in_workers(rows.batch(_CHUNK).map(_EvalChunk(source, crop)), read, workers)
    batched = _Batched(chunks, local, "eval", labeled=source.labeled, records=len(rows),
                       pad_to=-(-per_process // local), image_shape=(*crop.size, 3))
    return _finish(batched, mesh, prefetch)


def student_pipeline(labeled: Source, unlabeled: Source, *, labeled_batch: int,
                     unlabeled_ratio: float, crop: int | TrainCrop, seed: int,
                     targets: Any = None, teacher_crop: int | EvalCrop | None = None,
                     randaugment: tuple[int, float] | None = None, workers: int = 0,
                     threads: int = 8, shard: tuple[int, int] | None = None,
                     mesh: jax.sharding.Mesh | None = None, prefetch: int = 2) -> Batches:  # fmt: skip
    """The Noisy Student step's input: `labeled_batch` labeled and `unlabeled_ratio` times as
    many unlabeled images per step, two streams each shuffled and epoch-cycled independently
    (as the official code did).

    **Arguments:**

    - `labeled`, `unlabeled`: a labeled and an unlabeled `Source`.
    - `labeled_batch`: global labeled images per step (a multiple of the process count).
    - `unlabeled_ratio`: unlabeled images per labeled image (the paper's 3, or any `> 0`):
      `round(unlabeled_ratio * labeled_batch)` per step, as `TrainConfig.unlabeled_batch`, a
      multiple of the process count.
    - `crop`: the student's training crop (side or `TrainCrop`), for both streams.
    - `seed`: the labeled stream uses `seed`, the unlabeled one `seed + 1`.
    - `targets`: offline pseudo-labels, one row per unlabeled record
      (`batch["unlabeled_targets"]`), or
    - `teacher_crop`: the clean view an online teacher reads (`batch["teacher_images"]`, an
      `EvalCrop` or side); one of `targets` and `teacher_crop` is needed.
    - `randaugment`, `workers`, `threads`, `shard`, `mesh`, `prefetch`: as in
      `train_pipeline` (RandAugment, when here, noises both streams, not the teacher's view).

    **Returns:** `Batches` of the engine's batch dicts (`nsjax.train.train_step`): `images`
    uint8 `[b, h, w, 3]`, `labels` int32 `[b]`, `unlabeled_images` uint8 `[r b, h, w, 3]`, and
    `unlabeled_targets` `[r b, ...]` or `teacher_images` uint8 `[r b, h_t, w_t, 3]`; its state
    holds both streams' positions and `reports` has "labeled" and "unlabeled".
    """
    labeled = _check_source("labeled", labeled, labeled=True)
    unlabeled = _check_source("unlabeled", unlabeled)
    ratio = _checks.check_number("unlabeled_ratio", unlabeled_ratio, minimum=0.0, min_open=True)
    _checks.check_positive_int("seed", seed, minimum=0)
    if (targets is None) == (teacher_crop is None):
        raise ValueError("give exactly one of targets (offline pseudo-labels, one row per "
                         "unlabeled record) and teacher_crop (the online teacher's view), got "
                         f"{'both' if targets is not None else 'neither'}")
    _check_targets(targets, unlabeled)
    index, count = _shard(shard)
    local = _local_batch(labeled_batch, count, name="labeled_batch")
    _checks.check_positive_int("prefetch", prefetch, minimum=0)
    crop = _train_crop(crop)
    read, workers = _read_options(threads, workers)
    common = dict(shard=(index, count), read=read, workers=workers,
                  randaugment=_check_randaugment(randaugment))
    lab = _train_stream(labeled, local, crop, seed=seed, name="labeled", targets=None,
                        teacher_crop=None, **common)
    unl = _train_stream(unlabeled, _local_batch(round(ratio * labeled_batch), count,
                                                name="unlabeled batch"), crop, seed=seed + 1,
                        name="unlabeled", targets=targets,
                        teacher_crop=None if teacher_crop is None
                        else _eval_crop("teacher_crop", teacher_crop), **common)
    return _finish(_Student(lab, unl), mesh, prefetch)


def fit_inputs(config: Any, labeled: Source, unlabeled: Source | None = None,
               test: Source | None = None, *, targets: Any = None,
               teacher_resolution: int | None = None, crop: TrainCrop | None = None,
               test_resolution: int | None = None, workers: int = 0, threads: int = 8,
               shard: tuple[int, int] | None = None) -> Any:  # fmt: skip
    """`nsjax.train.fit`'s inputs from sources: `fit(config, inputs=fit_inputs(...), ...)`.

    **Arguments:**

    - `config`: the run's `nsjax.train.TrainConfig` (batch sizes, ratio, seed, resolution).
    - `labeled`: a labeled source.
    - `unlabeled`: with `config.unlabeled_ratio > 0`, the unlabeled source (e.g. a `Subset` of
      the balanced rows), and either `targets` (one row per record: offline pseudo-labels) or
      `teacher_resolution` (online: the teacher's clean view at that side).
    - `test`: a labeled source evaluated at `test_resolution` (default: the model's test
      resolution), centre-cropped (crop fraction 0.875; with `config.small_image` the whole
      image, as the official 32-px evaluation).
    - `crop`: the training crop; default `TrainCrop(config.image_size)` (Inception crop and
      flip), or with `config.small_image` the official 32-px path `TrainCrop(config.image_size,
      crop="pad", flip=False)` (reflect-pad 4 pixels, a random window, no flip: SVHN's).
    - `workers`, `threads`, `shard`: as in `train_pipeline`.

    **Returns:** an `nsjax.train.Inputs`: `train` (`train_pipeline` or `student_pipeline`,
    seed `config.seed`), `bn` (labeled crops, seed `config.seed + 2`) and `test`
    (`eval_pipeline`).
    """
    from nsjax.train import Inputs

    labeled = _check_source("labeled", labeled, labeled=True)
    if crop is None:
        crop = (TrainCrop(config.image_size, crop="pad", flip=False) if config.small_image
                else TrainCrop(config.image_size))
    crop = _train_crop(crop)
    common = dict(workers=workers, threads=threads, shard=shard)
    if config.unlabeled_batch == 0:
        if unlabeled is not None:
            raise ValueError("unlabeled was given but config.unlabeled_ratio is 0")

        def train() -> Batches:
            return train_pipeline(labeled, config.labeled_batch, crop, seed=config.seed, **common)
    else:
        if unlabeled is None:
            raise ValueError(f"unlabeled must be given: config.unlabeled_ratio = "
                             f"{config.unlabeled_ratio}")
        student_pipeline(labeled, unlabeled, labeled_batch=config.labeled_batch,
                         unlabeled_ratio=config.unlabeled_ratio, crop=crop, seed=config.seed,
                         targets=targets, teacher_crop=teacher_resolution, prefetch=0,
                         **common).close()  # every argument checked now, before any work

        def train() -> Batches:
            return student_pipeline(labeled, unlabeled, labeled_batch=config.labeled_batch,
                                    unlabeled_ratio=config.unlabeled_ratio, crop=crop,
                                    seed=config.seed, targets=targets,
                                    teacher_crop=teacher_resolution, **common)  # fmt: skip
    resolution = test_resolution or config.model_config().test_resolution
    # the 32-px variant scores the whole image, as the official SVHN eval (no centre crop)
    test_crop = EvalCrop(resolution, crop_fraction=1.0 if config.small_image else 0.875)
    return Inputs(
        train=train,
        bn=lambda: train_pipeline(labeled, config.labeled_batch, crop, seed=config.seed + 2,
                                  **common),
        test=None if test is None else lambda: eval_pipeline(
            _check_source("test", test, labeled=True), config.labeled_batch, test_crop,
            **common),
        labeled_size=len(labeled))
