"""Robustness scores: ImageNet-C's corruption error (mCE, relative mCE) against AlexNet,
ImageNet-A's 200-class logits, and ImageNet-P's flip probability and flip rate (mFR).

Constants and definitions follow hendrycks/robustness and natural-adv-examples (sources in
`docs/robustness.md`): AlexNet's ImageNet-C errors per corruption and severity (the table the
maintainers published; AugMix's `ALEXNET_ERR` holds the same averages), AlexNet's clean top-1
error 43.478 % (torchvision's pretrained AlexNet, which the benchmark used), ImageNet-A's
`indices_in_1k`. ImageNet-P's AlexNet flip probabilities were never published outside a
spreadsheet, so `mfr` takes its normalisers as an argument and has no default.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from nsjax import _checks

COMMON_CORRUPTIONS: tuple[str, ...] = (
    "gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur",
    "motion_blur", "zoom_blur", "snow", "frost", "fog", "brightness", "contrast",
    "elastic_transform", "pixelate", "jpeg_compression",
)  # fmt: skip
"""The 15 ImageNet-C benchmark corruptions, in the benchmark's order (noise, blur, weather,
digital); mCE averages over these."""

VALIDATION_CORRUPTIONS: tuple[str, ...] = (
    "speckle_noise", "gaussian_blur", "spatter", "saturate")
"""The 4 held-out corruptions ImageNet-C provides for model selection (not in mCE)."""

ALEXNET_ERRORS: Mapping[str, tuple[float, float, float, float, float]] = {
    "gaussian_noise": (0.69528, 0.82542, 0.93554, 0.98138, 0.99452),
    "shot_noise": (0.71224, 0.85108, 0.93574, 0.98182, 0.99146),
    "impulse_noise": (0.78374, 0.89808, 0.94870, 0.98720, 0.99548),
    "defocus_blur": (0.65624, 0.73202, 0.85036, 0.91364, 0.94714),
    "glass_blur": (0.64308, 0.75054, 0.88806, 0.91622, 0.93344),
    "motion_blur": (0.58430, 0.70048, 0.82108, 0.89750, 0.92638),
    "zoom_blur": (0.70008, 0.76992, 0.80784, 0.84198, 0.87198),
    "snow": (0.71726, 0.88392, 0.86468, 0.91870, 0.94952),
    "frost": (0.61390, 0.79734, 0.88790, 0.89942, 0.93430),
    "fog": (0.67474, 0.76050, 0.84378, 0.87260, 0.94500),
    "brightness": (0.45140, 0.48502, 0.54048, 0.62166, 0.72440),
    "contrast": (0.64548, 0.76150, 0.88874, 0.97760, 0.99270),
    "elastic_transform": (0.52596, 0.70116, 0.55686, 0.64076, 0.80554),
    "pixelate": (0.52218, 0.54620, 0.73728, 0.87092, 0.91262),
    "jpeg_compression": (0.51002, 0.54718, 0.57294, 0.65458, 0.74778),
    "speckle_noise": (0.66192, 0.74440, 0.90246, 0.94548, 0.97268),
    "gaussian_blur": (0.54732, 0.70444, 0.82574, 0.89864, 0.95940),
    "spatter": (0.47196, 0.62194, 0.75052, 0.84132, 0.90182),
    "saturate": (0.59342, 0.65514, 0.51174, 0.70834, 0.82260),
}
"""AlexNet's top-1 error (a fraction) on ImageNet-C, per corruption and severity 1..5."""

ALEXNET_CLEAN_ERROR: float = 0.43478
"""AlexNet's top-1 error on the clean ImageNet validation set (torchvision's weights)."""

IMAGENET_A_INDICES: tuple[int, ...] = (
    6, 11, 13, 15, 17, 22, 23, 27, 30, 37, 39, 42, 47, 50, 57, 70, 71, 76, 79, 89, 90, 94, 96,
    97, 99, 105, 107, 108, 110, 113, 124, 125, 130, 132, 143, 144, 150, 151, 207, 234, 235, 254,
    277, 283, 287, 291, 295, 298, 301, 306, 307, 308, 309, 310, 311, 313, 314, 315, 317, 319,
    323, 324, 326, 327, 330, 334, 335, 336, 347, 361, 363, 372, 378, 386, 397, 400, 401, 402,
    404, 407, 411, 416, 417, 420, 425, 428, 430, 437, 438, 445, 456, 457, 461, 462, 470, 472,
    483, 486, 488, 492, 496, 514, 516, 528, 530, 539, 542, 543, 549, 552, 557, 561, 562, 569,
    572, 573, 575, 579, 589, 606, 607, 609, 614, 626, 627, 640, 641, 642, 643, 658, 668, 677,
    682, 684, 687, 701, 704, 719, 736, 746, 749, 752, 758, 763, 765, 768, 773, 774, 776, 779,
    780, 786, 792, 797, 802, 803, 804, 813, 815, 820, 823, 831, 833, 835, 839, 845, 847, 850,
    859, 862, 870, 879, 880, 888, 890, 897, 900, 907, 913, 924, 932, 933, 934, 937, 943, 945,
    947, 951, 954, 956, 957, 959, 971, 972, 980, 981, 984, 986, 987, 988,
)
"""ImageNet-A's 200 classes as ImageNet-1k indices, ascending: position k is ImageNet-A's
label k (its sorted WordNet ids), as `indices_in_1k` in natural-adv-examples' `eval.py`."""

