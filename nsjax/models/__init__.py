"""EfficientNet B0-B7, L0-L2 and the 32-px variant, TF-faithful, as Equinox modules over NHWC."""

from nsjax.models._config import B0_BLOCKS, VARIANTS, BlockArgs, BlockSpec, EfficientNetConfig, config_for
from nsjax.models._efficientnet import (
    EfficientNet,
    MBConv,
    count_params,
    efficientnet,
    efficientnet_from_config,
)
from nsjax.models._timm import load_timm_weights, timm_key_map

__all__ = [
    "B0_BLOCKS", "VARIANTS", "BlockArgs", "BlockSpec", "EfficientNetConfig", "config_for",
    "EfficientNet", "MBConv", "count_params", "efficientnet", "efficientnet_from_config",
    "load_timm_weights", "timm_key_map",
]  # fmt: skip
