"""Cross entropy forward + backward at B=1024, C=1000, beside optax's."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from benchmarks._harness import Figure, Options, register, time_call
from nsjax import losses


def _fwd_bwd(loss_fn):
    return jax.jit(jax.value_and_grad(lambda z, t: loss_fn(z, t).mean()))


@register("losses")
def bench_losses(opts: Options) -> list[Figure]:
    b, c = (256, 1000) if opts.quick else (1024, 1000)
    rng = np.random.default_rng(0)
    figures = []
    for dtype in (jnp.float32, jnp.bfloat16):
        logits = jnp.asarray(rng.normal(size=(b, c)), dtype)
        soft = jax.nn.softmax(jnp.asarray(rng.normal(size=(b, c)), jnp.float32))
        labels = jnp.asarray(rng.integers(0, c, b))
        cases = [
            ("soft_cross_entropy", soft,
             lambda z, t: losses.soft_cross_entropy(z, t, label_smoothing=0.1),
             "optax.softmax_cross_entropy",
             lambda z, t: optax.softmax_cross_entropy(z.astype(jnp.float32), optax.smooth_labels(t, 0.1))),
            ("hard_cross_entropy", labels,
             lambda z, y: losses.hard_cross_entropy(z, y, label_smoothing=0.1),
             "optax.softmax_cross_entropy(one_hot)",
             lambda z, y: optax.softmax_cross_entropy(
                 z.astype(jnp.float32), optax.smooth_labels(jax.nn.one_hot(y, c), 0.1))),
        ]  # fmt: skip
        for name, target, ours, peer_name, peer in cases:
            f_ours, f_peer = _fwd_bwd(ours), _fwd_bwd(peer)
            t_ours = time_call(lambda: f_ours(logits, target), repeats=opts.repeats * 4)
            t_peer = time_call(lambda: f_peer(logits, target), repeats=opts.repeats * 4)
            figures.append(Figure(
                name=f"{name} fwd+bwd {jnp.dtype(dtype).name} B={b} C={c}", seconds=t_ours,
                items=b, item_unit="ex", peer=peer_name, peer_seconds=t_peer,
            ))  # fmt: skip
    return figures