IMAGENET_P_PERTURBATIONS: tuple[str, ...] = (
    "gaussian_noise", "shot_noise", "motion_blur", "zoom_blur", "snow", "brightness",
    "translate", "rotate", "tilt", "scale",
)  # fmt: skip
"""The 10 ImageNet-P test perturbations, over which mFR averages."""


def _check_errors(name: str, errors, corruptions: Sequence[str]) -> dict[str, np.ndarray]:
    """`errors[c]` for each `c` in `corruptions`: 5 numbers in [0, 1]; returns float64 arrays."""
    if not isinstance(errors, Mapping):
        raise TypeError(f"{name} must be a mapping from corruption name to 5 errors, got "
                        f"{type(errors).__name__}")
    missing = [c for c in corruptions if c not in errors]
    if missing:
        raise ValueError(f"{name} lacks the corruptions {missing}; it needs {tuple(corruptions)}")
    out = {}
    for c in corruptions:
        e = np.asarray(errors[c], np.float64)
        if e.shape != (5,) or not np.all((e >= 0) & (e <= 1)):
            raise ValueError(f"{name}[{c!r}] must be 5 errors (severities 1..5) in [0, 1], got "
                             f"{errors[c]!r}")
        out[c] = e
    return out


def corruption_errors(errors: Mapping[str, Sequence[float]],
                      baseline: Mapping[str, Sequence[float]] = ALEXNET_ERRORS,
                      corruptions: Sequence[str] = COMMON_CORRUPTIONS) -> dict[str, float]:
    """ImageNet-C's corruption error per corruption, `CE_c = Σ_s E_{s,c} / Σ_s B_{s,c}`, in %.

    **Arguments:** `errors`, `baseline`: corruption name -> 5 top-1 errors (fractions,
    severities 1..5); `corruptions`: the names scored (default the 15 benchmark ones).

    **Returns:** name -> CE (100 = the baseline's error).
    """
    e = _check_errors("errors", errors, corruptions)
    b = _check_errors("baseline", baseline, corruptions)
    return {c: float(100.0 * e[c].sum() / b[c].sum()) for c in corruptions}


def mce(errors: Mapping[str, Sequence[float]],
        baseline: Mapping[str, Sequence[float]] = ALEXNET_ERRORS,
        corruptions: Sequence[str] = COMMON_CORRUPTIONS) -> float:
    """Mean corruption error (mCE, %): the mean of `corruption_errors` over `corruptions`.

    A model with AlexNet's errors scores exactly 100; Noisy Student's EfficientNet-L2 scores
    28.3. Only meaningful on ImageNet-C itself (the baseline's errors are ImageNet's).

    **Arguments:** as `corruption_errors`.

    **Returns:** float, mCE in %.
    """
    return float(np.mean(list(corruption_errors(errors, baseline, corruptions).values())))


def relative_mce(errors: Mapping[str, Sequence[float]], clean_error: float,
                 baseline: Mapping[str, Sequence[float]] = ALEXNET_ERRORS,
                 baseline_clean_error: float = ALEXNET_CLEAN_ERROR,
                 corruptions: Sequence[str] = COMMON_CORRUPTIONS) -> float:
    """Relative mCE (%): the mean over `corruptions` of
    `Σ_s (E_{s,c} - E_clean) / Σ_s (B_{s,c} - B_clean)`, how much accuracy a model loses
    under corruption relative to the baseline's loss (Hendrycks & Dietterich 2019).

    **Arguments:** `errors`, `baseline`, `corruptions`: as `corruption_errors`;
    `clean_error`, `baseline_clean_error`: clean top-1 errors in [0, 1] (default AlexNet's).

    **Returns:** float, relative mCE in %.
    """
    clean = _checks.check_number("clean_error", clean_error, minimum=0.0, maximum=1.0)
    base_clean = _checks.check_number("baseline_clean_error", baseline_clean_error,
                                      minimum=0.0, maximum=1.0)
    e = _check_errors("errors", errors, corruptions)
    b = _check_errors("baseline", baseline, corruptions)
    for c in corruptions:
        if not (b[c] - base_clean).sum() > 0:
            raise ValueError(f"baseline[{c!r}] must lose accuracy against baseline_clean_error "
                             f"{base_clean} (a positive sum of differences), got {b[c].tolist()}")
    return float(np.mean([100.0 * (e[c] - clean).sum() / (b[c] - base_clean).sum()
                          for c in corruptions]))


