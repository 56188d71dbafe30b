"""Drop-path on a B0-stage-sized activation and dropout on B0's pooled features (where the model
uses each), beside a plain scale of the same tensor (the memory-bound floor)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from benchmarks._harness import Figure, Options, register, time_call
from nsjax import noise


@register("noise_depth")
def bench_noise_depth(opts: Options) -> list[Figure]:
    batch = 32 if opts.quick else 256
    cases = (
        ("drop_path", noise.drop_path, (batch, 56, 56, 24)),  # B0 stage-2 output at 224 px
        ("dropout", noise.dropout, (batch, 1280)),  # B0 pooled features, before the classifier
    )
    key = jax.random.key(0)
    figures = []
    for dtype in (jnp.float32, jnp.bfloat16):
        for name, fn, shape in cases:
            x = jax.random.normal(key, shape, dtype)
            floor = jax.jit(lambda x: x * jnp.asarray(1.25, x.dtype))
            f = jax.jit(lambda k, x, fn=fn: fn(k, x, 0.2))
            t_floor = time_call(lambda: floor(x), repeats=opts.repeats * 4)
            t = time_call(lambda: f(key, x), repeats=opts.repeats * 4)
            figures.append(Figure(
                name=f"{name} {jnp.dtype(dtype).name} {'x'.join(map(str, shape))}", seconds=t,
                items=shape[0], item_unit="ex", peer="x * c (memory-bound floor)", peer_seconds=t_floor,
            ))  # fmt: skip
    return figures
