"""A real two-process run on localhost (`jax.distributed`, CPU collectives over gloo, 2 devices
per process), each process feeding only its half of every batch:

- 3 FSDP training steps give the state that 4 simulated devices in one process give (within
  1e-5);
- `fit` in the two processes writes one orbax checkpoint (each process its shards and its
  input-pipeline position) that the two restore to exactly the state `fit` returned, and
  process 0 logs and exports the teacher.

The two processes and the one-process reference run once for the module, concurrently."""

import json
import os

import pytest

from nsjax.train import load_teacher
from tests.train import _runs

pytestmark = pytest.mark.slow

STEPS = 3
CONFIG = dict(fsdp=True, steps_per_epoch=STEPS, epochs=1.0, log_every=1, checkpoint_every=2)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("multiprocess")
    common = dict(devices=2, config=CONFIG, steps=STEPS, cache=str(tmp / "cache"),
                  data=_runs.save_data(tmp))  # fmt: skip
    out, ref, fit_dir = tmp / "out", tmp / "ref", tmp / "fit"
    out.mkdir()
    ref.mkdir()
    port = _runs.free_port()
    workers = [dict(common, num_processes=2, process_id=i, port=port, out=str(out),
                    fit_dir=str(fit_dir)) for i in range(2)]  # fmt: skip
    reference = dict(common, devices=4, out=str(ref))
    logs = [tmp / "process0.log", tmp / "process1.log", tmp / "reference.log"]
    procs = [_runs.start("multiprocess", args, log=log)
             for args, log in zip(workers + [reference], logs)]  # fmt: skip
    # `fit` may fail in the workers (checked by its own test); the steps must not
    _runs.finish(procs, logs, timeout=420, expect_rc=None)
    for path in (out / "steps.npz", ref / "steps.npz"):
        assert path.exists(), "\n".join(f"----- {log}\n{_runs.tail(log)}" for log in logs)
    return out, ref, fit_dir, logs


def test_two_processes_train_as_four_devices_in_one(runs):
    out, ref, _, _ = runs
    got, want = _runs.load_leaves(out / "steps.npz"), _runs.load_leaves(ref / "steps.npz")
    assert int(got["step"]) == STEPS
    _runs.assert_leaves_close(got, want, atol=1e-5, what="2 processes x 2 devices vs 4 devices")
    specs = json.loads((out / "steps.json").read_text())
    assert "'data'" in specs["model.classifier.weight"]  # FSDP over all 4 devices


def test_two_processes_fit_checkpoints_and_exports_together(runs):
    out, _, fit_dir, logs = runs
    errors = {p.name: p.read_text() for p in sorted(out.glob("fit_error_*.txt"))}
    assert not errors, "fit failed in the two-process run:\n" + "\n".join(
        f"----- {name}\n{text}" for name, text in errors.items())
    assert (out / "fit.npz").exists(), "\n".join(f"----- {log}\n{_runs.tail(log)}" for log in logs)

    # fit's final checkpoint, with each process's input-pipeline position
    step_dir = fit_dir / "checkpoints" / str(STEPS)
    assert step_dir.is_dir(), sorted(os.listdir(fit_dir / "checkpoints"))
    positions = [json.loads((step_dir / "data" / f"process_{i}-of-2.json").read_text())
                 for i in range(2)]  # fmt: skip
    assert all(p["data_state"]["labeled"] for p in positions)
    # ... which the two processes restore to the state fit returned, bitwise
    fitted = _runs.load_leaves(out / "fit.npz")
    assert int(fitted["step"]) == STEPS
    _runs.assert_leaves_equal(_runs.load_leaves(out / "restored.npz"), fitted,
                              what="restored by 2 processes vs fit's final state")  # fmt: skip
    # one process cannot resume it: the input positions are per process (documented)
    config = _runs.tiny_config(**CONFIG)
    with pytest.raises(FileNotFoundError, match="no data state for process 0 of 1"):
        _runs.restore_latest(config, str(fit_dir / "checkpoints"))
    # process 0 logged every step and exported the teacher (the EMA model)
    assert _runs.metrics_steps(fit_dir) == list(range(1, STEPS + 1))
    teacher = _runs.leaves(load_teacher(fit_dir / "teacher.eqx"))
    for name in ("classifier.weight", "head.weight"):  # FSDP-sharded over the 2 processes
        assert teacher[f"model.{name}"].tobytes() == fitted[f"ema_params.{name}"].tobytes()
