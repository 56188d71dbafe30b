"""The labelling job: the store says what the teacher says on clean centre crops, shards are
resumable and split over processes, a killed job rerun ends identical, bad images are left out
and reported, and another job is refused in the same folder."""

import os
import signal
import subprocess
import sys
import time

import equinox as eqx
import numpy as np
import pytest

from nsjax.data import EvalCrop, NpzSource
from nsjax.pseudo._label import label, read_labels
from nsjax.train import Teacher, TrainConfig, normalize
from tests.pseudo._teacher import tiny_teacher

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def teacher() -> Teacher:
    return tiny_teacher()


@pytest.fixture
def digits(tmp_path):
    from sklearn.datasets import load_digits

    grey = np.round(load_digits().images[:40] * (255 / 16)).astype(np.uint8)
    path = str(tmp_path / "u.npz")
    np.savez(path, images=np.repeat(np.repeat(grey, 5, 1), 5, 2))  # [40, 40, 40] grey
    return NpzSource(path, labeled=False)


def assert_same_store(a, b):
    for field in ("index", "ids", "classes", "confidence", "top_classes", "top_log_probs"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field), err_msg=field)


def test_the_store_is_the_teachers_view(teacher, digits, tmp_path):
    job = label(teacher, digits, tmp_path / "store", top_k=3, batch_size=4, records_per_shard=16)
    assert [s["range"] for s in job["shards"]] == [[0, 16], [16, 32], [32, 40]]
    assert job["done"] == [0, 1, 2] and job["skipped"] == []
    store = read_labels(tmp_path / "store")
    np.testing.assert_array_equal(store.index, np.arange(40))
    np.testing.assert_array_equal(store.ids, [str(i) for i in range(40)])
    crops = np.stack([EvalCrop(32)(digits[i]["data"])[0] for i in range(40)])
    config = TrainConfig()  # label's default normalisation: the recipe's mean and std
    logits = np.asarray(eqx.filter_jit(lambda t, x: t(normalize(x, config.mean, config.std,
                                                                  np.float32)))(teacher, crops))
    np.testing.assert_array_equal(store.classes, logits.argmax(-1))
    log_probs = logits - np.log(np.exp(logits.astype(np.float64)).sum(-1, keepdims=True))
    top = np.argsort(-log_probs, axis=-1)[:, :3]
    np.testing.assert_array_equal(store.top_classes, top)
    np.testing.assert_allclose(store.top_log_probs, np.take_along_axis(log_probs, top, -1),
                               rtol=2e-3, atol=2e-3)


def test_rerun_skips_finished_shards_and_refuses_another_job(teacher, digits, tmp_path):
    out = tmp_path / "store"
    label(teacher, digits, out, top_k=3, batch_size=4, records_per_shard=16)
    whole = read_labels(out)
    os.remove(out / "labels-00001-of-00003.npz")
    with pytest.raises(FileNotFoundError, match=r"missing 1 of 3 shards.*labels-00001-of-00003"):
        read_labels(out)
    assert label(teacher, digits, out, top_k=3, batch_size=4, records_per_shard=16)["done"] == [1]
    assert_same_store(read_labels(out), whole)
    with pytest.raises(ValueError, match=r"another labelling job .*\['top_k'\]"):
        label(teacher, digits, out, top_k=2, batch_size=4, records_per_shard=16)


def test_processes_split_the_shards(teacher, digits, tmp_path):
    whole = label(teacher, digits, tmp_path / "one", top_k=2, batch_size=4, records_per_shard=10)
    kwargs = dict(top_k=2, batch_size=4, records_per_shard=10)
    assert label(teacher, digits, tmp_path / "two", process=(0, 2), **kwargs)["done"] == [0, 2]
    assert label(teacher, digits, tmp_path / "two", process=(1, 2), **kwargs)["done"] == [1, 3]
    assert whole["done"] == [0, 1, 2, 3]
    assert_same_store(read_labels(tmp_path / "two"), read_labels(tmp_path / "one"))


def test_bad_images_are_left_out_and_reported(teacher, tmp_path):
    from nsjax.data import ImageFolderSource
    from tests.data._images import jpeg_bytes

    root = tmp_path / "u"
    root.mkdir()
    for i in range(5):
        (root / f"{i}.jpg").write_bytes(jpeg_bytes(40 * i, size=(36, 36)))
    (root / "2.jpg").write_bytes(b"broken")
    job = label(teacher, ImageFolderSource(str(root), labeled=False), tmp_path / "s",
                batch_size=4, top_k=2)
    assert [s["id"] for s in job["skipped"]] == ["2.jpg"]
    store = read_labels(tmp_path / "s")
    np.testing.assert_array_equal(store.ids, ["0.jpg", "1.jpg", "3.jpg", "4.jpg"])
    np.testing.assert_array_equal(store.index, [0, 1, 3, 4])


def test_bad_arguments(teacher, digits, tmp_path):
    with pytest.raises(ValueError, match="top_k must be <= the teacher's class count 10"):
        label(teacher, digits, tmp_path, top_k=11)
    with pytest.raises(TypeError, match="teacher must be a nsjax.train.Teacher"):
        label(object(), digits, tmp_path)
    with pytest.raises(FileNotFoundError, match="not a pseudo-label store"):
        read_labels(tmp_path)


def test_a_killed_job_rerun_ends_identical(teacher, digits, tmp_path):
    """SIGKILL a labelling process once its first shard is on disk; the rerun labels only the
    rest, and the store equals an uninterrupted job's."""
    whole = tmp_path / "whole"
    label(teacher, digits, whole, top_k=3, batch_size=4, records_per_shard=4)
    out = tmp_path / "killed"
    code = ("import sys, time\n"
            "import jax\n"
            "jax.config.update('jax_num_cpu_devices', 2)  # as this test process\n"
            "from nsjax.data import NpzSource\n"
            "from nsjax.pseudo import _label\n"
            "from tests.pseudo._teacher import tiny_teacher\n"
            "save = _label.save\n"
            "def slow_save(*a):\n    save(*a); time.sleep(0.5)\n"
            "_label.save = slow_save\n"
            f"_label.label(tiny_teacher(), NpzSource({digits.path!r}, labeled=False), "
            f"{str(out)!r}, top_k=3, batch_size=4, records_per_shard=4)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT)
    deadline = time.monotonic() + 120
    while not (out / "labels-00000-of-00010.npz").exists():
        assert proc.poll() is None and time.monotonic() < deadline, "the job ended early"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    left = label(teacher, digits, out, top_k=3, batch_size=4, records_per_shard=4)["done"]
    assert 0 not in left and left == sorted(left) and left[-1] == 9
    assert_same_store(read_labels(out), read_labels(whole))
