"""Sharded training equals one-device training: the same 3 steps on 1 device, data parallel and
FSDP on the 2 simulated devices (default suite); on 1 device, data parallel and FSDP on 8
devices, and FSDP along a separate `model` axis of a 4x2 mesh (slow, in an 8-device
subprocess); every leaf of the final `TrainState` (parameters, BN
statistics, optimizer state, EMA, step, key) within 1e-5. Also: a batch that does not divide
over the mesh's devices is refused before any step."""

import json

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from nsjax.train import fit, make_mesh, shard_batch
from tests.train import _runs

STEPS = 3
ATOL = 1e-5


def sharded_names(spec_by_leaf: dict[str, str], axis: str) -> list[str]:
    return [name for name, spec in spec_by_leaf.items() if repr(axis) in spec]


def test_two_devices_data_parallel_and_fsdp_equal_one_device():
    """Both split each batch over the 2 in-process devices (`data`); data parallel replicates
    the state, FSDP shards the large parameters, their optimizer moments and their EMA."""
    assert len(jax.devices()) == 2, "tests/conftest.py gives two simulated CPU devices"
    finals = {}
    for name, devices, fsdp in (("one", 1, False), ("dp", 2, False), ("fsdp", 2, True)):
        config = _runs.tiny_config(fsdp=fsdp)
        mesh = make_mesh(devices=jax.devices()[:devices])
        state, metrics, steps = _runs.train_steps(config, mesh, _runs.step_batches(config, STEPS),
                                                  compiler_options=_runs.FAST_COMPILE)
        assert int(state.step) == STEPS
        assert np.isfinite(float(metrics["loss"]))
        # the state keeps the shardings `jit_steps` pinned (out_shardings), step after step
        assert _runs.specs(state) == _runs.specs(steps.shardings), name
        finals[name] = (_runs.leaves(state), _runs.specs(state), float(metrics["loss"]))

    one, one_specs, one_loss = finals["one"]
    fsdp_specs = finals["fsdp"][1]
    assert not sharded_names(one_specs, "data")
    assert not sharded_names(finals["dp"][1], "data")
    fsdp_sharded = sharded_names(fsdp_specs, "data")
    assert {"model.head.weight", "model.classifier.weight"} <= set(fsdp_sharded), fsdp_specs
    for part in ("model.", "opt_state.", "ema_params."):
        assert any(n.startswith(part) for n in fsdp_sharded), (part, fsdp_sharded)
    assert all(fsdp_specs[n] == str(P()) for n in fsdp_specs if n.startswith("bn_state"))
    for name in ("dp", "fsdp"):
        got, _, loss = finals[name]
        _runs.assert_leaves_close(got, one, atol=ATOL, what=f"{name} on 2 devices vs one")
        assert abs(loss - one_loss) < ATOL


def test_shard_batch_refuses_a_batch_not_divisible_by_the_data_axis():
    mesh = make_mesh()
    with pytest.raises(ValueError, match=r"batch\['images'\].*divisible by the mesh's device count 2"
                                         r".*got 7"):  # fmt: skip
        shard_batch(dict(images=np.zeros((7, 32, 32, 3), np.uint8)), mesh)


def test_fit_refuses_a_batch_not_divisible_by_the_data_axis_before_any_work(tmp_path):
    """A labeled batch of 7 on 2 devices: a clear ValueError before any step, and before
    `out_dir` is written, so that the corrected config can run there (a saved config.json
    of a run that never started would refuse it as "another config")."""
    config = _runs.tiny_config(labeled_batch=7, unlabeled_ratio=0.0, steps_per_epoch=2)
    images, labels = _runs.digits(16)
    out = tmp_path / "run"
    with pytest.raises(ValueError, match="divisible by the mesh's device count 2"):
        fit(config, dict(images=images, labels=labels), out_dir=str(out))
    assert not (out / "metrics.jsonl").exists()
    assert not (out / "config.json").exists(), "the refused config was saved into out_dir"


@pytest.mark.slow
def test_eight_devices_data_parallel_fsdp_and_model_axis_equal_one_device(tmp_path):
    variants = [dict(name="one", devices=1, fsdp=False),
                dict(name="dp8", devices=8, fsdp=False),
                dict(name="fsdp8", devices=8, fsdp=True),
                dict(name="fsdp4x2", devices=8, model=2, fsdp=True)]  # fmt: skip
    args = dict(devices=8, steps=STEPS, out=str(tmp_path), variants=variants)
    _runs.run("variants", args, log=tmp_path / "variants.log", timeout=900)

    one = _runs.load_leaves(tmp_path / "one.npz")
    specs = {v["name"]: json.loads((tmp_path / f"{v['name']}.json").read_text()) for v in variants}
    assert not sharded_names(specs["dp8"], "data")
    assert sharded_names(specs["fsdp8"], "data")
    # with a model axis, FSDP shards the state along it (batches over both axes), never along data
    assert sharded_names(specs["fsdp4x2"], "model")
    assert not sharded_names(specs["fsdp4x2"], "data")
    assert int(one["step"]) == STEPS
    for name in ("dp8", "fsdp8", "fsdp4x2"):
        got = _runs.load_leaves(tmp_path / f"{name}.npz")
        _runs.assert_leaves_close(got, one, atol=ATOL, what=f"{name} vs one device")
