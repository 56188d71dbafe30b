"""The end-to-end Noisy Student step (`nsjax.train.train_step`, jitted once by `jit_steps`, the
state donated) in images/s, labeled + unlabeled images per step, beside timm's B0 train step
from `peers.py` measured in the same run.

EfficientNet-B0 at 224 px, labeled batch B, unlabeled 3B, one forward pass over the 4B images,
dropout + drop-path + EMA + RMSProp, in four variants:

- `offline, all noise`: RandAugment (2 layers, M=27) inside the step, soft offline targets;
- `offline, RandAugment off`: the same step without RandAugment (the images arrive augmented,
  e.g. from the input pipeline); the difference is RandAugment's in-step cost per image;
- `online teacher`: all noise, the targets from a B0 teacher (eval mode) run inside the step on
  the clean (un-augmented) unlabeled images;
- `RandAugment alone`: `nsjax.noise.randaugment` jitted on the same 4B images, for reference.

bfloat16 compute on an accelerator, float32 on the CPU (XLA's CPU has no fast bf16 path).
B = 64 on an accelerator (4B = 256 images, the batch of peers.py's timm step), 4 on the CPU;
`--quick`: B = 2 at 128 px. Override with LABELED_BS= (B), RES=, STEPS=. The batch is
placed on the device once and reused: the input pipeline is not timed.

The peer (timm `efficientnet_b0`, bf16 autocast, channels-last, SGD-momentum, no augmentation,
no EMA, no drop-path) trains on 4B images at the same resolution when run from here; under
`benchmarks/gpu.sh` its figures come from `$PEERS_JSON` (batch 256 at 224 px). The ratio is
nsjax images/s / the best timm train step (compiled on GPU) images/s, same call.

The GPU image has no grain or orbax, which `import nsjax.train` pulls in (`_batches`,
`_checkpoint`); where either is missing the engine's step modules are loaded without the
package's `__init__` (see `engine()`).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import statistics
import sys
import time
import types

import jax
import numpy as np

import nsjax
from benchmarks._harness import Figure, Options, register
from benchmarks.peers import run_peers
from nsjax import noise


def engine() -> types.SimpleNamespace:
    """The engine's config, state, step and mesh functions; `missing` lists grain / orbax when
    absent (the GPU image): `nsjax.train` loads them only for the loop and checkpoints."""
    missing = [m for m in ("grain", "orbax.checkpoint") if not _importable(m)]
    if missing:
        print(f"[train] {', '.join(missing)} not importable: the steps run without them",
              file=sys.stderr)  # fmt: skip
    import nsjax.train as train

    names = ("TrainConfig", "init_state", "make_mesh", "jit_steps", "shard_batch",
             "state_shardings", "train_step", "Teacher")  # fmt: skip
    return types.SimpleNamespace(missing=missing, **{n: getattr(train, n) for n in names})


def _importable(name: str) -> bool:
    if name in sys.modules:
        return sys.modules[name] is not None
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # a parent package that is missing (or set to None)
        return False


def sizes(opts: Options) -> tuple[int, int, int]:
    """(labeled batch B, resolution, timed steps)."""
    accel = jax.default_backend() != "cpu"
    batch = int(os.environ.get("LABELED_BS", 64 if accel else (2 if opts.quick else 4)))
    res = int(os.environ.get("RES", 224 if accel or not opts.quick else 128))
    steps = int(os.environ.get("STEPS", 30 if accel else (2 if opts.quick else 3)))
    return batch, res, steps


def make_config(eng, *, model: str = "b0", labeled_batch: int, resolution: int, dtype: str,
                randaugment: bool, **overrides):  # fmt: skip
    return eng.TrainConfig(model=model, num_classes=overrides.pop("num_classes", 1000),
                           resolution=resolution, labeled_batch=labeled_batch,
                           unlabeled_ratio=3.0, steps_per_epoch=1000, compute_dtype=dtype,
                           randaugment_layers=2,
                           randaugment_magnitude=27.0 if randaugment else None, **overrides)  # fmt: skip


def make_batch(config, *, online: bool, seed: int = 0) -> dict[str, np.ndarray]:
    """Random uint8 images, int labels and (offline) soft targets, on the host."""
    rng = np.random.default_rng(seed)
    s, b_l, b_u, c = config.image_size, config.labeled_batch, config.unlabeled_batch, config.num_classes
    batch = {
        "images": rng.integers(0, 256, (b_l, s, s, 3), dtype=np.uint8),
        "labels": rng.integers(0, c, (b_l,), dtype=np.int32),
        "unlabeled_images": rng.integers(0, 256, (b_u, s, s, 3), dtype=np.uint8),
    }
    if not online:
        logits = rng.standard_normal((b_u, c)).astype(np.float32)
        e = np.exp(logits - logits.max(-1, keepdims=True))
        batch["unlabeled_targets"] = e / e.sum(-1, keepdims=True)
    return batch


class StepRunner:
    """`jit_steps(state, mesh).train` of `config` on one device, compiled by the first call,
    with its donated state carried from call to call. With `online`, a teacher of the
    student's architecture (its own weights, eval mode) runs inside the step on the clean
    unlabeled images."""

    def __init__(self, eng, config, *, online: bool = False):
        mesh = eng.make_mesh(devices=jax.devices()[:1])
        state = eng.init_state(config, jax.random.key(0))
        self.steps = eng.jit_steps(state, mesh)
        self.state = self.steps.place(state)
        self.batch = eng.shard_batch(make_batch(config, online=online), mesh)
        self.args: tuple = ()
        if online:
            t_model, t_state = nsjax.models.efficientnet_from_config(
                config.model_config(), key=jax.random.key(1), num_classes=config.num_classes)
            teacher = eng.Teacher(t_model, t_state)
            self.args = (jax.device_put(teacher, eng.state_shardings(teacher, mesh, fsdp=False)),)
        self.metrics = None
        t0 = time.perf_counter()
        self.run(1)
        self.first = time.perf_counter() - t0  # trace + compile + one step
        self.run(2)  # warm-up

    def run(self, steps: int) -> float:
        """Mean seconds per step over `steps` steps, waited for at the end only (steps queue
        as they would in a training loop)."""
        t0 = time.perf_counter()
        for _ in range(steps):
            self.state, self.metrics = self.steps.train(self.state, self.batch, *self.args)
        jax.block_until_ready((self.state, self.metrics))
        return (time.perf_counter() - t0) / steps

    @property
    def loss(self) -> float:
        loss = float(self.metrics["loss"])
        if not np.isfinite(loss):
            raise FloatingPointError(f"the train step's loss is {loss}")
        return loss


def measure_steps(runners: dict[str, StepRunner], *, steps: int, rounds: int) -> dict[str, float]:
    """Median over `rounds` rounds of each runner's mean seconds per step over `steps` steps,
    the runners interleaved within a round so that load on a shared machine hits all alike;
    with the spread `(max - min) / median` of the rounds."""
    times: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(rounds):
        for name, runner in runners.items():
            times[name].append(runner.run(steps))
    return {name: (statistics.median(ts), (max(ts) - min(ts)) / statistics.median(ts))
            for name, ts in times.items()}  # fmt: skip


def measure_randaugment(batch: int, res: int, steps: int) -> float:
    """Mean seconds of `noise.randaugment` (N=2, M=27, jitted) on `batch` images."""
    x = jax.device_put(np.random.default_rng(0).integers(0, 256, (batch, res, res, 3), dtype=np.uint8))
    const = noise.relative_constants(res, res)
    fn = jax.jit(lambda k, x: noise.randaugment(k, x, num_layers=2, magnitude=27.0, **const))
    keys = list(jax.random.split(jax.random.key(0), steps + 1))  # eager key ops kept out of the timing
    jax.block_until_ready(fn(keys[-1], x))
    t0 = time.perf_counter()
    for k in keys[:steps]:
        out = fn(k, x)
    jax.block_until_ready(out)
    return (time.perf_counter() - t0) / steps


def best_peer(records: list[dict]) -> dict | None:
    """The fastest timm train-step record (eager or compiled) among `peers.py`'s lines."""
    train = [r for r in records if "_train_" in r.get("what", "") and "img_per_s" in r]
    return max(train, key=lambda r: r["img_per_s"], default=None)


