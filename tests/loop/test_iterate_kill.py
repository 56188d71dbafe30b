"""`nsjax iterate` killed with SIGKILL in the middle of a student's training, then rerun with
the same command: nothing finished is redone, and the run ends as an uninterrupted one does
(the same accuracies, the same final model bit for bit)."""

import json
import signal
import subprocess
import sys
import time

import jax
import numpy as np

from nsjax.cli import main
from nsjax.loop import IterateConfig
from nsjax.models import B0_BLOCKS
from nsjax.train import load_teacher
from tests.train._runs import ROOT, digit_sources, tiny_config


def _argv(data, out, config) -> list[str]:
    return ["iterate", "--labeled", f"{data}/l.npz", "--unlabeled", f"{data}/u.npz",
            "--test", f"{data}/t.npz", "--out", str(out), "--config", str(config)]


def test_a_killed_iterate_rerun_ends_as_an_uninterrupted_one(tmp_path, capsys):
    digit_sources(tmp_path, 80, 240, 80)
    student = tiny_config(steps_per_epoch=None, epochs=0.4, unlabeled_ratio=2.0, log_every=2,
                          checkpoint_every=2, blocks=B0_BLOCKS[:1], head_channels=64)
    config = IterateConfig(student=student, generations=({}, {"epochs": 1.0}), per_class=20,
                           min_confidence=0.0, top_k=3, label_batch=16)  # fmt: skip
    (tmp_path / "iterate.json").write_text(config.to_json())
    killed = tmp_path / "killed"
    code = ("import sys, jax\n"
            "jax.config.update('jax_num_cpu_devices', 2)  # as this test process\n"
            f"jax.config.update('jax_compilation_cache_dir', "
            f"{jax.config.jax_compilation_cache_dir!r})\n"
            "from nsjax.cli import main\n"
            f"sys.exit(main({_argv(tmp_path, killed, tmp_path / 'iterate.json')!r}))\n")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.DEVNULL)
    first = killed / "gen1" / "train" / "checkpoints" / "2"  # the student's first checkpoint
    deadline = time.monotonic() + 300
    while not first.exists():
        assert proc.poll() is None and time.monotonic() < deadline, "the run ended early"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "summary.json").exists()
    teacher_before = (killed / "gen0" / "train" / "teacher.eqx").stat().st_mtime_ns
    labels_before = (killed / "gen1" / "labels" / "job.json").stat().st_mtime_ns

    assert main(_argv(tmp_path, killed, tmp_path / "iterate.json")) == 0  # the same command
    whole = tmp_path / "whole"
    assert main(_argv(tmp_path, whole, tmp_path / "iterate.json")) == 0
    capsys.readouterr()
    # generation 0 and the labels were finished before the kill: kept, not redone
    assert (killed / "gen0" / "train" / "teacher.eqx").stat().st_mtime_ns == teacher_before
    assert (killed / "gen1" / "labels" / "job.json").stat().st_mtime_ns == labels_before
    # the student resumed from its checkpoint (step 2 was logged once, before the kill)
    logged = [json.loads(line)["step"] for line in
              (killed / "gen1" / "train" / "metrics.jsonl").read_text().splitlines()
              if '"loss"' in line]  # fmt: skip
    assert logged.count(2) == 1 and logged[-1] == 10  # 80 / 8 = 10 steps an epoch
    same = ("generation", "model", "pseudo_labeled", "test_accuracy", "test_top5")
    got, want = (json.loads((run / "summary.json").read_text())["generations"]
                 for run in (killed, whole))  # fmt: skip
    assert [{k: g[k] for k in same} for g in got] == [{k: g[k] for k in same} for g in want]
    models = [load_teacher(run / "gen1" / "train" / "teacher.eqx") for run in (killed, whole)]
    for a, b in zip(*(jax.tree.leaves(m) for m in models)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
