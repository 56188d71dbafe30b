"""EfficientNet-L2 at 475 px, batch 1, eval forward on the backend JAX sees: parameter bytes,
XLA's activation (temp) bytes from the compiled executable, process peak RSS and time.
Runs only with --large (it builds 480M parameters and takes minutes on a CPU)."""

from __future__ import annotations

import resource
import time

import equinox as eqx
import jax
import jax.numpy as jnp

from benchmarks._harness import Figure, Options, register
from nsjax import models


def l2_forward_memory(resolution: int = 475, dtype=jnp.float32) -> dict[str, float]:
    """Build L2, lower, compile and run one eval forward; returns sizes in GiB and seconds
    (building: ~14 s and 2.3 GiB peak RSS on a 2-core CPU, no compilation but the sampler's)."""
    t0 = time.perf_counter()
    model, state = models.efficientnet("l2", key=jax.random.key(0))
    build_s = time.perf_counter() - t0
    x = jnp.zeros((1, resolution, resolution, 3), dtype)
    params, static = eqx.partition(model, eqx.is_array)
    forward = jax.jit(lambda p, s, x: eqx.combine(p, static)(x, s, train=False)[0])
    t0 = time.perf_counter()
    lowered = forward.lower(params, state, x)
    lower_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    compiled = lowered.compile()
    compile_s = time.perf_counter() - t0
    analysis = compiled.memory_analysis()
    t0 = time.perf_counter()
    logits = jax.block_until_ready(compiled(params, state, x))
    run_s = time.perf_counter() - t0
    gib = 1024**3
    return {
        "params": models.count_params(model),
        "param_gib": sum(p.nbytes for p in jax.tree_util.tree_leaves(eqx.filter(model, eqx.is_array))) / gib,
        "bn_state_gib": sum(v.nbytes for v in jax.tree_util.tree_leaves(state)) / gib,
        "activation_temp_gib": (analysis.temp_size_in_bytes / gib) if analysis else float("nan"),
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / gib,
        "build_s": build_s, "lower_s": lower_s, "compile_s": compile_s, "forward_s": run_s,
        "logits_finite": bool(jnp.isfinite(logits).all()),
    }  # fmt: skip


@register("efficientnet_l2_memory")
def bench_l2(opts: Options) -> list[Figure]:
    if not opts.large:
        return []
    info = l2_forward_memory()
    extra = {k: (round(v, 3) if isinstance(v, float) else v) for k, v in info.items()}
    return [Figure("l2 eval forward 475px B=1 float32", info["forward_s"], 1, "img", extra=extra)]
