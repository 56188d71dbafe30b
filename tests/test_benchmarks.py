"""The benchmark harness runs and writes its JSON report (timings are never asserted)."""

import json

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


def test_randaugment_device_check_finds_no_difference(tmp_path):
    # Without an accelerator it checks the batched executor (GPU/TPU) against the per-image
    # one on the four policies; the single ops are only checked on an accelerator.
    out = tmp_path / "check.json"
    assert check_randaugment.main(["--batch", "4", "--out", str(out)]) == 0
    rows = json.loads(out.read_text())
    assert len(rows) == 4 and all(r["differ"] == 0 and r["pixels"] > 0 for r in rows)
