"""Import timm `tf_efficientnet_*` weights (including the Noisy Student `*_ns` ones) without torch.

timm stores PyTorch layouts: conv kernels `[out, in / groups, kh, kw]`, dense `[out, in]`.
nsjax uses HWIO kernels and `[in, out]` dense weights, so every kernel is transposed on load.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping

import equinox as eqx
import jax
import numpy as np

from nsjax.models._efficientnet import EfficientNet, MBConv
from nsjax.models._layers import BatchNorm, Conv2d

__all__ = ["load_timm_weights", "timm_key_map"]

_CONV_TO_HWIO = (2, 3, 1, 0)


# Each entry: (timm name, where, how). `where` is a function of the model returning the
# parameter (`how` is the transpose from timm's layout, or None), or a BatchNorm whose running
# statistic number `how` (0 mean, 1 variance) lives in the state.
Entry = tuple[str, Callable | BatchNorm, object]


def _bn_names(prefix: str, get: Callable, bn: BatchNorm) -> Iterator[Entry]:
    yield f"{prefix}.weight", (lambda m: get(m).scale), None
    yield f"{prefix}.bias", (lambda m: get(m).offset), None
    yield f"{prefix}.running_mean", bn, 0
    yield f"{prefix}.running_var", bn, 1


def _conv_names(prefix: str, get: Callable, conv: Conv2d) -> Iterator[Entry]:
    yield f"{prefix}.weight", (lambda m: get(m).weight), _CONV_TO_HWIO
    if conv.bias is not None:
        yield f"{prefix}.bias", (lambda m: get(m).bias), None


def _block_names(prefix: str, i: int, block: MBConv) -> Iterator[Entry]:
    def sub(attr: str) -> Callable:
        return lambda m: getattr(m.blocks[i], attr)

    # timm's DepthwiseSeparableConv (no expansion) names its BNs bn1/bn2, InvertedResidual bn1..3.
    if block.expand is not None:
        yield from _conv_names(f"{prefix}.conv_pw", sub("expand"), block.expand)
        yield from _bn_names(f"{prefix}.bn1", sub("bn_expand"), block.bn_expand)
        dw_bn, proj, proj_bn = "bn2", "conv_pwl", "bn3"
    else:
        dw_bn, proj, proj_bn = "bn1", "conv_pw", "bn2"
    yield from _conv_names(f"{prefix}.conv_dw", sub("depthwise"), block.depthwise)
    yield from _bn_names(f"{prefix}.{dw_bn}", sub("bn_depthwise"), block.bn_depthwise)
    if block.se is not None:
        yield from _conv_names(f"{prefix}.se.conv_reduce", lambda m: m.blocks[i].se.reduce, block.se.reduce)
        yield from _conv_names(f"{prefix}.se.conv_expand", lambda m: m.blocks[i].se.expand, block.se.expand)
    yield from _conv_names(f"{prefix}.{proj}", sub("project"), block.project)
    yield from _bn_names(f"{prefix}.{proj_bn}", sub("bn_project"), block.bn_project)


def timm_key_map(model: EfficientNet) -> dict[str, tuple[Callable | BatchNorm, object]]:
    """How timm's state-dict names map onto the model.

    **Arguments:** `model`: an `EfficientNet`.

    **Returns:** a dict timm name -> `(where, how)`: a parameter getter (a function of the
    model) and the transpose from timm's layout (or None), or a `BatchNorm` and 0 / 1 for its
    running mean / variance in the state.
    """
    names = [
        *_conv_names("conv_stem", lambda m: m.stem, model.stem),
        *_bn_names("bn1", lambda m: m.bn_stem, model.bn_stem),
        *(n for i, b in enumerate(model.blocks)
          for n in _block_names(f"blocks.{b.spec.stage}.{b.spec.index_in_stage}", i, b)),
        *_conv_names("conv_head", lambda m: m.head, model.head),
        *_bn_names("bn2", lambda m: m.bn_head, model.bn_head),
        ("classifier.weight", lambda m: m.classifier.weight, (1, 0)),
        ("classifier.bias", lambda m: m.classifier.bias, None),
    ]  # fmt: skip
    return {name: (where, how) for name, where, how in names}


def _read(source) -> dict[str, np.ndarray]:
    if isinstance(source, (str, os.PathLike)):
        try:
            from safetensors.numpy import load_file
        except ImportError as e:  # pragma: no cover - safetensors is a dependency
            raise ImportError("load_timm_weights needs `safetensors` to read files") from e
        return load_file(os.fspath(source))
    if isinstance(source, Mapping):
        return {k: np.asarray(v) for k, v in source.items()}
    raise TypeError(f"source must be a safetensors path or a mapping of arrays, got {type(source).__name__}")


def load_timm_weights(model: EfficientNet, state: eqx.nn.State, source
                      ) -> tuple[EfficientNet, eqx.nn.State]:  # fmt: skip
    """Copy a timm `tf_efficientnet_*` state dict into `(model, state)`; returns new ones.

    `num_batches_tracked` counters are ignored. Every missing or unexpected key and every
    shape mismatch is listed in one `ValueError`, before anything is copied. Kernels are
    transposed from OIHW to HWIO, dense weights from `[out, in]` to `[in, out]`.

    **Arguments:**

    - `model`: an `EfficientNet` whose config matches the checkpoint's.
    - `state`: its `eqx.nn.State`.
    - `source`: a `.safetensors` path (timm's hub format) or a mapping name -> array (NumPy,
      or anything `np.asarray` takes), any float dtype.

    **Returns:** `(model, state)`: new ones, every value float32; the inputs are untouched.
    """
    weights = {k: v for k, v in _read(source).items() if not k.endswith("num_batches_tracked")}
    key_map = timm_key_map(model)
    problems = [f"missing: {k}" for k in key_map if k not in weights]
    problems += [f"unexpected: {k}" for k in weights if k not in key_map]
    converted = {}
    for name, (where, how) in key_map.items():
        if name not in weights:
            continue
        value = np.asarray(weights[name], np.float32)
        if isinstance(where, BatchNorm):
            target = state.get(where.index)[how].shape
        else:
            target = where(model).shape
            if how is not None and value.ndim == len(how):
                value = value.transpose(how)
        if value.shape != tuple(target):
            problems.append(f"shape: {name} is {weights[name].shape}, expected {tuple(target)}"
                            + (f" after transpose {how}" if how else ""))  # fmt: skip
        converted[name] = value
    if problems:
        raise ValueError(f"source does not fit the model ({len(problems)} problems):\n  "
                         + "\n  ".join(problems))  # fmt: skip

    params = [(where, converted[n]) for n, (where, _) in key_map.items() if not isinstance(where, BatchNorm)]
    # jax arrays, not NumPy ones: a NumPy leaf would be copied to the device at every call
    model = eqx.tree_at(lambda m: [w(m) for w, _ in params], model,
                        [jax.device_put(v) for _, v in params])  # fmt: skip
    for name, (bn, i) in key_map.items():
        if isinstance(bn, BatchNorm) and i == 0:
            var = converted[name.replace("running_mean", "running_var")]
            state = state.set(bn.index, (converted[name], var))
    return model, state
