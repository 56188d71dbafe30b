"""The documented initialisation and batch-norm rules, tested from their statements.

docs/api.md and the reference (TF's EfficientNet): conv kernels N(0, sqrt(2 / fan_out)) with
fan_out = k * k * out / groups (a depthwise kernel: k * k); the classifier U(-1/sqrt(C),
1/sqrt(C)); zero biases; BN scale 1, offset 0, running mean 0, variance 1. Batch norm in train
mode normalises with the batch's mean and biased variance, `(x - mean) * rsqrt(var + eps)`,
and moves the running statistics `r <- m r + (1 - m) batch`; eval uses the running ones.
"""

import functools
import math

import chex
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nsjax import models
from nsjax.models._layers import BatchNorm, Conv2d

SIGMAS = 5.0


@functools.cache
def _b0():
    return models.efficientnet("b0", key=jax.random.key(3))


def _modules(tree, kind):
    leaves = jax.tree_util.tree_flatten_with_path(tree, is_leaf=lambda v: isinstance(v, kind))[0]
    return [(jax.tree_util.keystr(p), m) for p, m in leaves if isinstance(m, kind)]


def _expected_conv_std(conv: Conv2d) -> float:
    """From the statement: fan_out = k * k * out / groups."""
    k, _, _, out = conv.weight.shape
    return math.sqrt(2.0 / (k * k * out / conv.groups))


def test_every_conv_kernel_is_normal_with_the_fan_out_scale():
    model, _ = _b0()
    convs = _modules(model, Conv2d)
    assert len(convs) == 81  # stem, head, 16 depthwise + 16 project + 15 expand + 32 SE
    pooled = []
    for path, conv in convs:
        w = np.asarray(conv.weight, np.float64).ravel()
        std = _expected_conv_std(conv)
        n = w.size
        # s^2 = mean(w^2) has relative sd sqrt(2 / n): s is within 5 / sqrt(2n) of std
        ratio = math.sqrt(np.mean(w**2)) / std
        assert abs(ratio - 1) < SIGMAS / math.sqrt(2 * n), (path, conv.weight.shape, ratio)
        assert abs(w.mean()) < SIGMAS * std / math.sqrt(n), (path, w.mean())
        pooled.append(w / std)
    z = np.abs(np.concatenate(pooled))
    # shape of the distribution: a normal's mass within 1 and 2 sigma (a uniform or a
    # truncated normal of the same scale fails)
    for k, mass in ((1, 0.6826894921), (2, 0.9544997361), (3, 0.9973002039)):
        frac = (z < k).mean()
        assert abs(frac - mass) < SIGMAS * math.sqrt(mass * (1 - mass) / z.size), (k, frac)


def test_layers_are_drawn_independently():
    """No two kernels share their samples: standardised first 256 values are uncorrelated."""
    model, _ = _b0()
    kernels = [np.asarray(c.weight).ravel()[:256] / _expected_conv_std(c) for _, c in _modules(model, Conv2d)]
    kernels.append(np.asarray(model.classifier.weight).ravel()[:256])
    corr = np.corrcoef(np.stack(kernels))
    off_diagonal = np.abs(corr[~np.eye(len(kernels), dtype=bool)])
    assert off_diagonal.max() < SIGMAS / np.sqrt(256), off_diagonal.max()


def test_depthwise_fan_is_the_kernel_area_and_1x1_fans_are_not_swapped():
    model, _ = _b0()
    block = model.blocks[1]  # 16 -> 96 -> 24, k3 s2
    cases = [(block.expand, 2 / 96), (block.depthwise, 2 / 9), (block.project, 2 / 24),
             (block.se.reduce, 2 / 4), (block.se.expand, 2 / 96), (model.stem, 2 / (9 * 32)),
             (model.head, 2 / 1280)]  # fmt: skip
    for conv, var in cases:
        w = np.asarray(conv.weight, np.float64)
        assert abs(w.var() / var - 1) < SIGMAS * math.sqrt(2 / w.size), (conv.weight.shape, w.var(), var)


