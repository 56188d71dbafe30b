"""How the model's noise reaches the student, observed end to end through `model(...)`.

A small EfficientNet is rigged so that each residual block's branch is a known constant: its
projection weights are zero, so its last batch norm (train mode, zero input) outputs exactly
its offset, a one-hot vector on the block's own channel. The stream entering the residual
blocks is zero (block 0 rigged the same way with offset 0), so after the blocks channel `i`
holds `keep_i / (1 - rate_i)`: the head conv (identity) passes it to the head batch norm,
whose running mean (momentum 0, one image per call) is exactly the batch mean, i.e. the
block's drop decision. The head BN's offset makes the pooled features a constant, and an
identity classifier shows the dropout mask in the logits. One image per key, vmapped over
many keys, gives every block's decision per key: rates, independence, scales.
"""

import functools
import itertools

import chex
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nsjax import models, noise

K = 4096  # keys, one image each
SIGMAS = 5.0
CONFIG = models.EfficientNetConfig(
    dropout_rate=0.35, drop_path_rate=0.9, head_channels=16, bn_momentum=0.0,
    blocks=(models.BlockArgs(1, 3, 1, 1, 32, 16), models.BlockArgs(5, 3, 1, 1, 16, 16)),
)  # fmt: skip
# the documented rule, written out: block i of N = 6 drops with 0.9 * i / 6
RATES = [0.9 * i / 6 for i in range(1, 6)]  # blocks 1..5, the residual ones
X = jax.random.normal(jax.random.key(1), (1, 32, 32, 3))


def _bound(p: float, n: int) -> float:
    return SIGMAS * np.sqrt(p * (1 - p) / n) + 1e-9


def _rig(model):
    zero = lambda w: jnp.zeros_like(w)  # noqa: E731
    model = eqx.tree_at(lambda m: (m.blocks[0].project.weight, m.blocks[0].bn_project.offset),
                        model, (zero(model.blocks[0].project.weight), jnp.zeros(16)))  # fmt: skip
    for i in range(1, 6):
        model = eqx.tree_at(lambda m: (m.blocks[i].project.weight, m.blocks[i].bn_project.offset),
                            model, (zero(model.blocks[i].project.weight),
                                    jnp.zeros(16).at[i - 1].set(1.0)))  # fmt: skip
    return eqx.tree_at(lambda m: (m.head.weight, m.bn_head.offset, m.classifier.weight), model,
                       (jnp.eye(16).reshape(1, 1, 16, 16), jnp.ones(16), jnp.eye(16)))  # fmt: skip


@eqx.filter_jit
def _observe(model, state, keys):
    def one(key):
        logits, new_state = model(X, state, key=key, train=True)
        return logits[0], new_state.get(model.bn_head.index)[0]

    return jax.vmap(one)(keys)


@pytest.fixture(scope="module")
def observed():
    """(kept [K, 5] bool per residual block, branch values [K, 5], logits [K, 16])."""
    assert [s.residual for s in CONFIG.expand()] == [False] + [True] * 5
    model, state = models.efficientnet_from_config(CONFIG, key=jax.random.key(0), num_classes=16)
    logits, head_mean = _observe(_rig(model), state, jax.random.split(jax.random.key(2), K))
    branch = np.asarray(head_mean)[:, :5]
    return branch > 0.5, branch, np.asarray(logits)


def test_each_block_drops_with_its_own_rate(observed):
    kept, branch, _ = observed
    np.testing.assert_allclose([s.drop_path_rate for s in CONFIG.expand()][1:], RATES, rtol=1e-12)
    np.testing.assert_allclose([s.drop_path_rate for s in CONFIG.expand()],
                               noise.stochastic_depth_rates(6, 0.9), rtol=0)  # fmt: skip
    for i, rate in enumerate(RATES):
        freq = 1 - kept[:, i].mean()
        assert abs(freq - rate) < _bound(rate, K), (i + 1, freq, rate)
        # a dropped branch is exactly zero, a kept one is scaled by 1 / (1 - rate)
        assert np.all(branch[~kept[:, i], i] == 0)
        np.testing.assert_allclose(branch[kept[:, i], i], 1 / (1 - rate), rtol=1e-5)


def test_blocks_drop_independently_of_each_other_and_of_dropout(observed):
    kept, _, logits = observed
    dropped = ~kept
    for i, j in itertools.combinations(range(5), 2):
        p = RATES[i] * RATES[j]
        both = (dropped[:, i] & dropped[:, j]).mean()
        assert abs(both - p) < _bound(p, K), (i + 1, j + 1, both, p)
    # dropout's mask does not follow the last block's drop decision
    zero = logits[:, 0] == 0
    p = RATES[-1] * CONFIG.dropout_rate
    both = (zero & dropped[:, -1]).mean()
    assert abs(both - p) < _bound(p, K), (both, p)


def test_dropout_on_pooled_features_has_the_configured_rate(observed):
    _, _, logits = observed
    rate = CONFIG.dropout_rate
    freq = (logits == 0).mean()
    assert abs(freq - rate) < _bound(rate, logits.size), (freq, rate)
    # element-wise: examples do not drop all their features together
    per_key = (logits == 0).mean(1)
    assert per_key.std() < 0.5 * np.sqrt(rate * (1 - rate))
    swish_one = 1 / (1 + np.exp(-1.0))
    np.testing.assert_allclose(logits[logits != 0], swish_one / (1 - rate), rtol=1e-5)


@eqx.filter_jit
def _apply(model, state, x, key=None, train=False):
    return model(x, state, key=key, train=train)


@functools.cache
def _models():
    """The noise config and the same with every rate 0, from one key: the same weights."""
    quiet = models.EfficientNetConfig(**{**CONFIG.__dict__, "dropout_rate": 0.0, "drop_path_rate": 0.0})
    return (models.efficientnet_from_config(CONFIG, key=jax.random.key(5), num_classes=16),
            models.efficientnet_from_config(quiet, key=jax.random.key(5), num_classes=16))  # fmt: skip


def test_eval_is_bitwise_deterministic_and_equals_the_noise_free_model():
    (model, state), (quiet, quiet_state) = _models()
    leaves = lambda m: jax.tree_util.tree_leaves(eqx.filter(m, eqx.is_array))  # noqa: E731
    chex.assert_trees_all_equal(leaves(model), leaves(quiet))  # the rates do not move weights
    x = jax.random.normal(jax.random.key(6), (3, 32, 32, 3))
    a, new_state = _apply(model, state, x)
    b, _ = _apply(model, state, x, jax.random.key(7))  # a key changes nothing in eval
    c, _ = _apply(quiet, quiet_state, x)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, c)
    assert eqx.tree_equal(new_state, state)


def test_train_without_noise_is_deterministic_in_the_key_and_with_noise_is_not():
    (model, state), (quiet, quiet_state) = _models()
    x = jax.random.normal(jax.random.key(6), (3, 32, 32, 3))
    a, sa = _apply(quiet, quiet_state, x, jax.random.key(1), True)
    b, sb = _apply(quiet, quiet_state, x, jax.random.key(2), True)
    np.testing.assert_array_equal(a, b)
    assert eqx.tree_equal(sa, sb)
    c, _ = _apply(model, state, x, jax.random.key(1), True)
    d, _ = _apply(model, state, x, jax.random.key(2), True)
    assert not np.array_equal(c, d)
