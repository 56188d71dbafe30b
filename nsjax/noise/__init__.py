"""Student noise: RandAugment (`randaugment`, its ops in `nsjax.noise.ops`, size-relative
constants for small images in `relative_constants`), random Cutout, the 32-px pipeline, dropout,
stochastic depth (drop-path) and its per-block rate rule."""

from nsjax.noise import ops
from nsjax.noise._depth import drop_path, dropout, stochastic_depth_rates
from nsjax.noise._randaugment import (
    DEFAULT_OPS,
    EXECUTORS,
    randaugment,
    randaugment_ops,
    random_cutout,
    relative_constants,
    svhn_augment,
)

__all__ = [
    "DEFAULT_OPS",
    "EXECUTORS",
    "drop_path",
    "dropout",
    "ops",
    "randaugment",
    "randaugment_ops",
    "random_cutout",
    "relative_constants",
    "stochastic_depth_rates",
    "svhn_augment",
]
