"""Memory plan of the EfficientNet-L2 student step (`nsjax.train.train_step`) at 475 px, for
a global batch on 8, 64 and 256 devices, bytes per device with and without FSDP, beside one
TPU v3 core (16 GiB) and one H200 (141 GiB). It cannot be trained here; this plans it.

    python -m benchmarks.plan_l2                        # the estimate (~2 min on 2 CPU cores)
    python -m benchmarks.plan_l2 --labeled-batch 512    # 2048 images per step in all
    python -m benchmarks.plan_l2 --compile b0 --compile-resolution 224   # check the method
    python -m benchmarks.plan_l2 --compile l2 --compile-devices 1 --compile-fsdp off  # ~10 min

**Estimated** (no compilation, `jax.eval_shape` only), per device:

- state: the `TrainState` of `init_state` (float32 weights, RMSProp's two moments, the EMA,
  BN statistics), each array's shard under the engine's own `state_shardings(..., fsdp=)` on a
  `(devices, 1)` mesh of simulated CPU devices;
- gradients: float32, the parameters' shards (FSDP reduce-scatters them);
- activations: the residuals JAX keeps for the backward pass, counted from the `jax.vjp` of the
  model's train-mode forward in the compute dtype at 1 and 2 images (slope = bytes per image,
  intercept = the compute-dtype copies of the weights, kept whole under FSDP too), times the
  images per device. XLA on GPU/TPU fuses element-wise chains and may recompute some, so this
  is an upper estimate; XLA:CPU keeps about all of them (see `--compile`);
- with per-block rematerialisation (`jax.checkpoint` around each MBConv block; the engine has
  none): the block inputs, the stem and head residuals, plus the largest block's residuals
  while it is recomputed.

RandAugment's uint8 copies (0.66 MiB per 475-px image) and the transient gradient of the
activation being back-propagated are left out.

**Compiled** (`--compile MODEL`): the engine's jitted train step (`jit_steps`, donated state,
RandAugment off) lowered on abstract inputs for `--compile-devices` simulated CPU devices at 4
images per device, FSDP off and on, and XLA's `memory_analysis()` per device, beside the
estimate for the same setting. XLA:CPU's buffer assignment and depthwise convolution (shifted
slices on CPU) differ from a GPU's or TPU's: a check of the method, not an accelerator figure.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import sys
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

GIB = 2**30
LIMITS = {"TPU v3 core": 16 * GIB, "H200": 141 * GIB}


def nbytes(leaf) -> int:
    """Bytes of an array or `ShapeDtypeStruct` (a typed PRNG key: its key data)."""
    dtype = leaf.dtype
    if jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
        return math.prod(leaf.shape) * 8  # threefry: 2 x uint32
    return math.prod(leaf.shape) * np.dtype(dtype).itemsize


def tree_bytes(tree) -> int:
    return sum(nbytes(x) for x in jax.tree.leaves(tree))


def abstract_state(eng, config):
    """`init_state(config)` as `ShapeDtypeStruct`s: nothing is allocated."""
    return eqx.filter_eval_shape(eng.init_state, config, jax.random.key(0))


def state_bytes_per_device(eng, state, mesh, *, fsdp: bool) -> dict[str, int]:
    """Bytes per device of each field of the abstract `state` (and of float32 gradients, the
    parameters' shards), under the engine's `state_shardings(state, mesh, fsdp=fsdp)`."""
    shardings = eng.state_shardings(state, mesh, fsdp=fsdp)

    def shard(leaf, sharding):
        shape = sharding.shard_shape(tuple(leaf.shape)) if leaf.shape else ()
        return jax.ShapeDtypeStruct(shape, leaf.dtype)

    shards = jax.tree.map(shard, state, shardings)
    out = {name: tree_bytes(getattr(shards, name))
           for name in ("model", "bn_state", "opt_state", "ema_params", "ema_bn_state")}  # fmt: skip
    out["step_and_key"] = tree_bytes((shards.step, shards.key))
    out["gradients"] = tree_bytes(eqx.filter(shards.model, lambda x: isinstance(x, jax.ShapeDtypeStruct)
                                             and jnp.issubdtype(x.dtype, jnp.inexact)))  # fmt: skip
    return out


def _fresh(state):
    """A new handle on the same BN state (`eqx.nn.State` refuses a second use of one)."""
    leaves, treedef = jax.tree_util.tree_flatten(state)
    return jax.tree_util.tree_unflatten(treedef, leaves)


def _residual_bytes(vjp_fn) -> int:
    return tree_bytes(vjp_fn)


def activation_residuals(config, dtype) -> dict[str, float]:
    """Residuals of the train-mode forward (what backward keeps), from `jax.eval_shape` at 1 and
    2 images: bytes per image (the slope) and fixed bytes (the intercept), without and with
    per-block rematerialisation. Piece by piece (stem, each block, head + classifier) so that
    block inputs and the largest block are known; the whole model's residuals at 1 image are
    counted too, as a check that the pieces add up."""
    from nsjax import models, noise

    mconfig = config.model_config()
    res = config.image_size

    def pieces(key, x):
        model, state = models.efficientnet_from_config(mconfig, key=key, num_classes=config.num_classes)
        params, static = eqx.partition(model, eqx.is_inexact_array)
        k_blocks = jax.random.split(key, len(model.blocks))

        def stem(p, x):
            m = eqx.combine(p, static)
            h, s = m.bn_stem(m.stem(x), _fresh(state), train=True)
            return jax.nn.swish(h), s

        h, stem_vjp, _ = jax.vjp(stem, params, x, has_aux=True)
        block_vjps, block_inputs = [], []
        for i in range(len(model.blocks)):
            def block(p, h, i=i):
                return eqx.combine(p, static).blocks[i](h, _fresh(state), key=k_blocks[i], train=True)
            block_inputs.append(h)
            h, vjp, _ = jax.vjp(block, params, h, has_aux=True)
            block_vjps.append(vjp)

        def head(p, h):
            m = eqx.combine(p, static)
            y, s = m.bn_head(m.head(h), _fresh(state), train=True)
            pooled = jnp.mean(jax.nn.swish(y), axis=(1, 2), dtype=jnp.float32)
            return m.classifier(noise.dropout(key, pooled, mconfig.dropout_rate, train=True)), s

        _, head_vjp, _ = jax.vjp(head, params, h, has_aux=True)
        return stem_vjp, block_vjps, block_inputs, head_vjp

    def whole(key, x):
        model, state = models.efficientnet_from_config(mconfig, key=key, num_classes=config.num_classes)
        params, static = eqx.partition(model, eqx.is_inexact_array)
        return jax.vjp(lambda p: eqx.combine(p, static)(x, state, key=key, train=True)[0], params)[1]

    counts = {}
    for b in (1, 2):
        x = jax.ShapeDtypeStruct((b, res, res, 3), dtype)
        stem_vjp, block_vjps, block_inputs, head_vjp = jax.eval_shape(pieces, jax.random.key(0), x)
        blocks = [_residual_bytes(v) for v in block_vjps]
        other = _residual_bytes(stem_vjp) + _residual_bytes(head_vjp)
        counts[b] = dict(full=other + sum(blocks),
                         remat=other + tree_bytes(block_inputs) + max(blocks),
                         largest_block=max(blocks))  # fmt: skip
    whole_1 = _residual_bytes(jax.eval_shape(whole, jax.random.key(0),
                                             jax.ShapeDtypeStruct((1, res, res, 3), dtype)))
    out = {}
    for name in ("full", "remat", "largest_block"):
        out[f"{name}_per_image"] = counts[2][name] - counts[1][name]
        out[f"{name}_fixed"] = counts[1][name] - out[f"{name}_per_image"]
    out["whole_model_at_1_image"] = whole_1
    out["pieces_at_1_image"] = counts[1]["full"]
    return out


def estimate(state_b: dict[str, int], acts: dict[str, float], images: int) -> dict[str, float]:
    """Bytes per device: state + gradients + activations for `images` images per device."""
    state = sum(v for k, v in state_b.items() if k != "gradients")
    base = state + state_b["gradients"]
    return dict(
        state=state, gradients=state_b["gradients"],
        activations=acts["full_fixed"] + images * acts["full_per_image"],
        total=base + acts["full_fixed"] + images * acts["full_per_image"],
        activations_remat=acts["remat_fixed"] + images * acts["remat_per_image"],
        total_remat=base + acts["remat_fixed"] + images * acts["remat_per_image"],
    )  # fmt: skip


def max_images_fitting(state_b: dict[str, int], acts: dict[str, float], limit: int, *,
                       remat: bool) -> int:  # fmt: skip
    """The most images per device whose estimate fits in `limit` bytes (0: none)."""
    key = "remat" if remat else "full"
    base = sum(state_b.values()) + acts[f"{key}_fixed"]
    return max(0, int((limit - base) // acts[f"{key}_per_image"]))


def compile_check(eng, config_kwargs: dict, devices: int, fsdp: bool) -> dict[str, float]:
    """Lower and compile the engine's jitted train step for abstract inputs on `devices`
    simulated CPU devices; XLA's per-device memory analysis (bytes) and the times."""
    config = eng.TrainConfig(**config_kwargs, fsdp=fsdp)
    mesh = eng.make_mesh(devices=jax.devices()[:devices])
    state = abstract_state(eng, config)
    steps = eng.jit_steps(state, mesh)
    state = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                         state, steps.shardings)  # fmt: skip
    rows = NamedSharding(mesh, P("data"))
    s, b_l, b_u = config.image_size, config.labeled_batch, config.unlabeled_batch
    batch = dict(images=jax.ShapeDtypeStruct((b_l, s, s, 3), jnp.uint8, sharding=rows),
                 labels=jax.ShapeDtypeStruct((b_l,), jnp.int32, sharding=rows),
                 unlabeled_images=jax.ShapeDtypeStruct((b_u, s, s, 3), jnp.uint8, sharding=rows),
                 unlabeled_targets=jax.ShapeDtypeStruct((b_u, config.num_classes), jnp.float32,
                                                        sharding=rows))  # fmt: skip
    t0 = time.perf_counter()
    lowered = steps.train.lower(state, batch)
    lower_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    compiled = lowered.compile()
    compile_s = time.perf_counter() - t0
    m = compiled.memory_analysis()
    out = {k: getattr(m, f"{k}_size_in_bytes") for k in ("argument", "output", "alias", "temp")}
    out["total"] = out["argument"] + out["output"] - out["alias"] + out["temp"]
    out |= dict(lower_s=lower_s, compile_s=compile_s)
    return out


