"""EfficientNet configurations: the reference block table, compound scaling and the variants.

Facts: Tan & Le 2019 and the official TF code (`efficientnet_builder.py`), the Noisy Student
paper's L0/L1/L2 table. Channel counts are rounded to a multiple of 8 (never shrinking by more
than 10%) and repeats rounded up, exactly as the reference does.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence


from nsjax import _checks
from nsjax.noise import stochastic_depth_rates

__all__ = ["BlockArgs", "BlockSpec", "EfficientNetConfig", "VARIANTS", "B0_BLOCKS", "config_for"]


@dataclasses.dataclass(frozen=True)
class BlockArgs:
    """One stage of the unscaled (B0) table: `repeats` MBConv blocks.

    **Arguments:** (all checked on construction; NumPy scalars are accepted and stored as
    Python numbers)

    - `repeats`, `kernel`, `stride`, `expand_ratio`, `in_channels`, `out_channels`: ints >= 1.
    - `se_ratio`: float in [0, 1]; the squeeze-excite width is `max(1, int(in * se_ratio))`
      (0: no squeeze-excite).
    """

    repeats: int
    kernel: int
    stride: int
    expand_ratio: int
    in_channels: int
    out_channels: int
    se_ratio: float = 0.25

    def __post_init__(self):
        for f in dataclasses.fields(self):
            if f.name != "se_ratio":
                _set(self, f.name, _checks.check_positive_int(f.name, getattr(self, f.name)))
        _set(self, "se_ratio", _checks.check_probability("se_ratio", self.se_ratio))


def _set(obj, name: str, value) -> None:
    """Store a checked, normalised field of a frozen dataclass."""
    object.__setattr__(obj, name, value)


# The official `_DEFAULT_BLOCKS_ARGS` ('r1_k3_s11_e1_i32_o16_se0.25', ...).
B0_BLOCKS: tuple[BlockArgs, ...] = (
    BlockArgs(1, 3, 1, 1, 32, 16),
    BlockArgs(2, 3, 2, 6, 16, 24),
    BlockArgs(2, 5, 2, 6, 24, 40),
    BlockArgs(3, 3, 2, 6, 40, 80),
    BlockArgs(3, 5, 1, 6, 80, 112),
    BlockArgs(4, 5, 2, 6, 112, 192),
    BlockArgs(1, 3, 1, 6, 192, 320),
)


@dataclasses.dataclass(frozen=True)
class BlockSpec:
    """One expanded MBConv block after scaling (what the model builds), from
    `EfficientNetConfig.expand()`.

    **Fields:** `stage` (0-based), `index_in_stage`, `kernel`, `stride`, `in_channels`,
    `mid_channels` (`in_channels * expand_ratio`), `out_channels`, `se_channels`
    (`max(1, int(in_channels * se_ratio))`, 0 for none): ints; `drop_path_rate`: float.
    `has_expansion`: whether a 1x1 expansion runs; `residual`: stride 1 and in == out (only
    then is the branch added to its input, through drop-path).
    """

    stage: int  # 0-based stage index
    index_in_stage: int
    kernel: int
    stride: int
    in_channels: int
    mid_channels: int  # in_channels * expand_ratio
    out_channels: int
    se_channels: int  # max(1, int(in_channels * se_ratio)); 0 means no SE
    drop_path_rate: float

    @property
    def has_expansion(self) -> bool:
        """Whether the block starts with a 1x1 expansion (`mid_channels != in_channels`)."""
        return self.mid_channels != self.in_channels

    @property
    def residual(self) -> bool:
        """Whether the branch is added to the block's input (stride 1 and in == out)."""
        return self.stride == 1 and self.in_channels == self.out_channels


