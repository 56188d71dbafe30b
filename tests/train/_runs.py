"""Shared pieces of the sharding, multi-process and resume tests: the tiny config, the digits
data, the persistent compilation cache, and the subprocess entry points
(`python -m tests.train._runs <command> <json arguments>`).

A subprocess sets its JAX flags (device count, compilation cache) from its arguments before
any JAX computation, then runs one command and writes its results (NumPy `.npz` files) into
the folder it is given. Subprocesses of one test share one cache folder, so only the first
of several identical compilations pays for it.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]


# The tiny student: B0's first two stages at width 0.25 (3 blocks, dropout and drop-path on
# as B0's), 32 px, and a wide head (2048 -> 512 channels at width 0.25) so that the head and
# the classifier (4096 and 5120 weights) are large enough for FSDP to shard (>= 4096).
# Offline targets, no RandAugment and no precise BN keep the compiled programs few and small.
TINY = dict(width=0.25, head_channels=2048, small_image=True, resolution=32, num_classes=10,
            labeled_batch=8, unlabeled_ratio=1.0, steps_per_epoch=10, epochs=1.0,
            compute_dtype="float32", randaugment_magnitude=None, precise_bn_batches=0)

# XLA's CPU compiler takes ~15 s of CPU for one train step of the tiny student by default (45 s
# with 7 stages); the classic (non-"fusion emitter") codegen at LLVM -O0 takes ~4 s, and a step
# runs slower (~0.5 s instead of ~0.1 s), which these few-step tests prefer. Subprocesses get
# them as XLA_FLAGS; in-process tests pass them to `Lowered.compile`.
FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_cpu_use_fusion_emitters": False}
FAST_XLA_FLAGS = " ".join(f"--{k}={str(v).lower()}" for k, v in FAST_COMPILE.items())
# For runs of many steps: the classic codegen at the default -O2 (~9 s of CPU, ~0.1 s a step).
MANY_STEPS_XLA_FLAGS = "--xla_cpu_use_fusion_emitters=false"


def tiny_config(**overrides):
    """The tiny student's `TrainConfig`, with `overrides`."""
    from nsjax.models import B0_BLOCKS
    from nsjax.train import TrainConfig

    return TrainConfig(**{**TINY, "blocks": B0_BLOCKS[:2], **overrides})


# ----------------------------------------------------------------------------- data
_DATA: dict[str, np.ndarray] = {}  # in a subprocess: what `save_data` wrote


