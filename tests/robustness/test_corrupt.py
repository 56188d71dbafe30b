"""`corrupt`: every name through the dispatcher (shapes, dtypes, keys, batch independence,
jit), and the refusals. Each corruption's numbers against `imagecorruptions` are in the
test_<group>_corruptions files."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nsjax.robustness import (
    COMMON_CORRUPTIONS,
    CORRUPTIONS,
    HOST_CORRUPTIONS,
    VALIDATION_CORRUPTIONS,
    corrupt,
)

DETERMINISTIC = {"defocus_blur", "zoom_blur", "contrast", "brightness", "saturate", "pixelate",
                 "jpeg_compression", "gaussian_blur"}


@pytest.fixture(scope="module")
def pair(photo):
    """Two copies of one natural 32 x 48 crop (non-square), uint8 [2, 32, 48, 3]."""
    return jnp.asarray(np.stack([photo[200:232, 300:348]] * 2))


def test_the_names_are_imagecorruptions_order(imagecorruptions):
    assert CORRUPTIONS == tuple(imagecorruptions.get_corruption_names("all"))
    assert COMMON_CORRUPTIONS == tuple(imagecorruptions.get_corruption_names("common"))
    assert VALIDATION_CORRUPTIONS == tuple(imagecorruptions.get_corruption_names("validation"))
    assert set(HOST_CORRUPTIONS) <= set(CORRUPTIONS)


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_every_corruption_keeps_shape_and_dtype_and_draws_per_image_and_key(name, pair):
    key = jax.random.key(7)
    out = corrupt(key, pair, name, 2)
    assert out.shape == pair.shape and out.dtype == jnp.uint8
    assert not np.array_equal(out, pair), f"{name} left the image unchanged"
    np.testing.assert_array_equal(out, corrupt(jax.random.key(7), pair, name, 2))
    if name in DETERMINISTIC:
        np.testing.assert_array_equal(out[0], out[1])
        np.testing.assert_array_equal(out, corrupt(jax.random.key(8), pair, name, 2))
    else:  # the two copies draw independently, and another key draws differently
        assert not np.array_equal(out[0], out[1]), f"{name}: the batch shares its draws"
        assert not np.array_equal(out, corrupt(jax.random.key(8), pair, name, 2))


@pytest.mark.parametrize("name", ["gaussian_noise", "jpeg_compression"])
def test_corrupt_runs_under_jit_and_on_one_image(name, pair):
    key = jax.random.key(3)
    jitted = jax.jit(lambda k, x: corrupt(k, x, name, 4))
    np.testing.assert_array_equal(jitted(key, pair), corrupt(key, pair, name, 4))
    one = corrupt(key, pair[0], name, 4)
    assert one.shape == pair.shape[1:] and one.dtype == jnp.uint8
    assert corrupt(key, pair[:0], name, 4).shape == (0, *pair.shape[1:])


def test_a_legacy_uint32_key_works(pair):
    out = corrupt(jax.random.PRNGKey(0), pair, "shot_noise", 1)
    assert out.shape == pair.shape


def test_corrupt_refuses_bad_input_by_name(pair):
    key = jax.random.key(0)
    with pytest.raises(ValueError, match=r"name must be one of \('gaussian_noise', .*'saturate'\)"
                                         r", got 'gaussian'"):
        corrupt(key, pair, "gaussian", 1)
    for bad in (0, 6, -1):
        with pytest.raises(ValueError, match="severity must be"):
            corrupt(key, pair, "contrast", bad)
    for bad in (2.0, True, "3"):
        with pytest.raises(TypeError, match="severity must be"):
            corrupt(key, pair, "contrast", bad)
    with pytest.raises(TypeError, match=r"images must have dtype in \('uint8',\), got float32"):
        corrupt(key, pair.astype(jnp.float32), "contrast", 1)
    with pytest.raises(ValueError, match=r"H, W >= 32, got \(2, 31, 48, 3\)"):
        corrupt(key, pair[:, :31], "contrast", 1)
    with pytest.raises(ValueError, match=r"images must have shape \[B, H, W, 3\]"):
        corrupt(key, pair[0, :, :, 0], "contrast", 1)
    with pytest.raises(TypeError, match="key must be a jax.random key"):
        corrupt(None, pair, "contrast", 1)
