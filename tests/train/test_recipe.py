"""nsjax.train._recipe against transcriptions of the TF1 reference: the learning-rate schedule
(`utils.build_learning_rate`), RMSProp (`tf.train.RMSPropOptimizer`) with the coupled weight
decay, the weight-decay mask on a real B0 and the EMA (`tf.train.ExponentialMovingAverage`
with `num_updates`)."""

import dataclasses
import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nsjax
from nsjax.models._layers import BatchNorm, Conv2d, Dense
from nsjax.train._config import TrainConfig
from nsjax.train._recipe import (
    current_learning_rate,
    ema_decay,
    ema_update,
    learning_rate_schedule,
    make_optimizer,
    weight_decay_mask,
)

F32 = np.float32


# --------------------------------------------------------------------------- references


def tf_learning_rate(step: int, c: TrainConfig) -> np.float32:
    """`build_learning_rate` of Noisy Student's / tensorflow/tpu EfficientNet's `utils.py`,
    transcribed op for op in float32 (TF casts the step and the decay steps to float32)."""
    peak, spe = c.learning_rate, c.steps_per_epoch
    if c.lr_decay == "exponential":
        decay_steps = spe * c.decay_epochs
        lr = F32(peak) * F32(c.decay_rate) ** np.floor(F32(step) / F32(decay_steps))
    else:
        lr = F32(0.5 * peak) * (F32(1) + np.cos(F32(np.pi) * F32(step) / F32(c.total_steps)))
    if c.warmup_epochs:
        warmup_steps = int(c.warmup_epochs * spe)
        if step < warmup_steps:
            lr = F32(peak) * F32(step) / F32(warmup_steps)
    return F32(lr)


def tf1_rmsprop(params: dict, grads: list[dict], lrs, decayed: set, c: TrainConfig) -> list[dict]:
    """TF1 `ApplyRMSProp` in float64 with `weight_decay * w` added to the decayed leaves'
    gradients (the gradient of TF's `weight_decay * l2_loss(w)`): `ms` starts at 1,
    `ms = rho ms + (1 - rho) g^2; mom = mu mom + lr_t g / sqrt(ms + eps); w -= mom`.
    Returns the parameters after each update."""
    p = {k: np.asarray(v, np.float64) for k, v in params.items()}
    ms = {k: np.ones_like(v) for k, v in p.items()}
    mom = {k: np.zeros_like(v) for k, v in p.items()}
    rho, mu, eps = c.rmsprop_decay, c.momentum, c.epsilon
    out = []
    for g_step, lr in zip(grads, lrs):
        for k in p:
            g = np.asarray(g_step[k], np.float64) + (c.weight_decay * p[k] if k in decayed else 0)
            ms[k] = rho * ms[k] + (1 - rho) * g * g
            mom[k] = mu * mom[k] + float(lr) * g / np.sqrt(ms[k] + eps)
            p[k] = p[k] - mom[k]
        out.append(dict(p))
    return out


class Tiny(eqx.Module):
    """A Conv2d (with bias), a batch norm, a Dense and a 2-D parameter that is no kernel."""

    conv: Conv2d
    bn: BatchNorm
    dense: Dense
    table: jax.Array

    def __init__(self, key):
        k1, k2 = jax.random.split(key)
        self.conv = Conv2d(2, 3, 3, bias=True, key=k1)
        self.bn = BatchNorm(3)
        self.dense = Dense(3, 2, key=k2)
        self.table = jnp.linspace(-1.0, 1.0, 6, dtype=jnp.float32).reshape(2, 3)


TINY_KERNELS = {".conv.weight", ".dense.weight"}


@pytest.fixture(scope="module")
def tiny_params():
    model, _ = eqx.nn.make_with_state(Tiny)(jax.random.key(1))
    return eqx.filter(model, eqx.is_inexact_array)


@pytest.fixture(scope="module")
def b0():
    model, _ = nsjax.models.efficientnet("b0", key=jax.random.key(0), num_classes=10)
    return model