def digits(n: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 8x8 digits as uint8 `[N, 32, 32, 3]` images (0..16 scaled to 0..255,
    each pixel repeated 4x4, grey on 3 channels) and int32 labels `[N]`."""
    if _DATA:
        return _DATA["digits_images"][:n], _DATA["digits_labels"][:n]
    from sklearn.datasets import load_digits

    d = load_digits()
    grey = np.round(d.images[:n] * (255 / 16)).astype(np.uint8)
    images = np.repeat(np.repeat(grey, 4, axis=1), 4, axis=2)
    return np.stack([images] * 3, axis=-1), d.target[:n].astype(np.int32)


def step_batches(config, count: int, seed: int = 0) -> list[dict[str, np.ndarray]]:
    """`count` fixed global training batches of digits with random offline soft targets."""
    images, labels = digits()
    rng = np.random.default_rng(seed)
    b_l, b_u = config.labeled_batch, config.unlabeled_batch
    out = []
    for _ in range(count):
        idx = rng.choice(len(images), b_l + b_u, replace=False)
        targets = rng.dirichlet(np.ones(config.num_classes), b_u).astype(np.float32)
        out.append(dict(images=images[idx[:b_l]], labels=labels[idx[:b_l]],
                        unlabeled_images=images[idx[b_l:]], unlabeled_targets=targets))
    return out


def fit_data(n_labeled: int = 64, n_unlabeled: int = 64, num_classes: int = 10, seed: int = 0):
    """`(labeled, unlabeled)` for `fit`: digits, and other digits with random soft targets."""
    if _DATA:
        return (dict(images=_DATA["labeled_images"], labels=_DATA["labeled_labels"]),
                dict(images=_DATA["unlabeled_images"], targets=_DATA["unlabeled_targets"]))
    images, labels = digits()
    rng = np.random.default_rng(seed)
    targets = rng.dirichlet(np.ones(num_classes), n_unlabeled).astype(np.float32)
    labeled = dict(images=images[:n_labeled], labels=labels[:n_labeled])
    unlabeled = dict(images=images[n_labeled:n_labeled + n_unlabeled], targets=targets)
    return labeled, unlabeled


def save_data(folder: str | os.PathLike) -> str:
    """`fit_data()` and the digits saved into `folder/data.npz` for subprocesses (importing
    scikit-learn takes seconds); returns the path."""
    (labeled, unlabeled), (images, labels) = fit_data(), digits()
    path = os.path.join(folder, "data.npz")
    np.savez(path, labeled_images=labeled["images"], labeled_labels=labeled["labels"],
             unlabeled_images=unlabeled["images"], unlabeled_targets=unlabeled["targets"],
             digits_images=images, digits_labels=labels)  # fmt: skip
    return path


def _load_data(args: dict) -> None:
    """In a subprocess: the data `save_data` wrote, instead of scikit-learn's."""
    if args.get("data"):
        with np.load(args["data"]) as f:
            _DATA.update(f)


# ----------------------------------------------------------------------------- state as arrays
def leaves(tree) -> dict[str, np.ndarray]:
    """Every array leaf of `tree` as NumPy, by its path (typed keys as their key data); arrays
    spread over several processes are gathered first (collective then)."""
    import equinox as eqx
    import jax
    from jax.experimental import multihost_utils

    out = {}
    for path, x in jax.tree_util.tree_flatten_with_path(tree)[0]:
        if not eqx.is_array(x):
            continue
        if jax.numpy.issubdtype(x.dtype, jax.dtypes.prng_key):
            x = jax.random.key_data(x)
        if not x.is_fully_addressable:
            x = multihost_utils.process_allgather(x, tiled=True)
        out[jax.tree_util.keystr(path, simple=True, separator=".")] = np.asarray(x)
    return out


def save_leaves(path: str | os.PathLike, tree) -> None:
    np.savez(path, **leaves(tree))


def load_leaves(path: str | os.PathLike) -> dict[str, np.ndarray]:
    with np.load(path) as f:
        return dict(f)


def assert_leaves_close(got: dict, want: dict, *, atol: float = 1e-5, what: str = "") -> None:
    assert sorted(got) == sorted(want), f"{what}: different leaves"
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=0, atol=atol,
                                   err_msg=f"{what}: leaf {name}")  # fmt: skip


def assert_leaves_equal(got: dict, want: dict, *, what: str = "") -> None:
    assert sorted(got) == sorted(want), f"{what}: different leaves"
    for name in want:
        assert got[name].dtype == want[name].dtype, f"{what}: leaf {name} dtype"
        np.testing.assert_array_equal(got[name], want[name], err_msg=f"{what}: leaf {name}")