@register("train_step")
def bench_train(opts: Options) -> list[Figure]:
    eng = engine()
    accel = jax.default_backend() != "cpu"
    b_l, res, steps = sizes(opts)
    dtype = "bfloat16" if accel else "float32"
    variants = [("offline, all noise", True, False), ("offline, RandAugment off", False, False),
                ("online B0 teacher, all noise", True, True)]  # fmt: skip
    runners = {}
    for name, ra, online in variants:
        config = make_config(eng, labeled_batch=b_l, resolution=res, dtype=dtype, randaugment=ra)
        runners[name] = StepRunner(eng, config, online=online)
        print(f"[train_step] {name}: first call {runners[name].first:.1f} s", file=sys.stderr,
              flush=True)
    rounds = 3 if accel or not opts.quick else 2
    per_step = measure_steps(runners, steps=steps, rounds=rounds)
    measured = {name: dict(step=per_step[name][0], spread=per_step[name][1], first=r.first, loss=r.loss)
                for name, r in runners.items()}  # fmt: skip
    del runners
    images = 4 * b_l  # labeled B + unlabeled 3B per step
    ra_alone = measure_randaugment(images, res, max(steps, 3))

    records = run_peers("train,compile" if accel else "train,train_f32", BS=images, RES=res,
                        STEPS=steps)
    peer = best_peer(records)
    peer_name = peer_s = None
    peer_extra: dict[str, object] = {"peer": "unavailable (no Python with torch+timm; "
                                             "set PEERS_PYTHON)"}  # fmt: skip
    if peer is not None:
        peer_name = peer["what"]
        peer_s = images / peer["img_per_s"]  # seconds for as many images at the peer's rate
        peer_extra = {"peer_img_per_s": round(peer["img_per_s"], 1),
                      "peer_batch": peer.get("batch"), "peer_res": peer.get("res"),
                      "peers": {r["what"]: round(r["img_per_s"], 1) for r in records
                                if "_train_" in r.get("what", "") and "img_per_s" in r}}  # fmt: skip

    setting = dict(model="b0", res=res, labeled_batch=b_l, unlabeled_batch=3 * b_l,
                   compute_dtype=dtype, steps=steps, rounds=rounds, quick=opts.quick)  # fmt: skip
    ra_cost = measured["offline, all noise"]["step"] - measured["offline, RandAugment off"]["step"]
    figures = []
    for name, m in measured.items():
        extra = dict(setting, first_call_s=round(m["first"], 1), loss=round(m["loss"], 3),
                     spread_of_rounds=round(m["spread"], 3))
        if name == "offline, all noise":
            extra |= peer_extra
            # the step difference; on a loaded CPU it is within the rounds' spread, and
            # "randaugment alone" below is the cleaner figure of RandAugment's own cost
            extra["randaugment_in_step_ms_per_img"] = round(ra_cost / images * 1e3, 4)
            extra["randaugment_in_step_share"] = round(ra_cost / m["step"], 4)
            extra["randaugment_alone_ms_per_img"] = round(ra_alone / images * 1e3, 4)
            extra["model_step_ms_per_img"] = round(
                measured["offline, RandAugment off"]["step"] / images * 1e3, 4)
        figures.append(Figure(f"b0 {name} {dtype} {res}px B={b_l}+{3 * b_l}", m["step"], images,
                              "img", peer=peer_name, peer_seconds=peer_s, extra=extra))
    model_step = measured["offline, RandAugment off"]["step"]
    figures.append(Figure(f"randaugment alone N=2 M=27 {res}px B={images}", ra_alone, images,
                          "img", extra={"share_of_model_step": round(ra_alone / model_step, 4)}))
    return figures
