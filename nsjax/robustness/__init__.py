"""Robustness evaluation as in Noisy Student's second claim: the 19 ImageNet-C corruptions
(`corrupt`), mCE against AlexNet (`mce`, `relative_mce`, `ALEXNET_ERRORS`), ImageNet-A's
200-class logits (`imagenet_a_logits`), ImageNet-P's flip probability and mFR."""

from nsjax.robustness._corrupt import CORRUPTIONS, HOST_CORRUPTIONS, corrupt
from nsjax.robustness._metrics import (
    ALEXNET_CLEAN_ERROR,
    ALEXNET_ERRORS,
    COMMON_CORRUPTIONS,
    IMAGENET_A_INDICES,
    IMAGENET_P_PERTURBATIONS,
    VALIDATION_CORRUPTIONS,
    corruption_errors,
    flip_probability,
    imagenet_a_logits,
    mce,
    mfr,
    relative_mce,
)

__all__ = [
    "ALEXNET_CLEAN_ERROR",
    "ALEXNET_ERRORS",
    "COMMON_CORRUPTIONS",
    "CORRUPTIONS",
    "HOST_CORRUPTIONS",
    "IMAGENET_A_INDICES",
    "IMAGENET_P_PERTURBATIONS",
    "VALIDATION_CORRUPTIONS",
    "corrupt",
    "corruption_errors",
    "flip_probability",
    "imagenet_a_logits",
    "mce",
    "mfr",
    "relative_mce",
]