# ----------------------------------------------------------------------------- subprocesses
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def start(command: str, args: dict, *, log: str | os.PathLike,
          xla_flags: str = FAST_XLA_FLAGS) -> subprocess.Popen:  # fmt: skip
    """`python -m tests.train._runs command args` in the repository root, its stdout and
    stderr into the file `log`, in its own process group, with `xla_flags` as XLA_FLAGS (the
    device count comes from `args["devices"]`)."""
    full_env = dict(os.environ, XLA_FLAGS=xla_flags)
    full_env["PYTHONUNBUFFERED"] = "1"
    with open(log, "wb") as f:
        return subprocess.Popen([sys.executable, "-m", "tests.train._runs", command,
                                 json.dumps(args)], cwd=ROOT, env=full_env, stdout=f,
                                stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip


def tail(log: str | os.PathLike, chars: int = 6000) -> str:
    try:
        return Path(log).read_text(errors="replace")[-chars:]
    except FileNotFoundError:
        return "<no log>"


def kill(proc: subprocess.Popen) -> None:
    """Kill `proc` and its process group (children it started) if still running."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()


def finish(procs: list[subprocess.Popen], logs: list, *, timeout: float,
           expect_rc: int | None = 0, grace: float = 60) -> None:  # fmt: skip
    """Wait for every process, at most `timeout` seconds, and `grace` seconds after the first
    one fails (the others may wait for it in a collective); then kill what still runs. Fails
    with every log's tail on a timeout or, unless `expect_rc` is None, on an exit code other
    than `expect_rc`."""
    deadline = time.monotonic() + timeout
    failure = None
    try:
        while any(p.poll() is None for p in procs):
            if time.monotonic() > deadline:
                failure = f"subprocesses still running after {timeout} s"
                break
            if any(p.poll() not in (None, 0) for p in procs):
                deadline = min(deadline, time.monotonic() + grace)
            time.sleep(0.1)
    finally:
        for p in procs:
            kill(p)
    codes = [p.returncode for p in procs]
    if failure is None and expect_rc is not None and any(c != expect_rc for c in codes):
        failure = f"exit codes {codes}, expected {expect_rc}"
    if failure:
        logs_text = "\n".join(f"----- {log}\n{tail(log)}" for log in logs)
        raise AssertionError(f"{failure}\n{logs_text}")


def run(command: str, args: dict, *, log, timeout: float, expect_rc: int | None = 0,
        xla_flags: str = FAST_XLA_FLAGS) -> None:  # fmt: skip
    proc = start(command, args, log=log, xla_flags=xla_flags)
    finish([proc], [log], timeout=timeout, expect_rc=expect_rc)


# ----------------------------------------------------------------------------- training
def train_steps(config, mesh, batches, *, compiler_options: dict | None = None):
    """`len(batches)` training steps from `init_state(config, key(0))` on `mesh`, this process
    feeding its share (`1/P` of the rows, in process order) of each global batch.

    `compiler_options` (e.g. `FAST_COMPILE`) compiles `steps.train` ahead of time with those
    XLA options (same program, shardings and donation); None calls `steps.train` itself.

    **Returns:** `(state, metrics, steps)`: the final state, the last step's metrics, the
    `Steps`.
    """
    import jax

    from nsjax.train import init_state, jit_steps, shard_batch

    state = init_state(config, jax.random.key(0))  # fresh: placing may alias, training donates
    steps = jit_steps(state, mesh)
    if jax.process_count() == 1:
        state = steps.place(state)
    else:  # `Steps.place` (`jax.device_put`) refuses shardings over other processes' devices
        state = jax.jit(lambda s: s, out_shardings=steps.shardings)(state)
    p, i = jax.process_count(), jax.process_index()
    sharded = [shard_batch({k: np.split(v, p)[i] for k, v in b.items()}, mesh) for b in batches]
    train = steps.train
    if compiler_options is not None:
        train = train.lower(state, sharded[0]).compile(compiler_options)
    metrics = None
    for batch in sharded:
        state, metrics = train(state, batch)
    return state, metrics, steps


def specs(tree) -> dict[str, str]:
    """Each array leaf's `PartitionSpec` (as text), by path; `tree` may also be a pytree of
    `NamedSharding`s."""
    import jax

    out = {}
    for path, x in jax.tree_util.tree_flatten_with_path(tree)[0]:
        sharding = x if isinstance(x, jax.sharding.Sharding) else getattr(x, "sharding", None)
        if sharding is not None:
            out[jax.tree_util.keystr(path, simple=True, separator=".")] = str(sharding.spec)
    return out


# ----------------------------------------------------------------------------- child side
def _setup_jax(args: dict) -> None:
    import jax

    jax.config.update("jax_numpy_rank_promotion", "raise")  # as tests/conftest.py
    if args.get("devices"):
        jax.config.update("jax_num_cpu_devices", args["devices"])
    if args.get("cache"):
        jax.config.update("jax_compilation_cache_dir", args["cache"])
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
    if args.get("num_processes"):
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(coordinator_address=f"localhost:{args['port']}",
                                   num_processes=args["num_processes"],
                                   process_id=args["process_id"],
                                   initialization_timeout=60)  # fmt: skip


def _config(args: dict):
    return tiny_config(**args.get("config", {}))


def cmd_variants(args: dict) -> None:
    """For each of `args["variants"]` (`name`, `devices`: how many of the local devices,
    `model`: the mesh's model axis, `fsdp`), `args["steps"]` training steps; every final
    state's leaves into `out/<name>.npz`, their partition specs into `out/<name>.json`."""
    import jax

    from nsjax.train import make_mesh

    for v in args["variants"]:
        config = tiny_config(**{**args.get("config", {}), "fsdp": v["fsdp"]})
        mesh = make_mesh(model=v.get("model", 1), devices=jax.devices()[:v["devices"]])
        batches = step_batches(config, args["steps"])
        state, _, _ = train_steps(config, mesh, batches)
        save_leaves(os.path.join(args["out"], v["name"] + ".npz"), state)
        Path(args["out"], v["name"] + ".json").write_text(json.dumps(specs(state)))
        print(f"variant {v['name']} done", flush=True)


def cmd_multiprocess(args: dict) -> None:
    """One process of a multi-process run (or the one-process reference): `steps` training
    steps over every device of every process; process 0 writes the final state's leaves into
    `out/steps.npz` (and their specs into `steps.json`). Then, with `fit_dir`, `fit` into it:
    process 0 writes fit's final state into `out/fit.npz` (a process whose `fit` raises writes
    the traceback into `out/fit_error_<process>.txt`), and the state the processes restore
    from the last checkpoint into `out/restored.npz`."""
    import traceback

    import jax

    from nsjax.train import fit, make_mesh

    config = _config(args)
    mesh = make_mesh()
    state, _, _ = train_steps(config, mesh, step_batches(config, args["steps"]))
    arrays = leaves(state)  # collective
    index = jax.process_index()
    if index == 0:
        np.savez(os.path.join(args["out"], "steps.npz"), **arrays)
        Path(args["out"], "steps.json").write_text(json.dumps(specs(state)))
    print(f"process {index}: steps done", flush=True)
    if args.get("fit_dir"):
        labeled, unlabeled = fit_data()
        try:
            state, _ = fit(config, labeled, unlabeled, out_dir=args["fit_dir"], mesh=mesh)
            arrays = leaves(state)
        except Exception:
            Path(args["out"], f"fit_error_{index}.txt").write_text(traceback.format_exc())
            raise
        if index == 0:
            np.savez(os.path.join(args["out"], "fit.npz"), **arrays)
        print(f"process {index}: fit done", flush=True)
        # the last checkpoint, restored by the same processes into the run's shardings
        restored, _ = restore_latest(config, os.path.join(args["fit_dir"], "checkpoints"), mesh)
        restored = leaves(restored)
        if index == 0:
            np.savez(os.path.join(args["out"], "restored.npz"), **restored)


def restore_latest(config, directory: str, mesh=None):
    """The latest checkpoint in `directory`: `(state, data_state)`, the `TrainState` of
    `config` (key: `config.seed`) in the shardings `jit_steps` gives on `mesh` (None: on this
    process's first device) and this process's input-pipeline position."""
    import equinox as eqx
    import jax

    from nsjax.train import Checkpointer, init_state, state_shardings

    like = eqx.filter_eval_shape(init_state, config, jax.random.key(config.seed))
    if mesh is not None:
        shardings = state_shardings(like, mesh, fsdp=config.fsdp)
        like = jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
                            like, shardings)  # fmt: skip
    with Checkpointer(directory, keep=config.keep_checkpoints) as checkpoints:
        return checkpoints.restore(like)


class _Interrupter:
    """Sends this process SIGINT (Ctrl-C) once `out_dir/metrics.jsonl` has `after` more lines
    than when started, i.e. from inside `fit`'s loop."""

    def __init__(self, out_dir: str, after: int):
        import threading

        self.path = os.path.join(out_dir, "metrics.jsonl")
        self.target = count_lines(self.path) + after
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        while not self.done.wait(0.01):
            if count_lines(self.path) >= self.target:
                os.kill(os.getpid(), signal.SIGINT)
                return

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.done.set()
        self.thread.join()


def count_lines(path: str) -> int:
    try:
        with open(path) as f:
            return sum(1 for _ in f)
    except FileNotFoundError:
        return 0


def checkpoint_steps(out_dir: str | os.PathLike) -> list[int]:
    """The finished checkpoints' steps in `out_dir/checkpoints` (orbax's `<step>` folders; a
    save in progress or cut short is `<step>.orbax-checkpoint-tmp...`)."""
    folder = Path(out_dir, "checkpoints")
    if not folder.exists():
        return []
    return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit())


