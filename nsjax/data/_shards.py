"""ArrayRecord shards: convert a source once, then read it with cheap random access.

`write_shards` turns any `Source` (an npz, an image folder, another shard folder) into a folder
of ArrayRecord files that grain reads in any order, from any worker, without listing millions
of files or decoding full-size photos; `ShardSource` is the `Source` that reads it back.

A shard folder holds:

- `shard-00000-of-00012.array_record`, ...: shard `k` holds the good records of the source
  indices `[k * records_per_shard, (k + 1) * records_per_shard)`, in order, one record per
  chunk (cheap random access);
- `manifest.json`, written last: the source's description, the options, the class names, the
  records per shard, every skipped record with its reason, the conversion counts;
- `.partial/` only while writing: the options being written, a small json per finished shard
  and the shard being written (renamed into place once complete). A rerun with the same source
  and options keeps the finished shards and writes the others.

One record (little-endian):

    u8   layout version (1)
    u8   encoding: 0 the source's encoded bytes, unchanged; 1 JPEG; 2 PNG; 3 raw uint8
    i32  label (-1 for unlabeled data)
    u32  n, then n bytes: the id (utf-8)
    raw:    u8 ndim, ndim x u32 shape, then the pixels (uint8, C order)
    others: the encoded image, to the end of the record

How an image is stored: encoded bytes (image files) are kept unchanged unless resized
(`short_side`: re-encoded as JPEG at `quality`) or in need of a conversion to RGB (CMYK,
16-bit, palette, alpha: done once here, then re-encoded as JPEG if the file was a JPEG, else as
lossless PNG); grey images stay grey (a third of the bytes; decoding promotes them). Arrays (npz
rows) are stored raw up to 64 x 64 pixels and as PNG (zlib level 1) above: on 200 crops of
natural photos PNG saved 30-40% of the bytes but decoded 60-140x slower than raw (150 us vs
2 us at 32 px, 2.4 ms vs 18 us at 224 px), which is only worth it for larger images. Records
are not compressed again: Brotli, ArrayRecord's default, saved nothing on JPEGs or raw pixels
and wrote 7x slower.
"""

from __future__ import annotations

import io
import json
import math
import os
import shutil
import struct
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from multiprocessing import get_context
from typing import Any, Callable

import grain
import numpy as np
from array_record.python.array_record_module import ArrayRecordWriter
from PIL import Image
from tqdm import tqdm

import nsjax
from nsjax import _checks
from nsjax._io import atomic_write_text
from nsjax.data._decode import _CONVERSION_NOTES, BadImage, decode_image, image_size
from nsjax.data._sources import Record, Source

__all__ = ["ShardSource", "write_shards"]

FORMAT, FORMAT_VERSION = "nsjax-shards", 1
LAYOUT_VERSION = 1
ORIGINAL, JPEG, PNG, RAW = 0, 1, 2, 3
ENCODINGS = ("original", "jpeg", "png", "raw")
RAW_MAX_PIXELS = 64 * 64
MANIFEST, PARTIAL = "manifest.json", ".partial"
_WRITER_OPTIONS = "group_size:1,uncompressed"
_HEADER = struct.Struct("<BBiI")
_GREY = _CONVERSION_NOTES["L"]  # the note of a grey image, which is stored grey


# --------------------------------------------------------------------------- records


def _pack_record(ident: str, label: int, encoding: int, image: bytes | np.ndarray) -> bytes:
    """One record in the layout of the module docstring (`image` an array for `RAW`)."""
    name = ident.encode("utf-8")
    head = _HEADER.pack(LAYOUT_VERSION, encoding, label, len(name)) + name
    if encoding == RAW:
        shape = struct.pack(f"<B{image.ndim}I", image.ndim, *image.shape)
        return head + shape + np.ascontiguousarray(image).tobytes()
    return head + image


def _unpack_record(blob: bytes) -> Record:
    """The `Record` packed in `blob`: `data` is the encoded bytes, or a read-only uint8 array
    for raw pixels."""
    version, encoding, label, length = _HEADER.unpack_from(blob)
    if version != LAYOUT_VERSION:
        raise ValueError(f"record layout version {version} is not supported (this nsjax reads "
                         f"version {LAYOUT_VERSION})")
    start = _HEADER.size + length
    ident = blob[_HEADER.size:start].decode("utf-8")
    if encoding != RAW:
        return Record(id=ident, data=blob[start:], label=label, error=None)
    ndim = blob[start]
    shape = struct.unpack_from(f"<{ndim}I", blob, start + 1)
    pixels = np.frombuffer(blob, np.uint8, offset=start + 1 + 4 * ndim).reshape(shape)
    return Record(id=ident, data=pixels, label=label, error=None)


