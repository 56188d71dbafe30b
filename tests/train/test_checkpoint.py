"""`Checkpointer`: bitwise round trips (typed keys, static fields), keep-last-K, async saves,
resharding on restore, per-process data state, crash atomicity, and its errors."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
from jax.sharding import NamedSharding, PartitionSpec

from nsjax.train._checkpoint import Checkpointer


class Inner(eqx.Module):
    weight: jax.Array
    activation: object  # a function: not an array, comes back from `like`


class State(eqx.Module):
    inner: Inner
    bias: jax.Array
    step: jax.Array
    key: jax.Array
    keys: jax.Array
    name: str = eqx.field(static=True)


def make_state(seed: int = 0, rows: int = 4) -> State:
    k = jax.random.key(seed)
    return State(
        inner=Inner(jax.random.normal(k, (rows, 3), jnp.float32), jax.nn.relu),
        bias=jnp.arange(3, dtype=jnp.float32) + seed,
        step=jnp.array(seed, jnp.int32),
        key=jax.random.key(seed),
        keys=jax.random.split(jax.random.key(seed + 1, impl="rbg"), 4),
        name="run",
    )


def assert_bitwise_equal(a, b):
    la, ta = jax.tree_util.tree_flatten(a)
    lb, tb = jax.tree_util.tree_flatten(b)
    assert ta == tb
    for x, y in zip(la, lb):
        if eqx.is_array(x):
            assert x.dtype == y.dtype and x.shape == y.shape
            if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
                assert jax.random.key_impl(x) == jax.random.key_impl(y)
                x, y = jax.random.key_data(x), jax.random.key_data(y)
            assert np.asarray(x).tobytes() == np.asarray(y).tobytes()
        else:
            assert x is y


@pytest.mark.parametrize("async_save", [True, False])
def test_round_trip_is_bitwise(tmp_path, async_save):
    state = make_state(3)
    with Checkpointer(tmp_path, keep=2, async_save=async_save) as ckpt:
        assert ckpt.save(7, state)
        restored, data_state = ckpt.restore(eqx.filter_eval_shape(make_state, 0))
    assert data_state is None
    assert_bitwise_equal(restored, state)
    assert jax.random.key_impl(restored.keys) == jax.random.key_impl(state.keys)  # rbg
    with Checkpointer(tmp_path, keep=2) as fresh:  # a new process sees the same
        assert fresh.latest_step() == 7
        assert_bitwise_equal(fresh.restore(state)[0], state)


def test_leaves_come_back_as_like_has_them(tmp_path):
    state = {"counts": np.arange(3, dtype=np.int32), "w": jnp.ones(2, jnp.bfloat16)}
    with Checkpointer(tmp_path, keep=1) as ckpt:
        ckpt.save(0, state)
        as_numpy, _ = ckpt.restore(jax.tree.map(np.asarray, state))
        abstract, _ = ckpt.restore(eqx.filter_eval_shape(lambda: state))
    assert all(isinstance(x, np.ndarray) for x in as_numpy.values())
    assert all(isinstance(x, jax.Array) for x in abstract.values())
    for restored in (as_numpy, abstract):
        assert {k: np.asarray(x).tobytes() for k, x in restored.items()} == \
            {k: np.asarray(x).tobytes() for k, x in state.items()}  # fmt: skip


def test_keeps_the_last_k(tmp_path):
    with Checkpointer(tmp_path, keep=2) as ckpt:
        for step in range(5):
            ckpt.save(step, make_state(step))
        ckpt.wait()
        assert ckpt.all_steps() == [3, 4]
        assert ckpt.latest_step() == 4
        assert_bitwise_equal(ckpt.restore(make_state(), step=3)[0], make_state(3))
    assert sorted(p for p in os.listdir(tmp_path) if p.isdigit()) == ["3", "4"]


def test_async_save_then_restore_without_waiting(tmp_path):
    ckpt = Checkpointer(tmp_path, keep=1, async_save=True)
    ckpt.save(1, make_state(1), data_state={"next_index": 11})
    restored, data_state = ckpt.restore(make_state())  # waits for the save in flight
    ckpt.close()
    assert_bitwise_equal(restored, make_state(1))
    assert data_state == {"next_index": 11}


def test_an_old_step_is_skipped_and_an_existing_one_refused(tmp_path):
    with Checkpointer(tmp_path, keep=3) as ckpt:
        assert ckpt.save(5, make_state(5))
        assert not ckpt.save(4, make_state(4))
        with pytest.raises(ValueError, match="step 5 is already saved"):
            ckpt.save(5, make_state(6), force=True)
        assert ckpt.all_steps() == [5]


def test_data_state_round_trip_one_file_per_process(tmp_path, monkeypatch):
    # The JSON is written in orbax's background thread: hold it until `data` has changed.
    changed, write = threading.Event(), ocp.JsonCheckpointHandler._save_fn

    async def write_once_changed(self, x, directory):
        changed.wait(timeout=10)
        await write(self, x, directory)

    monkeypatch.setattr(ocp.JsonCheckpointHandler, "_save_fn", write_once_changed)
    data = {"parents": [{"next_index": 3}, {"next_index": 0}], "seed": 7, "name": "u"}
    with Checkpointer(tmp_path, keep=2, async_save=True) as ckpt:
        ckpt.save(2, make_state(), data_state=data)
        data["seed"] = 99  # changed after save returned: the saved copy is the old one
        changed.set()
        ckpt.wait()
        assert ckpt.restore(make_state())[1] == {**data, "seed": 7}
    saved = json.loads((tmp_path / "2" / "data" / "process_0-of-1.json").read_text())
    assert saved == {"data_state": {**data, "seed": 7}}


def test_data_state_of_another_process_count_is_a_clear_error(tmp_path):
    with Checkpointer(tmp_path, keep=1) as ckpt:
        ckpt.save(0, make_state(), data_state={"i": 0})
    folder = tmp_path / "0" / "data"
    os.rename(folder / "process_0-of-1.json", folder / "process_0-of-2.json")
    with Checkpointer(tmp_path, keep=1) as ckpt:
        with pytest.raises(FileNotFoundError, match="no data state for process 0 of 1"):
            ckpt.restore(make_state())


def mesh_1d():
    return jax.make_mesh((2,), ("d",), axis_types=(jax.sharding.AxisType.Auto,))


def placed(state: State, spec: PartitionSpec) -> State:
    """`state` with its weight, bias and keys placed by `spec` on two devices."""
    sharding = NamedSharding(mesh_1d(), spec)
    return eqx.tree_at(lambda s: (s.inner.weight, s.keys), state,
                       replace_fn=lambda x: jax.device_put(x, sharding))  # fmt: skip


def abstract_on(state: State, spec: PartitionSpec) -> State:
    sharding = NamedSharding(mesh_1d(), spec)
    like = eqx.filter_eval_shape(lambda: state)
    return eqx.tree_at(lambda s: (s.inner.weight, s.keys), like,
                       replace_fn=lambda x: x.update(sharding=sharding))  # fmt: skip


@pytest.mark.parametrize("saved_spec, restored_spec",
                         [(PartitionSpec(), PartitionSpec("d")),
                          (PartitionSpec("d"), PartitionSpec())])  # fmt: skip
def test_restore_into_another_sharding(tmp_path, saved_spec, restored_spec):
    assert len(jax.devices()) == 2
    state = placed(make_state(2), saved_spec)
    with Checkpointer(tmp_path, keep=1) as ckpt:
        ckpt.save(0, state)
        restored, _ = ckpt.restore(abstract_on(state, restored_spec))
    target = NamedSharding(mesh_1d(), restored_spec)
    for leaf in (restored.inner.weight, restored.keys):
        assert leaf.sharding.is_equivalent_to(target, leaf.ndim)
    n_shards = 2 if restored_spec == PartitionSpec("d") else 1
    assert {s.data.shape[0] for s in restored.inner.weight.addressable_shards} == {4 // n_shards}
    assert_bitwise_equal(restored, make_state(2))


def test_mismatched_like_is_refused_by_name(tmp_path):
    with Checkpointer(tmp_path, keep=1) as ckpt:
        ckpt.save(0, make_state())
        with pytest.raises(ValueError, match=r"inner\.weight: checkpoint has float32\[4, 3\], "
                                             r"like has float32\[5, 3\]"):  # fmt: skip
            ckpt.restore(make_state(rows=5))
        wrong_dtype = eqx.tree_at(lambda s: s.step, make_state(), jnp.array(0, jnp.int16))
        with pytest.raises(ValueError, match=r"step: checkpoint has int32\[\], like has int16"):
            ckpt.restore(wrong_dtype)
        wrong_impl = eqx.tree_at(lambda s: s.key, make_state(), jax.random.key(0, impl="rbg"))
        with pytest.raises(ValueError, match=r"key: checkpoint has key<fry>\[\], like has key<rbg"):
            ckpt.restore(wrong_impl)
        with pytest.raises(ValueError, match=r"inner\.weight: in the checkpoint .* not in like"):
            ckpt.restore(eqx.tree_at(lambda s: s.inner.weight, make_state(), None))
        with pytest.raises(ValueError, match=r"extra: not in the checkpoint"):
            ckpt.restore({"bias": make_state().bias, "extra": jnp.zeros(2)})


def test_no_checkpoint_is_a_clear_error(tmp_path):
    with Checkpointer(tmp_path / "missing", keep=1) as ckpt:
        assert ckpt.latest_step() is None and ckpt.all_steps() == []
        with pytest.raises(FileNotFoundError, match=f"no checkpoint in {tmp_path / 'missing'}"):
            ckpt.restore(make_state())
        ckpt.save(3, make_state())
        with pytest.raises(FileNotFoundError, match=r"no checkpoint for step 2 .* \[3\]"):
            ckpt.restore(make_state(), step=2)


def test_bad_arguments_are_refused_by_name(tmp_path):
    with pytest.raises(ValueError, match="keep must be >= 1, got 0"):
        Checkpointer(tmp_path, keep=0)
    with pytest.raises(TypeError, match="async_save must be a bool"):
        Checkpointer(tmp_path, keep=1, async_save=1)
    with Checkpointer(tmp_path, keep=1) as ckpt:
        with pytest.raises(TypeError, match="data_state must be a JSON-able dict"):
            ckpt.save(0, make_state(), data_state={"x": object()})
        with pytest.raises(ValueError, match="step must be >= 0, got -1"):
            ckpt.save(-1, make_state())
        with pytest.raises(ValueError, match="state must hold at least one array"):
            ckpt.save(0, {"lr": 0.1})
        assert ckpt.all_steps() == []


# A child process saves step 1, then starts step 2 and is SIGKILLed while step 2 is being
# written: its data-state file is on disk, orbax has not committed (renamed) the step.
CHILD = textwrap.dedent("""
    import sys, time
    import jax, jax.numpy as jnp
    import orbax.checkpoint as ocp
    from nsjax.train._checkpoint import Checkpointer

    def state(seed):
        return {"w": jnp.full((512, 1024), seed, jnp.float32), "key": jax.random.key(seed)}

    ckpt = Checkpointer(sys.argv[1], keep=3)
    ckpt.save(1, state(1), data_state={"step": 1})
    ckpt.wait()
    original = ocp.JsonCheckpointHandler._save_fn

    async def save_then_hang(self, x, directory):
        await original(self, x, directory)
        print("WRITING", flush=True)
        time.sleep(60)

    ocp.JsonCheckpointHandler._save_fn = save_then_hang
    ckpt.save(2, state(2), data_state={"step": 2})
    ckpt.wait()
