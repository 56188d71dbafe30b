"""nsjax.models: construction, parameter counts, forward semantics, determinism."""

import functools

import chex
import equinox as eqx
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings

from nsjax import models, noise

KEY = jax.random.key(0)


@eqx.filter_jit
def apply(model, x, state, key=None, train=False):
    """The model under jit (eager op-by-op dispatch is slow); `train` is static."""
    return model(x, state, key=key, train=train)

# The reference's trainable-parameter counts with a 1000-class head (timm's param_count).
PARAMS = {
    "b0": 5_288_548, "b1": 7_794_184, "b2": 9_109_994, "b3": 12_233_232, "b4": 19_341_616,
    "b5": 30_389_784, "b6": 43_040_704, "b7": 66_347_960, "l0": 140_764_664,
    "l1": 272_630_564, "l2": 480_309_308,
}  # fmt: skip


@pytest.mark.parametrize("name", list(PARAMS))
def test_parameter_count_matches_reference_without_materialising(name):
    model, state = jax.eval_shape(lambda k: models.efficientnet(name, key=k), KEY)
    assert models.count_params(model) == PARAMS[name]
    # running statistics are state, not parameters: two per BN channel
    bn_channels = sum(x.size for x in jax.tree_util.tree_leaves(state)) // 2
    assert bn_channels > 0


def test_b0_architecture_matches_reference_table():
    specs = models.config_for("b0").expand()
    assert len(specs) == 16
    assert [(s.kernel, s.stride, s.in_channels, s.mid_channels, s.out_channels, s.se_channels)
            for s in specs[:4]] == [(3, 1, 32, 32, 16, 8), (3, 2, 16, 96, 24, 4),
                                    (3, 1, 24, 144, 24, 6), (5, 2, 24, 144, 40, 6)]  # fmt: skip
    assert [s.residual for s in specs].count(True) == 9
    assert [s.drop_path_rate for s in specs] == list(noise.stochastic_depth_rates(16, 0.2))


def test_variant_table_and_overrides():
    l2 = models.config_for("l2")
    assert (l2.width, l2.depth, l2.train_resolution, l2.test_resolution) == (4.3, 5.3, 475, 800)
    assert [models.VARIANTS[n].dropout_rate for n in ("b0", "b2", "b4", "b6", "l2")] == [0.2, 0.3, 0.4, 0.5, 0.5]
    model, _ = jax.eval_shape(lambda k: models.efficientnet("b3", key=k, dropout_rate=0.5), KEY)
    assert model.config.dropout_rate == 0.5
    with pytest.raises(ValueError, match="name must be one of"):
        models.efficientnet("b9", key=KEY)
    with pytest.raises(ValueError, match=r"width must be in \(0, inf\), got 0.0"):
        models.EfficientNetConfig(width=0.0)


@pytest.fixture(scope="module")
def tiny():
    """A width-0.25, depth-0.25 EfficientNet with 10 classes: fast enough for many calls."""
    config = models.EfficientNetConfig(width=0.25, depth=0.25, dropout_rate=0.3)
    return models.efficientnet_from_config(config, key=KEY, num_classes=10)


# Three blocks: a residual one without expansion, a stride-2 one with, a residual one with SE
# and expansion: every kind of layer and drop-path, compiled and run (eagerly too) quickly.
MINI = models.EfficientNetConfig(width=0.25, dropout_rate=0.3, blocks=(
    models.BlockArgs(1, 3, 1, 1, 32, 16), models.BlockArgs(2, 5, 2, 6, 16, 24)))  # fmt: skip


@pytest.fixture(scope="module")
def mini():
    assert [s.residual for s in MINI.expand()] == [True, False, True]
    return models.efficientnet_from_config(MINI, key=KEY, num_classes=10)


@pytest.mark.parametrize("hw", [(32, 32), (33, 47), (97, 80)])
def test_output_shapes_at_several_resolutions(tiny, hw):
    model, state = tiny
    x = jax.random.normal(KEY, (2, *hw, 3))
    logits, new_state = apply(model, x, state)
    chex.assert_shape(logits, (2, 10))
    chex.assert_type(logits, jnp.float32)
    feats, _ = jax.eval_shape(lambda: model.features(x, state, train=False))
    chex.assert_shape(feats, (2, model.config.head_out))
    chex.assert_trees_all_equal(new_state, state)  # eval leaves the statistics alone


