"""nsjax.noise: dropout, drop-path and the stochastic-depth rate rule."""

import functools

import chex
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized
from hypothesis import example, given, settings

from nsjax import noise

SETTINGS = settings(deadline=None, max_examples=20)
KEY = jax.random.key(0)


@SETTINGS
@given(st.integers(1, 64), st.sampled_from([0.1, 0.5, 0.9]), st.integers(0, 1000),
       st.sampled_from([jnp.float32, jnp.bfloat16]))
def test_drop_path_zeroes_whole_examples_and_scales_survivors(batch, rate, seed, dtype):
    x = jnp.ones((batch, 3, 4, 2), dtype)
    y = noise.drop_path(jax.random.key(seed), x, rate)
    chex.assert_shape(y, x.shape)
    chex.assert_type(y, dtype)
    per_example = np.asarray(y, np.float32).reshape(batch, -1)
    # each example is all zero or all 1/(1-rate): the branch is dropped as a whole
    assert np.all(per_example.min(1) == per_example.max(1))
    values = set(np.unique(per_example).tolist())
    assert values <= {0.0, float(jnp.asarray(1 / (1 - rate), dtype))}


@pytest.mark.parametrize("fn", [noise.drop_path, noise.dropout])
@pytest.mark.parametrize("rate", [0.2, 0.5])
def test_expectation_is_unchanged_and_drop_frequency_is_rate(fn, rate):
    x = jnp.ones((20000, 4))
    y = np.asarray(fn(KEY, x, rate))
    assert abs(y.mean() - 1.0) < 0.03
    assert abs((y == 0).mean() - rate) < 0.02


@pytest.mark.parametrize("fn", [noise.drop_path, noise.dropout])
def test_identity_when_not_training_or_rate_zero(fn):
    x = jax.random.normal(KEY, (5, 3))
    np.testing.assert_array_equal(fn(None, x, 0.7, train=False), x)
    np.testing.assert_array_equal(fn(None, x, 0.0), x)
    assert np.all(np.asarray(fn(KEY, x, 1.0)) == 0)


@pytest.mark.parametrize("fn", [noise.drop_path, noise.dropout])
def test_same_key_same_mask_different_key_different_mask(fn):
    x = jnp.ones((256, 8))
    a, b = fn(jax.random.key(1), x, 0.5), fn(jax.random.key(1), x, 0.5)
    c = fn(jax.random.key(2), x, 0.5)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_dropout_is_elementwise():
    y = np.asarray(noise.dropout(KEY, jnp.ones((64, 64)), 0.5))
    assert 0 < (y == 0).sum(1).min() and (y == 0).sum(1).max() < 64


class JitTest(parameterized.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_jit_equals_no_jit_with_traced_rate(self):
        x = jax.random.normal(KEY, (32, 5))
        fn = self.variant(lambda k, x, r: (noise.drop_path(k, x, r), noise.dropout(k, x, r)))
        got = fn(KEY, x, jnp.float32(0.3))
        want = (noise.drop_path(KEY, x, 0.3), noise.dropout(KEY, x, 0.3))
        chex.assert_trees_all_close(got, want)


def test_gradient_flows_through_survivors_only():
    x = jnp.ones((64, 3))
    g = jax.grad(lambda x: noise.drop_path(KEY, x, 0.5).sum())(x)
    y = noise.drop_path(KEY, x, 0.5)
    np.testing.assert_array_equal(g, y)  # d(x * m / 0.5)/dx = m / 0.5 = y for x = 1


@given(st.integers(1, 200), st.floats(0.0, 1.0))
def test_stochastic_depth_rates_linear_rule(n, max_rate):
    rates = noise.stochastic_depth_rates(n, max_rate)
    assert len(rates) == n and rates[0] == 0.0
    np.testing.assert_allclose(rates, max_rate * np.arange(n) / n)
    assert all(a <= b for a, b in zip(rates, rates[1:]))


def test_stochastic_depth_rates_reference_b0():
    # EfficientNet-B0 has 16 blocks; the last keeps 1 - 0.2 * 15/16 = 0.8125
    assert noise.stochastic_depth_rates(16)[-1] == pytest.approx(0.2 * 15 / 16)


X = jnp.ones((4, 2))


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda: noise.drop_path(KEY, X, 1.5), ValueError, r"rate must be in \[0, 1\]"),
        (lambda: noise.drop_path(KEY, X, -0.1), ValueError, "rate"),
        (lambda: noise.drop_path(KEY, X, jnp.ones(2)), ValueError, "rate must be a scalar"),
        (lambda: noise.drop_path(None, X, 0.5), TypeError, "key must be a jax.random key"),
        (lambda: noise.drop_path(KEY, jnp.float32(1.0), 0.5), ValueError, r"x must have shape \[B, ...\]"),
        (lambda: noise.drop_path(KEY, jnp.ones(4, int), 0.5), TypeError, "x must have a floating"),
        (lambda: noise.dropout(KEY, X, 2.0), ValueError, "rate"),
        (lambda: noise.stochastic_depth_rates(-1), ValueError, "num_blocks"),
        (lambda: noise.stochastic_depth_rates(3, 1.2), ValueError, "max_rate"),
        (lambda: noise.stochastic_depth_rates(3.0), TypeError, "num_blocks"),
    ],
)
def test_bad_input_raises_naming_the_argument(call, error, match):
    with pytest.raises(error, match=match):
        call()