""")


def test_a_crash_mid_write_leaves_the_previous_checkpoint(tmp_path):
    with subprocess.Popen([sys.executable, "-c", CHILD, str(tmp_path)], stdout=subprocess.PIPE,
                          stderr=subprocess.DEVNULL, text=True) as child:  # fmt: skip
        try:
            assert child.stdout.readline().strip() == "WRITING"
            on_disk = set(os.listdir(tmp_path))
            assert "1" in on_disk and "2" not in on_disk
            assert "2.orbax-checkpoint-tmp" in on_disk  # the unfinished step 2
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait(timeout=30)
    with Checkpointer(tmp_path, keep=3) as ckpt:
        assert ckpt.latest_step() == 1 and ckpt.all_steps() == [1]
        like = {"w": jnp.zeros((512, 1024), jnp.float32), "key": jax.random.key(0)}
        restored, data_state = ckpt.restore(like)
        assert data_state == {"step": 1}
        assert np.all(np.asarray(restored["w"]) == 1.0)
        assert jax.random.key_data(restored["key"]).tolist() == \
            jax.random.key_data(jax.random.key(1)).tolist()  # fmt: skip
        ckpt.save(2, like, data_state={"step": 2})  # the broken step is written anew
        assert ckpt.restore(like)[1] == {"step": 2}
