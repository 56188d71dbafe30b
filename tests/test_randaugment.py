"""nsjax.noise.randaugment: the Noisy Student policy, batched, one op draw per image and layer."""

import functools

import chex
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from nsjax import noise
from nsjax.noise import _image
from nsjax.noise import _randaugment as ra
from nsjax.noise import ops
from tests.noise_images import make_images

KEY = jax.random.key(0)
F32 = np.float32


IMAGES = make_images(0, 8)


def run(executor: str, key, images, *, ops_=noise.DEFAULT_OPS, **kwargs):
    """`randaugment` with the given executor (the public keyword), as NumPy."""
    return np.asarray(noise.randaugment(key, images, ops=ops_, executor=executor, **kwargs))


# --------------------------------------------------------------------------- API and properties


def test_defaults_are_the_official_sixteen_ops_in_order():
    assert noise.DEFAULT_OPS == (
        "AutoContrast", "Equalize", "Invert", "Rotate", "Posterize", "Solarize", "Color",
        "Contrast", "Brightness", "Sharpness", "ShearX", "ShearY", "TranslateX", "TranslateY",
        "SolarizeAdd", "Cutout",
    )


@settings(deadline=None, max_examples=4)
@given(st.sampled_from([(1, 1, 1), (3, 5, 7)]), st.integers(0, 2),
       st.sampled_from([0.0, 27.0]), st.integers(0, 2**31 - 1))
def test_output_is_uint8_of_the_input_shape(shape, num_layers, magnitude, seed):
    x = make_images(seed % 100, *shape)
    y = noise.randaugment(jax.random.key(seed), x, num_layers=num_layers, magnitude=magnitude)
    chex.assert_shape(y, x.shape)
    chex.assert_type(y, jnp.uint8)
    if num_layers == 0:
        np.testing.assert_array_equal(y, x)


def test_same_key_same_output_other_key_other_output():
    a = noise.randaugment(KEY, IMAGES)
    b = noise.randaugment(jax.random.key(0), jnp.asarray(IMAGES))
    c = noise.randaugment(jax.random.key(1), IMAGES)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


class JitTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_jit_equals_eager_and_shapes_are_static(self):
        fn = self.variant(functools.partial(noise.randaugment, magnitude=10.0))
        want = noise.randaugment(KEY, IMAGES, magnitude=10.0)
        np.testing.assert_array_equal(fn(KEY, IMAGES), want)

    def test_traces_once_per_shape(self):
        fn = chex.assert_max_traces(lambda k, x: noise.randaugment(k, x), n=1)
        fn = jax.jit(fn)
        for seed in range(3):
            fn(jax.random.key(seed), IMAGES)