def _gib(x: float) -> float:
    return round(x / GIB, 3)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.plan_l2", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="l2")
    p.add_argument("--resolution", type=int, default=475)
    p.add_argument("--labeled-batch", type=int, default=2048, help="global labeled batch")
    p.add_argument("--unlabeled-ratio", type=float, default=3.0)
    p.add_argument("--devices", default="8,64,256", help="comma list of device counts")
    p.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float32"))
    p.add_argument("--compile", default="", metavar="MODEL",
                   help="also compile the engine's step of MODEL on simulated devices")
    p.add_argument("--compile-devices", type=int, default=8)
    p.add_argument("--compile-resolution", type=int, default=None)
    p.add_argument("--compile-fsdp", default="off,on", help="off, on or off,on")
    p.add_argument("--out", default="benchmarks/results/plan_l2.json")
    args = p.parse_args(argv)
    counts = [int(n) for n in args.devices.split(",") if n]
    jax.config.update("jax_num_cpu_devices", max(counts + [args.compile_devices if args.compile else 1]))
    from benchmarks.bench_train import engine

    eng = engine()
    t_start = time.perf_counter()
    config = eng.TrainConfig(model=args.model, resolution=args.resolution,
                             labeled_batch=args.labeled_batch, unlabeled_ratio=args.unlabeled_ratio,
                             steps_per_epoch=1000, compute_dtype=args.dtype)  # fmt: skip
    global_images = config.labeled_batch + config.unlabeled_batch
    dtype = jnp.dtype(args.dtype)
    print(f"# plan: {args.model} at {config.image_size} px, labeled {config.labeled_batch} + "
          f"unlabeled {config.unlabeled_batch} = {global_images} images per step, {args.dtype} "
          f"compute, RMSProp + EMA; jax {jax.__version__}", flush=True)
    state = abstract_state(eng, config)
    from nsjax import models

    params = models.count_params(state.model)
    t0 = time.perf_counter()
    acts = activation_residuals(config, dtype)
    acts_s = time.perf_counter() - t0
    print(f"[plan] {params:,} parameters; residuals {_gib(acts['full_per_image'])} GiB per image "
          f"+ {_gib(acts['full_fixed'])} GiB fixed ({acts_s:.0f} s to trace); with per-block "
          f"remat {_gib(acts['remat_per_image'])} GiB per image; check: the whole model's "
          f"residuals at 1 image are {acts['whole_model_at_1_image'] / acts['pieces_at_1_image']:.4f}"
          f"x the pieces' sum", flush=True)

    rows = []
    for n in counts:
        if config.labeled_batch % n or config.unlabeled_batch % n:
            print(f"[plan] {n} devices: the batches do not divide; skipped", file=sys.stderr)
            continue
        mesh = eng.make_mesh(devices=jax.devices()[:n])
        images = global_images // n
        for fsdp in (False, True):
            sb = state_bytes_per_device(eng, state, mesh, fsdp=fsdp)
            est = estimate(sb, acts, images)
            row = dict(devices=n, fsdp=fsdp, images_per_device=images, method="estimated",
                       **{f"{k}_gib": _gib(v) for k, v in est.items()},
                       state_detail_gib={k: _gib(v) for k, v in sb.items()})  # fmt: skip
            for name, limit in LIMITS.items():
                row[f"fits_{name}"] = est["total"] <= limit
                row[f"fits_{name}_remat"] = est["total_remat"] <= limit
                row[f"max_images_{name}"] = max_images_fitting(sb, acts, limit, remat=False)
                row[f"max_images_{name}_remat"] = max_images_fitting(sb, acts, limit, remat=True)
            rows.append(row)

    head = (f"{'devices':>7} {'fsdp':>5} {'img/dev':>7} {'state':>7} {'grads':>7} {'activ.':>9} "
            f"{'total':>9} {'16 GiB':>6} {'141 GiB':>7} | {'remat act.':>10} {'total':>8} "
            f"{'16':>3} {'141':>4} | max img/dev 16/141 (remat)")
    print("\nGiB per device (estimated: eval_shape; see the module docstring)")
    print(head)
    print("-" * len(head))
    yes = lambda b: "yes" if b else "no"  # noqa: E731
    for r in rows:
        print(f"{r['devices']:>7} {yes(r['fsdp']):>5} {r['images_per_device']:>7} "
              f"{r['state_gib']:>7.2f} {r['gradients_gib']:>7.2f} {r['activations_gib']:>9.1f} "
              f"{r['total_gib']:>9.1f} {yes(r['fits_TPU v3 core']):>6} {yes(r['fits_H200']):>7} | "
              f"{r['activations_remat_gib']:>10.1f} {r['total_remat_gib']:>8.1f} "
              f"{yes(r['fits_TPU v3 core_remat']):>3} {yes(r['fits_H200_remat']):>4} | "
              f"{r['max_images_TPU v3 core']}/{r['max_images_H200']} "
              f"({r['max_images_TPU v3 core_remat']}/{r['max_images_H200_remat']})")

    compiled_rows = []
    if args.compile:
        n = args.compile_devices
        ckw = dict(model=args.compile, resolution=args.compile_resolution, labeled_batch=n,
                   unlabeled_ratio=3.0, steps_per_epoch=1000, compute_dtype=args.dtype,
                   randaugment_magnitude=None)  # fmt: skip
        cconfig = eng.TrainConfig(**ckw)
        cstate = abstract_state(eng, cconfig)
        cacts = activation_residuals(cconfig, dtype)
        mesh = eng.make_mesh(devices=jax.devices()[:n])
        print(f"\ncompiled: {args.compile} at {cconfig.image_size} px, {n} simulated CPU devices, "
              f"4 images per device (labeled {n} + unlabeled {3 * n}), RandAugment off; GiB per device")
        print(f"{'fsdp':>5} {'argument':>9} {'temp':>9} {'total':>9} | {'est. state':>10} "
              f"{'est. grads+act.':>15} {'est. total':>10} | compile s")
        for fsdp in [{"off": False, "on": True}[v] for v in args.compile_fsdp.split(",")]:
            c = compile_check(eng, ckw, n, fsdp)
            est = estimate(state_bytes_per_device(eng, cstate, mesh, fsdp=fsdp), cacts, 4)
            sizes = {f"{k}_gib": _gib(c[k]) for k in ("argument", "output", "alias", "temp", "total")}
            compiled_rows.append(dict(
                model=args.compile, resolution=cconfig.image_size, devices=n, fsdp=fsdp,
                images_per_device=4, method="compiled", **sizes, lower_s=round(c["lower_s"], 1),
                compile_s=round(c["compile_s"], 1), estimate_gib={k: _gib(v) for k, v in est.items()}))
            print(f"{yes(fsdp):>5} {_gib(c['argument']):>9.2f} {_gib(c['temp']):>9.2f} "
                  f"{_gib(c['total']):>9.2f} | {_gib(est['state']):>10.2f} "
                  f"{_gib(est['gradients'] + est['activations']):>15.2f} {_gib(est['total']):>10.2f} "
                  f"| {c['compile_s']:.0f}", flush=True)

    out = dict(
        machine=dict(host=platform.node(), cpu_count=os.cpu_count(), jax=jax.__version__,
                     date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")),
        options=vars(args), parameters=params, global_images=global_images,
        residuals_gib={k: _gib(v) for k, v in acts.items()},
        limits_gib={k: _gib(v) for k, v in LIMITS.items()},
        rows=rows, compiled=compiled_rows, seconds=round(time.perf_counter() - t_start, 1),
    )  # fmt: skip
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as fh:
        json.dump(out, fh, indent=2)
    print(f"\nwrote {args.out} ({out['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