def test_classifier_is_uniform_with_bound_one_over_sqrt_classes_and_biases_are_zero():
    model, _ = _b0()
    w = np.asarray(model.classifier.weight, np.float64)
    b = 1 / math.sqrt(1000)
    assert w.shape == (1280, 1000)
    assert np.abs(w).max() <= b and np.abs(w).max() > 0.999 * b
    n = w.size
    assert abs(w.std() / (b / math.sqrt(3)) - 1) < SIGMAS * math.sqrt(0.8 / n)  # var of u^2: 4/45 b^4
    for q in (0.25, 0.5, 0.75):  # uniform: a fraction q of |w| lies below q * b
        frac = (np.abs(w) < q * b).mean()
        assert abs(frac - q) < SIGMAS * math.sqrt(q * (1 - q) / n), (q, frac)
    for path, conv in _modules(model, Conv2d):
        if conv.bias is not None:
            assert np.all(np.asarray(conv.bias) == 0), path
    assert np.all(np.asarray(model.classifier.bias) == 0)


def test_batch_norm_starts_at_scale_one_offset_zero_mean_zero_variance_one():
    model, state = _b0()
    bns = _modules(model, BatchNorm)
    assert len(bns) == 49
    for path, bn in bns:
        assert np.all(np.asarray(bn.scale) == 1) and np.all(np.asarray(bn.offset) == 0), path
        mean, var = state.get(bn.index)
        assert np.all(np.asarray(mean) == 0) and np.all(np.asarray(var) == 1), path


def test_weights_are_a_deterministic_function_of_the_key_also_under_jit():
    config = models.EfficientNetConfig(width=0.25, depth=0.25)
    build = functools.partial(models.efficientnet_from_config, config, num_classes=10)
    a, sa = build(key=jax.random.key(1))
    b, _ = build(key=jax.random.key(1))
    c, _ = build(key=jax.random.key(2))
    j, sj = eqx.filter_jit(lambda k: build(key=k))(jax.random.key(1))
    key = jax.random.key(1)
    closed, _ = eqx.filter_jit(lambda: build(key=key))()  # a concrete key closed over, traced build
    leaves = lambda m: jax.tree_util.tree_leaves(eqx.filter(m, eqx.is_array))  # noqa: E731
    chex.assert_trees_all_equal(leaves(a), leaves(b))
    chex.assert_trees_all_equal(leaves(a), leaves(j))  # traced key: the same values
    chex.assert_trees_all_equal(leaves(a), leaves(closed))
    shapes = jax.eval_shape(lambda: models.efficientnet("b0", key=key))
    assert models.count_params(shapes[0]) == 5_288_548
    chex.assert_trees_all_equal(sa, sj)
    assert not np.array_equal(a.stem.weight, c.stem.weight)
    # a raw uint32[2] key (jax.random.PRNGKey) is a key too
    raw, _ = build(key=jax.random.PRNGKey(1))
    assert raw.stem.weight.shape == a.stem.weight.shape


@pytest.mark.parametrize("momentum, eps", [(0.9, 0.5), (0.0, 1e-3), (0.99, 1e-3)])
def test_batch_norm_train_and_eval_follow_the_documented_formulas(momentum, eps):
    rng = np.random.default_rng(0)
    c = 5
    bn, state = eqx.nn.make_with_state(BatchNorm)(c, eps=eps, momentum=momentum)
    scale, offset = rng.normal(size=c) + 1.0, rng.normal(size=c)
    bn = eqx.tree_at(lambda b: (b.scale, b.offset), bn, (jnp.asarray(scale, jnp.float32),
                                                         jnp.asarray(offset, jnp.float32)))  # fmt: skip
    r_mean, r_var = rng.normal(size=c), rng.uniform(0.5, 2.0, size=c)
    state = state.set(bn.index, (jnp.asarray(r_mean, jnp.float32), jnp.asarray(r_var, jnp.float32)))
    x = rng.normal(size=(4, 3, 2, c)) * rng.uniform(0.1, 3, size=c) + rng.normal(size=c)
    y, new_state = bn(jnp.asarray(x, jnp.float32), state, train=True)
    mean, var = x.mean((0, 1, 2)), x.var((0, 1, 2))  # biased variance
    want = scale * (x - mean) / np.sqrt(var + eps) + offset
    np.testing.assert_allclose(y, want, rtol=1e-4, atol=1e-5)
    got_mean, got_var = new_state.get(bn.index)
    np.testing.assert_allclose(got_mean, momentum * r_mean + (1 - momentum) * mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got_var, momentum * r_var + (1 - momentum) * var, rtol=1e-5, atol=1e-6)
    # eval: the running statistics, the state returned as it was
    y_eval, same = bn(jnp.asarray(x, jnp.float32), new_state, train=False)
    want_eval = scale * (x - np.asarray(got_mean)) / np.sqrt(np.asarray(got_var) + eps) + offset
    np.testing.assert_allclose(y_eval, want_eval, rtol=1e-4, atol=1e-5)
    chex.assert_trees_all_equal(same.get(bn.index), new_state.get(bn.index))


