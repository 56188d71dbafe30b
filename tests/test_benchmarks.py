"""The benchmark harness runs and writes its JSON report (timings are never asserted)."""

import json
import os
import subprocess
import sys

import pytest

from benchmarks import check_randaugment, run


def test_harness_runs_and_writes_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert run.main(["--quick", "--repeats", "1", "--only", "losses,noise_depth", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["machine"]["backend"] == "cpu"
    names = [f["name"] for f in report["figures"]]
    assert any(n.startswith("soft_cross_entropy") for n in names)
    assert any(n.startswith("drop_path") for n in names)
    for f in report["figures"]:
        assert f["seconds"] > 0 and f["items"] > 0
        assert f["speedup_vs_peer"] is None or f["speedup_vs_peer"] > 0
    assert "speedup" in capsys.readouterr().out


def test_unknown_benchmark_name_is_an_error(tmp_path):
    assert run.main(["--only", "no-such-benchmark", "--out", str(tmp_path / "x.json")]) == 2


@pytest.mark.slow  # 40 s; on CPU it repeats test_randaugment's executor-agreement tests
def test_randaugment_device_check_finds_no_difference(tmp_path):
    # Without an accelerator it checks the batched executor (GPU/TPU) against the per-image
    # one on the four policies; the single ops are only checked on an accelerator.
    out = tmp_path / "check.json"
    assert check_randaugment.main(["--batch", "4", "--out", str(out)]) == 0
    rows = json.loads(out.read_text())
    assert len(rows) == 4 and all(r["differ"] == 0 and r["pixels"] > 0 for r in rows)


def test_train_benchmark_imports_without_grain_or_orbax():
    # The GPU image has neither; `nsjax.train` loads them only for the loop and checkpoints.
    code = ("import sys\n"
            "for m in ('grain', 'orbax', 'orbax.checkpoint'): sys.modules[m] = None\n"
            "from benchmarks import bench_train, plan_l2\n"
            "eng = bench_train.engine()\n"
            "assert eng.missing == ['grain', 'orbax.checkpoint'], eng.missing\n"
            "assert callable(eng.train_step) and callable(eng.jit_steps)\n"
            "import nsjax.train\n"
            "try:\n    nsjax.train.fit\nexcept ImportError:\n    pass\n"
            "else:\n    raise AssertionError('fit imported without grain')\n")  # fmt: skip
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]


def test_plan_l2_arithmetic_on_a_small_model():
    import jax

    from benchmarks import bench_train, plan_l2

    eng = bench_train.engine()
    config = eng.TrainConfig(model="b0", width=0.25, depth=0.25, resolution=32, num_classes=10,
                             labeled_batch=2, steps_per_epoch=10)  # fmt: skip
    state = plan_l2.abstract_state(eng, config)
    mesh = eng.make_mesh(devices=jax.devices()[:2])
    replicated = plan_l2.state_bytes_per_device(eng, state, mesh, fsdp=False)
    sharded = plan_l2.state_bytes_per_device(eng, state, mesh, fsdp=True)
    assert sum(replicated.values()) - replicated["gradients"] == plan_l2.tree_bytes(state)
    assert 0 < sum(sharded.values()) < sum(replicated.values())
    acts = plan_l2.activation_residuals(config, jax.numpy.bfloat16)
    assert acts["full_per_image"] > acts["remat_per_image"] > 0
    assert acts["whole_model_at_1_image"] == pytest.approx(acts["pieces_at_1_image"], rel=1e-3)
    est = plan_l2.estimate(replicated, acts, 4)
    assert est["total"] > est["total_remat"] > est["state"] > 0


@pytest.mark.slow
def test_train_step_benchmark_runs_a_tiny_model():
    from benchmarks import bench_train

    eng = bench_train.engine()
    config = bench_train.make_config(eng, labeled_batch=1, resolution=32, dtype="float32",
                                     randaugment=True, width=0.25, depth=0.25, num_classes=10)  # fmt: skip
    runners = {"offline": bench_train.StepRunner(eng, config),
               "online": bench_train.StepRunner(eng, config, online=True)}  # fmt: skip
    times = bench_train.measure_steps(runners, steps=1, rounds=1)
    assert all(t > 0 for t, _ in times.values()) and all(r.loss > 0 for r in runners.values())


def test_profile_summary_sums_device_events_per_step_by_name_and_kind():
    from benchmarks import profile_step

    names = {1: "/host:CPU", 2: "/device:GPU:0"}
    events = [
        {"ph": "X", "pid": 2, "name": "fusion.1", "dur": 30.0},
        {"ph": "X", "pid": 2, "name": "fusion.1", "dur": 30.0},
        {"ph": "X", "pid": 2, "name": "fusion.7", "dur": 20.0},
        {"ph": "X", "pid": 2, "name": "cudnn_conv", "dur": 120.0},
        {"ph": "X", "pid": 1, "name": "fusion.1", "dur": 999.0},  # host side: not device time
    ]
    summary = profile_step.summarise(events, names, steps=2)
    assert summary["source"] == "device" and summary["busy_us_per_step"] == 100.0
    rows = {r["name"]: r for r in summary["kernels"]}
    assert rows["cudnn_conv"]["us_per_step"] == 60.0 and rows["cudnn_conv"]["share"] == 0.6
    assert rows["fusion.1"]["calls_per_step"] == 1.0
    kinds = {r["kind"]: r["us_per_step"] for r in profile_step.by_kind(summary["kernels"])}
    assert kinds == {"cudnn_conv": 60.0, "fusion": 40.0}
    # Without a device process (XLA:CPU), the events XLA named are summed instead.
    cpu = profile_step.summarise(events[:1] + [{"ph": "X", "pid": 1, "name": "PjitFunction",
                                                "dur": 5.0}], {1: "/host:CPU"}, steps=1)
    assert cpu["source"].startswith("host") and cpu["busy_us_per_step"] == 30.0


def test_fixres_device_check_bounds():
    from benchmarks import check_fixres

    row = {"dtype": "uint8", "values": 100_000, "differ": 10, "max_diff": 1.0}
    assert check_fixres.within_bounds(row)
    assert not check_fixres.within_bounds(row | {"max_diff": 2.0})
    assert not check_fixres.within_bounds(row | {"differ": 11})
    assert check_fixres.within_bounds({"dtype": "float32", "max_diff": 1e-4})
    assert not check_fixres.within_bounds({"dtype": "float32", "max_diff": 0.01})
