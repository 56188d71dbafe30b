"""One compiled program per corruption for all five severities, as the dispatcher runs each."""

import functools

import jax
import jax.numpy as jnp

SEVERITIES = (1, 2, 3, 4, 5)


def all_severities(fn, in_axes=0):
    """`(*args) -> [5, B, ...]`: `vmap(partial(fn, severity=s), in_axes)(*args)` for
    s = 1..5, stacked, jitted once (a compile per severity would cost five)."""
    return jax.jit(lambda *args: jnp.stack(
        [jax.vmap(functools.partial(fn, severity=s), in_axes)(*args) for s in SEVERITIES]))
