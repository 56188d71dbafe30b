"""PIL's nearest-neighbour affine maps as 16.16 fixed-point coefficients, `int32[B, 2, 3]`.

`Image.transform(AFFINE, NEAREST)` (and `Image.rotate`, which builds an affine matrix) turns
the float64 matrix `(a, b, c, d, e, f)` into integers `FIX(v) = floor(v * 2**16 + 0.5)`:
`(FIX(a), FIX(b), FIX(c + a/2 + b/2); FIX(d), FIX(e), FIX(f + d/2 + e/2))`, and output pixel
(x, y) takes input pixel `((A2 + x A0 + y A1) >> 16, (A5 + x A3 + y A4) >> 16)`. A matrix with
`b == d == 0` (translations) takes PIL's float64 scaling path instead, which floors
`x + c + 1/2` per pixel; that is the same integer shift for every x and is expressed here as
coefficients too. Reproducing the integers reproduces PIL's pixels exactly.

The coefficients depend on float64 products (`Image.rotate`'s cos/sin and centre terms), and
JAX on accelerators has no float64. Rotation therefore evaluates them in double-float
arithmetic (a float32 pair, about 46 significant bits) from an exact reduction of the angle in
degrees; `FIX` of such a value equals PIL's unless the value lies within about 1e-9 of a
rounding boundary of the 16.16 grid (exact grid values are reached exactly). Products are
formed from 12-bit halves, so compiler FMA contraction does not change any result.
"""

from __future__ import annotations

import math
from fractions import Fraction

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from nsjax.noise._image import split12

_ONE = 1 << 16
_HALF = 1 << 15
_MAX_SHEAR = 2.0**13


# --------------------------------------------------------------------------- double-float
# A value is a pair (hi, lo) of float32 arrays with |lo| <= ulp(hi) / 2.


def _two_sum(a: jax.Array, b: jax.Array) -> tuple[jax.Array, jax.Array]:
    s = a + b
    v = s - a
    return s, (a - (s - v)) + (b - v)


