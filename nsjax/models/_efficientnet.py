"""The EfficientNet module (B0-B7, L0-L2, the 32-px variant) and its constructors."""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
from jax import Array

from nsjax import _checks
from nsjax.models._config import BlockSpec, EfficientNetConfig, config_for
from nsjax.models._layers import BatchNorm, Conv2d, Dense, SqueezeExcite
from nsjax.noise import drop_path, dropout

__all__ = ["MBConv", "EfficientNet", "efficientnet", "efficientnet_from_config", "count_params"]


class MBConv(eqx.Module):
    """Inverted-residual block: [1x1 expand, BN, swish] -> k x k depthwise, BN, swish -> SE ->
    1x1 project, BN -> [drop-path + identity when stride 1 and in == out]."""

    expand: Conv2d | None
    bn_expand: BatchNorm | None
    depthwise: Conv2d
    bn_depthwise: BatchNorm
    se: SqueezeExcite | None
    project: Conv2d
    bn_project: BatchNorm
    spec: BlockSpec = eqx.field(static=True)

    def __init__(self, spec: BlockSpec, config: EfficientNetConfig, *, key: Array):
        k_exp, k_dw, k_se, k_proj = jax.random.split(key, 4)
        bn = dict(eps=config.bn_eps, momentum=config.bn_momentum)
        mid = spec.mid_channels
        if spec.has_expansion:
            self.expand = Conv2d(spec.in_channels, mid, 1, key=k_exp)
            self.bn_expand = BatchNorm(mid, **bn)
        else:
            self.expand = self.bn_expand = None
        self.depthwise = Conv2d(mid, mid, spec.kernel, stride=spec.stride, groups=mid, key=k_dw)
        self.bn_depthwise = BatchNorm(mid, **bn)
        self.se = SqueezeExcite(mid, spec.se_channels, key=k_se) if spec.se_channels else None
        self.project = Conv2d(mid, spec.out_channels, 1, key=k_proj)
        self.bn_project = BatchNorm(spec.out_channels, **bn)
        self.spec = spec

    def __call__(self, x: Array, state: eqx.nn.State, *, key: Array | None, train: bool):
        h = x
        if self.expand is not None:
            h, state = self.bn_expand(self.expand(h), state, train=train)
            h = jax.nn.swish(h)
        h, state = self.bn_depthwise(self.depthwise(h), state, train=train)
        h = jax.nn.swish(h)
        if self.se is not None:
            h = self.se(h)
        h, state = self.bn_project(self.project(h), state, train=train)
        if self.spec.residual:
            h = drop_path(key, h, self.spec.drop_path_rate, deterministic=not train) + x
        return h, state


