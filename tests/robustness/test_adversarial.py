"""FGSM and PGD against the analytic optimum of a linear model, their projections, keys and
argument checks."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from nsjax.robustness._adversarial import fgsm, pgd

H = W = 4
D = H * W * 3


def _linear_problem(seed: int, batch: int = 6, classes: int = 2):
    rng = np.random.default_rng(seed)
    weights = jnp.asarray(rng.normal(size=(D, classes)), jnp.float32)
    images = jnp.asarray(rng.integers(0, 256, (batch, H, W, 3)), jnp.uint8)
    labels = jnp.asarray(rng.integers(0, classes, batch), jnp.int32)
    return weights, images, labels


def _logits(weights, x):
    return x.reshape(x.shape[0], -1) @ weights / 255.0


def _cross_entropy(weights, x, labels):
    return optax.softmax_cross_entropy_with_integer_labels(_logits(weights, x), labels)


def _optimal_binary(weights, images, labels, eps):
    """The L∞ step that maximises a two-class linear model's cross-entropy: each pixel moves
    by ε against the margin's weight, then the valid range clips it."""
    margin_w = weights[:, 1] - weights[:, 0]                     # d(z1 - z0)/dx
    direction = jnp.where(labels[:, None] == 1, -1.0, 1.0) * jnp.sign(margin_w)[None]
    x = images.astype(jnp.float32).reshape(len(labels), -1) + eps * direction
    return jnp.clip(x, 0, 255).reshape(images.shape)


@pytest.mark.parametrize("eps", [0.5, 2.0, 16.0])
def test_fgsm_is_the_optimal_step_of_a_linear_model(eps):
    weights, images, labels = _linear_problem(0)
    loss = eqx.Partial(_cross_entropy, weights)
    out = fgsm(loss, images, labels, eps)
    assert out.shape == images.shape and out.dtype == jnp.float32
    np.testing.assert_array_equal(out, _optimal_binary(weights, images, labels, eps))
    assert float(out.min()) >= 0.0 and float(out.max()) <= 255.0
    # it increases every image's loss at least as much as any random corner of the ball
    rng = np.random.default_rng(1)
    for _ in range(5):
        corner = jnp.clip(images + eps * rng.choice([-1.0, 1.0], images.shape), 0, 255)
        assert np.all(np.asarray(loss(out, labels)) >= np.asarray(loss(corner, labels)) - 1e-6)


def test_fgsm_at_zero_epsilon_returns_the_clean_image_and_a_mean_loss_acts_as_a_sum():
    weights, images, labels = _linear_problem(2, classes=5)
    per_image = eqx.Partial(_cross_entropy, weights)
    np.testing.assert_array_equal(fgsm(per_image, images, labels, 0.0), images)

    def mean_loss(x, y):
        return _cross_entropy(weights, x, y).mean()

    np.testing.assert_array_equal(fgsm(per_image, images, labels, 4.0),
                                  fgsm(mean_loss, images, labels, 4.0))


@pytest.mark.parametrize("use_key", [False, True])
def test_pgd_reaches_the_linear_optimum_and_stays_in_the_ball(use_key):
    weights, images, labels = _linear_problem(3)
    loss = eqx.Partial(_cross_entropy, weights)
    key = jax.random.key(0) if use_key else None
    out = pgd(loss, images, labels, 8.0, key=key)
    np.testing.assert_allclose(out, _optimal_binary(weights, images, labels, 8.0), atol=1e-4)
    assert float(jnp.abs(out - images.astype(jnp.float32)).max()) <= 8.0 + 1e-4


def test_pgd_finds_an_interior_optimum_fgsm_overshoots():
    """A loss peaked at a target inside the ball: FGSM jumps to a corner, PGD's iterations
    come within one step of the target."""
    images = jnp.full((2, 4, 4, 3), 100, jnp.uint8)
    target = 100.0 + jnp.linspace(-3, 3, 96).reshape(2, 4, 4, 3)

    def loss(x, y):
        return -jnp.sum((x - target) ** 2, axis=(1, 2, 3))

    labels = jnp.zeros(2, jnp.int32)
    one_step = fgsm(loss, images, labels, 8.0)
    many = pgd(loss, images, labels, 8.0, num_steps=40, step_size=0.25)
    assert np.all(loss(many, labels) > loss(one_step, labels))
    assert float(jnp.abs(many - target).max()) <= 0.25 + 1e-5


def test_pgd_random_start_depends_on_the_key_only():
    weights, images, labels = _linear_problem(4, classes=3)
    loss = eqx.Partial(_cross_entropy, weights)

    def start(key):  # one step too small to reach the ball's edge shows the start
        return pgd(loss, images, labels, 8.0, num_steps=1, step_size=1e-3, key=key)

    a, b = start(jax.random.key(1)), start(jax.random.key(1))
    c = start(jax.random.key(2))
    np.testing.assert_array_equal(a, b)
    assert float(jnp.abs(a - c).max()) > 1.0
    offsets = np.asarray(a - images.astype(jnp.float32)).ravel()
    assert np.abs(offsets).max() <= 8.0 + 1e-3 and np.abs(offsets).mean() > 2.5  # U(-8, 8)
    no_key = pgd(loss, images, labels, 8.0, num_steps=1, step_size=1e-3)
    assert float(jnp.abs(no_key - images.astype(jnp.float32)).max()) <= 1.1e-3


def test_attacks_run_under_jit_with_the_model_as_an_argument():
    weights, images, labels = _linear_problem(5)

    @jax.jit
    def attack(w, x, y):
        return fgsm(eqx.Partial(_cross_entropy, w), x, y, 2.0)

    np.testing.assert_array_equal(attack(weights, images, labels),
                                  _optimal_binary(weights, images, labels, 2.0))


def test_attacks_refuse_bad_input_by_name():
    weights, images, labels = _linear_problem(6)
    loss = eqx.Partial(_cross_entropy, weights)
    with pytest.raises(ValueError, match="epsilon must be >= 0, got -1.0"):
        fgsm(loss, images, labels, -1.0)
    with pytest.raises(ValueError, match="epsilon must be >= 0"):
        pgd(loss, images, labels, -2)
    with pytest.raises(TypeError, match=r"images must have dtype in \('uint8',\), got float32"):
        fgsm(loss, images.astype(jnp.float32), labels, 2.0)
    with pytest.raises(ValueError, match=r"labels must have shape \[B\] = \[6\]"):
        fgsm(loss, images, labels[:3], 2.0)
    with pytest.raises(ValueError, match="num_steps must be"):
        pgd(loss, images, labels, 2.0, num_steps=0)
    with pytest.raises(ValueError, match="step_size must be > 0"):
        pgd(loss, images, labels, 2.0, step_size=0.0)
    with pytest.raises(ValueError, match="loss_fn must return a scalar or per-image losses"):
        fgsm(lambda x, y: x, images, labels, 2.0)