def test_bfloat16_activations_keep_float32_logits_and_params(mini):
    model, state = mini
    x = jax.random.normal(KEY, (2, 48, 48, 3))
    lo, _ = apply(model, x.astype(jnp.bfloat16), state)
    hi, _ = apply(model, x, state)
    chex.assert_type(lo, jnp.float32)
    np.testing.assert_allclose(lo, hi, atol=0.1 * float(jnp.abs(hi).max()) + 1e-3)
    _, new_state = apply(model, x.astype(jnp.bfloat16), state, KEY, True)
    assert all(v.dtype == jnp.float32 for v in jax.tree_util.tree_leaves(new_state))


def test_train_mode_uses_batch_statistics_and_moves_running_ones(tiny):
    model, state = tiny
    x = 3.0 + 2.0 * jax.random.normal(KEY, (4, 40, 40, 3))
    _, new_state = apply(model, x, state, KEY, True)
    mean, var = new_state.get(model.bn_stem.index)
    stem = model.stem(x)
    batch_mean = stem.mean((0, 1, 2))
    batch_var = stem.var((0, 1, 2))
    np.testing.assert_allclose(mean, 0.01 * batch_mean, rtol=1e-4, atol=1e-6)  # 0.99 * 0 + 0.01 * m
    np.testing.assert_allclose(var, 0.99 + 0.01 * batch_var, rtol=1e-4)
    # training normalisation ignores the running statistics: changing them changes nothing
    shifted = jax.tree.map(lambda v: v, new_state).set(model.bn_stem.index, (mean + 5.0, var * 3.0))
    a, _ = apply(model, x, new_state, KEY, True)
    b, _ = apply(model, x, shifted, KEY, True)
    np.testing.assert_array_equal(a, b)


def test_train_noise_depends_on_key_and_eval_is_deterministic(mini):
    model, state = mini
    x = jax.random.normal(KEY, (8, 32, 32, 3))
    k1, k2 = jax.random.split(jax.random.key(7))
    a, _ = apply(model, x, state, k1, True)
    b, _ = apply(model, x, state, k1, True)
    c, _ = apply(model, x, state, k2, True)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    e1, _ = apply(model, x, state)
    e2, _ = apply(model, x, state, k2)
    np.testing.assert_array_equal(e1, e2)
    # eval output of an example does not depend on the rest of the batch
    single, _ = apply(model, x[:1], state)
    np.testing.assert_allclose(single, e1[:1], rtol=1e-5, atol=1e-5)


def test_jit_equals_no_jit(mini):
    model, state = mini
    x = jax.random.normal(KEY, (2, 36, 36, 3))
    eager = model(x, state, key=KEY, train=True)
    jitted = apply(model, x, state, KEY, True)
    chex.assert_trees_all_close(eager, jitted, rtol=1e-5, atol=1e-5)


def test_gradients_reach_every_parameter(mini):
    model, state = mini
    x = jax.random.normal(KEY, (4, 32, 32, 3))

    def loss(m):
        logits, _ = m(x, state, key=KEY, train=True)
        return jnp.mean(logits**2)

    grads = eqx.filter_jit(eqx.filter_grad(loss))(model)
    leaves = jax.tree_util.tree_leaves(eqx.filter(grads, eqx.is_inexact_array))
    assert len(leaves) == len(jax.tree_util.tree_leaves(eqx.filter(model, eqx.is_inexact_array)))
    chex.assert_tree_all_finite(leaves)
    assert sum(float(jnp.abs(g).sum() > 0) for g in leaves) == len(leaves)


def test_small_image_variant_feature_map_sizes():
    config = models.config_for("b0", small_image=True)
    strides = [s.stride for s in config.expand() if s.index_in_stage == 0]
    assert strides == [1, 1, 1, 2, 1, 2, 1]  # stages 2 and 3 at stride 1: 32 -> 16 -> 8 -> 4
    model, state = jax.eval_shape(
        lambda k: models.efficientnet("b0", key=k, num_classes=10, small_image=True), KEY
    )
    pooled = jax.eval_shape(lambda m, s, x: m.features(x, s, train=False), model, state,
                            jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32))  # fmt: skip

    def last_feature_map(m, s, x):
        h = m.stem(x)
        for block in m.blocks:
            h, s = block(h, s, key=None, train=False)
        return h

    h = jax.eval_shape(last_feature_map, model, state, jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32))
    assert h.shape == (1, 4, 4, 320) and pooled[0].shape == (1, 1280)


