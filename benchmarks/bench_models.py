"""EfficientNet-B0 train step (forward + backward + SGD update) and inference at 224 px,
beside timm's (peers.py: bf16 autocast, eager and, on GPU, torch.compile) measured in the same
run. nsjax runs bf16 activations; on CPU also float32 (XLA's CPU has no fast bf16 path).

Batch: 256 on an accelerator, 16 on CPU (as peers.py); override with BS=, RES=, STEPS=.

`efficientnet_first_step`: the time from nothing to a first train step (what a short demo
waits for): building the model, lowering and compiling the jitted step, and running it once,
for B0 (float32, 224 px, batch 8) and a width-0.25, depth-0.25 model (float32, 64 px, batch 8).
"""

from __future__ import annotations

import functools
import os
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import optax

from benchmarks._harness import Figure, Options, register
from benchmarks.peers import run_peers
from nsjax import losses, models
from nsjax.models import _layers


def _sizes(opts: Options) -> tuple[int, int, int]:
    accel = jax.default_backend() != "cpu"
    batch = int(os.environ.get("BS", 256 if accel else (8 if opts.quick else 16)))
    res = int(os.environ.get("RES", 224))
    steps = int(os.environ.get("STEPS", 30 if accel else (2 if opts.quick else 3)))
    return batch, res, steps


def make_train_step(model, opt, dtype=jnp.bfloat16):
    """jitted `(params, opt_state, state, x, y, key) -> (params, opt_state, state, loss)`:
    `dtype` activations, float32 params, BN statistics and optimizer; buffers donated."""
    params, static = eqx.partition(model, eqx.is_inexact_array)

    def loss_fn(params, state, x, y, key):
        logits, state = eqx.combine(params, static)(x.astype(dtype), state, key=key, train=True)
        return jnp.mean(losses.hard_cross_entropy(logits, y)), state

    @functools.partial(jax.jit, donate_argnums=(0, 1, 2))
    def step(params, opt_state, state, x, y, key):
        (loss, state), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, state, x, y, key)
        updates, opt_state = opt.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, state, loss

    return params, step


def _timed(fn, steps: int) -> tuple[float, float]:
    """(seconds of the first, compiling call; mean seconds per call over `steps` calls after
    two warm-up calls)."""
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    first = time.perf_counter() - t0
    for _ in range(2):
        jax.block_until_ready(fn())
    t0 = time.perf_counter()
    for _ in range(steps):
        out = fn()
    jax.block_until_ready(out)
    return first, (time.perf_counter() - t0) / steps


