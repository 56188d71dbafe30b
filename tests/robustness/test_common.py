"""The shared numerics of the corruptions against NumPy / SciPy in float64."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import ndimage

from nsjax.robustness import _common


@pytest.mark.parametrize("mode", ["nearest", "reflect"])
@pytest.mark.parametrize("size, sigma, truncate", [(10, 0.7, 4.0), (7, 5.0, 4.0),
                                                   (32, 12.0, 3.0), (224, 170.8, 3.0)])
def test_gaussian_matrix_is_scipys_filter_even_wider_than_the_axis(mode, size, sigma, truncate):
    v = np.random.default_rng(size).normal(size=size)
    m = _common.gaussian_matrix(size, sigma, mode=mode, truncate=truncate)
    expected = ndimage.gaussian_filter1d(v, sigma, mode=mode, truncate=truncate)
    np.testing.assert_allclose(m @ v, expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("size", [32, 33, 57, 224])
def test_clipped_zoom_matrix_is_scipys_zoom_of_the_centre(size):
    image = np.random.default_rng(size).normal(size=(size, 5))
    for zoom in np.arange(1, 1.31, 0.03):
        crop = int(np.ceil(size / zoom))
        top = (size - crop) // 2
        expected = ndimage.zoom(image[top:top + crop], (zoom, 1), order=1)[:size]
        got = _common.clipped_zoom_matrix(size, zoom) @ image
        np.testing.assert_allclose(got[:len(expected)], expected, rtol=0, atol=1e-12)
        assert np.all(got[len(expected):] == 0)


def test_unit_scale_and_the_truncating_cast_are_the_references():
    levels = jnp.arange(256, dtype=jnp.uint8)
    np.testing.assert_array_equal(_common.to_unit(levels),
                                  (np.arange(256) / 255.0).astype(np.float32))
    x = jnp.asarray([-0.5, 0.0, 0.9999, 1.0 / 255 * 7.999, 1.0, 2.0], jnp.float32)
    np.testing.assert_array_equal(_common.to_uint8(x), [0, 0, 254, 7, 255, 255])
    np.testing.assert_array_equal(_common.to_uint8_from_255(jnp.asarray([-3.0, 7.9, 300.0])),
                                  [0, 7, 255])


def test_host_rng_depends_on_the_key_only():
    key = jax.random.key(3)
    a = _common.host_rng(key).normal(size=4)
    b = _common.host_rng(np.asarray(jax.random.key_data(key))).normal(size=4)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, _common.host_rng(jax.random.key(4)).normal(size=4))
    with pytest.raises(ValueError, match="mode must be 'reflect' or 'nearest', got 'wrap'"):
        _common.gaussian_matrix(8, 1.0, mode="wrap")
