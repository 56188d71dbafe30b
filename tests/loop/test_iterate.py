"""A tiny end-to-end Noisy Student run on real digits: a teacher, its pseudo-labels, a
balanced noisy student; the summary, the stage folders, a rerun that redoes nothing, and the
inputs refused before any work."""

import json
import os

import pytest

from nsjax.loop import IterateConfig, iterate
from nsjax.models import B0_BLOCKS
from tests.train._runs import digit_sources, tiny_config


@pytest.fixture
def sources(tmp_path):
    return digit_sources(tmp_path, 80, 240, 80)  # labeled, unlabeled, test


def config(**overrides):
    student = tiny_config(steps_per_epoch=None, epochs=0.4, unlabeled_ratio=2.0, log_every=5,
                          blocks=B0_BLOCKS[:1], head_channels=64)  # one block: quick to compile
    return IterateConfig(**{**dict(student=student, generations=({}, {}), per_class=20,
                                   min_confidence=0.0, top_k=3, label_batch=16), **overrides})


def test_two_generations_end_to_end(sources, tmp_path):
    labeled, unlabeled, test = sources
    out = tmp_path / "run"
    summary = iterate(config(), labeled, unlabeled, test, out_dir=out)
    gens = summary["generations"]
    assert [g["generation"] for g in gens] == [0, 1]
    # 20 rows per predicted class (a 4-step teacher predicts few classes)
    assert gens[0]["pseudo_labeled"] == 0 and gens[1]["pseudo_labeled"] % 20 == 0
    assert gens[1]["pseudo_labeled"] >= 20
    assert all(0 <= g["test_accuracy"] <= g["test_top5"] <= 1 for g in gens)
    assert json.loads((out / "summary.json").read_text()) == summary
    for path in ("iterate.json", "gen0/train/teacher.eqx", "gen1/labels/job.json",
                 "gen1/balance/balance.json", "gen1/train/teacher.eqx", "report.md",
                 "accuracy.png"):
        assert os.path.exists(out / path), path
    steps = [json.loads((out / f"gen{g}/train/summary.json").read_text())["steps"]
             for g in (0, 1)]  # fmt: skip
    assert steps == [4, 4]  # 80 labeled / 8 per batch = 10 steps an epoch, 0.4 epochs
    # a rerun of the finished run trains nothing again and says the same
    before = os.path.getmtime(out / "gen1/train/teacher.eqx")
    assert iterate(config(), labeled, unlabeled, test, out_dir=out) == summary
    assert os.path.getmtime(out / "gen1/train/teacher.eqx") == before
    with pytest.raises(ValueError, match="another IterateConfig"):
        iterate(config(top_k=2), labeled, unlabeled, test, out_dir=out)


def test_online_mode_runs_the_teacher_inside_the_student_step(sources, tmp_path):
    # the official code's mode: no store, no balancing, every unlabeled image, targets from
    # the teacher in the step
    labeled, unlabeled, test = sources
    out = tmp_path / "online"
    gens = iterate(config(online=True), labeled, unlabeled, test, out_dir=out)["generations"]
    assert [g["pseudo_labeled"] for g in gens] == [0, len(unlabeled)]
    assert not os.path.exists(out / "gen1/labels") and not os.path.exists(out / "gen1/balance")
    metrics = [json.loads(line) for line in (out / "gen1/train/metrics.jsonl").read_text()
               .splitlines() if '"loss"' in line]  # fmt: skip
    assert metrics and all(m["unlabeled_loss"] > 0 for m in metrics)


def test_fixres_stage_and_no_balancing(sources, tmp_path):
    # generation 1: every pseudo-labeled image once (the ablation without balancing), then a
    # FixRes fine-tune at 48 px scored at 48 px; generation 1 stays the next teacher
    labeled, unlabeled, test = sources
    out = tmp_path / "fixres"
    gens = iterate(config(balance_mode="none", fixres_generations=(1,), fixres_epochs=0.2,
                          fixres_resolution=48), labeled, unlabeled, test,
                   out_dir=out)["generations"]  # fmt: skip
    assert gens[1]["pseudo_labeled"] == len(unlabeled) and "fixres_accuracy" not in gens[0]
    assert gens[1]["fixres_resolution"] == 48 and 0 <= gens[1]["fixres_accuracy"] <= 1
    tuned = json.loads((out / "gen1/fixres/summary.json").read_text())
    assert tuned["test_top1"] == gens[1]["fixres_accuracy"] and tuned["steps"] == 2
    assert not (out / "gen1/balance").exists()
    assert "48" in (out / "report.md").read_text()
    with pytest.raises(ValueError, match="fixres_generations must be a tuple"):
        config(fixres_generations=(2,))


def test_inputs_refused_before_any_work(sources, tmp_path):
    labeled, unlabeled, test = sources
    with pytest.raises(ValueError, match="test must be a labeled source"):
        iterate(config(), labeled, unlabeled, unlabeled, out_dir=tmp_path / "a")
    with pytest.raises(ValueError, match="more than the config's num_classes 5"):
        iterate(IterateConfig(student=tiny_config(num_classes=5)), labeled, unlabeled, test,
                out_dir=tmp_path / "b")
    with pytest.raises(ValueError, match="generations must be a non-empty tuple"):
        IterateConfig(generations=())
    with pytest.raises(ValueError, match="balance_mode"):
        IterateConfig(balance_mode="best")
    with pytest.raises(TypeError, match="online"):
        IterateConfig(online="yes")
    assert not os.path.exists(tmp_path / "a") and not os.path.exists(tmp_path / "b")
