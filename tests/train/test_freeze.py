"""`TrainConfig.freeze_blocks` (the FixRes fine-tune's frozen stem and first blocks): frozen
leaves get exactly zero updates from every optimizer, weight decay included, while the others
move exactly as without freezing; their moving average stays bitwise equal to them; the field
is checked and survives JSON. `optax.masked` in place of `multi_transform` is caught."""

import dataclasses
import functools
import json
import re

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from nsjax.fixres import fixres_trainable
from nsjax.models import B0_BLOCKS, efficientnet_from_config
from nsjax.train import TrainConfig, ema_update, make_optimizer
from nsjax.train._recipe import _frozen_patterns
from tests.train._runs import tiny_config

# Two blocks (B0's first, and one of its second stage) at width 0.25: freezing one leaves
# block 1, the head and the classifier trainable
BLOCKS = (B0_BLOCKS[0], dataclasses.replace(B0_BLOCKS[1], repeats=1))
CONFIG = tiny_config(blocks=BLOCKS, head_channels=64, freeze_blocks=1, weight_decay=1e-2)
FROZEN = re.compile(r"^\.(stem|bn_stem|blocks\[0\])\.")


@pytest.fixture(scope="module")
def params():
    model, _ = efficientnet_from_config(CONFIG.model_config(), key=jax.random.key(0),
                                        num_classes=CONFIG.num_classes)  # fmt: skip
    return eqx.filter(model, eqx.is_inexact_array)


def _paths(tree) -> list[str]:
    return [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(tree)]


def _run(optimizer, params, grads, steps: int = 3):
    """`params` after `steps` updates of `optimizer` (a `TrainConfig`, or an optax optimizer)
    with the same gradients, and the updates of the first step."""
    init, step = _compiled(optimizer)
    state, first = init(params), None
    for _ in range(steps):
        params, state, updates = step(params, state, grads)
        first = updates if first is None else first
    return params, first


@functools.cache
def _compiled(optimizer):
    """`(init, step)` of a config's optimizer (compiled once per config) or of an optimizer."""
    if isinstance(optimizer, TrainConfig):
        optimizer = make_optimizer(optimizer)

    @jax.jit
    def step(params, state, grads):
        updates, state = optimizer.update(grads, state, params)
        return optax.apply_updates(params, updates), state, updates

    return optimizer.init, step


def _moved(before, after) -> set[str]:
    return {path for path, b, a in zip(_paths(before), jax.tree.leaves(before),
                                       jax.tree.leaves(after))
            if not np.array_equal(b, a)}  # fmt: skip


def _grads(params, seed: int = 1):
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda x: rng.standard_normal(x.shape).astype(np.float32), params)


@pytest.mark.parametrize("optimizer", ["rmsprop", "sgd", "adamw"])
def test_frozen_leaves_get_exactly_zero_updates_and_the_others_the_same(params, optimizer):
    config = dataclasses.replace(CONFIG, optimizer=optimizer)
    paths = _paths(params)
    frozen = {p for p in paths if FROZEN.search(p)}
    assert frozen and len(frozen) < len(paths)
    grads = _grads(params)
    after, first = _run(config, params, grads)
    assert _moved(params, after) == set(paths) - frozen
    # the trainable leaves' updates are those of the same optimizer without freezing
    _, unfrozen = _run(dataclasses.replace(config, freeze_blocks=0), params, grads, steps=1)
    for path, got, want in zip(paths, jax.tree.leaves(first), jax.tree.leaves(unfrozen)):
        np.testing.assert_array_equal(got, 0 if path in frozen else want, err_msg=path)


@pytest.mark.parametrize("optimizer", ["rmsprop", "sgd", "adamw"])
def test_weight_decay_does_not_move_frozen_kernels(params, optimizer):
    config = dataclasses.replace(CONFIG, optimizer=optimizer)
    zero = jax.tree.map(lambda x: np.zeros(x.shape, np.float32), params)
    moved = _moved(params, _run(config, params, zero)[0])
    # zero gradients: only weight decay moves, and only the trainable kernels
    assert moved == {p for p in _paths(params) if p.endswith(".weight") and not FROZEN.search(p)}


def test_optax_masked_in_place_of_multi_transform_is_caught(params):
    """`optax.masked(opt, mask)` passes the frozen leaves' gradients through as updates: the
    check of the tests above sees them move."""
    mask = fixres_trainable(params, freeze=_frozen_patterns(CONFIG))
    masked = optax.masked(make_optimizer(dataclasses.replace(CONFIG, freeze_blocks=0)),
                          lambda _: mask)  # fmt: skip
    moved = _moved(params, _run(masked, params, _grads(params))[0])
    assert moved == set(_paths(params))  # frozen leaves moved too: the bug shows


def test_the_moving_average_of_an_unchanged_value_is_bitwise_unchanged():
    x = {"w": jax.random.normal(jax.random.key(0), (10_000,)),
         "h": jax.random.normal(jax.random.key(1), (64,)).astype(jnp.bfloat16)}  # fmt: skip
    for step in (1, 2, 7, 100, 10**6):
        out = ema_update(x, x, step, 0.9999)
        for name in x:
            np.testing.assert_array_equal(out[name], x[name], err_msg=f"{name} at {step}")


def test_freeze_blocks_is_checked_naming_the_field_and_survives_json():
    assert len(tiny_config().model_config().expand()) == 3
    with pytest.raises(ValueError, match="freeze_blocks must be at most the model's block "
                                         "count 3, got 4"):  # fmt: skip
        tiny_config(freeze_blocks=4)
    with pytest.raises(ValueError, match="freeze_blocks must be >= 0, got -1"):
        tiny_config(freeze_blocks=-1)
    with pytest.raises(TypeError, match="freeze_blocks must be an int, got float"):
        tiny_config(freeze_blocks=1.0)
    assert tiny_config(freeze_blocks=3).freeze_blocks == 3  # every block
    assert tiny_config(blocks=B0_BLOCKS, freeze_blocks=16).freeze_blocks == 16  # B0: 16 blocks
    assert TrainConfig.from_json(CONFIG.to_json()) == CONFIG
    old = json.loads(CONFIG.to_json())
    del old["freeze_blocks"]  # a config saved before the field existed
    assert TrainConfig.from_json(json.dumps(old)).freeze_blocks == 0
