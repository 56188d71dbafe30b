"""Batched NHWC layers for EfficientNet: convolution with TF "SAME" padding, TF-semantics batch
norm with explicit state, squeeze-excite and a dense classifier.

Activations are `[B, H, W, C]` in the input's dtype (float32 or bfloat16); parameters and
batch-norm statistics stay float32 and are cast at use.

Initial weights come from a `_Draws`: the stream of standard samples of one key, handed out in
construction order (see `_Draws`). A constructor's `key` is a `jax.random` key (it starts its
own stream) or the `_Draws` of the model being built (EfficientNet passes one to all its
layers): one small compiled sampler serves every model, where a `jax.random` draw per layer
made building B0 compile ~250 samplers (~20 s on a 2-core CPU).
"""

from __future__ import annotations

import functools
import math
import operator

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax import Array, lax

from nsjax import _checks

_DIMS = ("NHWC", "HWIO", "NHWC")

# --------------------------------------------------------------------------- initialisation

_CHUNK = 1 << 20  # samples per compiled draw
_NORMAL, _UNIFORM = 0, 1  # the two streams: N(0, 1) and U[-1, 1)


@jax.jit
def _chunk(key: Array, index, stream) -> Array:
    """float32 `[_CHUNK]`: samples `index * _CHUNK ...` of `stream` of `key` (one executable
    for both streams: a compile costs ~0.4 s on a 2-core CPU)."""
    key = jax.random.fold_in(jax.random.fold_in(key, stream), index)
    return lax.cond(
        stream == _NORMAL,
        lambda k: jax.random.normal(k, (_CHUNK,), jnp.float32),
        lambda k: jax.random.uniform(k, (_CHUNK,), jnp.float32, -1.0, 1.0),
        key,
    )


