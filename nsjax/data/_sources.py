"""Random-access sources of image records: `.npz` arrays and image folders.

A source is what grain's `MapDataset.source` takes (`len(source)`, `source[i]`), returning one
record per index:

- `id`: a stable string (an npz row index or its `ids` entry, a path relative to the folder, a
  shard's stored id), so pseudo-labels can be joined back to images;
- `data`: encoded image bytes, or a decoded uint8 array `[H, W, 3]` / `[H, W]`;
- `label`: the class index, `-1` for unlabeled data;
- `error`: `None`, or why the record could not be read (the pipeline skips and reports it).

Sources check their input when built (an empty folder, a labeled npz without labels, labels
out of range, mismatched lengths, a class folder with no images) and raise naming the file.
They pickle as their paths: grain's worker processes reopen them, so nothing is copied per
worker or per epoch.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Sequence
from typing import Any, Protocol, TypedDict, runtime_checkable

import numpy as np

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")


class Record(TypedDict):
    id: str
    data: bytes | np.ndarray
    label: int
    error: str | None


@runtime_checkable
class Source(Protocol):
    """What the pipelines read: `len`, `source[i] -> Record`, and a description of itself."""

    labeled: bool
    num_classes: int | None

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> Record: ...

    def describe(self) -> dict[str, Any]: ...


def check_labels(name: str, labels: np.ndarray, num_classes: int | None) -> int:
    """`labels` are integers in [0, num_classes) (in [0, inf) when None); returns the number of
    classes (`num_classes`, else `max + 1`)."""
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{name} must hold integer class indices, got dtype {labels.dtype}")
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or (num_classes is not None and high >= num_classes):
        bound = "[0, inf)" if num_classes is None else f"[0, {num_classes})"
        raise ValueError(f"{name} must hold class indices in {bound}, got values in "
                         f"[{low}, {high}]")
    return high + 1 if num_classes is None else num_classes


# --------------------------------------------------------------------------- npz


def _npz_member(path: str, key: str) -> np.ndarray:
    """Array `key` of the npz at `path`: memory-mapped when stored uncompressed (what
    `np.savez` writes), else read once."""
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo(f"{key}.npy")
        if info.compress_type == zipfile.ZIP_STORED:
            with open(path, "rb") as fh:
                fh.seek(info.header_offset)
                local = fh.read(30)
                name_len = int.from_bytes(local[26:28], "little")
                extra_len = int.from_bytes(local[28:30], "little")
                fh.seek(info.header_offset + 30 + name_len + extra_len)
                version = np.lib.format.read_magic(fh)
                read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                               else np.lib.format.read_array_header_2_0)
                shape, fortran, dtype = read_header(fh)
                offset = fh.tell()
            if not fortran and not dtype.hasobject and np.prod(shape) > 0:
                return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape)
        with archive.open(info) as member:
            return np.lib.format.read_array(member, allow_pickle=False)


class NpzSource:
    """Images (and labels) of a NumPy `.npz`, one record per row.

    **Arguments:**

    - `path`: the `.npz` file: `images` uint8 `[N, H, W, 3]` or `[N, H, W]` (grey, promoted to
      3 channels when decoded), `labels` integer `[N]` (needed when `labeled`), optionally
      `ids` `[N]` (strings or integers; the row index otherwise).
    - `labeled`: whether records carry `labels`; an unlabeled source ignores them.
    - `num_classes`: labels must lie in `[0, num_classes)`; `max(labels) + 1` when None.

    Arrays stored uncompressed (`np.savez`) are memory-mapped; compressed ones
    (`np.savez_compressed`) are read once per process. Nothing is copied per epoch.
    """

    def __init__(self, path: str | os.PathLike, *, labeled: bool = True,
                 num_classes: int | None = None):  # fmt: skip
        self.path = os.fspath(path)
        self.labeled = bool(labeled)
        if not os.path.isfile(self.path):
            raise FileNotFoundError(f"path must be an existing .npz file, got {self.path!r}")
        try:
            with zipfile.ZipFile(self.path) as archive:
                keys = {n[:-4] for n in archive.namelist() if n.endswith(".npy")}
        except zipfile.BadZipFile as e:
            raise ValueError(f"{self.path}: not an .npz archive ({e})") from None
        if "images" not in keys:
            raise ValueError(f"{self.path} must hold an array 'images', got keys {sorted(keys)}")
        if self.labeled and "labels" not in keys:
            raise ValueError(f"{self.path} is read as labeled data but has no 'labels' array "
                             f"(keys {sorted(keys)}); pass labeled=False for unlabeled images")
        self._has_ids = "ids" in keys
        self._arrays: dict[str, np.ndarray] | None = None
        images = self._load()["images"]
        if images.dtype != np.uint8 or images.ndim not in (3, 4) or (
                images.ndim == 4 and images.shape[-1] != 3):
            raise ValueError(f"{self.path}: 'images' must be uint8 [N, H, W, 3] or [N, H, W], "
                             f"got {images.dtype} {images.shape}")
        if len(images) == 0:
            raise ValueError(f"{self.path}: 'images' holds no images")
        for key in ("labels", "ids") if self.labeled else ("ids",):
            if key in self._arrays and self._arrays[key].shape != (len(images),):
                raise ValueError(f"{self.path}: '{key}' must have shape [N] = ({len(images)},) "
                                 f"like 'images', got {self._arrays[key].shape}")
        self.num_classes = None
        if self.labeled:
            self.num_classes = check_labels(f"{self.path}: 'labels'", self._arrays["labels"],
                                            num_classes)

    def _load(self) -> dict[str, np.ndarray]:
        if self._arrays is None:
            keys = ["images"] + (["labels"] if self.labeled else []) + (
                ["ids"] if self._has_ids else [])
            self._arrays = {k: _npz_member(self.path, k) for k in keys}
        return self._arrays

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_arrays": None}  # workers reopen (memory-map) the file

    def __len__(self) -> int:
        return len(self._load()["images"])

    def __getitem__(self, index: int) -> Record:
        arrays = self._load()
        ident = str(arrays["ids"][index]) if self._has_ids else str(index)
        label = int(arrays["labels"][index]) if self.labeled else -1
        return Record(id=ident, data=np.asarray(arrays["images"][index]), label=label, error=None)

    def describe(self) -> dict[str, Any]:
        return dict(kind="npz", path=self.path, records=len(self), labeled=self.labeled,
                    num_classes=self.num_classes)


# --------------------------------------------------------------------------- image folders


def _image_files(root: str, extensions: tuple[str, ...]) -> list[str]:
    """Paths (relative to `root`, '/'-separated, sorted) of the files under `root` whose names
    end with one of `extensions` (lower case); hidden files are left out."""
    found = []
    for folder, dirs, files in os.walk(root, followlinks=True):
        dirs.sort()
        rel = os.path.relpath(folder, root)
        for name in files:
            if name.lower().endswith(extensions) and not name.startswith("."):
                found.append(name if rel == "." else f"{rel}/{name}".replace(os.sep, "/"))
    return sorted(found)


class ImageFolderSource:
    """Image files under a folder, one record per file, in sorted path order.

    Labeled data has one sub-folder per class (`root/<class>/**/<image>`); class `i` is the
    `i`-th name of `classes`, by default the sorted sub-folder names. Save `classes` with the
    run and pass them back so a later run maps names the same way. Unlabeled data is any tree
    of image files. The id of a record is its path relative to `root`.

    **Arguments:**

    - `root`: the folder.
    - `labeled`: whether the sub-folders are classes.
    - `classes`: the class names in index order (labeled only); every sub-folder must be one.
    - `extensions`: file name endings that count as images (case-insensitive).
    """

    def __init__(self, root: str | os.PathLike, *, labeled: bool = True,
                 classes: Sequence[str] | None = None,
                 extensions: Sequence[str] = IMAGE_EXTENSIONS):  # fmt: skip
        self.root = os.fspath(root)
        self.labeled = bool(labeled)
        if not os.path.isdir(self.root):
            raise FileNotFoundError(f"root must be an existing folder, got {self.root!r}")
        extensions = tuple(e.lower() for e in extensions)
        if not self.labeled:
            if classes is not None:
                raise ValueError("classes is for labeled folders; got classes with labeled=False")
            self.classes = None
            self.files = _image_files(self.root, extensions)
            self.labels = np.full(len(self.files), -1, np.int32)
            if not self.files:
                raise ValueError(f"{self.root} holds no image files (endings {extensions})")
        else:
            self.classes, self.files, self.labels = _class_folders(self.root, classes,
                                                                   extensions)
        self.num_classes = None if self.classes is None else len(self.classes)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> Record:
        rel = self.files[index]
        label = int(self.labels[index])
        try:
            with open(os.path.join(self.root, rel), "rb") as fh:
                return Record(id=rel, data=fh.read(), label=label, error=None)
        except OSError as e:
            return Record(id=rel, data=b"", label=label, error=f"unreadable: {e.strerror or e}")

    def describe(self) -> dict[str, Any]:
        return dict(kind="folder", path=self.root, records=len(self), labeled=self.labeled,
                    classes=None if self.classes is None else list(self.classes))


def _class_folders(root: str, classes: Sequence[str] | None, extensions: tuple[str, ...]
                   ) -> tuple[tuple[str, ...], list[str], np.ndarray]:  # fmt: skip
    folders = sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))
    if not folders:
        raise ValueError(f"{root} holds no class sub-folders (labeled data needs "
                         f"root/<class>/<image>); pass labeled=False for a tree of unlabeled images")
    if classes is None:
        classes = tuple(folders)
    else:
        classes = tuple(str(c) for c in classes)
        if len(set(classes)) != len(classes):
            raise ValueError(f"classes must be distinct names, got {list(classes)}")
        unknown = sorted(set(folders) - set(classes))
        if unknown:
            raise ValueError(f"{root} has class folders {unknown} missing from classes "
                             f"{list(classes)}")
    files, labels = [], []
    for folder in folders:
        found = _image_files(os.path.join(root, folder), extensions)
        if not found:
            raise ValueError(f"class folder {os.path.join(root, folder)} holds no image files "
                             f"(endings {extensions})")
        files += [f"{folder}/{f}" for f in found]
        labels += [classes.index(folder)] * len(found)
    return classes, files, np.asarray(labels, np.int32)


class Subset:
    """Some records of a source, as a source: `subset[i]` is `source[indices[i]]`. Repeats are
    allowed (the balanced selection duplicates the records of short classes).

    **Arguments:**

    - `source`: any `Source`.
    - `indices`: int `[M]`, each in `[0, len(source))`.
    """

    def __init__(self, source: Source, indices: Any):
        if not isinstance(source, Source):
            raise TypeError(f"source must be a Source, got {type(source).__name__}")
        indices = np.asarray(indices)
        if indices.ndim != 1 or not np.issubdtype(indices.dtype, np.integer):
            raise ValueError(f"indices must be int [M], got {indices.dtype} {indices.shape}")
        if indices.size and (indices.min() < 0 or indices.max() >= len(source)):
            raise ValueError(f"indices must lie in [0, {len(source)}), got values in "
                             f"[{indices.min()}, {indices.max()}]")
        self.source, self.indices = source, indices.astype(np.int64)
        self.labeled, self.num_classes = source.labeled, source.num_classes

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> Record:
        return self.source[int(self.indices[index])]

    def describe(self) -> dict[str, Any]:
        return dict(self.source.describe(), subset=len(self.indices))
