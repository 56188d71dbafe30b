"""The FixRes fine-tune end to end on real digits: a tiny teacher trained at 32 px is fine-tuned
at 48 px on centre crops, its stem and first block frozen (bitwise the teacher's, also in the
exported EMA model), evaluated at 48 px; a rerun trains nothing more; bad inputs are refused
before any work."""

import json
import os

import equinox as eqx
import jax
import numpy as np
import pytest

from nsjax.data import EvalCrop, NpzSource, TrainCrop, fit_inputs
from nsjax.loop import _finetune
from nsjax.loop._finetune import finetune
from nsjax.models import B0_BLOCKS
from nsjax.train import TrainConfig, fit, load_teacher, predict_step
from tests.train._runs import digit_sources, metrics_steps, tiny_config


def teacher_config(**overrides):
    """The one-block student as an L0 (whose test resolution is not its training one: 32 px
    trains, 51 px tests), for a fine-tune's test side to differ from a scaled one."""
    return tiny_config(model="l0", depth=1.0, steps_per_epoch=None, epochs=0.5,
                       unlabeled_ratio=0.0, log_every=2, checkpoint_every=2,
                       blocks=B0_BLOCKS[:1], head_channels=64, **overrides)  # fmt: skip


@pytest.fixture(scope="module")
def taught(tmp_path_factory):
    """A 2-step teacher (32 labeled digits, 8 a batch), the digit sources and the test arrays."""
    folder = tmp_path_factory.mktemp("digits")
    labeled, _, test = digit_sources(folder, 32, 8, 32)
    config = teacher_config()
    fit(config, inputs=fit_inputs(config, labeled), out_dir=str(folder / "teacher"))
    with np.load(folder / "t.npz") as f:
        test_arrays = dict(f)
    return config, str(folder / "teacher" / "teacher.eqx"), labeled, test, test_arrays


def _arrays(tree, prefix: str) -> dict[str, np.ndarray]:
    """The float arrays of a model whose path starts with one of `prefix`'s alternatives."""
    params = eqx.filter(tree, eqx.is_inexact_array)
    return {jax.tree_util.keystr(p): np.asarray(x)
            for p, x in jax.tree_util.tree_leaves_with_path(params)
            if jax.tree_util.keystr(p).startswith(prefix)}  # fmt: skip


def test_finetune_at_a_larger_resolution_freezes_the_first_block(taught, tmp_path,
                                                                  monkeypatch):  # fmt: skip
    config, teacher_file, labeled, test, test_arrays = taught
    assert config.model_config().test_resolution == 51
    out = tmp_path / "fixres"
    inputs = []  # the fit_inputs arguments: the training crop is the evaluation's
    monkeypatch.setattr(_finetune, "fit_inputs",
                        lambda *a, **k: inputs.append(k) or fit_inputs(*a, **k))
    state, summary = finetune(teacher_file, config, labeled, test, out_dir=out, resolution=48,
                              freeze_blocks=1)  # fmt: skip
    assert summary["steps"] == int(state.step) == 6  # 1.5 epochs of 4 steps
    assert 0 <= summary["test_top1"] <= summary["test_top5"] <= 1
    # the small-image variant is evaluated on the whole image, so it is fine-tuned on it
    assert repr(inputs[0]["crop"]) == repr(TrainCrop(48, crop="center", crop_fraction=1.0,
                                                     flip=False, resize="pil"))  # fmt: skip
    tuned = json.loads((out / "config.json").read_text())
    assert (tuned["resolution"], tuned["test_resolution"], tuned["freeze_blocks"], tuned["unlabeled_ratio"],
            tuned["randaugment_magnitude"], tuned["warmup_epochs"]) == (48, 48, 1, 0.0, None, 0.0)
    # the teacher's last learning rate: its update 1 of a 20-step warm-up (5 epochs of 4)
    assert tuned["base_learning_rate"] == pytest.approx(config.base_learning_rate / 20)
    assert state.model.config.train_resolution == 48
    teacher, student = load_teacher(teacher_file), load_teacher(out / "teacher.eqx")
    assert student.model.config.train_resolution == student.resolution == 48
    frozen = (".stem", ".bn_stem", ".blocks[0]")
    for name, model in (("model", state.model), ("EMA model", student.model)):
        for prefix in frozen:  # bitwise the teacher's
            got, want = _arrays(model, prefix), _arrays(teacher.model, prefix)
            assert got.keys() == want.keys() and got
            for path in want:
                np.testing.assert_array_equal(got[path], want[path], err_msg=f"{name}{path}")
        for prefix in (".head", ".classifier"):  # trained
            got, want = _arrays(model, prefix), _arrays(teacher.model, prefix)
            assert any(not np.array_equal(got[p], want[p]) for p in want), f"{name}{prefix}"
    # the summary's accuracy is the exported EMA model's on the test images at 48 px
    images = np.stack([EvalCrop(48, crop_fraction=1.0)(x)[0] for x in test_arrays["images"]])
    probs = eqx.filter_jit(predict_step)(student.model, student.state, config, images)
    assert summary["test_top1"] == np.mean(np.argmax(probs, -1) == test_arrays["labels"])
    # a rerun of the finished run trains no further step and reports the same
    logged = metrics_steps(out)
    again_state, again = finetune(teacher_file, config, labeled, test, out_dir=out,
                                  resolution=48, freeze_blocks=1)  # fmt: skip
    assert int(again_state.step) == 6 and metrics_steps(out) == logged
    assert again["test_top1"] == summary["test_top1"]


