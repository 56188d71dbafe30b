"""Where a jitted EfficientNet-B0 train step spends its time: a JAX profiler trace of a few
steps, its device (or, on a CPU, its XLA) events summed by name. Prints the top kernels per
step and the step's throughput, as a fraction of a given bandwidth floor; writes JSON.

    python -m benchmarks.profile_step [--batch 256] [--steps 10] [--dtype bfloat16]
        [--floor-img-per-s 39000] [--out profile.json] [--top 30]

On an H200 the B0 step's memory-bandwidth floor is about 39k img/s (docs/benchmarks.md). The
step is `benchmarks.bench_models.make_train_step` (SGD-momentum, as timm's peer step).
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import re
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import optax

from benchmarks.bench_models import make_train_step
from nsjax import _malloc, models


def _events(trace_dir: str) -> tuple[list[dict], dict[int, str]]:
    """The complete ("X") events of the Perfetto trace JAX wrote, and process names by pid."""
    paths = glob.glob(os.path.join(trace_dir, "**", "*.trace.json.gz"), recursive=True)
    if not paths:
        raise FileNotFoundError(f"no *.trace.json.gz under {trace_dir}")
    with gzip.open(max(paths, key=os.path.getmtime), "rt") as f:
        trace = json.load(f)
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    names = {e["pid"]: e["args"]["name"] for e in events
             if e.get("ph") == "M" and e.get("name") == "process_name"}  # fmt: skip
    return [e for e in events if e.get("ph") == "X" and "dur" in e], names


def summarise(events: list[dict], process_names: dict[int, str], steps: int) -> dict:
    """Device events when the trace has a device process (GPU/TPU), else every event whose
    name XLA gave it (fusions, convolutions, custom calls): total microseconds per step."""
    device_pids = {pid for pid, n in process_names.items()
                   if "GPU" in n or "TPU" in n}  # fmt: skip
    if device_pids:
        chosen = [e for e in events if e["pid"] in device_pids]
    else:
        hlo_like = ("fusion", "convolution", "dot", "custom-call", "copy", "transpose", "reduce",
                    "scatter", "gather", "while", "conditional", "ynn", "xnn")  # fmt: skip
        chosen = [e for e in events if any(h in e["name"] for h in hlo_like)]
    totals: dict[str, float] = collections.defaultdict(float)
    counts: dict[str, int] = collections.Counter()
    for e in chosen:
        totals[e["name"]] += e["dur"]
        counts[e["name"]] += 1
    device_us = sum(totals.values())
    rows = sorted(({"name": n, "us_per_step": t / steps, "calls_per_step": counts[n] / steps,
                    "share": t / device_us if device_us else 0.0} for n, t in totals.items()),
                  key=lambda r: -r["us_per_step"])  # fmt: skip
    return {"source": "device" if device_pids else "host (XLA:CPU)", "events": len(chosen),
            "busy_us_per_step": device_us / steps, "kernels": rows}


def by_kind(kernels: list[dict]) -> list[dict]:
    """Kernels grouped by name without XLA's numeric suffix (`ynn_fusion.354` -> `ynn_fusion`):
    on a CPU, YNNPACK fusions (dots, reductions), transposes, loop fusions by their root ops."""
    totals: dict[str, list[float]] = collections.defaultdict(lambda: [0.0, 0.0, 0.0])
    for k in kernels:
        t = totals[re.sub(r"\.\d+$", "", k["name"])]
        t[0] += k["us_per_step"]
        t[1] += k["calls_per_step"]
        t[2] += k["share"]
    return sorted(({"kind": n, "us_per_step": t[0], "calls_per_step": t[1], "share": t[2]}
                   for n, t in totals.items()), key=lambda r: -r["us_per_step"])  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    accel = jax.default_backend() != "cpu"
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=256 if accel else 8)
    p.add_argument("--res", type=int, default=224)
    p.add_argument("--steps", type=int, default=10 if accel else 2)
    p.add_argument("--dtype", default="bfloat16" if accel else "float32")
    p.add_argument("--floor-img-per-s", type=float, default=39000.0)
    p.add_argument("--top", type=int, default=30)
    p.add_argument("--out")
    args = p.parse_args(argv)

    key = jax.random.key(0)
    model, state = models.efficientnet("b0", key=key)
    opt = optax.sgd(0.01, momentum=0.9)
    params, step = make_train_step(model, opt, getattr(jnp, args.dtype))
    carry = [params, opt.init(params), state]
    x = jax.random.normal(key, (args.batch, args.res, args.res, 3))
    y = jax.random.randint(key, (args.batch,), 0, 1000)
    for _ in range(3):  # compile and warm up
        carry[0], carry[1], carry[2], loss = step(*carry, x, y, key)
    jax.block_until_ready(loss)
    t0 = time.perf_counter()
    for _ in range(args.steps):
        carry[0], carry[1], carry[2], loss = step(*carry, x, y, key)
    jax.block_until_ready(loss)
    seconds = (time.perf_counter() - t0) / args.steps
    with tempfile.TemporaryDirectory() as trace_dir:
        with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
            for _ in range(args.steps):
                carry[0], carry[1], carry[2], loss = step(*carry, x, y, key)
            jax.block_until_ready(loss)
        summary = summarise(*_events(trace_dir), args.steps)
    img_per_s = args.batch / seconds
    summary |= {"backend": jax.default_backend(), "device": str(jax.devices()[0].device_kind),
                "batch": args.batch, "res": args.res, "dtype": args.dtype,
                "step_ms": seconds * 1e3, "img_per_s": img_per_s,
                "floor_img_per_s": args.floor_img_per_s,
                "fraction_of_floor": img_per_s / args.floor_img_per_s}  # fmt: skip
    print(f"B0 train step, {args.dtype}, B={args.batch}, {args.res} px on {summary['device']}: "
          f"{summary['step_ms']:.1f} ms/step, {img_per_s:,.0f} img/s = "
          f"{summary['fraction_of_floor']:.0%} of the {args.floor_img_per_s:,.0f} img/s floor; "
          f"{summary['source']} busy {summary['busy_us_per_step'] / 1e3:.1f} ms/step")
    summary["by_kind"] = by_kind(summary["kernels"])
    summary["kernels"] = summary["kernels"][:max(args.top, 200)]  # the JSON keeps the top 200
    for title, rows, key in (("kind", summary["by_kind"], "kind"),
                             ("kernel", summary["kernels"], "name")):  # fmt: skip
        print(f"{title:70s} {'ms/step':>8s} {'calls':>6s} {'share':>6s}")
        for r in rows[:args.top]:
            print(f"{r[key][:70]:70s} {r['us_per_step'] / 1e3:8.2f} {r['calls_per_step']:6.1f} "
                  f"{r['share']:6.1%}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(summary, f, indent=1)
    return 0


if __name__ == "__main__":
    _malloc.reexec(["-m", "benchmarks.profile_step", *sys.argv[1:]])  # as python -m benchmarks
    sys.exit(main())
