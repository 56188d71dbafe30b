"""RandAugment's level-to-argument rule: the documented statement, and the same mapping for a
fixed magnitude and for sampled per-image magnitudes (`magnitude_std > 0`), for every op family
and in both executors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nsjax import noise
from nsjax.noise import _randaugment as ra
from nsjax.noise import ops
from tests.noise_images import make_images

F32 = np.float32
# Whole, half, fractional and large magnitudes; 23 and 41 are where float64 puts 110 L just
# below a whole number (int(2.3 * 110) = 252), 1/3 has no finite binary form.
MAGNITUDES = (0.0, 0.1, 1 / 3, 2.5, 5.0, 7.0, 9.0, 10.0, 12.7, 17.0, 23.0, 27.0, 28.0, 41.0,
              99.9, 1000.0)


def documented(magnitude: float, translate_const: float, cutout_const: float) -> dict:
    """The docstring of `randaugment`, as Python evaluates it: L = M / 10; Rotate 30 L degrees,
    Shear 0.3 L, Translate translate_const L, Cutout int(cutout_const L), Posterize int(4 L),
    Solarize int(256 L), SolarizeAdd int(110 L), factor 1.8 L + 0.1; float arguments as float32."""
    level = magnitude / 10
    return dict(degrees=F32(30 * level), shear=F32(0.3 * level),
                translate=F32(translate_const * level), cutout=int(cutout_const * level),
                bits=int(4 * level), threshold=int(256 * level), addition=int(110 * level),
                factor=F32(1.8 * level + 0.1))


@pytest.mark.parametrize("constants", [(100, 40), (3.0, 5.0),
                                       (14.285714285714286, 5.714285714285714)])
def test_level_rule_is_the_documented_rule(constants):
    grid = [j / 128 for j in range(0, 128 * 30, 37)]  # sampled magnitudes are multiples of 1/128
    for m in (*MAGNITUDES, *grid):
        got = ra._level_rule(m, *constants)
        want = documented(m, *constants)
        assert got.keys() == want.keys()
        for name, value in want.items():
            assert got[name].dtype == (np.float32 if isinstance(value, F32) else np.int32), name
            assert got[name] == value, (m, name, got[name], value)
    assert documented(23.0, 1, 1)["addition"] == 252  # the reference's float64, kept


def test_sampled_magnitudes_are_multiples_of_1_128_drawn_from_the_normal():
    draws = ra._sample_draws(jax.random.key(3), 4096, 2, 16, 9.0, 3.0, 32, 40)
    m = np.asarray(draws.magnitude, np.float64)
    np.testing.assert_array_equal(m * 128, np.round(m * 128))
    assert abs(m.mean() - 9.0) < 0.1 and abs(m.std() - 3.0) < 0.1
    assert m.min() >= 0
    clipped = np.asarray(ra._sample_draws(jax.random.key(3), 4096, 1, 16, 1.0, 2.0, 32, 40)
                         .magnitude)
    assert 0.25 < (clipped == 0).mean() < 0.4  # P(N(1, 2) < 1/256) = 0.31: clipped at 0


def _params_of(draws, layer, image, magnitude, magnitude_std, cfg):
    """`_policy_params` of one image in one layer: its own draws, the given magnitude."""
    one = ra._Draws(op=draws.op[layer:layer + 1, image:image + 1],
                    sign=draws.sign[layer:layer + 1, image:image + 1],
                    level_index=None, centers=draws.centers[layer:layer + 1, image:image + 1])
    kernels = tuple(dict.fromkeys(ra._KERNEL_OF_OP[n] for n in cfg.ops))
    params = ra._policy_params(one, magnitude, magnitude_std, cfg, kernels)
    return jax.tree.map(lambda a: np.asarray(a[0, 0]), params)


@pytest.mark.parametrize("tf_compat", [False, True])
def test_sampled_magnitude_maps_as_the_same_fixed_magnitude(tf_compat):
    # Every family's arguments (matrix: Rotate, Shear, Translate; box: Cutout; shift, threshold,
    # addition; factor: the enhance ops) of each image equal those of the fixed-magnitude path
    # run with that image's sampled magnitude, with the same op, sign and centre.
    cfg = ra._Config(ops=noise.DEFAULT_OPS, height=32, width=40, fill=5, translate_const=7.0,
                     cutout_const=6.5, tf_compat=tf_compat)
    magnitude, std = 12.0, 9.0
    draws = ra._sample_draws(jax.random.key(11), 24, 2, 16, magnitude, std, 32, 40)
    kernels = tuple(dict.fromkeys(ra._KERNEL_OF_OP[n] for n in cfg.ops))
    policy_params = jax.jit(ra._policy_params, static_argnums=(1, 2, 3, 4))
    sampled = jax.tree.map(np.asarray, policy_params(draws, magnitude, std, cfg, kernels))
    mags = np.asarray(draws.magnitude)
    assert len(np.unique(mags)) > 40 and mags.max() > 25  # M > 25: Posterize/Solarize wrap
    for layer in range(2):
        for image in range(24):
            fixed = _params_of(draws, layer, image, float(mags[layer, image]), 0.0, cfg)
            for name, want in fixed._asdict().items():
                got = getattr(sampled, name)[layer, image]
                np.testing.assert_array_equal(got, want,
                                              err_msg=f"{name} at m={mags[layer, image]}")


def _documented_op(name, x, magnitude, sign, center, *, tf_compat, translate_const,
                   cutout_const, fill):
    """One image's op with the documented arguments for its magnitude, by the public op."""
    a = documented(magnitude, translate_const, cutout_const)
    geometric = {"Rotate": (ops.rotate, "degrees"), "ShearX": (ops.shear_x, "shear"),
                 "ShearY": (ops.shear_y, "shear"), "TranslateX": (ops.translate_x, "translate"),
                 "TranslateY": (ops.translate_y, "translate")}
    if name in geometric:
        fn, arg = geometric[name]
        return fn(x, F32(sign) * a[arg], fill=fill, tf_compat=tf_compat)
    if name == "Cutout":
        return ops.cutout(x, center, a["cutout"], fill=fill)
    if name in ("Posterize", "Solarize"):
        fn, arg = {"Posterize": (ops.posterize, "bits"),
                   "Solarize": (ops.solarize, "threshold")}[name]
        return fn(x, a[arg], tf_compat=tf_compat)
    if name == "SolarizeAdd":
        return ops.solarize_add(x, a["addition"])
    if name in ("Color", "Contrast", "Sharpness"):
        fn = {"Color": ops.color, "Contrast": ops.contrast, "Sharpness": ops.sharpness}[name]
        return fn(x, a["factor"], tf_compat=tf_compat)
    if name == "Brightness":
        return ops.brightness(x, a["factor"])
    if name == "AutoContrast":
        return ops.auto_contrast(x, tf_compat=tf_compat)
    return {"Equalize": ops.equalize, "Invert": ops.invert}[name](x)


