"""The labelling job: a teacher over an unlabeled source, into a pseudo-label store.

The teacher runs in eval mode (BN running statistics, no noise) on clean centre crops at its own
resolution (`nsjax.data.eval_pipeline`), as the official `predict_label.py`. The source is cut
into contiguous shards (a `ShardSource`'s own shards, else `records_per_shard` records each);
process `p` of `P` labels shards `p, p + P, ...`, each into one store file written atomically
(`labels-00003-of-00012.npz`), so a rerun after a crash or a kill skips every finished shard and
a multi-host run needs no coordination. `job.json`, written first, says what the folder holds
(source, teacher fingerprint, crop, top-k, shards); a rerun with anything else is refused.
`read_labels` gathers the finished store.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from nsjax import _checks
from nsjax._io import atomic_write_text
from nsjax.data import EvalCrop, Source, Subset, eval_pipeline
from nsjax.pseudo._store import PseudoLabels, concatenate, from_logits, load, save
from nsjax.train import Teacher, TrainConfig, normalize

JOB = "job.json"
_FORMAT = "nsjax.pseudo.labels"
_DEFAULTS = TrainConfig()


def shard_ranges(source: Source, records_per_shard: int | None) -> list[tuple[int, int]]:
    """Contiguous `[start, stop)` ranges covering `source`: a `ShardSource`'s own shards when
    `records_per_shard` is None, else `records_per_shard` records each (10,000 by default)."""
    manifest = getattr(source, "manifest", None)
    if records_per_shard is None and manifest is not None:
        counts = [shard["records"] for shard in manifest["shards"] if shard["records"]]
    else:
        per = _checks.check_positive_int("records_per_shard", records_per_shard or 10_000)
        counts = [min(per, len(source) - start) for start in range(0, len(source), per)]
    stops = np.cumsum(counts).tolist()
    return [(stop - count, stop) for stop, count in zip(stops, counts)]


def fingerprint(teacher: Teacher) -> str:
    """sha256 of the teacher's weights and BN statistics (what makes a job the same job)."""
    buffer = io.BytesIO()
    eqx.tree_serialise_leaves(buffer, (teacher.model, teacher.state))
    return hashlib.sha256(buffer.getvalue()).hexdigest()


def _shard_file(k: int, total: int) -> str:
    return f"labels-{k:05d}-of-{total:05d}.npz"


def _job(teacher: Teacher, source: Source, ranges: list[tuple[int, int]], crop: EvalCrop,
         top_k: int, mean, std, compute_dtype: str) -> dict[str, Any]:  # fmt: skip
    return dict(format=_FORMAT, version=1, source=source.describe(),
                teacher=dict(fingerprint=fingerprint(teacher), num_classes=teacher.num_classes,
                             resolution=teacher.resolution),
                crop=dict(size=list(crop.size), crop_fraction=crop.crop_fraction,
                          resize=crop.resize),
                top_k=top_k, mean=list(mean), std=list(std), compute_dtype=compute_dtype,
                shards=[dict(file=_shard_file(k, len(ranges)), range=list(r))
                        for k, r in enumerate(ranges)])  # fmt: skip


def _start_job(out_dir: str, job: dict[str, Any]) -> None:
    """Write `job.json`, or check that the one there describes the same job."""
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, JOB)
    text = json.dumps(job, indent=1, sort_keys=True) + "\n"
    if os.path.exists(path):
        with open(path) as fh:
            there = json.load(fh)
        if there != json.loads(text):
            differ = sorted(k for k in set(there) | set(job) if there.get(k) != job.get(k))
            raise ValueError(f"out_dir {out_dir} holds another labelling job (it differs in "
                             f"{differ}); use a new out_dir or remove it")
        return
    atomic_write_text(path, text)


@eqx.filter_jit
def _logits(teacher: Teacher, images: jax.Array, mean: jax.Array, std: jax.Array,
            dtype: str) -> jax.Array:  # fmt: skip
    return teacher(normalize(images, mean, std, jnp.dtype(dtype)))