def _by_path(tree) -> dict:
    return {jax.tree_util.keystr(k): v for k, v in jax.tree_util.tree_leaves_with_path(tree)}


def _config(**kw) -> TrainConfig:
    return TrainConfig(**{"labeled_batch": 256, "steps_per_epoch": 100, **kw})


# --------------------------------------------------------------------------- schedule

EXPONENTIAL = _config()  # warm-up 500 steps, decay every 240 (float32 240.0) steps
ODD = _config(steps_per_epoch=37, warmup_epochs=0.5, decay_epochs=1.2)  # w = int(18.5), 44.4
COSINE = _config(lr_decay="cosine", epochs=30.0)  # total_steps 3000
RATE_ZERO = _config(decay_rate=0.0, warmup_epochs=1.0)  # peak until step 240, then 0


def _steps(c: TrainConfig) -> list[int]:
    w = int(c.warmup_epochs * c.steps_per_epoch)
    d = c.steps_per_epoch * c.decay_epochs
    steps = {0, 1, w // 2, w - 1, w, w + 1, 10**6}
    for k in range(1, 8):
        b = math.ceil(k * d)
        steps |= {b - 1, b, b + 1}
    if c.lr_decay == "cosine":
        steps |= {c.total_steps // 2, c.total_steps - 1, c.total_steps}
    return sorted(steps)


@pytest.mark.parametrize("c", [EXPONENTIAL, ODD, COSINE, RATE_ZERO],
                         ids=["exponential", "odd", "cosine", "rate-zero"])  # fmt: skip
def test_schedule_matches_the_tf_formula(c):
    steps = _steps(c)
    expected = np.array([tf_learning_rate(s, c) for s in steps])
    schedule = learning_rate_schedule(c)
    got = np.array([schedule(s) for s in steps])  # Python ints
    np.testing.assert_allclose(got, expected, rtol=2e-6, atol=1e-9)
    batched = jax.jit(schedule)(jnp.asarray(steps, jnp.int32))  # traced, vectorised
    assert batched.dtype == jnp.float32
    np.testing.assert_allclose(batched, expected, rtol=2e-6, atol=1e-9)
    np.testing.assert_allclose(current_learning_rate(c, steps[3]), expected[3], rtol=2e-6)


def test_warmup_is_linear_from_zero_and_truncated():
    schedule = learning_rate_schedule(ODD)  # warmup_steps = int(0.5 * 37) = 18, not 18.5
    peak = ODD.learning_rate
    assert float(schedule(0)) == 0.0
    np.testing.assert_allclose(schedule(9), peak * 9 / 18, rtol=1e-6)
    np.testing.assert_allclose(schedule(17), peak * 17 / 18, rtol=1e-6)
    np.testing.assert_allclose(schedule(18), peak, rtol=1e-6)  # decay not yet due (44.4)


def test_decay_clock_counts_from_step_zero_not_from_warmup_end():
    schedule = learning_rate_schedule(EXPONENTIAL)
    peak, decay_steps = EXPONENTIAL.learning_rate, 240
    for step in (500, 501, 719, 720):  # just after the 500-step warm-up, and a boundary
        np.testing.assert_allclose(schedule(step), peak * 0.97 ** (step // decay_steps), rtol=1e-6)
    assert float(schedule(500)) < 0.95 * peak  # a clock restarted at 500 would give the peak


def test_schedule_without_warmup():
    c = _config(warmup_epochs=0.0)
    np.testing.assert_allclose(learning_rate_schedule(c)(0), c.learning_rate, rtol=1e-7)


# --------------------------------------------------------------------------- optimizer

RMSPROP = TrainConfig(
    labeled_batch=256, base_learning_rate=0.1, steps_per_epoch=3, warmup_epochs=1.5,
    decay_epochs=1.0, decay_rate=0.6, epsilon=0.1, weight_decay=0.05, epochs=10.0,
)  # fmt: skip
# warm-up int(1.5 * 3) = 4 steps, then x0.6 every 3 steps counted from step 0: lrs
# 0, .025, .05, .075, .06, .06, .036


def _grads(params, steps: int, seed: int = 0) -> list:
    rng = np.random.default_rng(seed)
    return [jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), jnp.float32), params)
            for _ in range(steps)]  # fmt: skip


def test_rmsprop_matches_tf1_under_a_changing_learning_rate(tiny_params):
    steps = 7
    grads = _grads(tiny_params, steps)
    lrs = [tf_learning_rate(k, RMSPROP) for k in range(steps)]
    assert len({float(v) for v in lrs}) >= 5  # warm-up and decay both exercised
    expected = tf1_rmsprop(_by_path(tiny_params), [_by_path(g) for g in grads], lrs,
                           TINY_KERNELS, RMSPROP)  # fmt: skip

    opt = make_optimizer(RMSPROP)
    state = opt.init(tiny_params)
    update = jax.jit(opt.update)
    params = tiny_params
    for k in range(steps):
        updates, state = update(grads[k], state, params)
        params = eqx.apply_updates(params, updates)
        got = _by_path(params)
        assert got.keys() == expected[k].keys()
        for name, value in got.items():
            assert value.dtype == jnp.float32
            np.testing.assert_allclose(value, expected[k][name], rtol=1e-6, atol=1e-6,
                                       err_msg=f"{name} after update {k}")  # fmt: skip


@pytest.mark.parametrize("name", ["sgd", "adamw"])
def test_sgd_and_adamw_decay_only_kernels(tiny_params, name):
    c = dataclasses.replace(RMSPROP, optimizer=name)
    opt = make_optimizer(c)
    state = opt.init(tiny_params)
    zeros = jax.tree.map(jnp.zeros_like, tiny_params)
    for _ in range(2):  # step 0 has lr 0
        updates, state = jax.jit(opt.update)(zeros, state, tiny_params)
    lr = tf_learning_rate(1, c)
    wd = c.weight_decay
    for path, u in _by_path(updates).items():
        p = _by_path(tiny_params)[path]
        if path in TINY_KERNELS:
            # sgd: the decay gradient wd*p, nesterov over two steps: g + mu * (mu g + g);
            # adamw: zero gradients leave only the decoupled -lr * wd * p.
            factor = 1 + c.momentum * (c.momentum + 1) if name == "sgd" else 1.0
            np.testing.assert_allclose(u, -lr * wd * factor * p, rtol=1e-5, atol=1e-8)
        else:
            np.testing.assert_array_equal(u, 0.0)


def test_gradient_clipping_comes_first(tiny_params):
    clipped = make_optimizer(dataclasses.replace(RMSPROP, grad_clip_norm=0.5))
    plain = make_optimizer(RMSPROP)
    g = jax.tree.map(lambda x: 10 * x, _grads(tiny_params, 1)[0])
    norm = float(jnp.sqrt(sum(jnp.sum(x * x) for x in jax.tree.leaves(g))))
    g_small = jax.tree.map(lambda x: x * (0.5 / norm), g)
    s1, s2 = clipped.init(tiny_params), plain.init(tiny_params)
    for _ in range(2):
        u1, s1 = jax.jit(clipped.update)(g, s1, tiny_params)
        u2, s2 = jax.jit(plain.update)(g_small, s2, tiny_params)
    for a, b in zip(jax.tree.leaves(u1), jax.tree.leaves(u2)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-9)


def test_zero_weight_decay_never_consults_the_mask():
    c = dataclasses.replace(RMSPROP, weight_decay=0.0)
    params = {"w": jnp.ones((2, 2))}  # no Conv2d / Dense: the mask would refuse it
    opt = make_optimizer(c)
    opt.update(params, opt.init(params), params)


# --------------------------------------------------------------------------- weight-decay mask


def _expected_kernels(model) -> int:
    """From the architecture: stem, head, classifier, and per block [expand] + depthwise +
    [2 SE convs] + project."""
    count = 3
    for block in model.blocks:
        spec = block.spec
        count += int(spec.has_expansion) + 1 + 2 * int(bool(spec.se_channels)) + 1
    return count


def test_mask_on_b0_is_exactly_the_kernels(b0):
    params = eqx.filter(b0, eqx.is_inexact_array)
    mask = weight_decay_mask(params)
    assert jax.tree.structure(mask) == jax.tree.structure(params)
    flags = _by_path(mask)
    decayed = {p for p, v in flags.items() if v}
    assert all(type(v) is bool for v in flags.values())
    assert len(decayed) == _expected_kernels(b0) == 82
    assert decayed == {p for p in flags if p.endswith(".weight")}
    for path in (".stem.weight", ".blocks[0].depthwise.weight", ".blocks[0].se.reduce.weight",
                 ".blocks[0].se.expand.weight", ".blocks[1].expand.weight",
                 ".blocks[15].project.weight", ".head.weight", ".classifier.weight"):
        assert flags[path] is True, path
    for path, v in flags.items():
        if path.endswith((".bias", ".scale", ".offset")):
            assert v is False, path
    assert sum(p.endswith(".bias") for p in flags) == 2 * 16 + 1  # SE biases and classifier
    # the mask follows the gradients' structure too (optax calls it on the updates)
    assert jax.tree.structure(weight_decay_mask(jax.tree.map(jnp.zeros_like, params))) == \
        jax.tree.structure(params)


def test_mask_by_module_class_not_by_rank(tiny_params):
    flags = _by_path(weight_decay_mask(tiny_params))
    assert {p for p, v in flags.items() if v} == TINY_KERNELS
    assert flags[".table"] is False  # 2-D, but no Conv2d / Dense weight
    assert flags[".conv.bias"] is False and flags[".bn.scale"] is False
    # a bare layer, and a layer nested in a container, work too
    assert weight_decay_mask(tiny_params.dense).weight is True
    nested = weight_decay_mask({"a": [tiny_params.conv], "b": None})
    assert nested["a"][0].weight is True and nested["a"][0].bias is False and nested["b"] is None


# --------------------------------------------------------------------------- EMA


def test_ema_decay_warmup_values():
    for step, expected in ((0, 0.1), (1, 2 / 11), (10, 11 / 20), (10**6, 0.9999)):
        got = ema_decay(step, 0.9999)
        assert got.dtype == jnp.float32
        np.testing.assert_allclose(got, expected, rtol=1e-6)
    np.testing.assert_allclose(ema_decay(10**6, 0.9), 0.9, rtol=1e-7)
    traced = jax.jit(ema_decay)(jnp.array([0, 1, 10, 10**6]), 0.9999)
    np.testing.assert_allclose(traced, [0.1, 2 / 11, 11 / 20, 0.9999], rtol=1e-6)


def test_ema_update_formula_and_tf_step_convention():
    rng = np.random.default_rng(3)
    init = {"w": rng.normal(size=(3, 4)).astype(F32), "none": None, "b": np.float32(2.0)}
    ema = jax.tree.map(jnp.asarray, init)
    ref = {k: np.asarray(v, np.float64) for k, v in init.items() if v is not None}
    for k in range(3):  # update number k; TF's EMA then reads global_step = k + 1
        new = {"w": jnp.asarray(rng.normal(size=(3, 4)), jnp.float32), "none": None,
               "b": jnp.float32(k)}  # fmt: skip
        ema = jax.jit(ema_update)(ema, new, k + 1, 0.9999)
        d = min(0.9999, (2 + k) / (11 + k))  # (1 + num_updates) / (10 + num_updates)
        for name in ref:
            ref[name] = ref[name] - (1 - d) * (ref[name] - np.asarray(new[name], np.float64))
            np.testing.assert_allclose(ema[name], ref[name], rtol=1e-6, atol=1e-6)
        assert ema["none"] is None
    # the first update's average: 2/11 of the old, 9/11 of the new
    out = ema_update({"x": jnp.float32(0.0)}, {"x": jnp.float32(11.0)}, 1, 0.9999)
    np.testing.assert_allclose(out["x"], 9.0, rtol=1e-6)


def test_ema_lies_between_old_and_new_and_keeps_dtypes():
    rng = np.random.default_rng(4)
    old = {"a": jnp.asarray(rng.normal(size=(50,)), jnp.float32),
           "h": jnp.asarray(rng.normal(size=(7,)), jnp.bfloat16)}  # fmt: skip
    new = {"a": jnp.asarray(rng.normal(size=(50,)), jnp.float32),
           "h": jnp.asarray(rng.normal(size=(7,)), jnp.bfloat16)}  # fmt: skip
    for step in (0, 1, 5, 100, 10**6):
        out = ema_update(old, new, step, 0.999)
        for name in old:
            assert out[name].dtype == old[name].dtype
            o, n, e = (np.asarray(t[name], np.float32) for t in (old, new, out))
            slack = 1e-6 if name == "a" else 1e-2
            assert np.all(e >= np.minimum(o, n) - slack) and np.all(e <= np.maximum(o, n) + slack)


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("fn", [learning_rate_schedule, make_optimizer,
                                lambda c: current_learning_rate(c, 0)])  # fmt: skip
def test_config_must_be_a_train_config(fn):
    with pytest.raises(TypeError, match="config must be a TrainConfig, got dict"):
        fn({"optimizer": "rmsprop"})


@pytest.mark.parametrize("fn", [learning_rate_schedule, make_optimizer])
def test_schedule_needs_steps_per_epoch(fn):
    with pytest.raises(ValueError, match="steps_per_epoch must be set"):
        fn(TrainConfig())


def test_bad_steps():
    schedule = learning_rate_schedule(EXPONENTIAL)
    with pytest.raises(TypeError, match="step must be an int or an integer array, got float"):
        schedule(1.5)
    with pytest.raises(TypeError, match="step must have an integer dtype, got float32"):
        schedule(jnp.float32(3))
    with pytest.raises(TypeError, match="step must be an int or an integer array, got NoneType"):
        ema_decay(None, 0.9)
    with pytest.raises(ValueError, match=r"step must be >= 0 .*got -1"):
        schedule(-1)
    with pytest.raises(ValueError, match=r"step must be >= 0"):
        ema_decay(-2, 0.9)
    assert np.isnan(jax.jit(schedule)(-1))
    assert np.isnan(jax.jit(ema_decay)(-2, 0.9))


def test_bad_decay():
    with pytest.raises(ValueError, match=r"decay must be in \[0, 1\], got 1.5"):
        ema_decay(0, 1.5)
    with pytest.raises(TypeError, match="decay must be a number, got str"):
        ema_update({"a": jnp.zeros(2)}, {"a": jnp.zeros(2)}, 1, "0.9")
    assert np.isnan(jax.jit(ema_decay)(3, 1.5))


def test_bad_ema_trees():
    a = {"w": jnp.zeros((2, 3))}
    with pytest.raises(ValueError, match="ema and new must have the same pytree structure"):
        ema_update(a, {"v": jnp.zeros((2, 3))}, 1, 0.9)
    with pytest.raises(ValueError, match=r"ema\['w'\] and new\['w'\] must have the same shape"):
        ema_update(a, {"w": jnp.zeros((3, 2))}, 1, 0.9)
    with pytest.raises(TypeError, match=r"ema\['w'\] must have a floating dtype, got int32"):
        ema_update({"w": jnp.zeros(2, jnp.int32)}, {"w": jnp.zeros(2)}, 1, 0.9)
    with pytest.raises(ValueError, match=r"step must be a scalar, got shape \(2,\)"):
        ema_update(a, a, jnp.array([1, 2]), 0.9)


def test_mask_refuses_a_tree_without_layers(tiny_params):
    with pytest.raises(ValueError, match="params must contain an nsjax Conv2d or Dense weight"):
        weight_decay_mask({"w": jnp.ones((3, 3, 2, 4))})
    with pytest.raises(ValueError, match="got a list with none"):
        weight_decay_mask(jax.tree.leaves(tiny_params))