def _two_prod(a: jax.Array, b: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Dekker's exact product: `a * b = p + e`. Every partial product is exact, so fused
    multiply-adds give the same bits."""
    p = a * b
    ah, al = split12(a)
    bh, bl = split12(b)
    return p, ((ah * bh - p) + ah * bl + al * bh) + al * bl


def _add(x, y):
    s, e = _two_sum(x[0], y[0])
    t, f = _two_sum(x[1], y[1])
    s, e = _two_sum(s, e + t)
    return _two_sum(s, e + f)


def _mul(x, y):
    p, e = _two_prod(x[0], y[0])
    e = e + (x[0] * y[1] + x[1] * y[0])
    return _two_sum(p, e)


def _neg(x):
    return -x[0], -x[1]


def _const(value: Fraction | float) -> tuple[np.float32, np.float32]:
    """The double-float nearest a rational constant."""
    value = Fraction(value)
    hi = np.float32(float(value))
    return hi, np.float32(float(value - Fraction(float(hi))))


def _taylor_coefficients(start: int, stop: int) -> list[tuple[np.float32, np.float32]]:
    """`(-1)**k / n!` for n = start, start + 2, ... < stop, as double-floats."""
    return [_const(Fraction((-1) ** i, math.factorial(n)))
            for i, n in enumerate(range(start, stop, 2))]


_RADIANS_PER_DEGREE = _const(Fraction(math.pi) / 180)  # pi to float64, as math.radians
_SIN_TERMS = _taylor_coefficients(1, 19)  # |x| <= pi/4: the first omitted term is < 1e-17
_COS_TERMS = _taylor_coefficients(0, 20)


def _polynomial(terms, x2):
    """`sum_k terms[k] * x2**k` by Horner's rule in double-float.

    A loop, not an unrolled expression: XLA duplicates shared elementwise producers into each
    consumer when it fuses, which makes the unrolled double-float graph exponentially large.
    """
    hi = jnp.asarray([t[0] for t in terms], jnp.float32)
    lo = jnp.asarray([t[1] for t in terms], jnp.float32)
    last = len(terms) - 1

    def step(i, acc):
        k = last - 1 - i
        return _add(_mul(acc, x2), (hi[k], lo[k]))

    start = (jnp.broadcast_to(hi[last], x2[0].shape), jnp.broadcast_to(lo[last], x2[0].shape))
    return lax.fori_loop(0, last, step, start)


def _cos_sin_degrees(degrees: jax.Array):
    """cos and sin of `degrees` (float32), as double-floats, about 1e-14 accurate.

    The angle is reduced exactly in degrees (`fmod` by 360 and a multiple of 90 are exact in
    float32) to `r` in [-45, 45], so only |x| <= pi/4 radians reaches the series.
    """
    degrees = degrees.astype(jnp.float32)
    reduced = lax.rem(degrees, np.float32(360.0))  # exact, in (-360, 360)
    quadrant = jnp.round(reduced / np.float32(90.0))
    r = reduced - quadrant * np.float32(90.0)  # exact, in [-45, 45]
    x = _mul((r, jnp.zeros_like(r)), _RADIANS_PER_DEGREE)
    x2 = _mul(x, x)
    sin_r = _mul(_polynomial(_SIN_TERMS, x2), x)
    cos_r = _polynomial(_COS_TERMS, x2)
    q = jnp.mod(quadrant.astype(jnp.int32), 4)

    def pick(choices):
        return tuple(jnp.select([q == i for i in range(4)], [c[k] for c in choices])
                     for k in range(2))

    cos = pick([cos_r, _neg(sin_r), _neg(cos_r), sin_r])
    sin = pick([sin_r, cos_r, _neg(sin_r), _neg(cos_r)])
    return cos, sin


def _fix(x) -> jax.Array:
    """PIL's `FIX(v) = floor(v * 2**16 + 0.5)` of a double-float, `int32`."""
    hi, lo = _two_sum(x[0] * np.float32(_ONE), np.float32(0.5))
    hi, lo = _two_sum(hi, lo + x[1] * np.float32(_ONE))
    whole = jnp.floor(hi)
    # hi + lo lies between the integers around hi unless hi is one itself (|lo| <= ulp(hi)/2);
    # the sum is formed in int32, as float32 cannot hold every integer above 2**24.
    below = jnp.where(hi == whole, jnp.floor(lo), 0.0)
    return whole.astype(jnp.int32) + below.astype(jnp.int32)


def _stack(a0, a1, a2, a3, a4, a5) -> jax.Array:
    """`int32[B, 2, 3]` from six `[B]` arrays or Python ints (broadcast)."""
    a = jnp.broadcast_arrays(a0, a1, a2, a3, a4, a5)
    return jnp.stack([jnp.stack(a[:3], -1), jnp.stack(a[3:], -1)], -2).astype(jnp.int32)


def _round_half_up(v: jax.Array) -> jax.Array:
    """`floor(v + 1/2)` of float32 `v` exactly, `int32`: the half is compared after splitting
    off the integer part, so adding it cannot round."""
    whole = jnp.floor(v)
    return whole.astype(jnp.int32) + (v - whole >= 0.5).astype(jnp.int32)


# --------------------------------------------------------------------------- coefficients


def identity(batch: int) -> jax.Array:
    """`int32[B, 2, 3]`: every output pixel takes its own input pixel."""
    return _stack(jnp.full((batch,), _ONE, jnp.int32), 0, _HALF, 0, _ONE, _HALF)


def rotation_on_host(degrees: np.ndarray, height: int, width: int) -> np.ndarray:
    """`rotation` for angles known when tracing, `int32[*S, 2, 3]`: Pillow's own float64
    computation (`Image.rotate`'s matrix, then Geometry.c's `FIX`), transcribed. The policy
    uses it for its two fixed angles +-30 L, so the default RandAugment spends nothing on
    trigonometry on the device."""

    def fix(v: float) -> int:
        return math.floor(v * 65536.0 + 0.5)

    def one(d: float) -> list[list[int]]:
        angle = -math.radians(float(d) % 360.0)
        cx, cy = width / 2, height / 2
        a, b = round(math.cos(angle), 15), round(math.sin(angle), 15)
        d_, e = round(-math.sin(angle), 15), round(math.cos(angle), 15)
        c = a * -cx + b * -cy + 0.0 + cx
        f = d_ * -cx + e * -cy + 0.0 + cy
        return [[fix(a), fix(b), fix(c + a * 0.5 + b * 0.5)],
                [fix(d_), fix(e), fix(f + d_ * 0.5 + e * 0.5)]]

    flat = np.asarray(degrees, np.float32).reshape(-1)
    table = np.asarray([one(d) for d in flat], np.int32).reshape(-1, 2, 3)
    return table.reshape(*np.shape(degrees), 2, 3)


def rotation(degrees: jax.Array, height: int, width: int) -> jax.Array:
    """`Image.rotate(degrees)` (counter-clockwise about `(W / 2, H / 2)`), `int32[B, 2, 3]`.

    PIL's matrix is `(c, s, cx - c cx - s cy, -s, c, cy + s cx - c cy)` with
    `c = cos(-angle)`, `s = sin(-angle)`; its fast paths for multiples of 90 degrees give the
    same pixels as these coefficients. Evaluated on the device in double-float; equal to
    `rotation_on_host` (tested on thousands of angles).
    """
    cos, sin = _cos_sin_degrees(degrees)
    s = _neg(sin)  # PIL rotates by -angle: matrix entries cos(-a) = cos a, sin(-a) = -sin a
    cx, cy = Fraction(width, 2), Fraction(height, 2)

    def affine(a, b, centre):
        """`FIX(centre + a (1/2 - cx) + b (1/2 - cy))`: PIL's constant term plus `a/2 + b/2`."""
        return _fix(_add(_add(_mul(a, _const(Fraction(1, 2) - cx)),
                              _mul(b, _const(Fraction(1, 2) - cy))), _const(centre)))

    return _stack(_fix(cos), _fix(s), affine(cos, s, cx),
                  _fix(_neg(s)), _fix(cos), affine(_neg(s), cos, cy))


def _shear_terms(shear: jax.Array) -> tuple[jax.Array, jax.Array]:
    """`FIX(s)` and the constant term `FIX(1/2 + s/2)` of a shear, clipped to +-2**13 (beyond,
    every pixel of an image <= 4096 px comes from outside anyway). `v * 2**16` is exact."""
    s = jnp.clip(shear.astype(jnp.float32), -_MAX_SHEAR, _MAX_SHEAR)
    return _round_half_up(s * np.float32(_ONE)), _HALF + _round_half_up(s * np.float32(_HALF))


def shear_x(shear: jax.Array) -> jax.Array:
    """`Image.transform(AFFINE, (1, s, 0, 0, 1, 0))`: output (x, y) takes input (x + s y, y),
    pixel centres sheared about the top-left corner. `int32[B, 2, 3]`."""
    fixed, offset = _shear_terms(shear)
    return _stack(_ONE, fixed, offset, 0, _ONE, _HALF)


def shear_y(shear: jax.Array) -> jax.Array:
    """`Image.transform(AFFINE, (1, 0, 0, s, 1, 0))`: output (x, y) takes input (x, y + s x)."""
    fixed, offset = _shear_terms(shear)
    return _stack(_ONE, 0, _HALF, fixed, _ONE, offset)


def _shift_term(pixels: jax.Array, limit: int) -> jax.Array:
    """The constant term of a translation by `floor(t + 1/2)` whole pixels (PIL's float64
    scaling path), shift clipped to [-limit, limit]."""
    shift = _round_half_up(jnp.clip(pixels.astype(jnp.float32), -limit, limit))
    return shift * _ONE + _HALF


def translate_x(pixels: jax.Array, width: int) -> jax.Array:
    """`Image.transform(AFFINE, (1, 0, t, 0, 1, 0))`: output (x, y) takes input
    (x + floor(t + 1/2), y). `int32[B, 2, 3]`."""
    return _stack(_ONE, 0, _shift_term(pixels, width + 1), 0, _ONE, _HALF)


def translate_y(pixels: jax.Array, height: int) -> jax.Array:
    """`Image.transform(AFFINE, (1, 0, 0, 0, 1, t))`: output (x, y) takes input
    (x, y + floor(t + 1/2))."""
    return _stack(_ONE, 0, _HALF, 0, _ONE, _shift_term(pixels, height + 1))