class _Draws:
    """The standard samples of one key, handed out in order: sample `k` of a stream (N(0, 1) or
    U[-1, 1)) is element `k mod 2^20` of the stream's chunk `k // 2^20`, a fixed-size draw
    compiled once per process. Outside any transformation the samples are sliced on the host
    (no compilation per layer); under one (`jax.jit`, `jax.eval_shape`, `vmap`: the chunks are
    then traced, whether the key is or not) by `jnp`, to the same values."""

    def __init__(self, key: Array):
        _checks.check_key("key", key)
        self._key = key
        self._traced = False
        self._next = [0, 0]
        self._cached: dict[int, tuple[int, object]] = {}

    def _get(self, stream: int, index: int):
        hit = self._cached.get(stream)
        if hit is None or hit[0] != index:
            chunk = _chunk(self._key, index, stream)
            self._traced = _checks.is_traced(chunk)  # the same for every chunk of one build
            hit = self._cached[stream] = (index, chunk if self._traced else np.asarray(chunk))
        return hit[1]

    def take(self, stream: int, shape: tuple[int, ...], scale: float) -> Array:
        """float32 `shape`: the stream's next `prod(shape)` samples times `scale`."""
        n = math.prod(shape)
        start = self._next[stream]
        self._next[stream] += n
        pieces = []
        for index in range(start // _CHUNK, -(-(start + n) // _CHUNK)):
            lo = max(start - index * _CHUNK, 0)
            hi = min(start + n - index * _CHUNK, _CHUNK)
            pieces.append(self._get(stream, index)[lo:hi])
        xp = jnp if self._traced else np
        flat = pieces[0] if len(pieces) == 1 else xp.concatenate(pieces)
        # one float32 multiplication, the same on the host and in XLA
        out = flat.reshape(shape) * np.float32(scale)
        return out if self._traced else jax.device_put(out)


def _draws(key) -> _Draws:
    """The stream a constructor draws from: `key`'s own, or the model's `_Draws` passed on."""
    return key if isinstance(key, _Draws) else _Draws(key)


def _constant(shape: tuple[int, ...], value: float) -> Array:
    """float32 `shape` filled with `value`, built on the host and transferred (an eager
    `jnp.full` or `jnp.asarray` compiles once per shape)."""
    return jax.device_put(np.full(shape, value, np.float32))


def conv_init_std(kernel: int, out_channels: int, groups: int) -> float:
    """The reference's (TF's) convolution init scale: `sqrt(2 / fan_out)`,
    `fan_out = kernel * kernel * out_channels / groups` (a depthwise kernel's output depth is
    TF's multiplier 1, so `fan_out = kernel * kernel`)."""
    return math.sqrt(2.0 / (kernel * kernel * out_channels // groups))


def dense_init_bound(out_features: int) -> float:
    """The reference's dense init: `U(-b, b)` with `b = 1 / sqrt(out_features)`."""
    return 1.0 / math.sqrt(out_features)


# --------------------------------------------------------------------------- layers


def _channels_last(v: Array, ndim: int) -> Array:
    """A per-channel vector `[C]` shaped to broadcast against `[..., C]` of rank `ndim`."""
    return v.reshape((1,) * (ndim - 1) + (-1,))


class Conv2d(eqx.Module):
    """k x k convolution with TF "SAME" padding (the extra row/column at the bottom/right).

    Initialised as the reference: weight `N(0, conv_init_std(kernel, out, groups))`, bias 0.
    On a CPU, a depthwise convolution (`groups == in == out`) runs as shifted slices and a
    dense one (`groups == 1`) as a matrix product (over patches unless 1 x 1 with stride 1),
    each with a hand-written backward pass; elsewhere XLA's convolutions run
    (`jax.lax.platform_dependent`: a function lowered on one platform for another takes the
    target's path). Both give the same results and gradients.

    **Arguments:**

    - `in_channels`, `out_channels`, `kernel`, `stride`, `groups`: Python ints.
    - `bias`: whether to add a bias.
    - `key`: a `jax.random` key.

    **Fields:** `weight`: float32 `[k, k, in / groups, out]` (HWIO); `bias`: float32 `[out]`
    or None.
    """

    weight: Array
    bias: Array | None
    stride: int = eqx.field(static=True)
    groups: int = eqx.field(static=True)

    def __init__(self, in_channels: int, out_channels: int, kernel: int, *, stride: int = 1,
                 groups: int = 1, bias: bool = False, key: Array):  # fmt: skip
        shape = (kernel, kernel, in_channels // groups, out_channels)
        std = conv_init_std(kernel, out_channels, groups)
        self.weight = _draws(key).take(_NORMAL, shape, std)
        self.bias = _constant((out_channels,), 0.0) if bias else None
        self.stride = stride
        self.groups = groups

    def __call__(self, x: Array) -> Array:
        """**Arguments:** `x`: float `[B, H, W, in]`.

        **Returns:** `[B, ceil(H / stride), ceil(W / stride), out]` in `x`'s dtype.
        """
        w = self.weight.astype(x.dtype)

        def grouped(x, w):
            return lax.conv_general_dilated(
                x, w, (self.stride, self.stride), "SAME",
                dimension_numbers=_DIMS, feature_group_count=self.groups,
            )  # fmt: skip

        if self.groups > 1 and self.groups == x.shape[-1] == w.shape[-1]:
            def shifted(x, w):
                return _depthwise_shifted(x, w, self.stride)

            y = lax.platform_dependent(x, w, cpu=shifted, default=grouped)
        elif self.groups == 1:
            def matmul(x, w):
                if w.shape[:2] == (1, 1) and self.stride == 1:
                    return _pointwise(x, w)
                return _patches_matmul(x, w, self.stride)

            y = lax.platform_dependent(x, w, cpu=matmul, default=grouped)
        else:
            y = grouped(x, w)
        return y if self.bias is None else y + _channels_last(self.bias.astype(x.dtype), y.ndim)


@jax.custom_vjp
def _pointwise(x: Array, w: Array) -> Array:
    """A 1 x 1, stride-1 convolution as a matrix product over channels: `x` `[..., I]`, `w`
    `[1, 1, I, O]` -> `[..., O]`, with a hand-written backward pass (see `_pointwise_bwd`)."""
    return lax.dot_general(x, w[0, 0], (((x.ndim - 1,), (0,)), ((), ())))


def _pointwise_fwd(x: Array, w: Array):
    return _pointwise(x, w), (x, w)


def _pointwise_bwd(residuals, g: Array):
    """Input gradient `g @ w.T`; weight gradient `x.T @ g` over every pixel as one 2-D matrix
    product. Autodiff of the dot instead lets XLA:CPU transpose the full gradient in memory
    before its product (8x slower for B0's 16 -> 96 expansion at 112 px)."""
    x, w = residuals
    dx = lax.dot_general(g, w[0, 0], (((g.ndim - 1,), (1,)), ((), ())))
    x2, g2 = x.reshape(-1, x.shape[-1]), g.reshape(-1, g.shape[-1])
    dw = lax.dot_general(x2, g2, (((0,), (0,)), ((), ())))
    return dx, dw.reshape(w.shape)


_pointwise.defvjp(_pointwise_fwd, _pointwise_bwd)


def _same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TF "SAME": output ceil(size / stride); the odd pixel of padding goes after."""
    total = max((-(-size // stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def _pad_same(x: Array, kernel: int, stride: int) -> Array:
    """`x` `[B, H, W, C]` zero-padded for a "SAME" `kernel` x `kernel` window at `stride`."""
    (h, wd) = x.shape[1:3]
    pads = (_same_padding(h, kernel, stride), _same_padding(wd, kernel, stride))
    return jnp.pad(x, ((0, 0), *pads, (0, 0)))


def _depthwise_shifted(x: Array, w: Array, stride: int) -> Array:
    """Depthwise convolution as a sum of k * k shifted, strided slices times per-channel weights
    (`w`: `[k, k, 1, C]`), with TF "SAME" padding: equal to `lax.conv_general_dilated` with
    `feature_group_count=C`. XLA's CPU backend runs grouped convolutions ~10x slower than this
    (measured: 5x5 over 16x56x56x144, 358 ms vs 32 ms forward, 1046 ms vs 301 ms with gradients),
    so the CPU uses it; accelerators keep the vendor convolution. `x` `[B, H, W, C]` ->
    `[B, ceil(H / s), ceil(W / s), C]`."""
    return _depthwise_valid(_pad_same(x, w.shape[0], stride), w, stride)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _depthwise_valid(xp: Array, w: Array, stride: int) -> Array:
    """The unpadded ("VALID") depthwise convolution of an already padded `xp` `[B, H', W', C]`:
    `[B, (H' - k) // s + 1, (W' - k) // s + 1, C]`, one fused kernel. Its backward pass is
    written by hand (`_depthwise_input_grad`, `_depthwise_weight_grad`: 1.8x faster than
    autodiff's over B0's depthwise layers) and keeps the padded input as its residual, so
    neither pass pads it again."""
    k = w.shape[0]
    size = tuple((n - k) // stride + 1 for n in xp.shape[1:3])
    return _weighted_taps(xp, w, lambda i, j: (i, j), size, stride)


def _tap_slices(xp: Array, k: int, offset, size: tuple[int, int], stride: int) -> list[Array]:
    """The k * k shifted, strided slices `xp[:, oi + stride * r, oj + stride * c]` of `xp`
    `[B, H', W', C]`, for `(oi, oj) = offset(i, j)`, rows r < size[0], columns c < size[1],
    in (i, j) row-major order: each `[B, size[0], size[1], C]`."""
    taps = []
    for i in range(k):
        for j in range(k):
            top, left = offset(i, j)
            limit = (xp.shape[0], top + (size[0] - 1) * stride + 1,
                     left + (size[1] - 1) * stride + 1, xp.shape[3])  # fmt: skip
            taps.append(lax.slice(xp, (0, top, left, 0), limit, (1, stride, stride, 1)))
    return taps


def _weighted_taps(xp: Array, w: Array, offset, size: tuple[int, int], stride: int) -> Array:
    """`sum_ij w[i, j] * tap_ij` over `_tap_slices(xp, k, offset, size, stride)`, with
    per-channel weights `w` `[k, k, 1, C]`: one fused kernel."""
    taps = _tap_slices(xp, w.shape[0], offset, size, stride)
    weights = (_channels_last(w[i, j, 0], 4) for i in range(w.shape[0]) for j in range(w.shape[1]))
    return sum(tap * weight for tap, weight in zip(taps, weights))


def _patches_matmul(x: Array, w: Array, stride: int) -> Array:
    """A dense k x k convolution with TF "SAME" padding as a matrix product over patches
    ("im2col"): `x` `[B, H, W, I]`, `w` `[k, k, I, O]` -> `[B, ceil(H / s), ceil(W / s), O]`.
    Its weight gradient is then one matrix product (`_pointwise`); XLA:CPU's convolution and
    its filter gradient ran 3x slower on B0's stem."""
    k, (h, wd) = w.shape[0], x.shape[1:3]
    xp = _pad_same(x, k, stride)
    size = (-(-h // stride), -(-wd // stride))
    patches = jnp.concatenate(_tap_slices(xp, k, lambda i, j: (i, j), size, stride), axis=-1)
    return _pointwise(patches, w.reshape(1, 1, -1, w.shape[-1]))


def _depthwise_weight_grad(xp: Array, g: Array, k: int, stride: int) -> Array:
    """`d sum(g * _depthwise_valid(xp, w)) / dw`: `[k, k, 1, C]` float32, one output row at a
    time.

    Each of the k * k taps is a sum over the batch and the output pixels of `g` times a shifted
    slice of `xp`. Summed over the whole batch tap by tap (autodiff's form), that reads `xp` and
    `g` from memory k * k times; a scan over output rows sums every tap of one row while its k
    input rows are in cache, all k * k sums in one variadic reduction (one pass over the rows,
    where k * k separate sums were one pass each). Measured on B0's layers, B=16: 2-4x faster
    than autodiff's form."""
    c, out_w = xp.shape[-1], g.shape[2]

    def row(total, out_row):
        rows = lax.dynamic_slice_in_dim(xp, out_row * stride, k, axis=1)  # [B, k, W', C]
        g_row = lax.dynamic_index_in_dim(g, out_row, axis=1, keepdims=False)  # [B, out_w, C]
        products = tuple(
            tap[:, 0].astype(jnp.float32) * g_row.astype(jnp.float32)
            for tap in _tap_slices(rows, k, lambda i, j: (i, j), (1, out_w), stride)
        )  # fmt: skip
        zeros = (jnp.zeros((), jnp.float32),) * len(products)
        sums = lax.reduce(products, zeros, lambda a, b: tuple(map(operator.add, a, b)), (0, 1))
        return total + jnp.stack(sums), None

    total, _ = lax.scan(row, jnp.zeros((k * k, c), jnp.float32), jnp.arange(g.shape[1]))
    return total.reshape(k, k, 1, c)


def _depthwise_input_grad(g: Array, w: Array, stride: int, size: tuple[int, int]) -> Array:
    """`d sum(g * _depthwise_valid(xp, w)) / dxp` for `xp` of spatial `size`: the k * k taps of
    `w` read back from `g` spread onto the stride grid, as shifted slices of it (one fused
    kernel, like the forward pass; autodiff's sum of k * k padded copies ran several times
    slower)."""
    k = w.shape[0]
    spread = [(m - 1) * stride + 1 for m in g.shape[1:3]]  # g with stride - 1 zeros between
    gp = lax.pad(g, jnp.zeros((), g.dtype), [(0, 0, 0)] + [
        (k - 1, n - length, stride - 1) for n, length in zip(size, spread)
    ] + [(0, 0, 0)])  # fmt: skip
    return _weighted_taps(gp, w, lambda i, j: (k - 1 - i, k - 1 - j), size, 1)


def _depthwise_valid_fwd(xp: Array, w: Array, stride: int):
    return _depthwise_valid(xp, w, stride), (xp, w)


def _depthwise_valid_bwd(stride: int, residuals, g: Array):
    xp, w = residuals
    dxp = _depthwise_input_grad(g, w, stride, xp.shape[1:3])
    return dxp, _depthwise_weight_grad(xp, g, w.shape[0], stride).astype(w.dtype)


_depthwise_valid.defvjp(_depthwise_valid_fwd, _depthwise_valid_bwd)


class BatchNorm(eqx.Module):
    """Batch norm with TensorFlow's semantics over `[B, H, W, C]` (or `[B, C]`).

    Training normalises with the batch's mean and biased variance (over every axis but the
    last, computed in float32): `y = scale * (x - mean) * rsqrt(var + eps) + offset`, and moves
    the running statistics `r <- momentum * r + (1 - momentum) * batch`; the running statistics
    never enter training normalisation. Evaluation normalises with the running statistics.
    Under `jax.jit` with a batch sharded across devices the statistics are global (XLA inserts
    the all-reduce), i.e. synchronised batch norm. Initialised as the reference: scale 1,
    offset 0, running mean 0, running variance 1.

    **Arguments:**

    - `channels`: Python int, `C`.
    - `eps`: float > 0, added to the variance inside the square root.
    - `momentum`: float in [0, 1), the running statistics' decay.

    **Fields:** `scale`, `offset`: float32 `[C]` (gamma, beta); the running mean and variance,
    float32 `[C]` each, live in the `eqx.nn.State` under `index`.
    """

    scale: Array
    offset: Array
    index: eqx.nn.StateIndex
    eps: float = eqx.field(static=True)
    momentum: float = eqx.field(static=True)

    def __init__(self, channels: int, *, eps: float = 1e-3, momentum: float = 0.99):
        self.scale = _constant((channels,), 1.0)
        self.offset = _constant((channels,), 0.0)
        self.index = eqx.nn.StateIndex((_constant((channels,), 0.0), _constant((channels,), 1.0)))
        self.eps = _checks.check_number("eps", eps, minimum=0.0, min_open=True)
        self.momentum = _checks.check_number("momentum", momentum, minimum=0.0, maximum=1.0,
                                             max_open=True)  # fmt: skip

    def __call__(self, x: Array, state: eqx.nn.State, *, train: bool, groups: int = 1
                 ) -> tuple[Array, eqx.nn.State]:  # fmt: skip
        """**Arguments:** `x`: float `[..., C]` (with `train`, at least one element per
        channel); `state`; `train`: Python bool; `groups`: with `train`, split the batch
        (axis 0, which it must divide) into this many consecutive groups, each normalised with
        its own statistics (per-replica / "ghost" batch norm; the running statistics move by
        the groups' average).

        **Returns:** `(y, state)`: `y` of `x`'s shape and dtype; the new state (moved running
        statistics with `train`, else `state` itself).
        """
        if not train:
            mean, var = state.get(self.index)
            return self._normalize(x, mean, var), state
        if math.prod(x.shape[:-1]) == 0:
            raise ValueError(f"x must hold at least one example in train mode (batch "
                             f"statistics), got shape {tuple(x.shape)}")
        if x.shape[0] % groups:
            raise ValueError(f"groups must divide the batch size {x.shape[0]}, got {groups}")
        xf = x.astype(jnp.float32)
        if groups > 1:
            xf = xf.reshape((groups, x.shape[0] // groups) + x.shape[1:])
        axes = tuple(range(int(groups > 1), xf.ndim - 1))
        mean = jnp.mean(xf, axes)
        var = jnp.maximum(jnp.mean(jnp.square(xf), axes) - jnp.square(mean), 0.0)
        run_mean, run_var = state.get(self.index)
        batch_mean, batch_var = (jnp.mean(v, 0) if groups > 1 else v for v in (mean, var))
        m = self.momentum
        state = state.set(
            self.index,
            (m * run_mean + (1 - m) * lax.stop_gradient(batch_mean),
             m * run_var + (1 - m) * lax.stop_gradient(batch_var)),
        )  # fmt: skip
        if groups == 1:
            return self._normalize(x, mean, var), state
        grouped = x.reshape((groups, x.shape[0] // groups) + x.shape[1:])
        y = jax.vmap(self._normalize)(grouped, mean, var)
        return y.reshape(x.shape), state

    def _normalize(self, x: Array, mean: Array, var: Array) -> Array:
        """`scale * (x - mean) * rsqrt(var + eps) + offset` in `x`'s dtype; `mean`, `var`:
        float32 `[C]`."""
        mult = self.scale * lax.rsqrt(var + self.eps)
        shift = self.offset - mean * mult
        mult, shift = (_channels_last(v.astype(x.dtype), x.ndim) for v in (mult, shift))
        return x * mult + shift


class SqueezeExcite(eqx.Module):
    """Channel gating: global mean -> 1x1 conv (bias) -> swish -> 1x1 conv (bias) -> sigmoid,
    times the input.

    **Arguments:** `channels`, `reduced`: Python ints; `key`: a `jax.random` key.

    **Fields:** `reduce`: `Conv2d` `[1, 1, C, R]`, `expand`: `Conv2d` `[1, 1, R, C]`.
    """

    reduce: Conv2d
    expand: Conv2d

    def __init__(self, channels: int, reduced: int, *, key: Array):
        draws = _draws(key)
        self.reduce = Conv2d(channels, reduced, 1, bias=True, key=draws)
        self.expand = Conv2d(reduced, channels, 1, bias=True, key=draws)

    def __call__(self, x: Array) -> Array:
        """**Arguments:** `x`: float `[B, H, W, C]`. **Returns:** `x`'s shape and dtype."""
        pooled = jnp.mean(x, axis=(1, 2), keepdims=True, dtype=jnp.float32).astype(x.dtype)
        gate = jax.nn.sigmoid(self.expand(jax.nn.swish(self.reduce(pooled))))
        return x * gate


class Dense(eqx.Module):
    """`x @ weight + bias`, initialised as the reference: weight
    `U(-dense_init_bound(out), dense_init_bound(out))`, bias 0.

    **Arguments:** `in_features`, `out_features`: Python ints; `key`: a `jax.random` key.

    **Fields:** `weight`: float32 `[in, out]`; `bias`: float32 `[out]`.
    """

    weight: Array
    bias: Array

    def __init__(self, in_features: int, out_features: int, *, key: Array):
        shape = (in_features, out_features)
        self.weight = _draws(key).take(_UNIFORM, shape, dense_init_bound(out_features))
        self.bias = _constant((out_features,), 0.0)

    def __call__(self, x: Array) -> Array:
        """**Arguments:** `x`: float `[B, in]`. **Returns:** `[B, out]` in `x`'s dtype."""
        return x @ self.weight.astype(x.dtype) + self.bias.astype(x.dtype)[None, :]
