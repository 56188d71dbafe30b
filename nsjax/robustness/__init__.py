"""Robustness evaluation as in Noisy Student's second claim: the 19 ImageNet-C corruptions
(`corrupt`), mCE against AlexNet (`mce`, `relative_mce`, `ALEXNET_ERRORS`), ImageNet-A's
200-class logits (`imagenet_a_logits`), ImageNet-P's flip probability and mFR, FGSM and PGD on
the 0-255 pixel scale, and a streamed evaluation of a classifier under all of them
(`robustness_accuracy`, with `robustness_table` and `robustness_plot`)."""

from nsjax.robustness._adversarial import fgsm, pgd
from nsjax.robustness._corrupt import CORRUPTIONS, HOST_CORRUPTIONS, corrupt
from nsjax.robustness._evaluate import (
    EPSILONS,
    robustness_accuracy,
    robustness_plot,
    robustness_table,
)
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
    "EPSILONS",
    "HOST_CORRUPTIONS",
    "IMAGENET_A_INDICES",
    "IMAGENET_P_PERTURBATIONS",
    "VALIDATION_CORRUPTIONS",
    "corrupt",
    "corruption_errors",
    "fgsm",
    "flip_probability",
    "imagenet_a_logits",
    "mce",
    "mfr",
    "pgd",
    "relative_mce",
    "robustness_accuracy",
    "robustness_plot",
    "robustness_table",
]