# --------------------------------------------------------------------------- rate and key rules
# A concrete rate (Python, NumPy scalar, 0-d array) is checked: out of [0, 1] or NaN raises. A
# traced rate cannot be checked: out of range or NaN makes every output NaN, never a plausible
# finite result. `train=False` or a rate of 0 is the identity and needs no key.


@functools.partial(jax.jit, static_argnums=0)
def _traced_rate(fn, x, rate):
    return fn(KEY, x, rate)


@pytest.mark.parametrize("fn", [noise.drop_path, noise.dropout])
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_a_traced_rate_out_of_range_gives_nan_everywhere(fn, dtype):
    x = jnp.ones((64, 3), dtype)
    for bad in (1.5, -0.5, float("nan"), float("inf"), -float("inf"), 1.0000001, -1e-30):
        y = _traced_rate(fn, x, jnp.float32(bad))
        chex.assert_type(y, dtype)
        assert np.all(np.isnan(np.asarray(y, np.float32))), (bad, np.asarray(y))
    for ok in (0.0, 1.0, 0.5):  # in range, edges included: finite, as the concrete rate gives
        y = _traced_rate(fn, x, jnp.float32(ok))
        np.testing.assert_array_equal(y, fn(KEY, x, ok))


@pytest.mark.parametrize("fn", [noise.drop_path, noise.dropout])
@pytest.mark.parametrize("rate", [np.float32(0.5), np.float64(0.5), jnp.asarray(0.5), np.asarray(0.5)])
def test_numpy_scalars_and_0d_arrays_are_rates(fn, rate):
    x = jnp.ones((128, 4))
    np.testing.assert_array_equal(fn(KEY, x, rate), fn(KEY, x, 0.5))


@pytest.mark.parametrize("fn", [noise.drop_path, noise.dropout])
@pytest.mark.parametrize(
    "rate, error, match",
    [
        (float("nan"), ValueError, r"rate must be in \[0, 1\], got nan"),
        (np.float32(1.5), ValueError, r"rate must be in \[0, 1\], got 1.5"),
        (jnp.asarray(-0.25), ValueError, r"rate must be in \[0, 1\], got -0.25"),
        (True, TypeError, "rate must be a number, got bool"),
        ("0.5", TypeError, "rate must be a number, got str"),
        (None, TypeError, "rate must be a number, got NoneType"),
    ],
)
def test_a_concrete_bad_rate_raises_naming_rate(fn, rate, error, match):
    with pytest.raises(error, match=match):
        fn(KEY, jnp.ones((4, 2)), rate)


@pytest.mark.parametrize("fn", [noise.drop_path, noise.dropout])
def test_key_is_needed_only_when_noise_is_drawn(fn):
    x = jnp.ones((4, 2))
    np.testing.assert_array_equal(fn(None, x, 0.5, train=False), x)
    np.testing.assert_array_equal(fn(None, x, np.float32(0.0)), x)
    with pytest.raises(TypeError, match="key must be a jax.random key .*got None"):
        fn(None, x, 0.5)
    with pytest.raises(TypeError, match="key must be a jax.random key"):
        jax.jit(lambda r: fn(None, x, r))(0.0)  # a traced rate may be anything: a key is needed
    with pytest.raises(TypeError, match="key must be a jax.random key"):
        fn(jnp.zeros(3, jnp.uint32), x, 0.5)
    np.testing.assert_array_equal(fn(jax.random.PRNGKey(1), x, 0.5), fn(jax.random.PRNGKey(1), x, 0.5))


@pytest.mark.parametrize("fn", [noise.drop_path, noise.dropout])
@pytest.mark.parametrize("train", ["yes", None, 1])
def test_train_must_be_a_bool(fn, train):
    with pytest.raises(TypeError, match="train must be a bool"):
        fn(KEY, jnp.ones((4, 2)), 0.5, train=train)


@pytest.mark.parametrize("fn", [noise.drop_path, noise.dropout])
@pytest.mark.parametrize("shape", [(0,), (0, 3, 2)])
def test_an_empty_batch_gives_an_empty_result(fn, shape):
    for rate in (0.5, jnp.float32(0.5)):
        y = fn(KEY, jnp.ones(shape, jnp.bfloat16), rate)
        assert y.shape == shape and y.dtype == jnp.bfloat16


@settings(deadline=None, max_examples=40)
@given(st.floats(allow_nan=True, allow_infinity=True, allow_subnormal=False, width=32),
       st.sampled_from([noise.drop_path, noise.dropout]))  # fmt: skip
@example(0.0, noise.drop_path)  # the edges, and the nearest float32 values outside them
@example(1.0, noise.dropout)
@example(-float(np.finfo(np.float32).tiny), noise.dropout)
@example(float(np.nextafter(np.float32(1), np.float32(2))), noise.drop_path)
def test_a_traced_rate_gives_nan_exactly_outside_zero_one(rate, fn):
    # no subnormal rates: XLA:CPU flushes them to zero (denormals-are-zero), so a rate of
    # -3e-45 compares as 0 there and is, in effect, a rate of 0
    y = np.asarray(_traced_rate(fn, jnp.ones((16, 2)), jnp.float32(rate)))
    if 0 <= rate <= 1:
        assert np.all(np.isfinite(y))
    else:
        assert np.all(np.isnan(y))
