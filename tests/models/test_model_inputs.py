"""No silent wrong result: every config field, constructor and call argument is checked, with
an error naming the argument, before any work; numbers may be NumPy scalars or 0-d arrays;
empty batches follow the package's convention."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nsjax import models

KEY = jax.random.key(0)
Config = models.EfficientNetConfig
Block = models.BlockArgs
NAN = float("nan")


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(bn_momentum=1.5), ValueError, r"bn_momentum must be in \[0, 1\), got 1.5"),
        (dict(bn_momentum=1.0), ValueError, r"bn_momentum must be in \[0, 1\)"),
        (dict(bn_momentum=NAN), ValueError, r"bn_momentum must be in \[0, 1\), got nan"),
        (dict(bn_momentum="0.9"), TypeError, "bn_momentum must be a number, got str"),
        (dict(bn_eps=-1), ValueError, r"bn_eps must be in \(0, inf\), got -1"),
        (dict(bn_eps=0.0), ValueError, "bn_eps"),
        (dict(bn_eps=NAN), ValueError, "bn_eps"),
        (dict(width="0.5"), TypeError, "width must be a number, got str"),
        (dict(width=0.0), ValueError, r"width must be in \(0, inf\)"),
        (dict(width=float("inf")), ValueError, "width"),
        (dict(depth=-1.0), ValueError, "depth"),
        (dict(depth=None), TypeError, "depth must be a number, got NoneType"),
        (dict(width=jnp.ones(2)), ValueError, "width must be a scalar number"),
        (dict(width=True), TypeError, "width must be a number, got bool"),
        (dict(dropout_rate=1.0), ValueError, r"dropout_rate must be in \[0, 1\)"),
        (dict(drop_path_rate=-0.1), ValueError, "drop_path_rate"),
        (dict(drop_path_rate=NAN), ValueError, "drop_path_rate"),
        (dict(train_resolution=16), ValueError, "train_resolution must be >= 32, got 16"),
        (dict(test_resolution=224.0), TypeError, "test_resolution must be an int, got float"),
        (dict(stem_channels=0), ValueError, "stem_channels must be >= 1"),
        (dict(head_channels=True), TypeError, "head_channels must be an int, got bool"),
        (dict(depth_divisor=8.0), TypeError, "depth_divisor must be an int"),
        (dict(small_image="yes"), TypeError, "small_image must be a bool, got str"),
        (dict(blocks=()), ValueError, "blocks must hold at least one BlockArgs"),
        (dict(blocks="r1_k3"), TypeError, "blocks must be a sequence of BlockArgs, got str"),
        (dict(blocks=[(1, 3, 1, 1, 32, 16)]), TypeError, r"blocks\[0\] must be a BlockArgs, got tuple"),
    ],
)
def test_config_refuses_bad_fields_by_name(kwargs, error, match):
    with pytest.raises(error, match=match):
        Config(**kwargs)


@pytest.mark.parametrize(
    "args, error, match",
    [
        ((0, 3, 1, 1, 32, 16), ValueError, "repeats must be >= 1"),
        ((1, 3.0, 1, 1, 32, 16), TypeError, "kernel must be an int, got float"),
        ((1, 3, 0, 1, 32, 16), ValueError, "stride must be >= 1"),
        ((1, 3, 1, 1, 32, 16, 1.5), ValueError, r"se_ratio must be in \[0, 1\]"),
        ((1, 3, 1, 1, 32, 16, NAN), ValueError, "se_ratio"),
    ],
)
def test_block_args_refuse_bad_fields_by_name(args, error, match):
    with pytest.raises(error, match=match):
        Block(*args)


def test_numpy_scalars_and_0d_arrays_are_numbers_and_are_stored_as_python_numbers():
    config = Config(width=np.float32(0.5), depth=jnp.asarray(0.5), bn_momentum=np.float64(0.9),
                    bn_eps=np.float32(1e-3), stem_channels=np.int64(32), dropout_rate=np.float16(0.25),
                    blocks=list(models.B0_BLOCKS), small_image=np.bool_(False))  # fmt: skip
    assert type(config.width) is float and type(config.depth) is float and config.depth == 0.5
    assert type(config.stem_channels) is int and type(config.blocks) is tuple
    assert config.small_image is False
    assert hash(config) == hash(Config(width=0.5, depth=0.5, bn_momentum=0.9,
                                       bn_eps=float(np.float32(1e-3)), dropout_rate=0.25))  # fmt: skip
    assert Block(np.int32(1), 3, 1, 1, 32, 16, np.float32(0.25)).repeats == 1


def test_efficientnet_exposes_and_checks_bn_momentum_and_eps():
    model, _ = jax.eval_shape(lambda k: models.efficientnet("b0", key=k, bn_momentum=0.9, bn_eps=1e-5), KEY)
    assert (model.config.bn_momentum, model.config.bn_eps) == (0.9, 1e-5)
    assert (model.bn_stem.momentum, model.blocks[3].bn_depthwise.eps) == (0.9, 1e-5)
    default, _ = jax.eval_shape(lambda k: models.efficientnet("b0", key=k), KEY)
    assert (default.config.bn_momentum, default.config.bn_eps) == (0.99, 1e-3)
    with pytest.raises(ValueError, match="bn_momentum"):
        models.efficientnet("b0", key=KEY, bn_momentum=1.5)
    with pytest.raises(ValueError, match="bn_eps"):
        models.efficientnet("b0", key=KEY, bn_eps=-1)


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda: models.efficientnet("b0", key=None), TypeError, r"key must be a jax.random key .*got None"),
        (lambda: models.efficientnet("b0", key=0), TypeError, "key must be a jax.random key"),
        (lambda: models.efficientnet("b0", key=KEY, num_classes=0), ValueError, "num_classes must be >= 1"),
        (lambda: models.efficientnet("b0", key=KEY, num_classes=10.0), TypeError, "num_classes must be an int"),
        (lambda: models.efficientnet_from_config({"width": 1.0}, key=KEY), TypeError,
         "config must be an EfficientNetConfig, got dict"),
        (lambda: models.config_for("b0", width="1"), TypeError, "width must be a number"),
    ],
)
def test_constructors_refuse_bad_arguments_by_name(call, error, match):
    with pytest.raises(error, match=match):
        call()


SMALL = Config(width=0.25, depth=0.25)


def _small(config=SMALL, classes=10):
    return models.efficientnet_from_config(config, key=KEY, num_classes=classes)


def test_a_state_of_another_model_is_refused_naming_state_and_the_shapes():
    model, _ = _small()
    _, other = _small(Config(width=0.5, depth=0.25))
    x = jnp.zeros((2, 32, 32, 3))
    with pytest.raises(ValueError, match=r"state does not fit the model .*bn_stem.*expected .*float32\[8\].*"
                                         r"got \['float32\[16\]', 'float32\[16\]'\]"):  # fmt: skip
        jax.eval_shape(lambda: model(x, other, train=False))
    _, deeper = _small(Config(width=0.25, depth=0.5))
    with pytest.raises(ValueError, match="state does not fit the model"):
        model.features(x, deeper, train=False)
    with pytest.raises(TypeError, match="state must be the eqx.nn.State built with the model, got dict"):
        model(x, {}, train=False)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(train="yes"), TypeError, "train must be a bool"),
        (dict(train=None), TypeError, "train must be a bool"),
        (dict(train=True), TypeError, "key must be a jax.random key"),
        (dict(train=True, key=jnp.zeros(3)), TypeError, "key must be a jax.random key"),
        (dict(train=True, key=KEY, x=jnp.zeros((0, 32, 32, 3))), ValueError,
         r"x must hold at least one image when train=True .*\(0, 32, 32, 3\)"),
        (dict(train=False, x=jnp.zeros((2, 32, 32, 3), jnp.int32)), TypeError, "x must have dtype"),
        (dict(train=False, x=jnp.zeros((2, 31, 40, 3))), ValueError, "H, W >= 32"),
    ],
)
def test_model_call_refuses_bad_arguments_by_name(kwargs, error, match):
    model, state = _small()
    x = kwargs.pop("x", jnp.zeros((2, 32, 32, 3)))
    with pytest.raises(error, match=match):
        jax.eval_shape(lambda: model(x, state, **kwargs))
    with pytest.raises(error, match=match):
        jax.eval_shape(lambda: model.features(x, state, **kwargs))


def test_an_empty_batch_gives_empty_logits_in_eval():
    model, state = _small()
    logits, new_state = eqx.filter_jit(lambda m, s, x: m(x, s, train=False))(model, state, jnp.zeros((0, 32, 32, 3)))
    assert logits.shape == (0, 10) and logits.dtype == jnp.float32
    assert eqx.tree_equal(new_state, state)


@settings(deadline=None, max_examples=60)
@given(st.floats(allow_nan=True, allow_infinity=True, width=32), st.sampled_from([float, np.float32, jnp.asarray]))
def test_bn_momentum_and_eps_accept_exactly_their_ranges(value, kind):
    value = kind(value)
    v = float(np.asarray(value))
    for name, ok in (("bn_momentum", 0 <= v < 1), ("bn_eps", 0 < v < np.inf),
                     ("dropout_rate", 0 <= v < 1), ("width", 0 < v < np.inf)):  # fmt: skip
        if ok:
            assert getattr(Config(**{name: value}), name) == v
        else:
            with pytest.raises(ValueError, match=f"{name} must be in"):
                Config(**{name: value})