def _resized_size(height: int, width: int, short_side: int | None) -> tuple[int, int] | None:
    """`(h, w)` with the short side `short_side` and the aspect kept, or None when the short
    side is already at most `short_side` (or no `short_side`)."""
    if short_side is None or min(height, width) <= short_side:
        return None
    if height <= width:
        return short_side, max(1, round(width * short_side / height))
    return max(1, round(height * short_side / width)), short_side


def _reduction(height: int, width: int, short_side: int) -> int:
    """The largest JPEG draft scale 1/r (r in 1, 2, 4, 8) that keeps the short side at least
    twice `short_side`, so the BICUBIC resize after it loses nothing visible (Pillow's
    `thumbnail` uses the same gap)."""
    reduce = 1
    while reduce < 8 and min(height, width) // (2 * reduce) >= 2 * short_side:
        reduce *= 2
    return reduce


def _resize(pixels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    return np.asarray(Image.fromarray(pixels).resize((size[1], size[0]), Image.BICUBIC))


def _encode(pixels: np.ndarray, encoding: int, quality: int) -> bytes:
    buffer = io.BytesIO()
    if encoding == JPEG:
        Image.fromarray(pixels).save(buffer, "JPEG", quality=quality)
    else:
        Image.fromarray(pixels).save(buffer, "PNG", compress_level=1)
    return buffer.getvalue()


def _store_encoded(data: bytes, short_side: int | None, quality: int
                   ) -> tuple[int, bytes, str | None]:  # fmt: skip
    """(encoding, stored bytes, conversion note) of an encoded image; raises BadImage."""
    height, width = image_size(data)
    size = _resized_size(height, width, short_side)
    reduce = 1 if size is None else _reduction(height, width, short_side)
    pixels, note = decode_image(data, reduce=reduce)  # also proves the file decodes to the end
    if note == _GREY:  # grey stays grey: a third of the pixels, promoted when read
        pixels, note = np.ascontiguousarray(pixels[..., 0]), None
    if size is not None:
        return JPEG, _encode(_resize(pixels, size), JPEG, quality), note
    if note is None:
        return ORIGINAL, data, None
    encoding = JPEG if data[:3] == b"\xff\xd8\xff" else PNG
    return encoding, _encode(pixels, encoding, quality), note


def _store_array(pixels: np.ndarray, short_side: int | None, quality: int
                 ) -> tuple[int, bytes | np.ndarray, None]:  # fmt: skip
    """(encoding, stored bytes or array, None) of a uint8 RGB or grey array (grey is stored
    `[H, W]`); raises BadImage for any other array."""
    decode_image(pixels)  # checks it is an image array
    if pixels.ndim == 3 and pixels.shape[2] == 1:
        pixels = pixels[..., 0]
    size = _resized_size(*pixels.shape[:2], short_side)
    if size is not None:
        pixels = _resize(pixels, size)
    if pixels.shape[0] * pixels.shape[1] <= RAW_MAX_PIXELS:
        return RAW, pixels, None
    return PNG, _encode(pixels, PNG, quality), None


# --------------------------------------------------------------------------- writing


@dataclass(frozen=True)
class _Plan:
    """Where each record goes: shard `k` holds source indices `range(*plan.bounds(k))`."""

    out_dir: str
    total: int
    records_per_shard: int
    short_side: int | None
    quality: int

    @property
    def num_shards(self) -> int:
        return math.ceil(self.total / self.records_per_shard)

    def bounds(self, k: int) -> tuple[int, int]:
        start = k * self.records_per_shard
        return start, min(start + self.records_per_shard, self.total)

    def file(self, k: int) -> str:
        return f"shard-{k:05d}-of-{self.num_shards:05d}.array_record"

    def sidecar(self, k: int) -> str:
        return os.path.join(self.out_dir, PARTIAL, self.file(k) + ".json")


def _write_record(writer, record: Record, plan: _Plan, summary: dict[str, Any]) -> None:
    """Store `record` (or list it in `summary["skipped"]`); count its encoding and note."""
    if record["error"] is not None:
        summary["skipped"].append({"id": record["id"], "reason": record["error"]})
        return
    data = record["data"]
    try:
        if isinstance(data, np.ndarray):
            encoding, image, note = _store_array(data, plan.short_side, plan.quality)
        else:
            encoding, image, note = _store_encoded(bytes(data), plan.short_side, plan.quality)
    except BadImage as e:
        summary["skipped"].append({"id": record["id"], "reason": e.reason})
        return
    writer.write(_pack_record(record["id"], int(record["label"]), encoding, image))
    summary["records"] += 1
    _count(summary["encodings"], ENCODINGS[encoding])
    if note is not None:
        _count(summary["converted"], note)


def _count(counts: dict[str, int], key: str, n: int = 1) -> None:
    counts[key] = counts.get(key, 0) + n


def _write_shard(source: Source, plan: _Plan, k: int,
                 tick: Callable[[], None] | None = None) -> dict[str, Any]:  # fmt: skip
    """Write shard `k` under a temporary name, rename it into place, then record its summary
    in its sidecar (whose presence marks the shard finished); returns the summary."""
    start, stop = plan.bounds(k)
    final = os.path.join(plan.out_dir, plan.file(k))
    temporary = os.path.join(plan.out_dir, PARTIAL, plan.file(k) + ".tmp")
    summary = dict(file=plan.file(k), source_range=[start, stop], records=0, bytes=0,
                   encodings={}, converted={}, skipped=[])
    writer = ArrayRecordWriter(temporary, _WRITER_OPTIONS)
    try:
        for index in range(start, stop):
            _write_record(writer, source[index], plan, summary)
            if tick is not None:
                tick()
        writer.close()
        os.replace(temporary, final)
    except BaseException:
        writer.close()
        if os.path.exists(temporary):
            os.remove(temporary)
        raise
    summary["bytes"] = os.path.getsize(final)
    atomic_write_text(plan.sidecar(k), json.dumps(summary))
    return summary


_worker_source: Source | None = None


def _init_worker(source: Source) -> None:
    """Runs once per worker process: the source travels once, not with every shard."""
    global _worker_source
    _worker_source = source


def _write_shard_in_worker(plan: _Plan, k: int) -> dict[str, Any]:
    return _write_shard(_worker_source, plan, k)


def _finished(plan: _Plan, k: int) -> dict[str, Any] | None:
    """The summary of shard `k` if an earlier run finished it (its sidecar exists and the shard
    file has the size recorded there), else None."""
    try:
        with open(plan.sidecar(k)) as f:
            summary = json.load(f)
        if os.path.getsize(os.path.join(plan.out_dir, plan.file(k))) == summary["bytes"]:
            return summary
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return None


def _write_all(source: Source, plan: _Plan, todo: list[int], workers: int, bar: tqdm
               ) -> dict[int, dict[str, Any]]:  # fmt: skip
    """Write the shards `todo`, in this process or in `workers` spawned processes."""
    if workers == 0 or len(todo) <= 1:
        return {k: _write_shard(source, plan, k, tick=lambda: bar.update(1)) for k in todo}
    summaries = {}
    with ProcessPoolExecutor(min(workers, len(todo)), mp_context=get_context("spawn"),
                             initializer=_init_worker, initargs=(source,)) as pool:
        futures = {pool.submit(_write_shard_in_worker, plan, k): k for k in todo}
        try:
            for future in as_completed(futures):
                k = futures[future]
                summaries[k] = future.result()
                bar.update(plan.bounds(k)[1] - plan.bounds(k)[0])
        except BaseException:
            for future in futures:
                future.cancel()
            raise
    return summaries


# --------------------------------------------------------------------------- the folder


def _config(source: Source, records_per_shard: int, short_side: int | None,
            quality: int) -> dict[str, Any]:  # fmt: skip
    """What makes two calls write the same shards (compared on resume)."""
    description = _checks.check_json_dict("source.describe()", source.describe())
    return dict(format=FORMAT, format_version=FORMAT_VERSION, source=description,
                options=dict(records_per_shard=records_per_shard, short_side=short_side,
                             quality=quality))


def _differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    keys = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            keys += [f"{key}.{k}" for k in _differences(a, b)]
        elif a != b:
            keys.append(key)
    return keys


def _claim(out_dir: str, config: dict[str, Any]) -> dict[str, Any] | None:
    """Prepare `out_dir` for `config`: the finished manifest if it is done, else None once
    `out_dir/.partial` records `config`; raises if it holds anything else."""
    manifest_path = os.path.join(out_dir, MANIFEST)
    config_path = os.path.join(out_dir, PARTIAL, "config.json")
    for path in (manifest_path, config_path):
        if os.path.exists(path):
            with open(path) as f:
                found = json.load(f)
            old = {key: found.get(key) for key in config}
            if old != config:
                raise ValueError(
                    f"out_dir {out_dir!r} already holds shards of another source or options "
                    f"(differing: {', '.join(_differences(old, config))}); write them to a new "
                    f"folder or delete this one")  # fmt: skip
            return found if path == manifest_path else None
    others = sorted(set(os.listdir(out_dir)) - {PARTIAL})
    if others:
        raise ValueError(f"out_dir {out_dir!r} must be empty or hold shards being written, "
                         f"got {others[:5]}{' ...' if len(others) > 5 else ''}")
    os.makedirs(os.path.join(out_dir, PARTIAL), exist_ok=True)
    atomic_write_text(config_path, json.dumps(config))
    return None


def _manifest(source: Source, config: dict[str, Any], summaries: list[dict[str, Any]]
              ) -> dict[str, Any]:  # fmt: skip
    classes = getattr(source, "classes", None)
    encodings: dict[str, int] = {}
    converted: dict[str, int] = {}
    for s in summaries:
        for key, n in s["encodings"].items():
            _count(encodings, key, n)
        for key, n in s["converted"].items():
            _count(converted, key, n)
    return dict(
        **config, nsjax_version=nsjax.__version__, labeled=bool(source.labeled),
        num_classes=source.num_classes, classes=None if classes is None else list(classes),
        records=sum(s["records"] for s in summaries), bytes=sum(s["bytes"] for s in summaries),
        shards=[{k: s[k] for k in ("file", "records", "bytes", "source_range")}
                for s in summaries],
        skipped=[item for s in summaries for item in s["skipped"]],
        converted=dict(sorted(converted.items())), encodings=dict(sorted(encodings.items())))


def _check_out_dir(out_dir) -> str:
    if not isinstance(out_dir, (str, os.PathLike)):
        raise TypeError(f"out_dir must be a str or os.PathLike, got {type(out_dir).__name__}")
    out_dir = os.fspath(out_dir)
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise ValueError(f"out_dir must be a folder (new or empty), got the file {out_dir!r}")
    return out_dir


def write_shards(source: Source, out_dir: str | os.PathLike, *, records_per_shard: int = 1024,
                 short_side: int | None = None, quality: int = 95, workers: int = 0,
                 progress: bool = False) -> dict[str, Any]:  # fmt: skip
    """Write the records of `source` into ArrayRecord shards under `out_dir`.

    Bad records (a source `error`, or data that does not decode) are skipped and listed in the
    manifest with their reason, never a crash; images that needed a conversion to RGB are
    stored converted and counted. Every record keeps its id and label. Writes are atomic and
    resumable: rerun the same call after an interruption and only the missing shards are
    written; a finished folder is returned as is. The manifest is the same whatever `workers`.

    **Arguments:**

    - `source`: a `Source` (`NpzSource`, `ImageFolderSource`, `ShardSource`, ...).
    - `out_dir`: the folder to write (created; must be new, empty, or this same conversion).
    - `records_per_shard`: source records per shard file (the last shard holds the rest).
    - `short_side`: resize images whose short side exceeds it to exactly this short side
      (BICUBIC, aspect kept; stored as JPEG); smaller images are kept as they are. None keeps
      every image's size.
    - `quality`: JPEG quality (1-100) of re-encoded images.
    - `workers`: write shards in this many spawned processes (0, or a single shard left to
      write: in this process). Each worker starts in a few seconds (it imports jax), so this
      pays from a few thousand images on; a script using it needs an
      `if __name__ == "__main__":` guard (spawned workers import the main module).
    - `progress`: show a tqdm progress bar.

    **Returns:**

    The manifest (also written to `out_dir/manifest.json`): `format`, `format_version`,
    `source` (`source.describe()`), `options` (`records_per_shard`, `short_side`, `quality`),
    `nsjax_version`, `labeled`, `num_classes`, `classes` (names, or None), `records` and `bytes`
    (totals), `shards` (`file`, `records`, `bytes`, `source_range` of each), `skipped`
    (`[{"id", "reason"}]`), `converted` (counts by `decode_image` note) and `encodings` (counts of
    "original", "jpeg", "png", "raw").
    """
    if not isinstance(source, Source):
        raise TypeError(f"source must be a Source (len, [i] -> Record, describe(), labeled, "
                        f"num_classes), got {type(source).__name__}")
    out_dir = _check_out_dir(out_dir)
    records_per_shard = _checks.check_positive_int("records_per_shard", records_per_shard)
    if short_side is not None:
        short_side = _checks.check_positive_int("short_side", short_side)
    quality = _checks.check_positive_int("quality", quality)
    if quality > 100:
        raise ValueError(f"quality must be in [1, 100], got {quality}")
    workers = _checks.check_positive_int("workers", workers, minimum=0)
    progress = _checks.check_bool("progress", progress)
    total = len(source)
    if total == 0:
        raise ValueError(f"source holds no records: {source.describe()}")

    config = _config(source, records_per_shard, short_side, quality)
    os.makedirs(out_dir, exist_ok=True)
    done = _claim(out_dir, config)
    if done is not None:
        return done
    plan = _Plan(out_dir, total, records_per_shard, short_side, quality)
    summaries = {k: s for k in range(plan.num_shards) if (s := _finished(plan, k)) is not None}
    todo = [k for k in range(plan.num_shards) if k not in summaries]
    with tqdm(total=total, disable=not progress, unit="img", desc=f"shards {out_dir}") as bar:
        bar.update(sum(plan.bounds(k)[1] - plan.bounds(k)[0] for k in summaries))
        summaries.update(_write_all(source, plan, todo, workers, bar))
    manifest = _manifest(source, config, [summaries[k] for k in range(plan.num_shards)])
    atomic_write_text(os.path.join(out_dir, MANIFEST), json.dumps(manifest, indent=1))
    shutil.rmtree(os.path.join(out_dir, PARTIAL))
    return manifest


# --------------------------------------------------------------------------- reading


def _read_manifest(path: str) -> dict[str, Any]:
    """The manifest of the shard folder `path`; raises naming `path` when there is none."""
    manifest_path = os.path.join(path, MANIFEST)
    if not os.path.isfile(manifest_path):
        partial = " (its shards are still being written)" if os.path.isdir(
            os.path.join(path, PARTIAL)) else ""
        raise FileNotFoundError(f"{path!r} is not a shard folder: no {MANIFEST}{partial}; write "
                                f"one with nsjax.data.write_shards or `nsjax convert`")
    with open(manifest_path) as f:
        manifest = json.load(f)
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ValueError(f"{manifest_path} is not an nsjax shard manifest")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{manifest_path} has format version {manifest.get('format_version')}; "
                         f"this nsjax reads version {FORMAT_VERSION}")
    return manifest