class _Sized:
    """A labeled set of which only the length is read."""

    def __init__(self, n: int):
        self.n = n

    def __len__(self) -> int:
        return self.n


@pytest.mark.parametrize("decay, epochs, fraction", [
    ("exponential", 350.0, 0.97**145),  # the reference: staircase every 2.4 epochs
    ("exponential", 6.0, 0.97**2),  # a short run ends high and continues high
    ("cosine", 350.0, 0.01),  # a cosine schedule ends at 0: 1/100 of the peak
])  # fmt: skip
def test_the_default_learning_rate_is_the_teachers_last(decay, epochs, fraction):
    config = TrainConfig(labeled_batch=2048, epochs=epochs, lr_decay=decay)
    rate = _finetune._last_learning_rate(config, _Sized(1_281_167))
    assert rate == pytest.approx(config.base_learning_rate * fraction, rel=1e-5)


def test_bad_inputs_are_refused_before_any_work(taught, tmp_path):
    config, teacher_file, labeled, test, _ = taught
    images = np.zeros((8, 32, 32, 3), np.uint8)
    np.savez(tmp_path / "five.npz", images=images, labels=np.arange(8) % 5)
    five = NpzSource(tmp_path / "five.npz")
    out = tmp_path / "run"
    cases = [
        (dict(config=teacher_config(num_classes=12)), ValueError, "10 classes"),
        (dict(config=teacher_config(width=0.5)), ValueError, "width"),
        (dict(config=teacher_config(num_classes=5), labeled=five), ValueError,
         "test has 10 classes, more than the config's num_classes 5"),
        (dict(test=labeled.describe()), TypeError, "test must be an nsjax.data source"),
        (dict(labeled=NpzSource(tmp_path / "five.npz", labeled=False)), ValueError,
         "labeled must be a labeled source"),
        (dict(resolution=16), ValueError, "resolution"),
        (dict(epochs=0), ValueError, "epochs"),
        (dict(learning_rate=-1.0), ValueError, "learning_rate"),
        (dict(freeze_blocks=2), ValueError, "freeze_blocks must be at most"),
        (dict(teacher_file=str(tmp_path / "none.eqx")), FileNotFoundError, "no teacher file"),
        (dict(config=config.to_json()), TypeError, "config must be a TrainConfig"),
    ]  # fmt: skip
    for change, error, message in cases:
        args = dict(teacher_file=teacher_file, config=config, labeled=labeled, test=test,
                    out_dir=out)  # fmt: skip
        with pytest.raises(error, match=message):
            finetune(**{**args, **change})
        assert not os.path.exists(out), change