def label(teacher: Teacher, source: Source, out_dir: str | os.PathLike, *, top_k: int = 10,
          batch_size: int = 256, records_per_shard: int | None = None,
          crop_fraction: float = 0.875, resize: str = "pil", mean=_DEFAULTS.mean,
          std=_DEFAULTS.std, compute_dtype: str = "float32", threads: int = 8,
          process: tuple[int, int] | None = None,
          progress: bool = False) -> dict[str, Any]:  # fmt: skip
    """Label `source` with `teacher` into the store at `out_dir`; resumable.

    **Arguments:**

    - `teacher`: a `nsjax.train.Teacher` (e.g. `load_teacher(path)`; the EMA weights of its run).
    - `source`: any `nsjax.data` source (labels, if any, are ignored).
    - `out_dir`: the store's folder: `job.json` and one `labels-*.npz` per shard.
    - `top_k`: log-probabilities kept per image (see `nsjax.pseudo.PseudoLabels`).
    - `batch_size`: images per teacher call on this process (a multiple of its local devices).
    - `records_per_shard`: source records per store shard; None: a `ShardSource`'s own shards,
      else 10,000.
    - `crop_fraction`, `resize`: the centre crop (`nsjax.data.EvalCrop`) at the teacher's
      resolution.
    - `mean`, `std`, `compute_dtype`: the normalisation and compute dtype of the teacher's
      training config.
    - `threads`: decode threads.
    - `process`: `(index, count)` of this process among those sharing the job; jax's by default.
    - `progress`: show a progress bar.

    **Returns:** the job description (`job.json`), with `done`: the shards this call labelled,
    and `skipped`: `{id, reason}` of the records that could not be decoded (not in the store).
    """
    if not isinstance(teacher, Teacher):
        raise TypeError(f"teacher must be a nsjax.train.Teacher, got {type(teacher).__name__}")
    top_k = _checks.check_positive_int("top_k", top_k)
    if top_k > teacher.num_classes:
        raise ValueError(f"top_k must be <= the teacher's class count {teacher.num_classes}, "
                         f"got {top_k}")
    devices = jax.local_devices()
    _checks.check_positive_int("batch_size", batch_size)
    if batch_size % len(devices):
        raise ValueError(f"batch_size must be a multiple of this process's {len(devices)} "
                         f"devices, got {batch_size}")
    index, count = process if process is not None else (jax.process_index(), jax.process_count())
    crop = EvalCrop(teacher.resolution, crop_fraction=crop_fraction, resize=resize)
    ranges = shard_ranges(source, records_per_shard)
    out_dir = os.fspath(out_dir)
    job = _job(teacher, source, ranges, crop, top_k, mean, std, compute_dtype)
    _start_job(out_dir, job)

    # This process's devices only: processes label different shards, never in lockstep.
    mesh = jax.sharding.Mesh(np.array(devices), ("data",))
    images_sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    teacher = jax.tree.map(lambda x: jax.device_put(x, replicated) if eqx.is_array(x) else x,
                           teacher)
    mine = [k for k in range(len(ranges)) if k % count == index]
    todo = [k for k in mine if not os.path.exists(os.path.join(out_dir, job["shards"][k]["file"]))]
    bar = tqdm(total=sum(ranges[k][1] - ranges[k][0] for k in todo), unit="img",
               disable=not progress, desc="label")
    skipped: list[dict[str, str]] = []
    for k in todo:
        start, stop = ranges[k]
        parts = []
        shard_records = Subset(source, np.arange(start, stop))
        with eval_pipeline(shard_records, batch_size, crop, threads=threads,
                           shard=(0, 1)) as batches:  # fmt: skip
            for batch in batches:
                images = jax.device_put(batch["images"], images_sharding)
                logits = np.asarray(_logits(teacher, images, jnp.asarray(mean, jnp.float32),
                                            jnp.asarray(std, jnp.float32), compute_dtype))
                keep = batch["mask"]
                parts.append(from_logits(logits[keep], index=batch["index"][keep] + start,
                                         ids=batch["ids"][keep], top_k=top_k))
                bar.update(int((batch["index"] >= 0).sum()))
            skipped += [dict(id=s["id"], reason=s["reason"])
                        for s in batches.reports["eval"].skipped]
        save(os.path.join(out_dir, job["shards"][k]["file"]), concatenate(parts))
    bar.close()
    return dict(job, done=todo, skipped=skipped)


def read_labels(out_dir: str | os.PathLike) -> PseudoLabels:
    """The whole store of a finished job, shards in order (rows in source order, records that
    could not be decoded left out).

    **Raises:** `FileNotFoundError` naming the shards not written yet.
    """
    out_dir = os.fspath(out_dir)
    path = os.path.join(out_dir, JOB)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{out_dir} is not a pseudo-label store (no {JOB})")
    with open(path) as fh:
        job = json.load(fh)
    files = [os.path.join(out_dir, shard["file"]) for shard in job["shards"]]
    missing = [os.path.basename(f) for f in files if not os.path.exists(f)]
    if missing:
        raise FileNotFoundError(f"{out_dir}: the labelling job is not finished; missing "
                                f"{len(missing)} of {len(files)} shards, e.g. {missing[:3]}")
    return concatenate([load(f) for f in files])