@pytest.mark.parametrize(
    "x, match",
    [
        (jnp.zeros((2, 31, 40, 3)), r"H, W >= 32"),
        (jnp.zeros((2, 40, 40, 1)), r"\[B, H, W, 3\]"),
        (jnp.zeros((40, 40, 3)), r"x must have shape \[B, H, W, 3\]"),
    ],
)
def test_bad_images_raise(tiny, x, match):
    model, state = tiny
    with pytest.raises(ValueError, match=match):
        model(x, state, train=False)


def test_train_without_key_raises(tiny):
    model, state = tiny
    with pytest.raises(TypeError, match="key must be a jax.random key"):
        model(jnp.zeros((2, 32, 32, 3)), state, train=True)


@pytest.mark.slow
def test_l2_runs_forward_at_475_for_a_batch_of_one():
    """The largest student fits a 24 GiB CPU machine (see docs/benchmarks.md for its memory)."""
    model, state = models.efficientnet("l2", key=KEY)
    logits, _ = apply(model, jnp.zeros((1, 475, 475, 3)), state)
    chex.assert_shape(logits, (1, 1000))
    chex.assert_tree_all_finite(logits)


@pytest.mark.parametrize("hw, kernel, stride", [((56, 56), 5, 1), ((33, 47), 5, 2), ((32, 32), 3, 2),
                                                ((7, 8), 3, 2), ((9, 9), 3, 1)])  # fmt: skip
def test_cpu_depthwise_equals_grouped_convolution(hw, kernel, stride):
    """The shifted-slice depthwise convolution used on CPU is XLA's grouped one, TF SAME padding
    included (asymmetric for stride 2 on even sizes), with the same gradients."""
    from nsjax.models._layers import _depthwise_shifted

    x = jax.random.normal(KEY, (2, *hw, 8))
    w = jax.random.normal(jax.random.key(1), (kernel, kernel, 1, 8))

    def grouped(x, w):
        return jax.lax.conv_general_dilated(x, w, (stride, stride), "SAME", feature_group_count=8,
                                            dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                            precision="highest")  # fmt: skip

    shifted = functools.partial(_depthwise_shifted, stride=stride)
    np.testing.assert_allclose(shifted(x, w), grouped(x, w), atol=1e-5)
    g_shift = jax.grad(lambda x, w: jnp.sum(jnp.sin(shifted(x, w))), argnums=(0, 1))(x, w)
    g_group = jax.grad(lambda x, w: jnp.sum(jnp.sin(grouped(x, w))), argnums=(0, 1))(x, w)
    chex.assert_trees_all_close(g_shift, g_group, atol=1e-4)


@settings(deadline=None, max_examples=5)
@given(h=st.integers(1, 13), w=st.integers(1, 13), kernel=st.sampled_from([1, 3, 5]),
       stride=st.sampled_from([1, 2]), channels=st.integers(1, 5), seed=st.integers(0, 2**16))