class ShardSource:
    """The records of a shard folder written by `write_shards`, as a `Source`.

    `record["data"]` is the stored image: encoded bytes, or a uint8 array for raw pixels, both
    what `nsjax.data` decodes. It pickles as its path (grain workers reopen the files).

    **Arguments:**

    - `path`: the shard folder (holding `manifest.json`).
    """

    def __init__(self, path: str | os.PathLike):
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
        self.path = os.fspath(path)
        self.manifest = _read_manifest(self.path)
        self.labeled: bool = self.manifest["labeled"]
        self.num_classes: int | None = self.manifest["num_classes"]
        classes = self.manifest["classes"]
        self.classes: tuple[str, ...] | None = None if classes is None else tuple(classes)
        self._files = [os.path.join(self.path, s["file"]) for s in self.manifest["shards"]
                       if s["records"] > 0]
        missing = [f for f in self._files if not os.path.isfile(f)]
        if missing:
            raise FileNotFoundError(f"{self.path}: shard files listed in {MANIFEST} are missing: "
                                    f"{missing[:3]}")
        self._reader = None

    def _data(self):
        if self._reader is None:
            reader = grain.sources.ArrayRecordDataSource(self._files)
            if len(reader) != self.manifest["records"]:
                raise ValueError(f"{self.path}: the shards hold {len(reader)} records, "
                                 f"{MANIFEST} lists {self.manifest['records']}")
            self._reader = reader
        return self._reader

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_reader": None}

    def __len__(self) -> int:
        return self.manifest["records"]

    def __getitem__(self, index: int) -> Record:
        size = len(self)
        if not -size <= index < size:
            raise IndexError(f"index {index} is out of range for {size} records")
        return _unpack_record(self._data()[index % size])

    def describe(self) -> dict[str, Any]:
        return dict(kind="shards", path=self.path, records=len(self), labeled=self.labeled,
                    num_classes=self.num_classes,
                    classes=None if self.classes is None else list(self.classes))