def metrics_steps(out_dir: str | os.PathLike) -> list[int]:
    """The `step` of every training record in `out_dir/metrics.jsonl`, in order."""
    path = Path(out_dir, "metrics.jsonl")
    if not path.exists():
        return []
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r["step"] for r in records if "loss" in r]


def cmd_fit(args: dict) -> None:
    """`fit` of the tiny config on `fit_data()` for each of `args["runs"]` in turn (`dir`,
    optionally `interrupt_after`: send this process SIGINT after that many new logged steps);
    what became of each run (`resumed_from`: the latest checkpoint's step before it, None for
    none; `finished` with its step, or `interrupted` with the message) into `args["report"]`,
    as JSON."""
    import contextlib

    from nsjax.train import fit

    config = _config(args)
    labeled, unlabeled = fit_data()
    report = []
    for run in args["runs"]:
        entry = dict(dir=run["dir"], resumed_from=max(checkpoint_steps(run["dir"]), default=None))
        after = run.get("interrupt_after")
        watch = _Interrupter(run["dir"], after) if after else contextlib.nullcontext()
        try:
            with watch:
                state, _ = fit(config, labeled, unlabeled, out_dir=run["dir"])
        except KeyboardInterrupt as e:
            entry["interrupted"] = str(e)
        else:
            entry["finished"] = int(state.step)
        report.append(entry)
        print(f"run: {entry}", flush=True)
    if args.get("report"):
        Path(args["report"]).write_text(json.dumps(report))


def main(argv: list[str]) -> None:
    command, args = argv[1], json.loads(argv[2])
    _setup_jax(args)
    _load_data(args)
    {"variants": cmd_variants, "multiprocess": cmd_multiprocess, "fit": cmd_fit}[command](args)
    print(f"done: {command}", flush=True)


if __name__ == "__main__":
    main(sys.argv)


def digit_sources(folder, labeled: int, unlabeled: int, test: int):
    """The first `labeled + unlabeled + test` digits as three npz sources in `folder`: labeled,
    unlabeled (no labels) and test, in that order."""
    from nsjax.data import NpzSource

    images, labels = digits(labeled + unlabeled + test)
    cuts = np.cumsum([labeled, unlabeled])
    np.savez(f"{folder}/l.npz", images=images[:cuts[0]], labels=labels[:cuts[0]])
    np.savez(f"{folder}/u.npz", images=images[cuts[0]:cuts[1]])
    np.savez(f"{folder}/t.npz", images=images[cuts[1]:], labels=labels[cuts[1]:])
    return (NpzSource(f"{folder}/l.npz"), NpzSource(f"{folder}/u.npz", labeled=False),
            NpzSource(f"{folder}/t.npz"))
