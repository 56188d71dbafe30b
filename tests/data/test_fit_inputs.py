"""`fit` over sources (`nsjax.data.fit_inputs`): a student trains on npz sources with offline
pseudo-labels read from a store through a balanced `Subset`, evaluates on a test source, and a
rerun of the finished run resumes from its checkpoint with the pipelines' positions."""

import json

import numpy as np
import pytest

from nsjax.data import Subset, fit_inputs
from nsjax.models import B0_BLOCKS
from nsjax.train import fit
from tests.train._runs import digit_sources, tiny_config


@pytest.fixture
def sources(tmp_path):
    return digit_sources(tmp_path, 64, 96, 32)  # labeled, unlabeled, test


def test_a_student_trains_on_sources(sources, tmp_path):
    labeled, unlabeled, test = sources
    config = tiny_config(steps_per_epoch=None, epochs=0.5, unlabeled_ratio=2.0, log_every=2,
                         checkpoint_every=2, blocks=B0_BLOCKS[:1], head_channels=64)
    # 64 / 8 = 8 steps an epoch: 4 steps; one block compiles quickly
    rows = np.array([3, 3, 7, 10, 20, 95, 50, 1, 2, 4, 5, 6, 8, 9, 11, 12])  # a "balanced" pick
    targets = np.random.default_rng(0).dirichlet(np.ones(10), len(rows)).astype(np.float32)
    inputs = fit_inputs(config, labeled, Subset(unlabeled, rows), test, targets=targets)
    state, summary = fit(config, inputs=inputs, out_dir=str(tmp_path / "run"))
    assert summary["steps"] == 4 == int(state.step)
    assert 0 <= summary["test_top1"] <= summary["test_top5"] <= 1
    metrics = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text()
               .splitlines()]  # fmt: skip
    assert [m["step"] for m in metrics if "loss" in m] == [2, 4]
    assert all(np.isfinite(m["unlabeled_loss"]) and m["unlabeled_loss"] > 0
               for m in metrics if "loss" in m)
    # rerunning the finished run restores its checkpoint (state and pipeline positions)
    again = fit(config, inputs=fit_inputs(config, labeled, Subset(unlabeled, rows), test,
                                          targets=targets), out_dir=str(tmp_path / "run"))[1]
    assert again["test_top1"] == summary["test_top1"] and again["steps"] == 4


def test_inputs_are_checked_before_any_work(sources, tmp_path):
    labeled, unlabeled, test = sources
    config = tiny_config(unlabeled_ratio=2.0)
    with pytest.raises(ValueError, match="exactly one of targets"):
        fit_inputs(config, labeled, unlabeled)
    with pytest.raises(ValueError, match=r"targets must have one row per record .*\[96, ...\]"):
        fit_inputs(config, labeled, unlabeled, targets=np.zeros((5, 10)))
    with pytest.raises(ValueError, match="unlabeled must be given"):
        fit_inputs(config, labeled)
    with pytest.raises(ValueError, match="labeled must be a labeled source"):
        fit_inputs(tiny_config(unlabeled_ratio=0.0), unlabeled)
    with pytest.raises(TypeError, match="either arrays .* or inputs="):
        fit(config, dict(images=np.zeros((8, 32, 32, 3), np.uint8)),
            inputs=fit_inputs(config, labeled, unlabeled, targets=np.zeros((96, 10))),
            out_dir=str(tmp_path / "x"))


@pytest.mark.parametrize("small_image", [True, False])
def test_the_default_crop_follows_the_model_variant(sources, small_image):
    # the 32-px variant trains on the official SVHN path (pad 4, random window, no flip);
    # the others on the Inception crop with flips
    from nsjax.data import TrainCrop, train_pipeline

    labeled = sources[0]
    config = tiny_config(unlabeled_ratio=0.0, small_image=small_image)
    expected = (TrainCrop(32, crop="pad", flip=False) if small_image else TrainCrop(32))
    with fit_inputs(config, labeled).train() as got, train_pipeline(
            labeled, config.labeled_batch, expected, seed=config.seed) as want:
        for _ in range(2):
            np.testing.assert_array_equal(next(got)["images"], next(want)["images"])