def test_batch_norm_in_train_mode_refuses_an_empty_batch():
    bn, state = eqx.nn.make_with_state(BatchNorm)(3)
    with pytest.raises(ValueError, match=r"x must hold at least one example .*\(0, 4, 4, 3\)"):
        bn(jnp.zeros((0, 4, 4, 3)), state, train=True)
    y, _ = bn(jnp.zeros((0, 4, 4, 3)), state, train=False)
    assert y.shape == (0, 4, 4, 3)


def test_every_batch_norm_of_the_model_gets_the_configured_momentum_and_eps():
    model, _ = jax.eval_shape(
        lambda k: models.efficientnet("b1", key=k, bn_momentum=0.9, bn_eps=0.25), jax.random.key(0)
    )
    assert (model.config.bn_momentum, model.config.bn_eps) == (0.9, 0.25)
    bns = _modules(model, BatchNorm)
    # stem and head, 3 per block with an expansion, 2 without
    assert len(bns) == 2 + sum(3 if s.has_expansion else 2 for s in model.config.expand())
    assert all((bn.momentum, bn.eps) == (0.9, 0.25) for _, bn in bns), bns


def test_grouped_batch_norm_normalises_each_group_with_its_own_statistics():
    """`groups=G` (per-replica BN): each consecutive slice of the batch is normalised as a
    batch of its own, and the running statistics move by the groups' average."""
    bn = BatchNorm(4, eps=1e-3, momentum=0.9)
    bn = eqx.tree_at(lambda b: (b.scale, b.offset), bn, (jnp.arange(1.0, 5.0), jnp.arange(4.0)))
    fresh = lambda: eqx.nn.State(bn)  # noqa: E731  (a State is spent once set)
    x = jax.random.normal(jax.random.key(0), (6, 3, 3, 4)) * jnp.arange(1.0, 7.0)[:, None, None, None]
    y, moved = bn(x, fresh(), train=True, groups=3)
    parts = [bn(x[2 * i: 2 * i + 2], fresh(), train=True) for i in range(3)]
    np.testing.assert_allclose(y, jnp.concatenate([p[0] for p in parts]), rtol=1e-5, atol=1e-6)
    want = [np.mean([np.asarray(p[1].get(bn.index)[j]) for p in parts], axis=0) for j in (0, 1)]
    for got, w in zip(moved.get(bn.index), want):
        np.testing.assert_allclose(got, w, rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(bn(x, fresh(), train=True, groups=1)[0],
                                  bn(x, fresh(), train=True)[0])
    with pytest.raises(ValueError, match="groups must divide the batch size 6, got 4"):
        bn(x, fresh(), train=True, groups=4)


def test_the_model_passes_bn_groups_to_every_batch_norm():
    config = models.config_for("b0", width=0.25, blocks=models.B0_BLOCKS[:2], head_channels=64,
                               dropout_rate=0.0, drop_path_rate=0.0)  # fmt: skip
    model, state = models.efficientnet_from_config(config, key=jax.random.key(0), num_classes=5)
    x = jax.random.normal(jax.random.key(1), (4, 32, 32, 3))
    call = eqx.filter_jit(lambda x, g: model(x, state, key=jax.random.key(2), train=True,
                                             bn_groups=g)[0])  # fmt: skip
    halves = jnp.concatenate([call(x[:2], 1), call(x[2:], 1)])
    np.testing.assert_allclose(call(x, 2), halves, rtol=1e-4, atol=1e-5)
    assert not np.allclose(call(x, 1), halves, atol=1e-3)
    with pytest.raises(ValueError, match="bn_groups must divide the batch size 4, got 3"):
        model(x, state, key=jax.random.key(2), train=True, bn_groups=3)
