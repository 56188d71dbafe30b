"""`Teacher`, `export_teacher`, `load_teacher`, `teacher_metadata`: bitwise eval-mode round trip,
refusals (class count, architecture, corrupt or missing files) and atomic export."""

import dataclasses
import os
import zipfile

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nsjax.models import config_for, efficientnet_from_config
from nsjax.train._teacher import Teacher, export_teacher, load_teacher, teacher_metadata

CONFIG = config_for("b0", width=0.25, depth=0.25, head_channels=64, test_resolution=64)


@pytest.fixture(scope="module")
def trained():
    """A small EfficientNet whose BN running statistics are not the initial ones."""
    model, state = efficientnet_from_config(CONFIG, key=jax.random.key(0), num_classes=10)
    return model, jax.jit(lambda s: jax.tree.map(lambda x: 0.5 * x + 0.25, s))(state)


@eqx.filter_jit
def logits(teacher, images):
    return teacher(images)


IMAGES = jax.random.normal(jax.random.key(2), (2, 32, 32, 3), jnp.float32)


def test_round_trip_gives_bitwise_equal_logits(tmp_path, trained):
    model, state = trained
    path = tmp_path / "teacher.zip"
    export_teacher(path, model, state, metadata={"top1": 0.5, "run": "b0-small"})
    teacher = load_teacher(path, num_classes=10, config=CONFIG)
    assert isinstance(teacher, Teacher)
    assert teacher.num_classes == 10 and teacher.resolution == 64
    assert teacher.model.config == CONFIG
    expected = np.asarray(logits(Teacher(model, state), IMAGES))
    got = np.asarray(logits(teacher, IMAGES))
    assert got.dtype == np.float32 and got.shape == (2, 10)
    assert got.tobytes() == expected.tobytes()
    same = jax.tree.map(lambda a, b: np.asarray(a).tobytes() == np.asarray(b).tobytes(),
                        (model, state), (teacher.model, teacher.state))  # fmt: skip
    assert all(jax.tree.leaves(same))
    header = teacher_metadata(path)
    assert header["metadata"] == {"top1": 0.5, "run": "b0-small"}
    assert header["num_classes"] == 10 and header["version"] == 1
    assert header["config"]["blocks"][1] == dataclasses.asdict(CONFIG.blocks[1])


def test_teacher_is_eval_mode(trained):
    model, state = trained
    teacher = Teacher(model, state)
    out = np.asarray(logits(teacher, IMAGES))
    other = np.asarray(logits(teacher, IMAGES.at[1].set(5.0)))
    assert other[0].tobytes() == out[0].tobytes()  # running statistics: no batch dependence
    assert other[1].tobytes() != out[1].tobytes()


def test_wrong_class_count_is_refused(tmp_path, trained):
    path = tmp_path / "t.zip"
    export_teacher(path, *trained)
    with pytest.raises(ValueError, match=rf"{path} holds a teacher with 10 classes, but "
                                         rf"num_classes=1000"):  # fmt: skip
        load_teacher(path, num_classes=1000)


def test_other_architecture_is_refused_naming_the_field(tmp_path, trained):
    path = tmp_path / "t.zip"
    export_teacher(path, *trained)
    with pytest.raises(ValueError, match=r"config\.width: 0\.25 in the file, 0\.5 expected"):
        load_teacher(path, config=dataclasses.replace(CONFIG, width=0.5))
    blocks = list(CONFIG.blocks)
    blocks[2] = dataclasses.replace(blocks[2], kernel=3)
    with pytest.raises(ValueError, match=r"config\.blocks\[2\]\.kernel: 5 in the file, 3 expected"):
        load_teacher(path, config=dataclasses.replace(CONFIG, blocks=tuple(blocks)))
    with pytest.raises(ValueError, match=r"config\.blocks: 7 entries in the file, 6 expected"):
        load_teacher(path, config=dataclasses.replace(CONFIG, blocks=CONFIG.blocks[:6]))


def test_export_is_atomic(tmp_path, trained, monkeypatch):
    model, state = trained
    path = tmp_path / "t.zip"
    export_teacher(path, model, state, metadata={"version": "old"})

    def crash_mid_write(f, tree):
        f.write(b"\0" * 1000)
        raise RuntimeError("disk full")

    monkeypatch.setattr(eqx, "tree_serialise_leaves", crash_mid_write)
    other = jax.tree.map(lambda x: x + 1, state)
    with pytest.raises(RuntimeError, match="disk full"):
        export_teacher(path, model, other, metadata={"version": "new"})
    monkeypatch.undo()
    assert os.listdir(tmp_path) == ["t.zip"]  # the temporary file is gone
    assert teacher_metadata(path)["metadata"] == {"version": "old"}
    restored = load_teacher(path)
    assert np.asarray(logits(restored, IMAGES)).tobytes() == \
        np.asarray(logits(Teacher(model, state), IMAGES)).tobytes()  # fmt: skip


def test_missing_and_corrupt_files_are_named(tmp_path, trained):
    missing = tmp_path / "none.zip"
    with pytest.raises(FileNotFoundError, match=f"no teacher file at {missing}"):
        load_teacher(missing)
    garbage = tmp_path / "garbage.zip"
    garbage.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match=f"{garbage} is not a teacher file"):
        teacher_metadata(garbage)
    good = tmp_path / "good.zip"
    export_teacher(good, *trained)
    truncated = tmp_path / "truncated.zip"
    truncated.write_bytes(good.read_bytes()[: -40_000])
    with pytest.raises(ValueError, match=str(truncated)):
        load_teacher(truncated)
    short = with_weights(good, tmp_path / "short.zip", lambda w: w[:-100])
    with pytest.raises(ValueError, match=f"{short} has corrupt or mismatched weights: .*EOF"):
        load_teacher(short)
    padded = with_weights(good, tmp_path / "padded.zip", lambda w: w + b"\0" * 8)
    with pytest.raises(ValueError, match=f"{padded} has corrupt weights: more data"):
        load_teacher(padded)


def with_weights(source, target, edit):
    """A copy of the teacher file `source` whose weight stream is `edit(stream)`."""
    with zipfile.ZipFile(source) as src, zipfile.ZipFile(target, "w") as dst:
        dst.writestr("teacher.json", src.read("teacher.json"))
        dst.writestr("weights.eqx", edit(src.read("weights.eqx")))
    return target


def test_bad_arguments_are_refused(tmp_path, trained):
    model, state = trained
    with pytest.raises(TypeError, match="metadata must be a JSON-able dict"):
        export_teacher(tmp_path / "t.zip", model, state, metadata={"f": object()})
    with pytest.raises(TypeError, match="model must be an EfficientNet"):
        export_teacher(tmp_path / "t.zip", state, state)
    other_model, _ = efficientnet_from_config(CONFIG, key=jax.random.key(0), num_classes=10)
    _, other_state = efficientnet_from_config(dataclasses.replace(CONFIG, width=0.5),
                                              key=jax.random.key(0), num_classes=10)  # fmt: skip
    with pytest.raises(ValueError, match="state does not fit the model"):
        export_teacher(tmp_path / "t.zip", other_model, other_state)
    assert os.listdir(tmp_path) == []
    with pytest.raises(ValueError, match="num_classes must be >= 1, got 0"):
        load_teacher(tmp_path / "t.zip", num_classes=0)
    with pytest.raises(ValueError, match=r"images must have shape \[B, H, W, 3\]"):
        Teacher(model, state)(jnp.zeros((2, 32, 32, 1)))
