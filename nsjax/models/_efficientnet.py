"""The EfficientNet module (B0-B7, L0-L2, the 32-px variant) and its constructors."""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
from jax import Array

from nsjax import _checks
from nsjax.models._config import BlockSpec, EfficientNetConfig, config_for
from nsjax.models._layers import BatchNorm, Conv2d, Dense, SqueezeExcite, _draws
from nsjax.noise import drop_path, dropout

__all__ = ["MBConv", "EfficientNet", "efficientnet", "efficientnet_from_config", "count_params"]


class MBConv(eqx.Module):
    """Inverted-residual block: [1x1 expand, BN, swish] -> k x k depthwise, BN, swish -> SE ->
    1x1 project, BN -> [drop-path + identity when stride 1 and in == out].

    **Arguments:**

    - `spec`: the block's `BlockSpec` (from `EfficientNetConfig.expand()`).
    - `config`: the `EfficientNetConfig` (its `bn_momentum` and `bn_eps` go to every BN).
    - `key`: a `jax.random` key.
    """

    expand: Conv2d | None
    bn_expand: BatchNorm | None
    depthwise: Conv2d
    bn_depthwise: BatchNorm
    se: SqueezeExcite | None
    project: Conv2d
    bn_project: BatchNorm
    spec: BlockSpec = eqx.field(static=True)

    def __init__(self, spec: BlockSpec, config: EfficientNetConfig, *, key: Array):
        draws = _draws(key)
        bn = dict(eps=config.bn_eps, momentum=config.bn_momentum)
        mid = spec.mid_channels
        if spec.has_expansion:
            self.expand = Conv2d(spec.in_channels, mid, 1, key=draws)
            self.bn_expand = BatchNorm(mid, **bn)
        else:
            self.expand = self.bn_expand = None
        self.depthwise = Conv2d(mid, mid, spec.kernel, stride=spec.stride, groups=mid, key=draws)
        self.bn_depthwise = BatchNorm(mid, **bn)
        self.se = SqueezeExcite(mid, spec.se_channels, key=draws) if spec.se_channels else None
        self.project = Conv2d(mid, spec.out_channels, 1, key=draws)
        self.bn_project = BatchNorm(spec.out_channels, **bn)
        self.spec = spec

    def __call__(self, x: Array, state: eqx.nn.State, *, key: Array | None, train: bool,
                 bn_groups: int = 1) -> tuple[Array, eqx.nn.State]:  # fmt: skip
        """**Arguments:** `x`: float `[B, H, W, in]`; `state`; `key`: a `jax.random` key for
        drop-path (used with `train` on a residual block with a rate > 0); `train`: bool;
        `bn_groups`: see `EfficientNet.__call__`.

        **Returns:** `(y, state)`, `y`: `[B, H / stride, W / stride, out]` in `x`'s dtype.
        """
        h = x
        if self.expand is not None:
            h, state = self.bn_expand(self.expand(h), state, train=train, groups=bn_groups)
            h = jax.nn.swish(h)
        h, state = self.bn_depthwise(self.depthwise(h), state, train=train, groups=bn_groups)
        h = jax.nn.swish(h)
        if self.se is not None:
            h = self.se(h)
        h, state = self.bn_project(self.project(h), state, train=train, groups=bn_groups)
        if self.spec.residual:
            h = drop_path(key, h, self.spec.drop_path_rate, train=train) + x
        return h, state


