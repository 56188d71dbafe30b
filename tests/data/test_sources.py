"""Sources: records, ids, labels and class maps, memory-mapping, and every input error raised
before any work, naming the file."""

import os
import pickle

import numpy as np
import pytest

from nsjax.data._sources import ImageFolderSource, NpzSource, Source
from tests.data._images import constant_images, jpeg_bytes, write_folder, write_npz

# --------------------------------------------------------------------------- npz


@pytest.mark.parametrize("compressed", [False, True])
def test_npz_records_are_rows(tmp_path, compressed):
    path = write_npz(str(tmp_path / "a.npz"), 7, num_classes=3, compressed=compressed)
    source = NpzSource(path)
    assert isinstance(source, Source) and len(source) == 7 and source.num_classes == 3
    for i in range(7):
        record = source[i]
        assert record["id"] == str(i) and record["label"] == i % 3 and record["error"] is None
        np.testing.assert_array_equal(record["data"], constant_images(7)[i])
    # uncompressed members are memory-mapped, not read into memory
    assert isinstance(source._arrays["images"], np.memmap) == (not compressed)


def test_npz_pickles_as_its_path(tmp_path):
    source = NpzSource(write_npz(str(tmp_path / "a.npz"), 5))
    source[0]
    blob = pickle.dumps(source)
    assert len(blob) < 2000  # the arrays are not sent to worker processes
    np.testing.assert_array_equal(pickle.loads(blob)[4]["data"], source[4]["data"])


def test_npz_ids_grey_and_unlabeled(tmp_path):
    path = str(tmp_path / "a.npz")
    np.savez(path, images=constant_images(3, grey=True), ids=np.array(["x", "y", "z"]))
    source = NpzSource(path, labeled=False)
    assert [source[i]["id"] for i in range(3)] == ["x", "y", "z"]
    assert source[1]["label"] == -1 and source[1]["data"].shape == (16, 16)
    assert source.describe() == dict(kind="npz", path=path, records=3, labeled=False,
                                     num_classes=None)


@pytest.mark.parametrize("arrays, match", [
    (dict(images=constant_images(4)), "no 'labels' array"),
    (dict(images=constant_images(4), labels=np.array([0, 1, 2])), r"'labels' must have shape \[N\]"),
    (dict(images=constant_images(4), labels=np.array([0, 1, 5, 1])), r"in \[0, 3\), got values in \[0, 5\]"),
    (dict(images=constant_images(4), labels=np.array([0, -1, 1, 1])), r"in \[0, 3\)"),
    (dict(images=constant_images(4), labels=np.zeros(4, np.float32)), "integer class indices"),
    (dict(images=constant_images(4).astype(np.float32), labels=np.zeros(4, int)), "uint8"),
    (dict(images=np.zeros((4, 8, 8, 4), np.uint8), labels=np.zeros(4, int)), "uint8"),
    (dict(images=np.zeros((0, 8, 8, 3), np.uint8), labels=np.zeros(0, int)), "no images"),
    (dict(pictures=constant_images(4)), "must hold an array 'images'"),
])  # fmt: skip
def test_npz_errors_name_the_file(tmp_path, arrays, match):
    path = str(tmp_path / "bad.npz")
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match=match) as info:
        NpzSource(path, num_classes=3)
    assert path in str(info.value)


def test_npz_missing_or_not_an_archive(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.npz"):
        NpzSource(str(tmp_path / "nope.npz"))
    (tmp_path / "text.npz").write_text("not a zip")
    with pytest.raises(ValueError, match="text.npz: not an .npz archive"):
        NpzSource(str(tmp_path / "text.npz"))


def test_npz_labels_give_num_classes(tmp_path):
    path = str(tmp_path / "a.npz")
    np.savez(path, images=constant_images(4), labels=np.array([0, 7, 2, 2]))
    assert NpzSource(path).num_classes == 8


# --------------------------------------------------------------------------- folders


def test_folder_classes_sorted_and_ids_relative(tmp_path):
    root = write_folder(str(tmp_path / "train"), {"zebra": 2, "ant": 3})
    os.makedirs(tmp_path / "train" / "ant" / "deeper")
    (tmp_path / "train" / "ant" / "deeper" / "x.PNG").write_bytes(b"png-ish")  # nested, upper case
    (tmp_path / "train" / "ant" / "notes.txt").write_text("not an image")
    (tmp_path / "train" / "ant" / ".hidden.jpg").write_bytes(b"")
    source = ImageFolderSource(root)
    assert source.classes == ("ant", "zebra") and source.num_classes == 2
    ids = [source[i]["id"] for i in range(len(source))]
    assert ids == ["ant/000.jpg", "ant/001.jpg", "ant/002.jpg", "ant/deeper/x.PNG",
                   "zebra/000.jpg", "zebra/001.jpg"]
    assert [source[i]["label"] for i in range(len(source))] == [0, 0, 0, 0, 1, 1]
    assert source[4]["data"] == (tmp_path / "train" / "zebra" / "000.jpg").read_bytes()


def test_folder_keeps_a_saved_class_map(tmp_path):
    root = write_folder(str(tmp_path / "val"), {"ant": 1, "zebra": 1})
    source = ImageFolderSource(root, classes=["zebra", "cat", "ant"])  # a later run, one class absent
    assert source.num_classes == 3
    assert [(source[i]["id"], source[i]["label"]) for i in range(2)] == [
        ("ant/000.jpg", 2), ("zebra/000.jpg", 0)]
    with pytest.raises(ValueError, match=r"class folders \['zebra'\] missing from classes"):
        ImageFolderSource(root, classes=["ant"])


def test_folder_unlabeled_tree(tmp_path):
    write_folder(str(tmp_path / "u"), {"a": 2, "b/c": 1})
    (tmp_path / "u" / "top.webp").write_bytes(b"x")
    source = ImageFolderSource(str(tmp_path / "u"), labeled=False)
    assert [source[i]["id"] for i in range(len(source))] == [
        "a/000.jpg", "a/001.jpg", "b/c/000.jpg", "top.webp"]
    assert {source[i]["label"] for i in range(4)} == {-1} and source.classes is None


def test_folder_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no class sub-folders"):
        ImageFolderSource(str(tmp_path / "empty"))
    with pytest.raises(ValueError, match="empty holds no image files"):
        ImageFolderSource(str(tmp_path / "empty"), labeled=False)
    write_folder(str(tmp_path / "t"), {"a": 1})
    (tmp_path / "t" / "b").mkdir()
    (tmp_path / "t" / "b" / "readme.txt").write_text("x")
    with pytest.raises(ValueError, match=r"class folder .*t/b holds no image files"):
        ImageFolderSource(str(tmp_path / "t"))
    with pytest.raises(FileNotFoundError, match="missing"):
        ImageFolderSource(str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="classes is for labeled folders"):
        ImageFolderSource(str(tmp_path / "t" / "a"), labeled=False, classes=["a"])


def test_folder_unreadable_file_is_a_record_error(tmp_path):
    root = tmp_path / "u"
    root.mkdir()
    (root / "a.jpg").write_bytes(jpeg_bytes(5))
    (root / "b.jpg").write_bytes(jpeg_bytes(6))
    source = ImageFolderSource(str(root), labeled=False)
    (root / "b.jpg").unlink()  # vanished between listing and reading
    assert source[0]["error"] is None
    assert source[1]["error"].startswith("unreadable:") and source[1]["data"] == b""
