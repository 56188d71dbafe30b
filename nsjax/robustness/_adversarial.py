"""Untargeted L-infinity attacks on the pixel scale: FGSM (one signed-gradient step, as in
Noisy Student's robustness section) and PGD (Madry et al.'s projected iterations).

Scale: images are uint8 `[B, H, W, 3]` and `epsilon` is in 0-255 pixel units, applied to the
raw pixels before any normalisation (the paper's "ε = 2" is 2/255 of the range). The attacked
images are float32 on [0, 255], so a fractional epsilon is kept exactly; feed them to the same
normalisation the clean images get. The loss is maximised for the true labels (the paper does
not say which labels it used; hendrycks/robustness's `fgsm` corruption uses the predictions:
pass them as `labels` for that variant).
"""

from __future__ import annotations

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp

from nsjax import _checks

LossFn = Callable[[jax.Array, jax.Array], jax.Array]


def _check(images, labels, epsilon) -> float:
    batch = _checks.check_images("images", images, dtypes=("uint8",))[0]
    _checks.check_rank("labels", labels, 1, "[B]")
    _checks.check_integer("labels", labels)
    if _checks.shape_of(labels)[0] != batch:
        raise ValueError(f"labels must have shape [B] = [{batch}] (one per image), got "
                         f"{_checks.shape_of(labels)}")
    return _checks.check_number("epsilon", epsilon, minimum=0.0)


def _input_gradient(loss_fn: LossFn, x: jax.Array, labels: jax.Array) -> jax.Array:
    """d(sum of the per-image losses)/dx, float32 `[B, H, W, 3]` (a scalar loss is taken as is:
    a mean has the same gradient signs)."""
    def total(x):
        loss = loss_fn(x, labels)
        if loss.ndim not in (0, 1):
            raise ValueError(f"loss_fn must return a scalar or per-image losses [B], got shape "
                             f"{loss.shape}")
        return jnp.sum(loss.astype(jnp.float32))

    return jax.grad(total)(x)


@eqx.filter_jit
def fgsm(loss_fn: LossFn, images: jax.Array, labels: jax.Array, epsilon: float) -> jax.Array:
    """Fast gradient sign method: `clip(x + ε · sign(∇_x L(x, y)), 0, 255)`.

    The single step that maximises a loss linear in the pixels over the L∞ ball of radius ε.

    **Arguments:**

    - `loss_fn`: `(images float32 [B, H, W, 3] on 0-255, labels int [B]) -> loss` (a scalar or
      per-image `[B]`; normalise inside it, as for clean images). Pass a model bound as
      `eqx.Partial(fn, model)` (its arrays traced) so a new model does not recompile.
    - `images`: uint8 `[B, H, W, 3]`, the clean pixels.
    - `labels`: int `[B]`, the classes whose loss is increased.
    - `epsilon`: >= 0, in 0-255 pixel units.

    **Returns:** float32 `[B, H, W, 3]` on [0, 255].
    """
    epsilon = _check(images, labels, epsilon)
    x = images.astype(jnp.float32)
    step = epsilon * jnp.sign(_input_gradient(loss_fn, x, labels))
    return jnp.clip(x + step, 0.0, 255.0)


@eqx.filter_jit
def pgd(loss_fn: LossFn, images: jax.Array, labels: jax.Array, epsilon: float, *,
        num_steps: int = 10, step_size: float | None = None,
        key: jax.Array | None = None) -> jax.Array:
    """Projected gradient descent (Madry et al. 2018) in the L∞ ball of radius ε.

    From `x_0 = x` (or `x + U(-ε, ε)` per pixel with `key`, the random start), `num_steps`
    times `x_t+1 = Π(x_t + α · sign(∇_x L(x_t, y)))`, where Π clips to `[x - ε, x + ε]` and to
    [0, 255]. Noisy Student reports PGD with 10 iterations.

    **Arguments:**

    - `loss_fn`, `images`, `labels`, `epsilon`: as `fgsm`.
    - `num_steps`: iterations >= 1 (default 10).
    - `step_size`: α in pixel units > 0 (default `2.5 · ε / num_steps`, Madry et al.'s rule,
      which can reach the ball's far side from any start).
    - `key`: a `jax.random` key for the random start; None starts at the clean image.

    **Returns:** float32 `[B, H, W, 3]` on [0, 255], within ε of `images` per pixel.
    """
    epsilon = _check(images, labels, epsilon)
    num_steps = _checks.check_positive_int("num_steps", num_steps)
    alpha = (2.5 * epsilon / num_steps if step_size is None
             else _checks.check_number("step_size", step_size, minimum=0.0, min_open=True))
    clean = images.astype(jnp.float32)
    lo, hi = jnp.maximum(clean - epsilon, 0.0), jnp.minimum(clean + epsilon, 255.0)
    x = clean
    if key is not None:
        _checks.check_key("key", key)
        x = jnp.clip(x + jax.random.uniform(key, x.shape, jnp.float32, -epsilon, epsilon), lo, hi)

    def step(_, x):
        return jnp.clip(x + alpha * jnp.sign(_input_gradient(loss_fn, x, labels)), lo, hi)

    return jax.lax.fori_loop(0, num_steps, step, x)
