"""The training commands of `nsjax` end to end on real digits, in-process through `main(argv)`:
`train` then `evaluate`, `iterate` from a config file with overrides, the plan line, the
table and the report, and the inputs refused before any work."""

import json
import os

import jax
import pytest

from nsjax.cli import main
from nsjax.loop import IterateConfig, format_table
from nsjax.models import B0_BLOCKS
from tests.train._runs import digit_sources, tiny_config


def _student(**overrides):
    return tiny_config(**{**dict(steps_per_epoch=None, epochs=0.4, unlabeled_ratio=2.0,
                                 log_every=5, blocks=B0_BLOCKS[:1], head_channels=64),
                          **overrides})


@pytest.fixture
def data(tmp_path):
    digit_sources(tmp_path, 80, 240, 80)
    return {name: str(tmp_path / f"{short}.npz")
            for name, short in (("labeled", "l"), ("unlabeled", "u"), ("test", "t"))}


def test_train_then_evaluate(data, tmp_path, capsys):
    config = tmp_path / "teacher.json"
    _student(unlabeled_ratio=0.0).save(config)
    out = str(tmp_path / "teacher")
    assert main(["train", "--labeled", data["labeled"], "--test", data["test"], "--out", out,
                 "--config", str(config), "--set", "epochs=0.5", "--set", "seed=3"]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("Plan: b0(w0.25,d1) 32px 0.5ep batch 8 (small-image variant); "
                              f"10 classes, 80 labeled images of <= 32 px; {jax.device_count()} cpu "
                              "device(s).")
    assert "Trained 5 steps" in printed  # 80 / 8 = 10 steps an epoch
    saved = json.loads((tmp_path / "teacher" / "config.json").read_text())
    assert (saved["epochs"], saved["seed"]) == (0.5, 3)
    summary = json.loads((tmp_path / "teacher" / "summary.json").read_text())
    assert main(["evaluate", os.path.join(out, "teacher.eqx"), data["test"]]) == 0
    scores = json.loads(capsys.readouterr().out.splitlines()[0])
    assert scores["count"] == 80 and scores["resolution"] == 32
    # the same EMA model, the same 80 images: the run's own final score
    assert scores["top1"] == pytest.approx(summary["test_top1"])
    # FixRes: fine-tune at 40 px (8 labeled epochs of 10 steps * 0.2: 2 steps), scored there
    tuned = str(tmp_path / "fixres")
    assert main(["finetune", os.path.join(out, "teacher.eqx"), "--labeled", data["labeled"],
                 "--test", data["test"], "--out", tuned, "--resolution", "40",
                 "--epochs", "0.2", "--freeze-blocks", "1"]) == 0
    assert "Fine-tuned 2 steps" in capsys.readouterr().out
    saved = json.loads((tmp_path / "fixres" / "config.json").read_text())
    assert (saved["resolution"], saved["freeze_blocks"], saved["randaugment_magnitude"]) == (
        40, 1, None)
    assert main(["evaluate", os.path.join(tuned, "teacher.eqx"), data["test"]]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[0])["resolution"] == 40
    # robustness of both teacher files, each at its own resolution, on the same corruptions
    report = tmp_path / "robust"
    assert main(["evaluate", "--robustness", os.path.join(out, "teacher.eqx"),
                 os.path.join(tuned, "teacher.eqx"), "--data", data["test"],
                 "--corruptions", "contrast,jpeg_compression", "--severities", "1,5",
                 "--epsilons", "2", "--pgd-steps", "2", "--max-images", "20",
                 "--out", str(report)]) == 0
    printed = capsys.readouterr().out
    results = json.loads((report / "robustness.json").read_text())
    assert list(results) == ["teacher", "fixres"]
    assert [results[k]["resolution"] for k in results] == [32, 40]
    assert results["teacher"]["count"] == 20
    assert results["teacher"]["corruptions"].keys() == {"contrast", "jpeg_compression"}
    assert results["fixres"]["pgd"] == {"epsilons": [2.0], "steps": 2,
                                        "accuracy": results["fixres"]["pgd"]["accuracy"]}
    assert "| condition | teacher | fixres |" in printed
    assert (report / "robustness.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("argv, message", [
    (["t.eqx"], "a teacher file and the test images (or --data PATH), got 1 paths"),
    (["t.eqx", "u.eqx", "--data", "d.npz"], "several teacher files need --robustness"),
    (["--robustness", "t.eqx", "--data", "d.npz", "--corruptions", "fog,fogg"],
     "--corruptions: unknown ['fogg']; valid: gaussian_noise, "),
    (["--robustness", "t.eqx", "--data", "d.npz", "--severities", "0,1"],
     "--severities must be integers in 1..5"),
    (["--robustness", "t.eqx", "--data", "d.npz", "--epsilons", "2,-1"],
     "--epsilons must be >= 0"),
])
def test_evaluate_refuses_bad_flags_with_status_2(capsys, argv, message):
    with pytest.raises(SystemExit) as exit:
        main(["evaluate", *argv])
    assert exit.value.code == 2 and message in capsys.readouterr().err