def imagenet_a_logits(logits: jax.Array) -> jax.Array:
    """ImageNet-A's 200 columns of ImageNet-1k logits, in ImageNet-A's label order.

    **Arguments:** `logits`: float `[..., 1000]`.

    **Returns:** `[..., 200]`, same dtype; `argmax` over it is the ImageNet-A prediction.
    """
    _checks.check_floating("logits", logits)
    if np.ndim(logits) < 1 or _checks.shape_of(logits)[-1] != 1000:
        raise ValueError(f"logits must have shape [..., 1000] (ImageNet-1k classes), got "
                         f"{_checks.shape_of(logits)}")
    return jnp.take(jnp.asarray(logits), jnp.asarray(IMAGENET_A_INDICES), axis=-1)


def flip_probability(predictions, *, noise: bool, difficulty: int = 1) -> float:
    """ImageNet-P's flip probability of a model's top-1 predictions on perturbation sequences.

    For a sequence of frames `x_1..x_n` (frame 1 the clean image): a noise perturbation
    (`noise=True`: i.i.d. noisy copies) counts `f(x_j) != f(x_1)` over `j = 2..n`; the other
    perturbations (gradual changes) count `f(x_j) != f(x_{j-d})` for frames `d = difficulty`
    apart. The mean over frames, then over sequences (as ImageNet-P's `test.py`).

    **Arguments:**

    - `predictions`: int `[S, n]`, the top-1 class of each of `n >= 2` frames of `S >= 1`
      sequences.
    - `noise`: whether the perturbation is a noise one (compared with the first frame).
    - `difficulty`: the frame gap d >= 1 of a non-noise perturbation (1 for ImageNet-P's
      difficulty-1 sequences); must be < n.

    **Returns:** float in [0, 1].
    """
    _checks.check_rank("predictions", predictions, 2, "[S, n] (sequences, frames)")
    _checks.check_integer("predictions", predictions)
    noise = _checks.check_bool("noise", noise)
    difficulty = _checks.check_positive_int("difficulty", difficulty)
    s, n = _checks.shape_of(predictions)
    if s < 1 or n < 2:
        raise ValueError(f"predictions must hold >= 1 sequence of >= 2 frames, got shape {(s, n)}")
    if noise and difficulty != 1:
        raise ValueError(f"difficulty must be 1 for a noise perturbation (every frame is "
                         f"compared with the first), got {difficulty}")
    if difficulty >= n:
        raise ValueError(f"difficulty must be < the number of frames {n}, got {difficulty}")
    p = np.asarray(predictions)
    flips = p[:, 1:] != p[:, :1] if noise else p[:, difficulty:] != p[:, :-difficulty]
    return float(flips.mean())


def mfr(flip_probabilities: Mapping[str, float], baseline: Mapping[str, float],
        perturbations: Sequence[str] = IMAGENET_P_PERTURBATIONS) -> float:
    """Mean flip rate (mFR, %): `100 · mean_p FP_p / FP_p^baseline` over `perturbations`.

    The benchmark's baseline is AlexNet's flip probabilities, which nsjax does not ship: they
    were only published in a spreadsheet linked from hendrycks/robustness (issue 49), so pass
    them (or another model's, for a relative comparison) as `baseline`.

    **Arguments:** `flip_probabilities`, `baseline`: perturbation name -> flip probability in
    [0, 1] (`baseline`'s > 0); `perturbations`: the names averaged (default ImageNet-P's 10).

    **Returns:** float, mFR in % (100 = the baseline's flip rate).
    """
    rates = []
    for name, values in (("flip_probabilities", flip_probabilities), ("baseline", baseline)):
        if not isinstance(values, Mapping):
            raise TypeError(f"{name} must be a mapping from perturbation name to flip "
                            f"probability, got {type(values).__name__}")
        missing = [p for p in perturbations if p not in values]
        if missing:
            raise ValueError(f"{name} lacks the perturbations {missing}; it needs "
                             f"{tuple(perturbations)}")
    for p in perturbations:
        fp = _checks.check_number(f"flip_probabilities[{p!r}]", flip_probabilities[p],
                                  minimum=0.0, maximum=1.0)
        base = _checks.check_number(f"baseline[{p!r}]", baseline[p], minimum=0.0, maximum=1.0,
                                    min_open=True)
        rates.append(fp / base)
    return float(100.0 * np.mean(rates))
