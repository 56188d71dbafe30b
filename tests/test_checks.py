"""nsjax._checks: the argument conventions every public function relies on."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nsjax import _checks


@pytest.mark.parametrize("value", [0.25, 1, np.float32(0.25), np.int64(1), np.asarray(0.25),
                                   jnp.asarray(0.25), jnp.asarray(1, jnp.int32)],
                         ids=lambda v: type(v).__name__)
def test_every_form_of_a_number_is_accepted_and_returned_as_float(value):
    got = _checks.check_number("x", value, minimum=0.0, maximum=1.0)
    assert type(got) is float and got == float(np.asarray(value))


@pytest.mark.parametrize("value, error, match", [
    (True, TypeError, "x must be a number, got bool"),
    (np.bool_(True), TypeError, "x must be a number, got bool"),
    ("0.5", TypeError, "x must be a number, got str"),
    (None, TypeError, "x must be a number, got NoneType"),
    (np.ones(2), ValueError, r"x must be a scalar number, got an array of shape \(2,\)"),
    (np.asarray(True), TypeError, "x must be a number, got a 0-d array of dtype bool"),
    (float("nan"), ValueError, r"x must be in \[0, 1\], got nan"),
    (1.5, ValueError, r"x must be in \[0, 1\], got 1.5"),
    (-0.1, ValueError, r"x must be in \[0, 1\], got -0.1"),
])  # fmt: skip
def test_bad_numbers_are_refused_by_name(value, error, match):
    with pytest.raises(error, match=match):
        _checks.check_number("x", value, minimum=0.0, maximum=1.0)


def test_open_bounds_and_one_sided_ranges():
    assert _checks.check_number("t", 1e-9, minimum=0.0, min_open=True) == 1e-9
    with pytest.raises(ValueError, match="t must be > 0, got 0.0"):
        _checks.check_number("t", 0.0, minimum=0.0, min_open=True)
    with pytest.raises(ValueError, match=r"s must be in \[0, 1\), got 1.0"):
        _checks.check_number("s", 1.0, minimum=0.0, maximum=1.0, max_open=True)
    with pytest.raises(ValueError, match="r must be >= 0, got -1.0"):
        _checks.check_number("r", -1, minimum=0.0)
    with pytest.raises(ValueError, match=r"m must be a number \(not NaN\), got nan"):
        _checks.check_number("m", np.nan)


def test_traced_numbers_pass_through_only_when_allowed():
    def f(x):
        assert _checks.check_number("x", x, minimum=0.0, traced_ok=True) is x
        with pytest.raises(TypeError, match="x must be a concrete number"):
            _checks.check_number("x", x, minimum=0.0)
        return _checks.nan_unless(x >= 0, x)

    assert jax.jit(f)(2.0) == 2.0
    assert np.isnan(jax.jit(f)(-2.0))


def test_keys():
    _checks.check_key("key", jax.random.key(0))
    _checks.check_key("key", jax.random.PRNGKey(0))
    with pytest.raises(TypeError, match=r"key must be a jax.random key \(jax.random.key\(seed\)\), got None"):
        _checks.check_key("key", None)
    with pytest.raises(TypeError, match="key must be a jax.random key"):
        _checks.check_key("key", 0)
    with pytest.raises(TypeError, match="key must be a jax.random key"):
        _checks.check_key("key", np.zeros(2, np.int32))
    with pytest.raises(ValueError, match=r"key must be a single jax.random key, got a key array of shape \(3,\)"):
        _checks.check_key("key", jax.random.split(jax.random.key(0), 3))


def test_images():
    assert _checks.check_images("x", np.zeros((0, 5, 6, 3), np.uint8), dtypes=("uint8",)) == (0, 5, 6)
    shape = jax.ShapeDtypeStruct((2, 4, 4, 3), jnp.bfloat16)
    assert _checks.check_images("x", shape, dtypes=("floating",)) == (2, 4, 4)
    with pytest.raises(TypeError, match=r"x must have dtype in \('uint8',\), got float32"):
        _checks.check_images("x", np.zeros((1, 4, 4, 3), np.float32), dtypes=("uint8",))
    with pytest.raises(ValueError, match=r"x must have shape \[B, H, W, 3\] with H, W >= 32, got \(1, 31, 40, 3\)"):
        _checks.check_images("x", np.zeros((1, 31, 40, 3), np.float32), dtypes=("floating",), min_side=32)
    with pytest.raises(ValueError, match=r"x must have shape \[B, H, W, 3\] \(rank 4\)"):
        _checks.check_images("x", np.zeros((4, 4, 3), np.uint8), dtypes=("uint8",))
    with pytest.raises(ValueError, match=r"with H, W >= 1, got \(1, 4, 4, 1\)"):
        _checks.check_images("x", np.zeros((1, 4, 4, 1), np.uint8), dtypes=("uint8",))


def test_flags_are_python_or_numpy_bools():
    assert _checks.check_bool("flag", np.bool_(True)) is True
    assert _checks.check_bool("flag", False) is False
    for bad in (1, "yes", None, np.asarray([True])):
        with pytest.raises(TypeError, match="flag must be a bool, got"):
            _checks.check_bool("flag", bad)


def test_counts_accept_every_int_form_and_refuse_traced_ones():
    for value in (3, np.int32(3), np.asarray(3), jnp.asarray(3)):
        got = _checks.check_positive_int("n", value)
        assert type(got) is int and got == 3
    for bad, error in ((2.0, TypeError), (True, TypeError), (np.asarray(2.5), TypeError),
                       (0, ValueError)):
        with pytest.raises(error, match="n must be"):
            _checks.check_positive_int("n", bad)

    def traced(n):
        with pytest.raises(TypeError, match="n must be a concrete int"):
            _checks.check_positive_int("n", n)
        return n

    jax.jit(traced)(3)
