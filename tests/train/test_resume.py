"""Kill and resume: a `fit` run killed (SIGKILL) at a random step, then stopped with Ctrl-C
(SIGINT), then rerun to the end, finishes with a `TrainState` bitwise equal to an uninterrupted
run's, and logs the same loss at every step, re-run steps included.

The student trains under dropout and drop-path (the per-step key's draws), on labeled digits
and unlabeled digits with random offline soft targets, over more than one epoch of each
input pipeline (the grain iterators' positions are restored too); FSDP on two simulated
devices, so the state is restored into its shardings; checkpoints every 2 (3) steps, so a
killed run re-runs the steps after its last one. RandAugment is off (compile time).

The kill step is random; its seed is printed (shown on failure) and set by NSJAX_RESUME_SEED.
"""

import json
import os
import random
import signal
import time
from pathlib import Path

import numpy as np
import pytest

from nsjax.train import load_teacher
from tests.train import _runs

DEVICES = 2
SPE = 8  # fit_data() holds 64 labeled images: 8 batches of 8 per epoch


def _seed() -> int:
    seed = int(os.environ.get("NSJAX_RESUME_SEED", random.SystemRandom().randrange(2**16)))
    print(f"resume test seed: {seed} (rerun with NSJAX_RESUME_SEED={seed})")
    return seed


def _config_args(seed: int, steps: int, checkpoint_every: int) -> dict:
    return dict(steps_per_epoch=SPE, epochs=steps / SPE, log_every=1,
                checkpoint_every=checkpoint_every, keep_checkpoints=2, seed=seed, fsdp=True)


def _common(tmp_path, config_args: dict) -> dict:
    """The subprocesses' arguments: 2 devices, the test's compilation cache, the data."""
    return dict(devices=DEVICES, cache=str(tmp_path / "cache"), config=config_args,
                data=_runs.save_data(tmp_path))  # fmt: skip


def _start(args: dict, log):
    return _runs.start("fit", args, log=log, xla_flags=_runs.MANY_STEPS_XLA_FLAGS)


def _run(args: dict, log) -> None:
    _runs.run("fit", args, log=log, timeout=600, xla_flags=_runs.MANY_STEPS_XLA_FLAGS)


def _interrupt_when(proc, out_dir, lines: int, sig: int, *, log, timeout: float = 300) -> int:
    """Send `sig` to `proc` once `out_dir/metrics.jsonl` has `lines` records and, for SIGKILL,
    a checkpoint is committed (saves are asynchronous: a fast step can log past the step of a
    save still being written), SIGKILL to its process group; fails with its log if it exits
    first. Returns the records seen then."""
    path = os.path.join(out_dir, "metrics.jsonl")
    deadline = time.monotonic() + timeout
    while True:
        seen = _runs.count_lines(path)
        if seen >= lines and (sig != signal.SIGKILL or _runs.checkpoint_steps(out_dir)):
            if sig == signal.SIGKILL:
                os.killpg(proc.pid, signal.SIGKILL)
            else:
                os.kill(proc.pid, sig)
            return seen
        if proc.poll() is not None or time.monotonic() > deadline:
            _runs.kill(proc)
            raise AssertionError(f"the run ended (exit {proc.returncode}) or timed out before "
                                 f"{lines} logged steps (saw {seen})\n{_runs.tail(log)}")
        time.sleep(0.01)


def _restore(config_args: dict, out_dir) -> dict[str, np.ndarray]:
    """The latest checkpoint of `out_dir` as NumPy leaves, restored on this process's first
    device."""
    config = _runs.tiny_config(**config_args)
    state, data_state = _runs.restore_latest(config, os.path.join(out_dir, "checkpoints"))
    assert set(data_state) == {"labeled", "unlabeled"}
    return _runs.leaves(state)