class EfficientNet(eqx.Module):
    """EfficientNet over NHWC images.

    Build with `efficientnet(name, ...)` or `efficientnet_from_config(config, ...)`, which
    return `(model, state)`; `eqx.nn.make_with_state(EfficientNet)(config, num_classes=...,
    key=...)` is the same. The initial weights are a deterministic function of `key`: conv
    kernels `N(0, sqrt(2 / fan_out))` with `fan_out = k * k * out / groups`, the classifier
    `U(-1/sqrt(C), 1/sqrt(C))`, zero biases, BN scale 1 and offset 0, running mean 0 and
    variance 1.

    **Arguments:**

    - `config`: an `EfficientNetConfig`.
    - `num_classes`: int >= 1, `C`.
    - `key`: a `jax.random` key.

    Call: `model(x, state, *, key=None, train) -> (logits float32[B, C], new_state)`.
    """

    stem: Conv2d
    bn_stem: BatchNorm
    blocks: tuple[MBConv, ...]
    head: Conv2d
    bn_head: BatchNorm
    classifier: Dense
    config: EfficientNetConfig = eqx.field(static=True)

    def __init__(self, config: EfficientNetConfig, *, num_classes: int, key: Array):
        if not isinstance(config, EfficientNetConfig):
            raise TypeError(f"config must be an EfficientNetConfig, got {type(config).__name__}")
        num_classes = _checks.check_positive_int("num_classes", num_classes)
        draws = _draws(key)  # one stream, consumed in this order: the weights depend on it
        specs = config.expand()
        bn = dict(eps=config.bn_eps, momentum=config.bn_momentum)
        self.stem = Conv2d(3, config.stem_out, 3, stride=2, key=draws)
        self.bn_stem = BatchNorm(config.stem_out, **bn)
        self.blocks = tuple(MBConv(s, config, key=draws) for s in specs)
        self.head = Conv2d(specs[-1].out_channels, config.head_out, 1, key=draws)
        self.bn_head = BatchNorm(config.head_out, **bn)
        self.classifier = Dense(config.head_out, num_classes, key=draws)
        self.config = config

    @property
    def num_classes(self) -> int:
        """`C`, the classifier's output size."""
        return self.classifier.bias.shape[0]

    def features(self, x: Array, state: eqx.nn.State, *, key: Array | None = None,
                 train: bool, bn_groups: int = 1) -> tuple[Array, eqx.nn.State]:  # fmt: skip
        """The pooled embedding before dropout and the classifier.

        **Arguments:** as `__call__`.

        **Returns:** `(features, state)`: float32 `[B, config.head_out]` and the new state.
        """
        bn_groups = _check_call(self, x, state, key, train, bn_groups)
        return self._features(x, state, key, train, bn_groups)

    def _features(self, x, state, key, train, bn_groups):
        keys = jax.random.split(key, len(self.blocks)) if train else None
        state = _fresh(state)
        h, state = self.bn_stem(self.stem(x), state, train=train, groups=bn_groups)
        h = jax.nn.swish(h)
        for i, block in enumerate(self.blocks):
            h, state = block(h, state, key=None if keys is None else keys[i], train=train,
                             bn_groups=bn_groups)  # fmt: skip
        h, state = self.bn_head(self.head(h), state, train=train, groups=bn_groups)
        h = jax.nn.swish(h)
        return jnp.mean(h, axis=(1, 2), dtype=jnp.float32), state

    def __call__(self, x: Array, state: eqx.nn.State, *, key: Array | None = None,
                 train: bool, bn_groups: int = 1) -> tuple[Array, eqx.nn.State]:  # fmt: skip
        """Logits of a batch of images.

        `train=True`: every BN normalises with the batch's statistics and moves its running
        ones, drop-path (per block, the config's rates) and dropout (`config.dropout_rate`, on
        the pooled features) are applied with keys split from `key`. `train=False`: the
        running statistics, no noise, `state` returned unchanged (bitwise deterministic).

        **Arguments:**

        - `x`: float `[B, H, W, 3]`, `H, W >= 32`, normalised; activations run in its dtype
          (float32 or bfloat16), parameters and BN statistics stay float32. `B = 0` gives
          empty logits with `train=False` and is refused (`ValueError`) with `train=True`.
        - `state`: the `eqx.nn.State` built with this model (or returned by its last call).
        - `key`: a `jax.random` key; required with `train=True`, unused otherwise.
        - `train`: Python bool.
        - `bn_groups`: int >= 1 dividing `B`; with `train`, every BN normalises each of this
          many consecutive slices of the batch with its own statistics (the official TPU
          code's per-replica BN when the slices are the devices' shares; 1: the whole batch).

        **Returns:** `(logits, state)`: float32 `[B, num_classes]` and the new state.
        """
        bn_groups = _check_call(self, x, state, key, train, bn_groups)
        k_feat, k_drop = jax.random.split(key) if train else (None, None)
        pooled, state = self._features(x, state, k_feat, train, bn_groups)
        pooled = dropout(k_drop, pooled, self.config.dropout_rate, train=train)
        return self.classifier(pooled), state


def _fresh(state: eqx.nn.State) -> eqx.nn.State:
    """A new handle on the same arrays: `eqx.nn.State.set` invalidates the object it is called
    on, and a pure function must leave its caller's `state` usable (no arrays are copied)."""
    leaves, treedef = jax.tree_util.tree_flatten(state)
    return jax.tree_util.tree_unflatten(treedef, leaves)


def _check_call(model: EfficientNet, x, state, key, train, bn_groups) -> int:
    """The arguments of a model call, checked before any work; returns `bn_groups`."""
    _checks.check_bool("train", train)
    batch, _, _ = _checks.check_images("x", x, dtypes=("floating",), min_side=32)
    bn_groups = _checks.check_positive_int("bn_groups", bn_groups)
    if train:
        _checks.check_key("key", key)
        if batch == 0:
            raise ValueError(f"x must hold at least one image when train=True (batch norm "
                             f"uses the batch's statistics), got shape {tuple(x.shape)}")
        if batch % bn_groups:
            raise ValueError(f"bn_groups must divide the batch size {batch}, got {bn_groups}")
    _check_state(model, state)
    return bn_groups