def test_iterate_from_a_config_file_with_overrides(data, tmp_path, capsys):
    config = IterateConfig(student=_student(), generations=({}, {}), per_class=20,
                           min_confidence=0.0, top_k=3, label_batch=16)  # fmt: skip
    path = tmp_path / "iterate.json"
    path.write_text(config.to_json())
    out = tmp_path / "run"
    argv = ["iterate", "--labeled", data["labeled"], "--unlabeled", data["unlabeled"],
            "--test", data["test"], "--out", str(out), "--config", str(path),
            "--set", "gen1.epochs=0.2", "--set", "top_k=2"]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert printed.splitlines()[0].startswith("Plan: b0(w0.25,d1) 32px 0.4ep batch 8 -> "
                                              "b0(w0.25,d1) 32px 0.2ep batch 8+16")
    saved = IterateConfig.from_json((out / "iterate.json").read_text())
    assert saved.top_k == 2 and saved.generation_config(1).epochs == 0.2
    assert saved.generation_config(0).epochs == 0.4
    summary = json.loads((out / "summary.json").read_text())
    assert [g["generation"] for g in summary["generations"]] == [0, 1]
    assert format_table(summary) in printed
    assert (out / "report.md").exists() and (out / "accuracy.png").exists()


@pytest.mark.parametrize("argv, message", [
    (["--set", "epochs"], "--set takes FIELD=VALUE"),
    (["--set", "colour=1"], "unknown IterateConfig or TrainConfig field(s) ['colour']"),
    (["--set", "gen7.epochs=1"], "the run has generations 0...2, got 7"),
    (["--models", "b0,b9"], "comma-separated model names"),
])
def test_bad_flags_exit_2_before_any_work(data, tmp_path, capsys, argv, message):
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as exit:
        main(["iterate", "--labeled", data["labeled"], "--unlabeled", data["unlabeled"],
              "--test", data["test"], "--out", str(out), *argv])
    assert exit.value.code == 2 and message in capsys.readouterr().err
    assert not out.exists()


def test_bad_inputs_return_1_before_any_work(data, tmp_path, capsys):
    import numpy as np

    out = tmp_path / "run"
    np.savez(tmp_path / "more.npz", images=np.zeros((4, 8, 8), np.uint8),
             labels=np.array([0, 1, 2, 11]))
    common = ["--unlabeled", data["unlabeled"], "--out", str(out)]
    # a test set with a class the labeled set lacks
    assert main(["iterate", "--labeled", data["labeled"], "--test", str(tmp_path / "more.npz"),
                 *common]) == 1
    assert "test has 12 classes, more than the config's num_classes 10" in capsys.readouterr().err
    # a labeled source without labels
    assert main(["iterate", "--labeled", data["unlabeled"], "--test", data["test"],
                 *common]) == 1
    assert "labels" in capsys.readouterr().err
    assert not out.exists()


def test_a_student_on_a_store_and_one_with_a_teacher_in_the_step(data, tmp_path, capsys):
    # offline: nsjax label, then train --pseudo (every row); online: train --teacher
    from nsjax.train import export_teacher
    from tests.pseudo._teacher import tiny_teacher

    teacher = tiny_teacher()
    export_teacher(tmp_path / "teacher.eqx", teacher.model, teacher.state)
    store = str(tmp_path / "store")
    assert main(["label", str(tmp_path / "teacher.eqx"), data["unlabeled"], store,
                 "--top-k", "3"]) == 0
    config = tmp_path / "student.json"
    _student(epochs=0.2).save(config)
    common = ["--labeled", data["labeled"], "--unlabeled", data["unlabeled"], "--config",
              str(config)]
    assert main(["train", *common, "--pseudo", store, "--out", str(tmp_path / "off")]) == 0
    assert main(["train", *common, "--teacher", str(tmp_path / "teacher.eqx"),
                 "--out", str(tmp_path / "on")]) == 0
    assert capsys.readouterr().out.count("Trained 2 steps") == 2
    for run in ("off", "on"):
        metrics = (tmp_path / run / "metrics.jsonl").read_text().splitlines()
        assert all(json.loads(m)["unlabeled_loss"] > 0 for m in metrics if '"loss"' in m)
    # a student needs exactly one source of targets
    with pytest.raises(SystemExit):
        main(["train", *common, "--out", str(tmp_path / "x")])
    assert "one of --pseudo (offline) and --teacher (online)" in capsys.readouterr().err