def test_sharded_batch_gives_the_unsharded_result():
    assert len(jax.devices()) >= 2
    mesh = jax.make_mesh((2,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
    x = jax.device_put(jnp.asarray(IMAGES), NamedSharding(mesh, P("data")))
    fn = jax.jit(lambda k, x: noise.randaugment(k, x, magnitude=10.0))
    got = fn(KEY, x)
    np.testing.assert_array_equal(got, noise.randaugment(KEY, IMAGES, magnitude=10.0))


def test_op_draw_is_uniform_chi_square():
    counts = np.bincount(np.asarray(noise.randaugment_ops(KEY, 1250, 16, 16)).ravel(),
                         minlength=16)
    assert counts.sum() == 20000
    chi2 = ((counts - 1250.0) ** 2 / 1250.0).sum()
    assert chi2 < 37.70  # chi-square, 15 degrees of freedom, p = 0.001


def test_op_draw_is_what_randaugment_applies():
    # a single op -> index 0; with two ops per image the draw decides which one each image got
    x = IMAGES
    k_ops = jax.random.split(KEY, 4)[0]
    drawn = np.asarray(noise.randaugment_ops(k_ops, len(x), 1, 2))[0]
    got = np.asarray(noise.randaugment(KEY, x, num_layers=1, ops=("Invert", "Posterize"),
                                       magnitude=5.0))
    for i in range(len(x)):
        want = 255 - x[i] if drawn[i] == 0 else (x[i] >> 6) << 6  # Posterize: int(4 * 0.5) bits
        np.testing.assert_array_equal(got[i], want)
    assert 0 < drawn.sum() < len(x)


def test_images_of_a_batch_draw_their_own_ops():
    draws = np.asarray(noise.randaugment_ops(KEY, 64, 2, 16))
    assert len(np.unique(draws[0])) > 8 and not np.array_equal(draws[0], draws[1])
    same = np.repeat(IMAGES[:1], 8, axis=0)
    out = np.asarray(noise.randaugment(KEY, same, magnitude=10.0, translate_const=5,
                                       cutout_const=5))
    pairs = np.asarray(noise.randaugment_ops(jax.random.split(KEY, 4)[0], 8, 2, 16)).T
    assert len({o.tobytes() for o in out}) >= len({tuple(p) for p in pairs}) - 1 >= 5


# --------------------------------------------------------------------------- semantics


@pytest.mark.parametrize("magnitude,magnitude_std,tf_compat",
                         [(27.0, 0.0, False), (10.0, 0.0, True), (9.0, 3.0, False)])
def test_per_image_and_batched_executors_agree(magnitude, magnitude_std, tf_compat):
    x = make_images(1, 12)
    kwargs = dict(magnitude=magnitude, magnitude_std=magnitude_std, tf_compat=tf_compat)
    for seed in range(2):
        key = jax.random.key(seed)
        a = run("per_image", key, x, **kwargs)
        np.testing.assert_array_equal(a, run("batched", key, x, **kwargs))


@pytest.mark.parametrize("subset", [("Rotate", "Equalize"), ("Cutout", "Invert", "Color"),
                                    ("Sharpness",), ("ShearY", "Contrast", "Sharpness")])
def test_executors_agree_on_op_subsets(subset):
    x = make_images(2, 8)
    np.testing.assert_array_equal(run("per_image", KEY, x, ops_=subset, fill=7),
                                  run("batched", KEY, x, ops_=subset, fill=7))


def public_op(name: str, x, draws, layer: int, magnitude: float, *, tf_compat=False,
              translate_const=100.0, cutout_const=40.0, fill=128):
    """The public op with the arguments the policy derives for layer `layer` (reference rules)."""
    level = magnitude / 10.0
    sign = np.asarray(draws.sign[layer])
    factor = F32(level * 1.8 + 0.1)
    geometric = {"Rotate": (ops.rotate, level * 30.0), "ShearX": (ops.shear_x, level * 0.3),
                 "ShearY": (ops.shear_y, level * 0.3),
                 "TranslateX": (ops.translate_x, level * translate_const),
                 "TranslateY": (ops.translate_y, level * translate_const)}
    if name in geometric:
        fn, value = geometric[name]
        return fn(x, sign * F32(value), fill=fill, tf_compat=tf_compat)
    if name == "Cutout":
        return ops.cutout(x, draws.centers[layer], int(level * cutout_const), fill=fill)
    if name == "Posterize":
        return ops.posterize(x, int(level * 4), tf_compat=tf_compat)
    if name == "Solarize":
        return ops.solarize(x, int(level * 256), tf_compat=tf_compat)
    if name == "SolarizeAdd":
        return ops.solarize_add(x, int(level * 110))
    if name == "Contrast":
        return ops.contrast(x, factor, tf_compat=tf_compat)
    if name in ("Color", "Sharpness"):
        return {"Color": ops.color, "Sharpness": ops.sharpness}[name](x, factor,
                                                                     tf_compat=tf_compat)
    if name == "Brightness":
        return ops.brightness(x, factor)
    if name == "AutoContrast":
        return ops.auto_contrast(x, tf_compat=tf_compat)
    return {"Equalize": ops.equalize, "Invert": ops.invert}[name](x)


@pytest.mark.parametrize("name", noise.DEFAULT_OPS)
def test_each_op_of_the_policy_is_the_public_op(name):
    x = make_images(3, 6)
    b, h, w = x.shape[:3]
    for magnitude, tf_compat in ((5.0, False), (10.0, True)):
        key = jax.random.key(len(name))
        got = noise.randaugment(key, x, num_layers=2, magnitude=magnitude, ops=(name,),
                                tf_compat=tf_compat, fill=5, translate_const=10, cutout_const=8)
        draws = ra._sample_draws(key, b, 2, 1, magnitude, 0.0, h, w)
        want = x
        for layer in range(2):
            want = public_op(name, want, draws, layer, magnitude, tf_compat=tf_compat, fill=5,
                             translate_const=10.0, cutout_const=8.0)
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("count", [0, 3, 10, 12])
def test_equalize_tables_for_the_images_that_need_them(count):
    # the batched executor histograms at most `capacity` images (10 of 16 here), else all
    x = jnp.asarray(make_images(7, 16))
    assert ra._equalize_capacity(16, noise.DEFAULT_OPS) == 10
    selected = jnp.asarray(np.random.default_rng(count).permutation(16) < count)
    got = np.asarray(ra._equalize_luts_of_some(x, selected, noise.DEFAULT_OPS))
    want = np.asarray(_image.equalize_luts(_image.channel_histograms(x)))
    np.testing.assert_array_equal(got[np.asarray(selected)], want[np.asarray(selected)])


def test_magnitude_beyond_ten_default_versus_tf_compat():
    x = IMAGES
    one = dict(num_layers=1, magnitude=27.0)
    # Posterize: int(4 * 2.7) = 10 bits -> identity; TF1 wraps the shift 8 - 10 to 254 -> 7.
    np.testing.assert_array_equal(noise.randaugment(KEY, x, ops=("Posterize",), **one), x)
    np.testing.assert_array_equal(
        noise.randaugment(KEY, x, ops=("Posterize",), tf_compat=True, **one), x & 128)
    # Solarize: threshold int(256 * 2.7) = 691 -> identity; TF1: 691 % 256 = 179.
    np.testing.assert_array_equal(noise.randaugment(KEY, x, ops=("Solarize",), **one), x)
    np.testing.assert_array_equal(
        noise.randaugment(KEY, x, ops=("Solarize",), tf_compat=True, **one),
        np.where(x < 179, x, 255 - x))
    # M = 10: threshold 256 -> identity; TF1: 0 -> every value inverted.
    ten = dict(num_layers=1, magnitude=10.0, ops=("Solarize",))
    np.testing.assert_array_equal(noise.randaugment(KEY, x, **ten), x)
    np.testing.assert_array_equal(noise.randaugment(KEY, x, tf_compat=True, **ten), 255 - x)
    # Contrast at factor 0 (M = 0 -> 1.8 * 0 + 0.1 = 0.1; use the op): the degenerate grey
    grey = np.asarray(ops.contrast(x, 0.0, tf_compat=True))
    assert (grey == 1280 // 256).all()  # H * W / 256 for 32 x 40, the reference's value


def test_geometric_fill_and_cutout_size_follow_the_constants():
    x = make_images(4, 16)
    out = np.asarray(noise.randaugment(KEY, x, num_layers=1, magnitude=10.0, ops=("Cutout",),
                                       cutout_const=6, fill=128))
    for o, i in zip(out, x):
        changed = (o != i).any(-1)
        rows, cols = np.nonzero(changed)
        assert (o[changed] == 128).all()
        assert rows.max() - rows.min() < 12 and cols.max() - cols.min() < 12  # side <= 2 * 6
    out = np.asarray(noise.randaugment(KEY, x, num_layers=1, magnitude=27.0,
                                       ops=("TranslateX", "TranslateY")))
    assert (out == 128).all()  # +-270 px moves everything out of a 32 x 40 image


def test_magnitude_std_samples_per_image_and_is_clipped_at_zero():
    x = np.repeat(IMAGES[:1], 32, axis=0)
    out = np.asarray(noise.randaugment(KEY, x, num_layers=1, magnitude=9.0, magnitude_std=4.0,
                                       ops=("Brightness",)))
    means = out.reshape(32, -1).mean(1)
    assert len(np.unique(means)) > 20  # a factor per image
    draws = ra._sample_draws(KEY, 32, 1, 1, 9.0, 4.0, 32, 40)
    mags = np.asarray(draws.magnitude)
    assert mags.min() >= 0.0 and mags.std() > 2.0
    huge = noise.randaugment(KEY, IMAGES, magnitude=1.0, magnitude_std=20.0)  # many clip at 0
    chex.assert_type(huge, jnp.uint8)


def test_random_cutout_fills_one_square_of_the_given_size():
    x = make_images(5, 16)
    out = np.asarray(noise.random_cutout(KEY, x, 10, fill=128))
    for o, i in zip(out, x):
        rows, cols = np.nonzero((o != i).any(-1))
        assert rows.max() - rows.min() < 10 and cols.max() - cols.min() < 10
        assert (o[rows.min():rows.max() + 1, cols.min():cols.max() + 1] == 128).all()
    np.testing.assert_array_equal(noise.random_cutout(KEY, x, 0), x)


@pytest.mark.parametrize("tf_compat", [False, True])
def test_svhn_augment_is_the_32_pixel_pipeline(tf_compat):
    x = make_images(6, 16, 32, 32)
    out = np.asarray(noise.svhn_augment(KEY, x, tf_compat=tf_compat))
    chex.assert_shape(out, x.shape)
    chex.assert_type(out, jnp.uint8)
    assert not np.array_equal(out, noise.svhn_augment(jax.random.key(1), x, tf_compat=tf_compat))
    # The pipeline from its public pieces: RandAugment with constants H // 8 = 4, a 16x16
    # cutout, reflect-pad 4 and a crop at offsets uniform in [0, 8].
    k_ra, k_cut, k_crop = jax.random.split(KEY, 3)
    want = noise.randaugment(k_ra, x, num_layers=2, magnitude=5.0, translate_const=4,
                             cutout_const=4, tf_compat=tf_compat)
    want = np.pad(np.asarray(noise.random_cutout(k_cut, want, 16)),
                  ((0, 0), (4, 4), (4, 4), (0, 0)), mode="reflect")
    offsets = np.asarray(jax.random.randint(k_crop, (16, 2), 0, 9))
    want = np.stack([w[r:r + 32, c:c + 32] for w, (r, c) in zip(want, offsets)])
    np.testing.assert_array_equal(out, want)
    # the extra 16x16 cutout leaves a grey square (up to 8 px shifted by the crop)
    grey = (out == 128).all(-1)
    assert (grey.sum((1, 2)) >= 16).all()


# --------------------------------------------------------------------------- argument checks


def test_bad_arguments_are_named_before_any_work():
    x = IMAGES
    with pytest.raises(ValueError, match="ops must hold names from"):
        noise.randaugment(KEY, x, ops=("Rotate", "Blur"))
    with pytest.raises(ValueError, match="ops must name at least one op"):
        noise.randaugment(KEY, x, ops=())
    with pytest.raises(TypeError, match="ops must be a tuple of op names"):
        noise.randaugment(KEY, x, ops="Rotate")
    with pytest.raises(ValueError, match=r"magnitude must be in \[0, 1000\], got -1.0"):
        noise.randaugment(KEY, x, magnitude=-1)
    with pytest.raises(ValueError, match="magnitude_std must be"):
        noise.randaugment(KEY, x, magnitude_std=float("nan"))
    with pytest.raises(ValueError, match="num_layers must be >= 0"):
        noise.randaugment(KEY, x, num_layers=-1)
    with pytest.raises(TypeError, match="images must have dtype"):
        noise.randaugment(KEY, x.astype(np.float32))
    with pytest.raises(ValueError, match=r"fill must be in \[0, 255\]"):
        noise.randaugment(KEY, x, fill=-1)
    with pytest.raises(TypeError, match="tf_compat must be a bool"):
        noise.randaugment(KEY, x, tf_compat="yes")
    big = jax.ShapeDtypeStruct((2, 16, 4100, 3), jnp.uint8)
    with pytest.raises(ValueError, match=r"at most 4096 px .* got shape \(2, 16, 4100, 3\)"):
        noise.randaugment(KEY, big, ops=("Invert", "ShearX"))
    with pytest.raises(ValueError, match="size must be >= 0"):
        noise.random_cutout(KEY, x, -2)
    with pytest.raises(ValueError, match="num_ops must be >= 1"):
        noise.randaugment_ops(KEY, 4, 2, 0)


@pytest.mark.parametrize("bad", [None, 0, np.zeros(3, np.uint32), "key"])
def test_bad_keys_are_refused_by_name(bad):
    x = IMAGES[:2]
    for call in (lambda: noise.randaugment(bad, x), lambda: noise.random_cutout(bad, x, 4),
                 lambda: noise.svhn_augment(bad, make_images(0, 2, 32, 32)),
                 lambda: noise.randaugment_ops(bad, 2, 2, 16)):
        with pytest.raises(TypeError, match="key must be a jax.random key"):
            call()
    with pytest.raises(ValueError, match="key must be a single jax.random key"):
        noise.randaugment(jax.random.split(KEY, 2), x)


def test_empty_batch_gives_an_empty_batch():
    x = np.zeros((0, 8, 9, 3), np.uint8)
    for out in (noise.randaugment(KEY, x), noise.randaugment(KEY, x, executor="batched"),
                noise.randaugment(KEY, x, magnitude=9.0, magnitude_std=2.0),
                jax.jit(noise.randaugment)(KEY, x), noise.random_cutout(KEY, x, 4),
                noise.svhn_augment(KEY, x)):
        chex.assert_shape(out, (0, 8, 9, 3))
        chex.assert_type(out, jnp.uint8)
    chex.assert_shape(noise.randaugment_ops(KEY, 0, 2, 16), (2, 0))


def test_numbers_may_be_numpy_scalars_or_0d_arrays():
    x = IMAGES[:4]
    kwargs = dict(num_layers=1, magnitude=10.0, translate_const=5, cutout_const=4.0, fill=7,
                  ops=("TranslateX", "Cutout", "Posterize"))
    want = noise.randaugment(KEY, x, **kwargs)
    for alt in (dict(magnitude=np.float32(10.0)), dict(magnitude=np.array(10)),
                dict(magnitude=jnp.float32(10.0)), dict(translate_const=np.int64(5)),
                dict(cutout_const=np.array(4.0)), dict(fill=np.uint8(7)), dict(fill=np.array(7)),
                dict(num_layers=np.int64(1)), dict(num_layers=np.array(1))):
        np.testing.assert_array_equal(noise.randaugment(KEY, x, **(kwargs | alt)), want)
    np.testing.assert_array_equal(noise.random_cutout(KEY, x, np.int32(6), fill=np.int64(3)),
                                  noise.random_cutout(KEY, x, 6, fill=3))


def test_static_numbers_must_be_concrete_and_in_range():
    x = IMAGES[:2]
    with pytest.raises(TypeError, match="magnitude must be a concrete number"):
        jax.jit(lambda m: noise.randaugment(KEY, x, magnitude=m))(10.0)
    with pytest.raises(TypeError, match="num_layers must be a concrete int"):
        jax.jit(lambda n: noise.randaugment(KEY, x, num_layers=n))(1)
    with pytest.raises(ValueError, match=r"magnitude must be in \[0, 1000\], got inf"):
        noise.randaugment(KEY, x, magnitude=np.inf)
    with pytest.raises(ValueError, match=r"translate_const must be in \[0, 1e\+06\], got nan"):
        noise.randaugment(KEY, x, translate_const=np.float32("nan"))
    with pytest.raises(ValueError, match=r"magnitude \+ 8 \* magnitude_std must be at most 1000"):
        noise.randaugment(KEY, x, magnitude=27.0, magnitude_std=200.0)
    with pytest.raises(TypeError, match=r"fill must be an integer grey level in \[0, 255\]"):
        noise.randaugment(KEY, x, fill=127.5)
    with pytest.raises(ValueError, match=r"magnitude must be a scalar number, got an array"):
        noise.randaugment(KEY, x, magnitude=np.ones(2))
    with pytest.raises(ValueError, match="executor must be one of"):
        noise.randaugment(KEY, x, executor="gpu")
    with pytest.raises(ValueError, match=r"images must have shape \[B, H, W, 3\] with H, W >= 5"):
        noise.svhn_augment(KEY, make_images(0, 2, 4, 4))