@dataclasses.dataclass(frozen=True)
class EfficientNetConfig:
    """Everything that defines an EfficientNet; the defaults are B0's.

    Every field is checked on construction (a `TypeError` for a wrong type, a `ValueError` for
    a value out of range, each naming the field); NumPy scalars and 0-d arrays are accepted
    where a number is and stored as Python numbers, `blocks` as a tuple.

    **Arguments:**

    - `width`, `depth`: finite floats > 0, the compound-scaling coefficients.
    - `train_resolution`, `test_resolution`: ints >= 32, the sizes the paper trains and
      evaluates at (the model itself runs at any size >= 32).
    - `dropout_rate`: float in [0, 1), dropout on the pooled features before the classifier.
    - `drop_path_rate`: float in [0, 1), the stochastic-depth rate `max_rate` of
      `nsjax.noise.stochastic_depth_rates` (block `i` of `N` drops with `rate * i / N`).
    - `blocks`: a non-empty sequence of `BlockArgs`, the unscaled stages.
    - `stem_channels`, `head_channels`, `depth_divisor`: ints >= 1.
    - `bn_momentum`: float in [0, 1); `bn_eps`: finite float > 0 (every batch norm's).
    - `small_image`: bool, the official 32-px variant (SVHN): stages 2 and 3 at stride 1.
    """

    width: float = 1.0
    depth: float = 1.0
    train_resolution: int = 224
    test_resolution: int = 224
    dropout_rate: float = 0.2
    drop_path_rate: float = 0.2
    blocks: tuple[BlockArgs, ...] = B0_BLOCKS
    stem_channels: int = 32
    head_channels: int = 1280
    depth_divisor: int = 8
    bn_momentum: float = 0.99
    bn_eps: float = 1e-3
    small_image: bool = False

    def __post_init__(self):
        for name in ("width", "depth", "bn_eps"):
            _set(self, name, _checks.check_number(name, getattr(self, name), minimum=0.0,
                                                  min_open=True, maximum=math.inf, max_open=True))
        for name in ("dropout_rate", "drop_path_rate", "bn_momentum"):
            _set(self, name, _checks.check_probability(name, getattr(self, name), allow_one=False))
        for name in ("train_resolution", "test_resolution"):
            _set(self, name, _checks.check_positive_int(name, getattr(self, name), minimum=32))
        for name in ("stem_channels", "head_channels", "depth_divisor"):
            _set(self, name, _checks.check_positive_int(name, getattr(self, name)))
        _set(self, "small_image", _checks.check_bool("small_image", self.small_image))
        blocks = self.blocks
        if isinstance(blocks, (str, bytes)) or not isinstance(blocks, Sequence):
            raise TypeError(f"blocks must be a sequence of BlockArgs, got {type(blocks).__name__}")
        if not blocks:
            raise ValueError("blocks must hold at least one BlockArgs, got none")
        for i, b in enumerate(blocks):
            if not isinstance(b, BlockArgs):
                raise TypeError(f"blocks[{i}] must be a BlockArgs, got {type(b).__name__}")
        _set(self, "blocks", tuple(blocks))

    def round_filters(self, channels: int) -> int:
        """Scale a channel count by `width`: nearest multiple of the divisor (ties up), at
        least the divisor, and never below 90% of the scaled value."""
        d = self.depth_divisor
        x = channels * self.width
        n = max(d, int(x + d / 2) // d * d)
        if n < 0.9 * x:
            n += d
        return int(n)

    def round_repeats(self, repeats: int) -> int:
        """Scale a stage's repeat count by `depth`, rounding up."""
        return int(math.ceil(self.depth * repeats))

    @property
    def stem_out(self) -> int:
        """The stem's output channels, `round_filters(stem_channels)`."""
        return self.round_filters(self.stem_channels)

    @property
    def head_out(self) -> int:
        """The head's output channels (the pooled features), `round_filters(head_channels)`."""
        return self.round_filters(self.head_channels)

    def expand(self) -> tuple[BlockSpec, ...]:
        """Every MBConv block in order, with channels, strides and drop-path rates.

        **Returns:** a tuple of `BlockSpec`, one per block; block `i` of `N` has
        `drop_path_rate == nsjax.noise.stochastic_depth_rates(N, self.drop_path_rate)[i]`.
        """
        stages = []
        for s, b in enumerate(self.blocks):
            stride = 1 if self.small_image and s in (1, 2) else b.stride
            c_in, c_out = self.round_filters(b.in_channels), self.round_filters(b.out_channels)
            for j in range(self.round_repeats(b.repeats)):
                cin = c_in if j == 0 else c_out
                se = max(1, int(cin * b.se_ratio)) if b.se_ratio > 0 else 0
                stages.append((s, j, b.kernel, stride if j == 0 else 1, cin,
                               cin * b.expand_ratio, c_out, se))  # fmt: skip
        rates = stochastic_depth_rates(len(stages), self.drop_path_rate)
        return tuple(BlockSpec(*args, drop_path_rate=r) for args, r in zip(stages, rates))


def _variant(width, depth, train_res, test_res, dropout) -> EfficientNetConfig:
    return EfficientNetConfig(width=width, depth=depth, train_resolution=train_res,
                              test_resolution=test_res, dropout_rate=dropout)  # fmt: skip


# (width, depth, train resolution, test resolution, dropout): the official table, and the
# Noisy Student paper's L models (L2 trains at 475 and is evaluated at 800).
VARIANTS: dict[str, EfficientNetConfig] = {
    "b0": _variant(1.0, 1.0, 224, 224, 0.2),
    "b1": _variant(1.0, 1.1, 240, 240, 0.2),
    "b2": _variant(1.1, 1.2, 260, 260, 0.3),
    "b3": _variant(1.2, 1.4, 300, 300, 0.3),
    "b4": _variant(1.4, 1.8, 380, 380, 0.4),
    "b5": _variant(1.6, 2.2, 456, 456, 0.4),
    "b6": _variant(1.8, 2.6, 528, 528, 0.5),
    "b7": _variant(2.0, 3.1, 600, 600, 0.5),
    "l0": _variant(2.8, 3.7, 380, 600, 0.5),
    "l1": _variant(3.9, 3.7, 380, 600, 0.5),
    "l2": _variant(4.3, 5.3, 475, 800, 0.5),
}


def config_for(name: str, **overrides) -> EfficientNetConfig:
    """The named variant's config with fields replaced.

    **Arguments:**

    - `name`: one of `VARIANTS` (`b0` ... `b7`, `l0`, `l1`, `l2`).
    - `**overrides`: `EfficientNetConfig` fields, e.g. `config_for("b0", dropout_rate=0.5)`;
      checked as the config checks them.

    **Returns:** an `EfficientNetConfig`.
    """
    if name not in VARIANTS:
        raise ValueError(f"name must be one of {tuple(VARIANTS)}, got {name!r}")
    return dataclasses.replace(VARIANTS[name], **overrides)