@pytest.mark.parametrize("executor,tf_compat", [("per_image", False), ("batched", True)])
def test_sampled_policy_applies_the_documented_arguments_per_image(executor, tf_compat):
    # Each image's output is its public op with the documented arguments of its own sampled
    # magnitude: every family is drawn, magnitudes from 0 (clipped) to 27.4.
    x = make_images(12, 64)
    key, magnitude, std = jax.random.key(5), 12.0, 9.0
    consts = dict(translate_const=6.0, cutout_const=4.5, fill=5)
    got = np.asarray(noise.randaugment(key, x, num_layers=1, magnitude=magnitude,
                                       magnitude_std=std, tf_compat=tf_compat, executor=executor,
                                       **consts))
    draws = ra._sample_draws(key, 64, 1, 16, magnitude, std, 32, 40)
    op, sign = np.asarray(draws.op[0]), np.asarray(draws.sign[0])
    mags, centers = np.asarray(draws.magnitude[0]), np.asarray(draws.centers[0])
    assert set(op) == set(range(16))
    for i in range(64):
        want = _documented_op(noise.DEFAULT_OPS[op[i]], x[i:i + 1], float(mags[i]), sign[i],
                              centers[i:i + 1], tf_compat=tf_compat, **consts)
        np.testing.assert_array_equal(got[i], np.asarray(want)[0],
                                      err_msg=f"{noise.DEFAULT_OPS[op[i]]} m={mags[i]}")