def _check_state(model: EfficientNet, state) -> None:
    """`state` holds this model's BN statistics, with this model's shapes."""
    if not isinstance(state, eqx.nn.State):
        raise TypeError(f"state must be the eqx.nn.State built with the model, got "
                        f"{type(state).__name__}")  # fmt: skip
    values, markers = state.tree_flatten()
    have = dict(zip(markers, values))
    is_bn = lambda v: isinstance(v, BatchNorm)  # noqa: E731
    problems = []
    for path, bn in jax.tree_util.tree_flatten_with_path(model, is_leaf=is_bn)[0]:
        if not is_bn(bn):
            continue
        c = bn.scale.shape[0]
        value = have.pop(bn.index.marker, None)
        got = None if value is None else [f"{_checks.dtype_of(v)}{list(_checks.shape_of(v))}"
                                          for v in jax.tree_util.tree_leaves(value)]  # fmt: skip
        if got != [f"float32[{c}]"] * 2:
            problems.append(f"{jax.tree_util.keystr(path)}: expected (running mean, variance) "
                            f"float32[{c}] each, got {'nothing' if got is None else got}")
    is_index = lambda v: isinstance(v, eqx.nn.StateIndex)  # noqa: E731
    ours = {i.marker for i in jax.tree_util.tree_leaves(model, is_leaf=is_index) if is_index(i)}
    problems += [f"{m}: not a state of this model" for m in have if m not in ours]
    if problems:
        raise ValueError(
            f"state does not fit the model ({len(problems)} problems; a state built with "
            f"another config?): " + "; ".join(problems[:3]) + ("; ..." if len(problems) > 3 else "")
        )  # fmt: skip


def efficientnet_from_config(config: EfficientNetConfig, *, key: Array, num_classes: int = 1000
                             ) -> tuple[EfficientNet, eqx.nn.State]:  # fmt: skip
    """Build any configuration.

    **Arguments:**

    - `config`: an `EfficientNetConfig`.
    - `key`: a `jax.random` key; the weights are a deterministic function of it (also under
      `jax.jit` and `jax.eval_shape`, which give the same values / shapes).
    - `num_classes`: int >= 1.

    **Returns:** `(model, state)`: the `EfficientNet` and its BN running statistics.
    """
    return eqx.nn.make_with_state(EfficientNet)(config, num_classes=num_classes, key=key)


def efficientnet(name: str, *, key: Array, num_classes: int = 1000, dropout_rate: float | None = None,
                 drop_path_rate: float = 0.2, small_image: bool = False, bn_momentum: float = 0.99,
                 bn_eps: float = 1e-3) -> tuple[EfficientNet, eqx.nn.State]:  # fmt: skip
    """A named variant.

    **Arguments:**

    - `name`: `b0` ... `b7`, `l0`, `l1`, `l2`.
    - `key`: a `jax.random` key.
    - `num_classes`: int >= 1.
    - `dropout_rate`: float in [0, 1), or None for the variant's (0.2 ... 0.5).
    - `drop_path_rate`: float in [0, 1), the stochastic-depth rate of the last block's rule.
    - `small_image`: the official 32-px variant (stages 2 and 3 at stride 1).
    - `bn_momentum`: float in [0, 1); `bn_eps`: float > 0 (the reference's 0.99 and 1e-3).

    **Returns:** `(model, state)` as `efficientnet_from_config`.
    """
    overrides = dict(drop_path_rate=drop_path_rate, small_image=small_image,
                     bn_momentum=bn_momentum, bn_eps=bn_eps)  # fmt: skip
    if dropout_rate is not None:
        overrides["dropout_rate"] = dropout_rate
    return efficientnet_from_config(config_for(name, **overrides), key=key, num_classes=num_classes)


def count_params(model) -> int:
    """Trainable parameters: conv and dense weights and biases, BN scale and offset (BN running
    statistics live in the state and are not counted).

    **Arguments:** `model`: an `EfficientNet` (or any pytree), also the output of
    `jax.eval_shape`, so the large variants can be counted without materialising weights.

    **Returns:** a Python int.
    """
    leaves = jax.tree_util.tree_leaves(model)
    return sum(math.prod(x.shape) for x in leaves
               if hasattr(x, "shape") and jnp.issubdtype(x.dtype, jnp.inexact))  # fmt: skip
