"""Pipelines: per-process coverage, determinism (seed, threads, workers), exact resume, bad
records skipped/masked and reported, the labeled:unlabeled ratio, padding, placement on a mesh.

Images are constants (image `i` of an npz is all `i`), so any crop of a record says which
record it was: `images[:, 0, 0, 0] == index`.
"""

import json
import logging
import os

import jax
import numpy as np
import pytest

from nsjax.data._crops import TrainCrop
from nsjax.data._pipeline import eval_pipeline, student_pipeline, train_pipeline
from nsjax.data._sources import ImageFolderSource, NpzSource
from tests.data._images import jpeg_bytes, write_npz


def take(batches, n):
    return [next(batches) for _ in range(n)]


def assert_same(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        for k in x:
            np.testing.assert_array_equal(x[k], y[k], err_msg=k)


@pytest.fixture
def npz(tmp_path):
    return NpzSource(write_npz(str(tmp_path / "a.npz"), 24, num_classes=4))


def test_train_batches_are_the_records_they_say(npz):
    with train_pipeline(npz, 6, 12, seed=0) as batches:
        for batch in take(batches, 4):
            assert batch["images"].shape == (6, 12, 12, 3) and batch["images"].dtype == np.uint8
            np.testing.assert_array_equal(batch["images"][:, 0, 0, 0], batch["index"])
            np.testing.assert_array_equal(batch["labels"], batch["index"] % 4)
            assert batch["labels"].dtype == np.int32


@pytest.mark.parametrize("processes", [1, 3])
def test_each_epoch_covers_every_record_once_over_processes(npz, processes):
    """P simulated processes each read 24 / P records; two epochs of each cover every record
    exactly twice, and the two epochs are shuffled differently."""
    seen, orders = [], []
    for p in range(processes):
        batches = train_pipeline(npz, 6, 8, seed=3, shard=(p, processes))
        index = np.concatenate([b["index"] for b in take(batches, 8)])
        half = len(index) // 2
        assert sorted(index[:half]) == sorted(index[half:])  # an epoch is a permutation
        assert set(index[:half] % processes) == {p}  # this process's rows only
        seen.append(index)
        orders.append(list(index[:half]) != list(index[half:]))
    counts = np.bincount(np.concatenate(seen), minlength=24)
    assert (counts == 2).all()
    assert any(orders)  # reshuffled every epoch


def test_same_seed_same_batches_any_thread_count(npz):
    a = take(train_pipeline(npz, 6, 10, seed=1, threads=0), 5)
    b = take(train_pipeline(npz, 6, 10, seed=1, threads=4, prefetch=0), 5)
    assert_same(a, b)
    c = take(train_pipeline(npz, 6, 10, seed=2), 5)
    assert not np.array_equal(a[0]["index"], c[0]["index"])


def test_crop_randomness_is_per_record_position(tmp_path):
    """Two records at different stream positions draw different boxes and flips: the key of
    a crop is (seed, position), not shared."""
    gradient = np.broadcast_to(np.arange(64, dtype=np.uint8)[None, None, :, None] * 4,
                               (8, 64, 64, 3)).copy()
    path = str(tmp_path / "g.npz")
    np.savez(path, images=gradient, labels=np.zeros(8, int))
    batch = next(train_pipeline(NpzSource(path), 8, 16, seed=0))
    rows = {batch["images"][i].tobytes() for i in range(8)}
    assert len(rows) == 8


def test_exact_resume_mid_epoch(npz):
    """get_state after 3 batches, through JSON, into a fresh pipeline: the next 5 batches
    (across the epoch boundary) are the uninterrupted run's."""
    whole = take(train_pipeline(npz, 6, 10, seed=5), 8)
    first = train_pipeline(npz, 6, 10, seed=5)
    take(first, 3)
    state = json.loads(json.dumps(first.get_state()))
    resumed = train_pipeline(npz, 6, 10, seed=5)
    resumed.set_state(state)
    assert_same(take(resumed, 5), whole[3:])


@pytest.mark.slow  # 17 s: spawning grain's worker processes (each imports jax)
def test_workers_give_the_same_batches_and_resume(npz):
    """Decoding in 2 worker processes changes nothing: same batches as 0 workers, and a state
    taken with workers resumes exactly."""
    plain = take(train_pipeline(npz, 6, 10, seed=4), 6)
    with train_pipeline(npz, 6, 10, seed=4, workers=2) as batches:
        assert_same(take(batches, 3), plain[:3])
        state = json.loads(json.dumps(batches.get_state()))
    with train_pipeline(npz, 6, 10, seed=4, workers=2) as batches:
        batches.set_state(state)
        assert_same(take(batches, 3), plain[3:])


def bad_folder(tmp_path):
    """8 good JPEGs (values 10..80) and 3 bad files, unlabeled."""
    root = tmp_path / "u"
    root.mkdir()
    for i in range(8):
        (root / f"good{i}.jpg").write_bytes(jpeg_bytes(10 * (i + 1)))
    (root / "bad_truncated.jpg").write_bytes(jpeg_bytes(99)[:60])
    (root / "bad_text.jpg").write_text("<html>not an image</html>")
    (root / "cmyk.jpg").write_bytes(jpeg_bytes(200, mode="CMYK"))
    return ImageFolderSource(str(root), labeled=False)


def test_train_skips_and_reports_bad_files(tmp_path, caplog):
    source = bad_folder(tmp_path)
    bad = {i for i in range(len(source)) if source[i]["id"].startswith("bad")}
    batches = train_pipeline(source, 4, 16, seed=0)
    with caplog.at_level(logging.WARNING, logger="nsjax.data"):
        got = take(batches, 6)  # 24 good records: just over 2 epochs of 9 good ones
    for batch in got:
        assert batch["images"].shape == (4, 16, 16, 3)
        assert not bad & set(batch["index"])
    report = batches.reports["train"]
    assert {s["id"] for s in report.skipped} == {"bad_text.jpg", "bad_truncated.jpg"}
    assert report.num_skipped >= 4 and all(s["reason"] for s in report.skipped)  # once per epoch
    assert [c["id"] for c in report.converted][:1] == ["cmyk.jpg"]
    assert "train epoch 0: 2 record(s) skipped" in caplog.text
    # the report is part of the state: a resumed pipeline keeps counting from it
    resumed = train_pipeline(source, 4, 16, seed=0)
    resumed.set_state(json.loads(json.dumps(batches.get_state())))
    assert resumed.reports["train"].num_skipped == report.num_skipped


def test_eval_masks_bad_files_and_pads(tmp_path):
    source = bad_folder(tmp_path)  # 11 records
    got = list(eval_pipeline(source, 4, 8))
    assert len(got) == 3 and all(b["images"].shape == (4, 8, 8, 3) for b in got)
    index = np.concatenate([b["index"] for b in got])
    mask = np.concatenate([b["mask"] for b in got])
    np.testing.assert_array_equal(index, list(range(11)) + [-1])
    ids = [source[i]["id"] for i in range(11)]
    np.testing.assert_array_equal(np.concatenate([b["ids"] for b in got]), ids + [""])
    assert [ids[i] for i in index[:11][~mask[:11]]] == ["bad_text.jpg", "bad_truncated.jpg"]
    assert not mask[11]
    good = [i for i in range(11) if mask[i] and ids[i].startswith("good")]
    values = np.concatenate([b["images"][:, 4, 4, 0] for b in got])
    for i in good:  # centre crops of constant JPEGs keep their value (JPEG: within 2)
        assert abs(int(values[i]) - 10 * (int(ids[i][4]) + 1)) <= 2
    assert not values[~mask].any()
    assert {s["id"] for s in eval_pipeline(source, 4, 8).reports["eval"].skipped} == set()


@pytest.mark.parametrize("processes", [1, 3])
def test_eval_every_record_once_same_batch_count(npz, processes):
    per = [list(eval_pipeline(npz, 2 * processes, 8, shard=(p, processes)))
           for p in range(processes)]
    assert len({len(b) for b in per}) == 1  # every process runs the same number of steps
    index = np.concatenate([b["index"][b["mask"]] for batches in per for b in batches])
    assert sorted(index) == list(range(24))
    labels = np.concatenate([b["labels"][b["mask"]] for batches in per for b in batches])
    np.testing.assert_array_equal(labels, index % 4)


def test_student_ratio_targets_and_engine_keys(tmp_path):
    from nsjax.train import TrainConfig, check_batch

    labeled = NpzSource(write_npz(str(tmp_path / "l.npz"), 5, num_classes=3))
    unlabeled = NpzSource(write_npz(str(tmp_path / "u.npz"), 40, labeled=False), labeled=False)
    targets = np.arange(40) * 10
    batches = student_pipeline(labeled, unlabeled, labeled_batch=2, unlabeled_ratio=3, crop=32,
                               seed=0, targets=targets)
    config = TrainConfig(num_classes=3, resolution=32, labeled_batch=2, unlabeled_ratio=3.0)
    seen_l, seen_u = [], []
    for batch in take(batches, 10):
        assert set(batch) == {"images", "labels", "unlabeled_images", "unlabeled_targets"}
        assert batch["images"].shape == (2, 32, 32, 3)
        assert batch["unlabeled_images"].shape == (6, 32, 32, 3)
        check_batch(config, batch)
        u = batch["unlabeled_images"][:, 0, 0, 0].astype(int)
        np.testing.assert_array_equal(batch["unlabeled_targets"], u * 10)
        seen_l += list(batch["images"][:, 0, 0, 0])
        seen_u += list(u)
    # independent epochs: 20 labeled records = 4 labeled epochs, 60 unlabeled = 1.5 epochs
    assert np.bincount(seen_l[:20], minlength=5).tolist() == [4] * 5
    assert sorted(seen_u[:40]) == list(range(40))
    state = json.loads(json.dumps(batches.get_state()))
    assert set(state) == {"labeled", "unlabeled"}
    assert set(batches.reports) == {"labeled", "unlabeled"}


def test_student_online_teacher_view(tmp_path):
    labeled = NpzSource(write_npz(str(tmp_path / "l.npz"), 4))
    batch = next(student_pipeline(labeled, labeled, labeled_batch=2, unlabeled_ratio=2,
                                  crop=16, seed=0, teacher_crop=24))
    assert set(batch) == {"images", "labels", "unlabeled_images", "teacher_images"}
    assert batch["teacher_images"].shape == (4, 24, 24, 3)
    np.testing.assert_array_equal(batch["teacher_images"][:, 0, 0, 0],
                                  batch["unlabeled_images"][:, 0, 0, 0])


def test_batches_on_a_mesh(npz):
    from nsjax.train import batch_sharding, make_mesh

    mesh = make_mesh()
    batch = next(train_pipeline(npz, 4, 8, seed=0, mesh=mesh))
    assert isinstance(batch["images"], jax.Array) and batch["images"].shape == (4, 8, 8, 3)
    assert batch["images"].sharding == batch_sharding(mesh)


def test_pipeline_argument_errors(npz, tmp_path):
    with pytest.raises(TypeError, match="source must be a source"):
        train_pipeline(np.zeros((4, 8, 8, 3)), 4, 8, seed=0)
    with pytest.raises(ValueError, match="batch_size must be a multiple of the process count 3"):
        train_pipeline(npz, 4, 8, seed=0, shard=(0, 3))
    with pytest.raises(ValueError, match=r"shard must be \(index, count\)"):
        train_pipeline(npz, 4, 8, seed=0, shard=(3, 3))
    with pytest.raises(ValueError, match=r"targets must have one row per record .*\[24, ...\], got \(5,\)"):
        train_pipeline(npz, 4, 8, seed=0, targets=np.zeros(5))
    with pytest.raises(ValueError, match="at least one batch"):
        train_pipeline(npz, 30, 8, seed=0)
    with pytest.raises(TypeError, match="crop must be an int"):
        train_pipeline(npz, 4, "big", seed=0)
    with pytest.raises(ValueError, match="exactly one of targets .* got neither"):
        student_pipeline(npz, npz, labeled_batch=2, unlabeled_ratio=3, crop=8, seed=0)
    unlabeled = NpzSource(write_npz(str(tmp_path / "u.npz"), 8, labeled=False), labeled=False)
    with pytest.raises(ValueError, match="labeled must be a labeled source"):
        student_pipeline(unlabeled, npz, labeled_batch=2, unlabeled_ratio=3, crop=8, seed=0,
                         teacher_crop=8)
    with pytest.raises(ValueError, match="workers"):
        train_pipeline(npz, 4, TrainCrop(8), seed=0, workers=-1)
    assert os.path.exists(npz.path)


def test_npz_to_shards_to_batches_round_trip(tmp_path):
    """npz -> write_shards -> ShardSource -> eval batches at the native size, whole image
    (crop fraction 1): the batches are the source images, in order, with their labels."""
    from nsjax.data._crops import EvalCrop
    from nsjax.data._shards import ShardSource, write_shards

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (10, 20, 20, 3), dtype=np.uint8)
    path = str(tmp_path / "a.npz")
    np.savez(path, images=images, labels=np.arange(10) % 3)
    write_shards(NpzSource(path), str(tmp_path / "shards"), records_per_shard=4)
    shards = ShardSource(str(tmp_path / "shards"))
    got = list(eval_pipeline(shards, 4, EvalCrop(20, crop_fraction=1.0)))
    mask = np.concatenate([b["mask"] for b in got])
    np.testing.assert_array_equal(np.concatenate([b["images"] for b in got])[mask], images)
    np.testing.assert_array_equal(np.concatenate([b["labels"] for b in got])[mask],
                                  np.arange(10) % 3)