def _measure(dtype, batch: int, res: int, steps: int) -> dict[str, float]:
    """Seconds per train step and per inference call (batch 2 * `batch`), plus the first
    (compiling) train call and the per-image vmap inference layout."""
    key = jax.random.key(0)
    model, state = models.efficientnet("b0", key=key)
    opt = optax.sgd(0.01, momentum=0.9)  # what peers.py trains timm with
    params, step = make_train_step(model, opt, dtype)
    static = eqx.partition(model, eqx.is_inexact_array)[1]
    carry = [params, opt.init(params), state]
    x = jax.random.normal(key, (batch, res, res, 3))
    y = jax.random.randint(key, (batch,), 0, 1000)

    def train_once():
        carry[0], carry[1], carry[2], loss = step(*carry, x, y, key)
        return loss

    first, train = _timed(train_once, steps)
    model = eqx.combine(carry[0], static)
    infer = eqx.filter_jit(lambda m, s, x: m(x.astype(dtype), s, train=False)[0])
    xi = jax.random.normal(key, (2 * batch, res, res, 3))
    _, inference = _timed(lambda: infer(model, carry[2], xi), steps)
    # the other layout: one image at a time under vmap (equinox's per-example convention)
    per_example = eqx.filter_jit(jax.vmap(lambda m, s, x: m(x[None].astype(dtype), s, train=False)[0][0],
                                          in_axes=(None, None, 0)))  # fmt: skip
    _, vmapped = _timed(lambda: per_example(model, carry[2], xi), max(1, steps // 3))
    return dict(first=first, train=train, infer=inference, vmap=vmapped)


@register("efficientnet_b0")
def bench_b0(opts: Options) -> list[Figure]:
    batch, res, steps = _sizes(opts)
    accel = jax.default_backend() != "cpu"
    measured = {dt: _measure(getattr(jnp, dt), batch, res, steps)
                for dt in (("bfloat16",) if accel else ("bfloat16", "float32"))}  # fmt: skip
    peer = {r["what"]: r for r in run_peers("train,compile" if accel else "train,train_f32",
                                            BS=batch, RES=res, STEPS=steps) if "img_per_s" in r}
    best_train = max((r for k, r in peer.items() if "_train_" in k), key=lambda r: r["img_per_s"], default=None)
    best_infer = max((r for k, r in peer.items() if "_infer_" in k), key=lambda r: r["img_per_s"], default=None)
    figures = []
    for dt, m in measured.items():
        extra = dict(batch=batch, res=res, first_call_s=round(m["first"], 1),
                     peers={k: round(r["img_per_s"], 1) for k, r in peer.items()})  # fmt: skip
        figures += [
            Figure(f"b0 train step {dt} {res}px B={batch}", m["train"], batch, "img",
                   peer=best_train and best_train["what"],
                   peer_seconds=best_train and batch / best_train["img_per_s"], extra=extra),
            Figure(f"b0 inference {dt} {res}px B={2 * batch}", m["infer"], 2 * batch, "img",
                   peer=best_infer and best_infer["what"],
                   peer_seconds=best_infer and 2 * batch / best_infer["img_per_s"]),
            Figure(f"b0 inference {dt} {res}px B={2 * batch}, vmap per image", m["vmap"], 2 * batch,
                   "img", peer="nsjax batched NHWC (above)", peer_seconds=m["infer"]),
        ]  # fmt: skip
    return figures


def time_to_first_step(config: models.EfficientNetConfig, num_classes: int, batch: int, res: int,
                       dtype=jnp.float32) -> dict[str, float]:  # fmt: skip
    """Seconds to build `config` (including the sampler's compilation, as in a fresh process),
    lower and compile its jitted train step (forward + backward + SGD), and run that step once
    (its wall time, the compiled call only)."""
    _layers._chunk.clear_cache()  # the build's one compilation, paid once per process
    t0 = time.perf_counter()
    model, state = models.efficientnet_from_config(config, key=jax.random.key(0), num_classes=num_classes)
    jax.block_until_ready((model, state))
    build = time.perf_counter() - t0
    opt = optax.sgd(0.01)
    params, step = make_train_step(model, opt, dtype)
    opt_state = opt.init(params)
    x = jax.random.normal(jax.random.key(1), (batch, res, res, 3))
    y = jax.random.randint(jax.random.key(2), (batch,), 0, num_classes)
    t0 = time.perf_counter()
    lowered = step.lower(params, opt_state, state, x, y, jax.random.key(3))
    lower = time.perf_counter() - t0
    t0 = time.perf_counter()
    compiled = lowered.compile()
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    jax.block_until_ready(compiled(params, opt_state, state, x, y, jax.random.key(3)))
    first = time.perf_counter() - t0
    return dict(build=build, lower=lower, compile=compile_s, first_step=first)


@register("efficientnet_first_step")
def bench_first_step(opts: Options) -> list[Figure]:
    cases = [("b0", models.config_for("b0"), 1000, 224),
             ("w0.25 d0.25", models.EfficientNetConfig(width=0.25, depth=0.25), 10, 64)]  # fmt: skip
    figures = []
    for name, config, classes, res in cases:
        batch = 8
        m = time_to_first_step(config, classes, batch, res)
        total = sum(m.values())
        figures.append(Figure(
            f"{name} time to first step float32 {res}px B={batch}", total, 1, "step",
            extra={k + "_s": round(v, 2) for k, v in m.items()},
        ))  # fmt: skip
    return figures