def test_cpu_depthwise_gradients_equal_the_grouped_convolutions(h, w, kernel, stride, channels,
                                                                 seed):  # fmt: skip
    """The hand-written backward pass of the CPU depthwise convolution (input gradient as
    shifted slices of the strided-spread output gradient, weight gradient as a scan over output
    rows) against autodiff of XLA's grouped convolution, for any size, kernel and stride,
    under jit, float32 and bfloat16."""
    from nsjax.models._layers import _depthwise_shifted

    keys = jax.random.split(jax.random.key(seed), 3)
    x = jax.random.normal(keys[0], (2, h, w, channels))
    wt = jax.random.normal(keys[1], (kernel, kernel, 1, channels))
    g = jax.random.normal(keys[2], (2, -(-h // stride), -(-w // stride), channels))

    def grouped(x, wt):
        return jax.lax.conv_general_dilated(
            x, wt, (stride, stride), "SAME", feature_group_count=channels,
            dimension_numbers=("NHWC", "HWIO", "NHWC"), precision="highest")  # fmt: skip

    for dtype, tol in ((jnp.float32, 1e-4), (jnp.bfloat16, 0.15)):
        xd, wd, gd = x.astype(dtype), wt.astype(dtype), g.astype(dtype)
        ours = jax.jit(lambda x, wt: jax.vjp(
            lambda x, wt: _depthwise_shifted(x, wt, stride), x, wt)[1](gd))(xd, wd)
        ref = jax.vjp(grouped, x, wt)[1](g)
        for got, want in zip(ours, ref):
            assert got.dtype == dtype
            np.testing.assert_allclose(np.asarray(got, np.float32), want,
                                       atol=tol * (1 + np.abs(want).max()))


@settings(deadline=None, max_examples=8)
@given(h=st.integers(1, 12), w=st.integers(1, 12), kernel=st.sampled_from([1, 3, 5]),
       stride=st.sampled_from([1, 2]), cin=st.integers(1, 5), cout=st.integers(1, 5),
       seed=st.integers(0, 2**16))
def test_cpu_dense_convolutions_equal_xla_convolutions(h, w, kernel, stride, cin, cout, seed):
    """On a CPU a dense convolution is a matrix product (1 x 1, stride 1: `_pointwise`; else
    over "SAME"-padded patches) with a hand-written backward pass: values, input and weight
    gradients equal to autodiff of XLA's convolution, for any size, kernel and stride, under
    jit, float32 and bfloat16."""
    from nsjax.models._layers import Conv2d

    keys = jax.random.split(jax.random.key(seed), 3)
    conv = Conv2d(cin, cout, kernel, stride=stride, key=keys[0])
    x = jax.random.normal(keys[1], (2, h, w, cin))
    g = jax.random.normal(keys[2], (2, -(-h // stride), -(-w // stride), cout))

    def xla(x, wt):
        return jax.lax.conv_general_dilated(x, wt, (stride, stride), "SAME",
                                            dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                            precision="highest")  # fmt: skip

    want, ref_vjp = jax.vjp(xla, x, conv.weight)
    for dtype, tol in ((jnp.float32, 1e-5), (jnp.bfloat16, 0.05)):
        xd, gd = x.astype(dtype), g.astype(dtype)
        got, grads = jax.jit(lambda c, x: (lambda y, f: (y, f(gd)))(*eqx.filter_vjp(
            lambda c, x: c(x), c, x)))(conv, xd)  # fmt: skip
        assert got.dtype == dtype and grads[1].dtype == dtype
        pairs = ((got, want), (grads[1], ref_vjp(g)[0]), (grads[0].weight, ref_vjp(g)[1]))
        for ours, ref in pairs:
            np.testing.assert_allclose(np.asarray(ours, np.float32), ref,
                                       atol=tol * (1 + np.abs(ref).max()))


@pytest.mark.parametrize("kernel, stride", [(1, 1), (3, 2)])
@pytest.mark.parametrize("platform", ["cpu", "cuda", "tpu"])
def test_dense_convolution_path_is_chosen_by_the_target_platform(platform, kernel, stride):
    """Lowered for a CPU, a dense convolution is a matrix product; for an accelerator, XLA's
    convolution."""
    from nsjax.models._layers import Conv2d

    conv = Conv2d(4, 8, kernel, stride=stride, key=KEY)
    text = jax.jit(lambda c, x: c(x)).trace(conv, jnp.ones((1, 16, 16, 4))).lower(
        lowering_platforms=(platform,)).as_text()  # fmt: skip
    assert ("stablehlo.convolution" in text) == (platform != "cpu")
    assert ("stablehlo.dot_general" in text) == (platform == "cpu")


@pytest.mark.parametrize("platform, grouped", [("cpu", False), ("cuda", True), ("tpu", True)])
def test_depthwise_path_is_chosen_by_the_target_platform_not_the_host(platform, grouped):
    """`jax.lax.platform_dependent`: lowered on this CPU host for an accelerator, a depthwise
    convolution is the grouped convolution; for a CPU, the shifted slices."""
    from nsjax.models._layers import Conv2d

    conv = Conv2d(8, 8, 3, groups=8, key=KEY)
    x = jnp.ones((1, 16, 16, 8))
    text = jax.jit(lambda c, x: c(x)).trace(conv, x).lower(lowering_platforms=(platform,)).as_text()
    assert ("feature_group_count = 8" in text) == grouped
    assert ("stablehlo.slice" in text) == (not grouped)
    if platform == "cpu":  # and the model's layer gives the grouped convolution's values
        want = jax.lax.conv_general_dilated(x, conv.weight, (1, 1), "SAME", feature_group_count=8,
                                            dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                            precision="highest")  # fmt: skip
        np.testing.assert_allclose(conv(x), want, atol=1e-5)