def test_small_images_are_upscaled_and_reported(tmp_path):
    root = tmp_path / "u"
    root.mkdir()
    for i in range(4):
        (root / f"{i}.jpg").write_bytes(jpeg_bytes(50 * i, size=(8, 12)))
    batches = train_pipeline(ImageFolderSource(str(root), labeled=False), 4, 32, seed=0)
    batch = next(batches)
    assert batch["images"].shape == (4, 32, 32, 3)
    report = batches.reports["train"]
    assert report.num_converted == 4 and report.num_skipped == 0
    assert all(c["reason"].startswith("upscaled: 8x12") for c in report.converted)


def test_randaugment_on_the_host_is_the_steps_randaugment(npz):
    """`randaugment=(2, 9.0)` applies nsjax.noise.randaugment to batch t with key
    fold_in(key(seed), t): the plain pipeline's batch, augmented with that key, is what comes
    out; and a resumed pipeline continues with the right keys."""
    from nsjax.data._pipeline import _randaugment_on_cpu

    # nsjax.noise.randaugment, jitted (tests/test_randaugment.py: the same with and without jit)
    randaugment = _randaugment_on_cpu(2, 9.0)
    plain = take(train_pipeline(npz, 4, 16, seed=3), 3)
    augmented = train_pipeline(npz, 4, 16, seed=3, randaugment=(2, 9.0))
    got = take(augmented, 2)
    for t, (p, a) in enumerate(zip(plain, got)):
        key = jax.random.fold_in(jax.random.key(3), t)
        expected = randaugment(key, p["images"])
        np.testing.assert_array_equal(a["images"], expected)
        np.testing.assert_array_equal(a["index"], p["index"])
    assert not np.array_equal(got[0]["images"], plain[0]["images"])
    resumed = train_pipeline(npz, 4, 16, seed=3, randaugment=(2, 9.0))
    resumed.set_state(augmented.get_state())
    key = jax.random.fold_in(jax.random.key(3), 2)
    np.testing.assert_array_equal(next(resumed)["images"], randaugment(key, plain[2]["images"]))
    with pytest.raises(TypeError, match=r"randaugment must be None or \(layers, magnitude\)"):
        train_pipeline(npz, 4, 16, seed=3, randaugment=2)


def test_nothing_readable_is_an_error_not_a_hang(tmp_path):
    root = tmp_path / "u"
    root.mkdir()
    for i in range(5):
        (root / f"{i}.jpg").write_text("not an image")
    batches = train_pipeline(ImageFolderSource(str(root), labeled=False), 2, 8, seed=0)
    with pytest.raises(ValueError, match="train: none of this process's 5 records can be read"):
        next(batches)


def test_conversions_alone_are_logged_once_at_info(caplog):
    # grey 8x8 digits are converted (to RGB, upscaled) in every epoch: not a warning, and
    # said once, not once per epoch
    from nsjax.data._report import DataReport

    report = DataReport("train")
    with caplog.at_level(logging.INFO, logger="nsjax.data"):
        for epoch in range(3):
            report.convert("a", "upscaled: 8x8 smaller than the crop", epoch)
        report.start_epoch(3)
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.INFO, "train epoch 0: 0 record(s) skipped, 1 converted")]