class EfficientNet(eqx.Module):
    """EfficientNet over NHWC images.

    Call: `model(x, state, *, key=None, train) -> (logits float32[B, num_classes], new_state)`
    for float `x: [B, H, W, 3]` (H, W >= 32), already normalised. Activations run in `x`'s
    dtype (pass bfloat16 for mixed precision); parameters and BN statistics stay float32.
    `train=True` uses batch statistics, updates the running ones, and applies drop-path and
    dropout (then `key` is required); `train=False` is deterministic.
    """

    stem: Conv2d
    bn_stem: BatchNorm
    blocks: tuple[MBConv, ...]
    head: Conv2d
    bn_head: BatchNorm
    classifier: Dense
    config: EfficientNetConfig = eqx.field(static=True)

    def __init__(self, config: EfficientNetConfig, *, num_classes: int, key: Array):
        specs = config.expand()
        k_stem, k_head, k_cls, *k_blocks = jax.random.split(key, 3 + len(specs))
        bn = dict(eps=config.bn_eps, momentum=config.bn_momentum)
        self.stem = Conv2d(3, config.stem_out, 3, stride=2, key=k_stem)
        self.bn_stem = BatchNorm(config.stem_out, **bn)
        self.blocks = tuple(MBConv(s, config, key=k) for s, k in zip(specs, k_blocks))
        self.head = Conv2d(specs[-1].out_channels, config.head_out, 1, key=k_head)
        self.bn_head = BatchNorm(config.head_out, **bn)
        self.classifier = Dense(config.head_out, num_classes, key=k_cls)
        self.config = config

    @property
    def num_classes(self) -> int:
        return self.classifier.bias.shape[0]

    def features(self, x: Array, state: eqx.nn.State, *, key: Array | None = None,
                 train: bool) -> tuple[Array, eqx.nn.State]:  # fmt: skip
        """The pooled embedding before dropout and the classifier: float32 `[B, head_out]`."""
        _check_images(x)
        if train and key is None:
            raise ValueError("key must be a jax.random key when train=True, got None")
        keys = jax.random.split(key, len(self.blocks)) if train else [None] * len(self.blocks)
        state = _fresh(state)
        h, state = self.bn_stem(self.stem(x), state, train=train)
        h = jax.nn.swish(h)
        for block, k in zip(self.blocks, keys):
            h, state = block(h, state, key=k, train=train)
        h, state = self.bn_head(self.head(h), state, train=train)
        h = jax.nn.swish(h)
        return jnp.mean(h, axis=(1, 2), dtype=jnp.float32), state

    def __call__(self, x: Array, state: eqx.nn.State, *, key: Array | None = None,
                 train: bool) -> tuple[Array, eqx.nn.State]:  # fmt: skip
        k_feat, k_drop = jax.random.split(key) if train and key is not None else (key, None)
        pooled, state = self.features(x, state, key=k_feat, train=train)
        pooled = dropout(k_drop, pooled, self.config.dropout_rate, deterministic=not train)
        return self.classifier(pooled), state


def _fresh(state: eqx.nn.State) -> eqx.nn.State:
    """A new handle on the same arrays: `eqx.nn.State.set` invalidates the object it is called
    on, and a pure function must leave its caller's `state` usable (no arrays are copied)."""
    leaves, treedef = jax.tree_util.tree_flatten(state)
    return jax.tree_util.tree_unflatten(treedef, leaves)


def _check_images(x) -> None:
    _checks.check_rank("x", x, 4, "[B, H, W, 3]")
    _checks.check_floating("x", x)
    b, h, w, c = x.shape
    if c != 3 or h < 32 or w < 32:
        raise ValueError(f"x must have shape [B, H, W, 3] with H, W >= 32, got {x.shape}")


def efficientnet_from_config(config: EfficientNetConfig, *, key: Array, num_classes: int = 1000
                             ) -> tuple[EfficientNet, eqx.nn.State]:  # fmt: skip
    """Build any configuration: returns `(model, state)`, the BN running statistics in `state`."""
    _checks.check_positive_int("num_classes", num_classes)
    # One jitted initialisation: eager mode would compile every random draw's shape on its own.
    build = eqx.filter_jit(eqx.nn.make_with_state(EfficientNet))
    return build(config, num_classes=num_classes, key=key)


def efficientnet(name: str, *, key: Array, num_classes: int = 1000, dropout_rate: float | None = None,
                 drop_path_rate: float = 0.2, small_image: bool = False
                 ) -> tuple[EfficientNet, eqx.nn.State]:  # fmt: skip
    """A named variant, `b0` ... `b7`, `l0`, `l1`, `l2`. `dropout_rate=None` takes the variant's
    (0.2 ... 0.5); `small_image=True` is the official 32-px variant (stages 2 and 3 at stride 1).
    """
    overrides = dict(drop_path_rate=drop_path_rate, small_image=small_image)
    if dropout_rate is not None:
        overrides["dropout_rate"] = dropout_rate
    return efficientnet_from_config(config_for(name, **overrides), key=key, num_classes=num_classes)


def count_params(model) -> int:
    """Trainable parameters: conv and dense weights and biases, BN scale and offset (BN running
    statistics live in the state and are not counted). Also takes the output of
    `jax.eval_shape`, so the large variants can be counted without materialising weights."""
    leaves = jax.tree_util.tree_leaves(model)
    return sum(math.prod(x.shape) for x in leaves
               if hasattr(x, "shape") and jnp.issubdtype(x.dtype, jnp.inexact))  # fmt: skip
