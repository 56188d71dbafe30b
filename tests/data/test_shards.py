"""write_shards / ShardSource: round trips (npz arrays, image files kept byte-identical),
resizing, bad and converted files, resume after an interruption, worker-count independence,
argument checks."""

import io
import json
import os
import pickle

import grain
import numpy as np
import pytest
from PIL import Image

from nsjax.data._decode import decode_image
from nsjax.data._shards import (
    RAW,
    ShardSource,
    _pack_record,
    _reduction,
    _unpack_record,
    write_shards,
)
from nsjax.data._sources import ImageFolderSource, NpzSource, Record


def _pixels(seed: int, height: int, width: int) -> np.ndarray:
    """A smooth colour image with some noise (JPEG-friendly, unlike white noise)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = rng.uniform(0, 255, 3) + np.stack([x, y, x + y], -1) * rng.uniform(0.2, 1.0, 3)
    return np.clip(base + rng.normal(0, 8, (height, width, 3)), 0, 255).astype(np.uint8)


def _encoded(pixels: np.ndarray, fmt: str = "JPEG", mode: str | None = None) -> bytes:
    image = Image.fromarray(pixels)
    image = image if mode is None else image.convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return buffer.getvalue()


def _write(path, data: bytes) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def _folder(root, sizes: dict[str, list[tuple[int, int]]]) -> str:
    """A labeled folder: class -> JPEG sizes (h, w)."""
    for c, (name, shapes) in enumerate(sizes.items()):
        for i, (h, w) in enumerate(shapes):
            _write(os.path.join(root, name, f"{i:02d}.jpg"), _encoded(_pixels(10 * c + i, h, w)))
    return str(root)


def _records(source) -> list[Record]:
    return [source[i] for i in range(len(source))]


class _Wrapped:
    """A Source that delegates to `inner`, replacing some records or failing at one index."""

    def __init__(self, inner, replace=None, fail_at=None):
        self.inner, self.replace, self.fail_at = inner, replace or {}, fail_at
        self.labeled, self.num_classes = inner.labeled, inner.num_classes

    def __len__(self):
        return len(self.inner)

    def __getitem__(self, i):
        if i == self.fail_at:
            raise RuntimeError("disk went away")
        return self.replace.get(i, self.inner[i])

    def describe(self):
        return self.inner.describe()


# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("shape", [(32, 32, 3), (32, 32), (70, 66, 3)],
                         ids=["rgb-raw", "grey-raw", "rgb-png"])
def test_npz_round_trip(tmp_path, shape):
    images = np.stack([_pixels(i, *shape[:2])[..., 0] if len(shape) == 2 else
                       _pixels(i, *shape[:2]) for i in range(7)])  # fmt: skip
    labels = np.array([3, 0, 1, 2, 3, 1, 0])
    ids = np.array([f"img-{i}" for i in range(7)])
    np.savez(tmp_path / "d.npz", images=images, labels=labels, ids=ids)
    source = NpzSource(tmp_path / "d.npz")
    manifest = write_shards(source, tmp_path / "shards", records_per_shard=3)
    shards = ShardSource(tmp_path / "shards")

    assert [s["records"] for s in manifest["shards"]] == [3, 3, 1]
    assert manifest["encodings"] == ({"png": 7} if shape[0] > 64 else {"raw": 7})
    assert (len(shards), shards.labeled, shards.num_classes, shards.classes) == (7, True, 4, None)
    for got, want in zip(_records(shards), _records(source)):
        assert (got["id"], got["label"], got["error"]) == (want["id"], want["label"], None)
        np.testing.assert_array_equal(decode_image(got["data"])[0], decode_image(want["data"])[0])
        if shape[0] <= 64:
            np.testing.assert_array_equal(got["data"], want["data"])  # raw: the array itself
    # grain reads it, a pickled copy reopens the files, indices behave as in a list
    np.testing.assert_array_equal(decode_image(grain.MapDataset.source(shards)[6]["data"])[0],
                                  decode_image(pickle.loads(pickle.dumps(shards))[-1]["data"])[0])
    with pytest.raises(IndexError, match="index 7 is out of range for 7 records"):
        shards[7]


def test_folder_keeps_bytes_classes_and_ids(tmp_path):
    root = _folder(tmp_path / "src", {"cat": [(30, 40), (36, 28)], "dog": [(40, 30)],
                                      "emu": [(20, 24)]})
    png = _encoded(_pixels(99, 18, 22), "PNG")
    _write(tmp_path / "src" / "dog" / "sub" / "x.png", png)
    source = ImageFolderSource(root, classes=["emu", "dog", "cat"])
    manifest = write_shards(source, tmp_path / "shards", records_per_shard=2)
    shards = ShardSource(tmp_path / "shards")

    assert manifest["classes"] == ["emu", "dog", "cat"] == list(shards.classes)
    assert manifest["num_classes"] == shards.num_classes == 3
    assert manifest["encodings"] == {"original": 5} and manifest["skipped"] == []
    assert [(r["id"], r["label"], r["data"]) for r in _records(shards)] == [
        (r["id"], r["label"], r["data"]) for r in _records(source)]
    assert shards[3]["id"] == "dog/sub/x.png" and shards[3]["data"] == png
    assert shards.describe()["records"] == 5 and manifest["source"] == source.describe()


def test_unlabeled_folder_labels_minus_one(tmp_path):
    _folder(tmp_path / "src", {"a": [(20, 20)], "b/c": [(21, 19), (19, 21)]})
    write_shards(ImageFolderSource(tmp_path / "src", labeled=False), tmp_path / "shards")
    shards = ShardSource(tmp_path / "shards")
    assert (shards.labeled, shards.num_classes, shards.classes) == (False, None, None)
    assert [(r["id"], r["label"]) for r in _records(shards)] == [
        ("a/00.jpg", -1), ("b/c/00.jpg", -1), ("b/c/01.jpg", -1)]


def test_short_side_resizes_only_larger_images(tmp_path):
    sizes = [(120, 80), (50, 61), (260, 300), (60, 90)]  # short sides 80, 50, 260, 60
    root = _folder(tmp_path / "src", {"a": sizes})
    grey = _encoded(_pixels(7, 90, 150), mode="L")
    _write(tmp_path / "src" / "a" / "grey.jpg", grey)
    source = ImageFolderSource(root)
    manifest = write_shards(source, tmp_path / "shards", short_side=60, quality=90)
    shards = ShardSource(tmp_path / "shards")

    shapes = [decode_image(r["data"])[0].shape[:2] for r in _records(shards)]
    assert shapes == [(90, 60), (50, 61), (60, 69), (60, 90), (60, 100)]
    assert [r["data"] == s["data"] for r, s in zip(_records(shards), _records(source))] == [
        False, True, False, True, False]  # kept: short side <= 60
    assert manifest["encodings"] == {"jpeg": 3, "original": 2} and manifest["converted"] == {}
    assert Image.open(io.BytesIO(shards[2]["data"])).mode == "RGB"
    assert Image.open(io.BytesIO(shards[4]["data"])).mode == "L"  # grey stays grey
    # resized, not cropped: the picture matches a plain BICUBIC resize of the original
    want = np.asarray(Image.fromarray(decode_image(source[0]["data"])[0]).resize((60, 90),
                                                                                Image.BICUBIC))
    got = decode_image(shards[0]["data"])[0]
    assert np.abs(got.astype(int) - want).mean() < 3


def test_bad_files_are_skipped_and_conversions_counted(tmp_path):
    root = _folder(tmp_path / "src", {"a": [(20, 24), (22, 20)]})
    good = _encoded(_pixels(1, 30, 30))
    _write(f"{root}/a/truncated.jpg", good[: len(good) // 2])
    _write(f"{root}/a/text.jpg", b"<html>404 not found</html>")
    _write(f"{root}/a/cmyk.jpg", _encoded(_pixels(2, 26, 22), mode="CMYK"))
    deep = Image.fromarray((_pixels(3, 12, 14)[..., 0].astype(np.uint16) * 257))
    buffer = io.BytesIO()
    deep.save(buffer, "PNG")
    _write(f"{root}/a/deep.png", buffer.getvalue())
    folder = ImageFolderSource(root)  # 00, 01, cmyk, deep, text, truncated
    source = _Wrapped(folder, replace={1: Record(id="a/01.jpg", data=b"", label=0,
                                                 error="unreadable: Permission denied")})
    manifest = write_shards(source, tmp_path / "shards", records_per_shard=4)
    shards = ShardSource(tmp_path / "shards")

    assert [s["id"] for s in manifest["skipped"]] == ["a/01.jpg", "a/text.jpg", "a/truncated.jpg"]
    reasons = [s["reason"] for s in manifest["skipped"]]
    assert reasons[0] == "unreadable: Permission denied"
    assert "not an image" in reasons[1] and "truncated" in reasons[2]
    assert manifest["converted"] == {"CMYK converted to RGB": 1,
                                     "16-bit scaled to 8-bit; grey promoted to RGB": 1}
    assert [r["id"] for r in _records(shards)] == ["a/00.jpg", "a/cmyk.jpg", "a/deep.png"]
    assert manifest["records"] == 3 and [s["records"] for s in manifest["shards"]] == [3, 0]
    for got, want in zip(_records(shards)[1:], [folder[2], folder[3]]):
        pixels, note = decode_image(got["data"])
        assert note is None  # stored as RGB, read without conversion
        diff = np.abs(pixels.astype(int) - decode_image(want["data"])[0]).mean()
        assert diff < 8 if got["id"].endswith(".jpg") else diff == 0  # PNG: lossless


# --------------------------------------------------------------------------- resume


def _tree(path) -> dict[str, tuple[int, int]]:
    return {n: (os.stat(os.path.join(path, n)).st_ino, os.stat(os.path.join(path, n)).st_mtime_ns)
            for n in os.listdir(path)}


def test_resume_writes_only_the_missing_shards(tmp_path):
    np.savez(tmp_path / "d.npz", images=np.stack([_pixels(i, 8, 8) for i in range(9)]),
             labels=np.arange(9) % 3)
    source = NpzSource(tmp_path / "d.npz")
    clean = write_shards(source, tmp_path / "clean", records_per_shard=2)
    out, partial = tmp_path / "out", tmp_path / "out" / ".partial"
    names = [f"shard-0000{k}-of-00005.array_record" for k in range(5)]

    with pytest.raises(RuntimeError, match="disk went away"):
        write_shards(_Wrapped(source, fail_at=6), out, records_per_shard=2)  # in shard 3
    assert sorted(f for f in os.listdir(out) if f.endswith(".array_record")) == names[:3]
    with pytest.raises(FileNotFoundError, match="still being written"):
        ShardSource(out)
    with open(out / names[0], "r+b") as f:  # damaged after it was written
        f.truncate(1000)
    os.remove(partial / f"{names[2]}.json")  # killed between the rename and the sidecar
    _write(partial / f"{names[3]}.tmp", b"half a shard")  # killed while writing
    before = _tree(out)

    resumed = write_shards(source, out, records_per_shard=2)
    after = _tree(out)
    assert after[names[1]] == before[names[1]]
    assert after[names[0]] != before[names[0]] and after[names[2]] != before[names[2]]
    assert sorted(after) == sorted(os.listdir(tmp_path / "clean")) == ["manifest.json", *names]
    assert resumed == clean
    for got, want in zip(_records(ShardSource(out)), _records(ShardSource(tmp_path / "clean"))):
        assert got["id"] == want["id"] and np.array_equal(got["data"], want["data"])


def test_finished_folder_is_returned_and_another_source_refused(tmp_path):
    np.savez(tmp_path / "d.npz", images=np.zeros((3, 4, 4, 3), np.uint8), labels=np.zeros(3, int))
    source = NpzSource(tmp_path / "d.npz")
    first = write_shards(source, tmp_path / "out")
    before = _tree(tmp_path / "out")
    assert sorted(before) == ["manifest.json", "shard-00000-of-00001.array_record"]
    assert write_shards(source, tmp_path / "out") == first
    assert _tree(tmp_path / "out") == before

    with pytest.raises(ValueError, match=r"out_dir '.*out' already holds .*options.short_side"):
        write_shards(source, tmp_path / "out", short_side=2)
    with pytest.raises(ValueError, match="out_dir .* already holds .*source.labeled"):
        write_shards(NpzSource(tmp_path / "d.npz", labeled=False), tmp_path / "out")
    _write(tmp_path / "other" / "notes.txt", b"mine")
    with pytest.raises(ValueError, match=r"out_dir '.*other' must be empty .*notes.txt"):
        write_shards(source, tmp_path / "other")


def test_manifest_does_not_depend_on_workers(tmp_path):
    root = _folder(tmp_path / "src", {"a": [(20, 24)] * 3, "b": [(30, 20)] * 3})
    _write(f"{root}/b/bad.jpg", b"not a jpeg")
    _write(f"{root}/b/cmyk.jpg", _encoded(_pixels(2, 26, 22), mode="CMYK"))
    source = ImageFolderSource(root)
    serial = write_shards(source, tmp_path / "w0", records_per_shard=2, short_side=21)
    parallel = write_shards(source, tmp_path / "w2", records_per_shard=2, short_side=21,
                            workers=2)
    assert parallel == serial
    assert len(serial["shards"]) == 4 and serial["skipped"][0]["id"] == "b/bad.jpg"
    for shard in serial["shards"]:
        with open(tmp_path / "w0" / shard["file"], "rb") as a, \
                open(tmp_path / "w2" / shard["file"], "rb") as b:
            assert a.read() == b.read()


# --------------------------------------------------------------------------- errors and layout


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(records_per_shard=0), ValueError, "records_per_shard must be >= 1, got 0"),
    (dict(records_per_shard=2.0), TypeError, "records_per_shard must be an int, got float"),
    (dict(short_side=0), ValueError, "short_side must be >= 1, got 0"),
    (dict(quality=0), ValueError, "quality must be >= 1, got 0"),
    (dict(quality=101), ValueError, r"quality must be in \[1, 100\], got 101"),
    (dict(workers=-1), ValueError, "workers must be >= 0, got -1"),
    (dict(progress=1), TypeError, "progress must be a bool, got int"),
    (dict(source="images/"), TypeError, "source must be a Source .*got str"),
    (dict(out_dir="file"), ValueError, "out_dir must be a folder .*got the file .*file'"),
])  # fmt: skip
def test_bad_arguments_raise_before_any_work(tmp_path, kwargs, error, match):
    np.savez(tmp_path / "d.npz", images=np.zeros((2, 4, 4, 3), np.uint8), labels=np.zeros(2, int))
    _write(tmp_path / "file", b"x")
    call = dict(source=NpzSource(tmp_path / "d.npz"), out_dir=tmp_path / "out") | kwargs
    if call["out_dir"] == "file":
        call["out_dir"] = tmp_path / "file"
    with pytest.raises(error, match=match):
        write_shards(**call)
    assert not (tmp_path / "out").exists()


def test_shard_source_needs_a_manifest(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"'.*empty' is not a shard folder: no manifest"):
        ShardSource(tmp_path / "empty")
    _write(tmp_path / "bad" / "manifest.json", json.dumps({"format": "other"}).encode())
    with pytest.raises(ValueError, match="is not an nsjax shard manifest"):
        ShardSource(tmp_path / "bad")


def test_record_layout():
    blob = _pack_record("dossier/été 1.jpg", -1, 0, b"\xff\xd8\xffJPEG")
    assert blob[:10] == bytes([1, 0]) + (-1).to_bytes(4, "little", signed=True) + bytes(
        [len("dossier/été 1.jpg".encode()), 0, 0, 0])
    assert _unpack_record(blob) == Record(id="dossier/été 1.jpg", data=b"\xff\xd8\xffJPEG",
                                         label=-1, error=None)
    pixels = np.arange(24, dtype=np.uint8).reshape(2, 4, 3)
    raw = _unpack_record(_pack_record("7", 3, RAW, pixels))
    assert raw["label"] == 3 and raw["data"].dtype == np.uint8
    np.testing.assert_array_equal(raw["data"], pixels)


@pytest.mark.parametrize("height, width, short_side, reduce", [
    (100, 100, 60, 1), (239, 300, 60, 1), (240, 300, 60, 2), (800, 1000, 100, 4),
    (1000, 800, 100, 4), (8000, 8000, 10, 8),
])  # fmt: skip
def test_jpeg_draft_scale_keeps_twice_the_short_side(height, width, short_side, reduce):
    assert _reduction(height, width, short_side) == reduce