def _losses(out_dir) -> list[tuple[int, float]]:
    lines = Path(out_dir, "metrics.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    return [(r["step"], r["loss"]) for r in records if "loss" in r]


def _check_same_as_reference(config_args: dict, run_dir, ref_dir, total: int, seed: int) -> None:
    assert _runs.checkpoint_steps(run_dir)[-1] == total
    assert _runs.checkpoint_steps(ref_dir)[-1] == total
    got, want = _restore(config_args, run_dir), _restore(config_args, ref_dir)
    assert int(want["step"]) == total
    _runs.assert_leaves_equal(got, want, what=f"resumed vs uninterrupted (seed {seed})")
    # every logged step, re-run ones included, has the uninterrupted run's loss, bitwise
    reference = dict(_losses(ref_dir))
    assert sorted(reference) == list(range(1, total + 1))
    for step, loss in _losses(run_dir):
        assert loss == reference[step], f"step {step} (seed {seed})"
    # the exported teachers (EMA model + BN statistics) are equal too
    teachers = [load_teacher(os.path.join(d, "teacher.eqx")) for d in (run_dir, ref_dir)]
    _runs.assert_leaves_equal(*map(_runs.leaves, teachers), what="teacher.eqx")


def _resumptions(out_dir) -> list[int]:
    """The steps a rerun started from where the logged step sequence goes back (a rerun after
    Ctrl-C continues the sequence)."""
    steps = _runs.metrics_steps(out_dir)
    return [b - 1 for a, b in zip(steps, steps[1:]) if b != a + 1]


def test_sigkill_then_ctrl_c_then_rerun_is_bitwise_the_uninterrupted_run(tmp_path):
    seed = _seed()
    total = 12  # 1.5 epochs of each pipeline
    kill_at = random.Random(seed).randint(3, 6)
    config_args = _config_args(seed, total, checkpoint_every=2)
    common = _common(tmp_path, config_args)
    run_dir, ref_dir = str(tmp_path / "run"), str(tmp_path / "ref")

    # 1. a run killed with SIGKILL (no chance to clean up) after `kill_at` logged steps
    log1 = tmp_path / "killed.log"
    proc = _start(dict(common, runs=[dict(dir=run_dir)]), log1)
    try:
        _interrupt_when(proc, run_dir, kill_at, signal.SIGKILL, log=log1)
    finally:
        _runs.kill(proc)
    assert proc.returncode == -signal.SIGKILL
    killed_logged = _runs.metrics_steps(run_dir)
    after_kill = _runs.checkpoint_steps(run_dir)
    assert after_kill and after_kill[-1] <= killed_logged[-1] < total, (after_kill, killed_logged)

    # 2. in one process (sharing its compilation): rerun, Ctrl-C after 2 more steps; rerun to
    # the end; then the uninterrupted reference run
    report_path = tmp_path / "report.json"
    runs = [dict(dir=run_dir, interrupt_after=2), dict(dir=run_dir), dict(dir=ref_dir)]
    _run(dict(common, runs=runs, report=str(report_path)), tmp_path / "resumed.log")
    interrupted, finished, reference = json.loads(report_path.read_text())

    # the rerun resumed from the last checkpoint the killed run had committed
    assert interrupted["resumed_from"] == after_kill[-1]
    # Ctrl-C: a checkpoint of the step it stopped at, then KeyboardInterrupt
    assert "checkpoint saved" in interrupted["interrupted"], interrupted
    stopped = int(interrupted["interrupted"].split("stopped at step ")[1].split(";")[0])
    assert after_kill[-1] < stopped < total
    assert finished["resumed_from"] == stopped
    assert finished["finished"] == total and reference["finished"] == total
    assert reference["resumed_from"] is None
    # logged: the killed run's steps, then from its last checkpoint on without a gap (the
    # rerun after Ctrl-C continues where it stopped)
    resumed = list(range(after_kill[-1] + 1, total + 1))
    assert _runs.metrics_steps(run_dir) == killed_logged + resumed
    _check_same_as_reference(config_args, run_dir, ref_dir, total, seed)


@pytest.mark.slow
def test_three_sigkills_and_a_ctrl_c_each_in_its_own_process(tmp_path):
    """24 steps (3 epochs), checkpoints every 3, each interruption a fresh process, as a
    preempted job's restarts."""
    seed = _seed()
    total = 24
    rng = random.Random(seed)
    config_args = _config_args(seed, total, checkpoint_every=3)
    common = _common(tmp_path, config_args)
    run_dir, ref_dir = str(tmp_path / "run"), str(tmp_path / "ref")
    _run(dict(common, runs=[dict(dir=ref_dir)]), tmp_path / "ref.log")

    starts = []  # each process's resume point: the latest finished checkpoint, 0 for none
    plan = [signal.SIGKILL, signal.SIGKILL, signal.SIGINT, signal.SIGKILL, None]
    for i, sig in enumerate(plan):
        starts.append(max(_runs.checkpoint_steps(run_dir), default=0))
        before = len(_runs.metrics_steps(run_dir))
        log = tmp_path / f"run{i}.log"
        proc = _start(dict(common, runs=[dict(dir=run_dir)]), log)
        try:
            if sig is None:
                _runs.finish([proc], [log], timeout=600)
                assert f"'finished': {total}" in _runs.tail(log)
            else:
                _interrupt_when(proc, run_dir, before + rng.randint(1, 5), sig, log=log)
            if sig == signal.SIGINT:  # it checkpoints the step it stopped at, then exits
                _runs.finish([proc], [log], timeout=120)
                assert "'interrupted': 'stopped at step" in _runs.tail(log)
                assert _runs.checkpoint_steps(run_dir)[-1] == _runs.metrics_steps(run_dir)[-1]
        finally:
            _runs.kill(proc)
        new = _runs.metrics_steps(run_dir)[before:]
        assert new == list(range(starts[-1] + 1, starts[-1] + 1 + len(new))), (i, starts, new)
    print(f"runs started from steps {starts}")
    _check_same_as_reference(config_args, run_dir, ref_dir, total, seed)
