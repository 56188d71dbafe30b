"""`TrainConfig`: everything one training run needs, frozen, checked, saved as JSON."""

from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Any

from nsjax import _checks
from nsjax._io import atomic_write_text
from nsjax.models import VARIANTS, BlockArgs, EfficientNetConfig, config_for

IMAGENET_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
IMAGENET_STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)

OPTIMIZERS = ("rmsprop", "sgd", "adamw")
LR_DECAYS = ("exponential", "cosine")
COMPUTE_DTYPES = ("bfloat16", "float32")

_MODEL_FIELDS = ("width", "depth", "head_channels", "dropout_rate", "blocks")


def _optional(check, name: str, value, **kwargs):
    return None if value is None else check(name, value, **kwargs)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """One run's configuration; the defaults reproduce the official recipe (Noisy Student's
    `main.py` / `utils.py`, see `docs/training.md` for each default's source).

    Every field is checked on construction (a `TypeError` or `ValueError` naming the field);
    the config is hashable, so a jitted step can take it as a static argument, and round-trips
    through `to_json` / `from_json`.

    **Model:** `model` (a variant name, `b0` ... `l2`), `num_classes`, `resolution` (the
    student's training image side, None for the variant's `train_resolution`; the test
    resolution scales with it by the variant's test/train ratio: equal for B0-B7, 475 -> 800
    for L2), `test_resolution` (the side the model is evaluated and used at, None for that
    scaled one; a FixRes fine-tune trains at its test side: both equal), `small_image`,
    and overrides of the variant (None keeps the variant's): `width`, `depth`,
    `head_channels`, `dropout_rate`, `blocks` (a tuple of `nsjax.models.BlockArgs`, the
    unscaled stages: e.g. the first two of B0's for a model that compiles in seconds); `drop_path_rate` (0.2), `bn_momentum` (0.99), `bn_eps`
    (1e-3). `bn_debias` (True): keep the BN running statistics zero-debiased (right after
    short runs; equal to TF's at long ones); False keeps TF's biased running average.
    `precise_bn_batches` (20): before each evaluation and the teacher export, the EMA model's
    BN statistics are re-estimated over this many un-augmented labeled batches (the average
    of the batch statistics, "precise BN"); 0 keeps the moving averages.

    **Data:** `labeled_batch` (global, `B_l`), `unlabeled_ratio` (`B_u = round(ratio * B_l)`;
    0 for supervised training), `steps_per_epoch` (labeled steps per epoch; `fit` sets it from
    the data), `epochs`, `mean` / `std` (per channel, on the 0-255 scale), `compute_dtype`.

    **Noise:** `randaugment_layers` (2) and `randaugment_magnitude` (27.0, None for no
    RandAugment), applied inside the step to labeled and unlabeled student images.

    **Targets:** `teacher_temperature` (1.0) and `hard_targets` (False): how an online teacher's
    logits become targets; `unlabeled_label_smoothing` (0.0; the official code uses 0.1 with
    hard targets).

    **Recipe:** `optimizer` (`rmsprop`, `sgd`, `adamw`), `base_learning_rate` (0.016 per 256
    labeled images), `warmup_epochs` (5), `lr_decay` (`exponential` staircase or `cosine`),
    `decay_epochs` (2.4), `decay_rate` (0.97), `rmsprop_decay` (0.9), `momentum` (0.9),
    `epsilon` (1e-3), `weight_decay` (1e-5, on convolution and dense kernels), `label_smoothing`
    (0.1), `grad_clip_norm` (None: off), `ema_decay` (0.9999).

    **Sharding:** `fsdp` (False: parameters replicated), `bn_groups` (1: BN statistics over
    the global batch; G: each step's batch is laid out as G groups of `labeled_batch / G`
    labeled + `unlabeled_batch / G` unlabeled images, each normalised with its own statistics:
    per-replica BN, as the official TPU code with <= 8 cores, when G is the data-axis size).

    **Fine-tune:** `freeze_blocks` (0: every parameter trains; `k` >= 1: the stem and the
    first `k` MBConv blocks are frozen, their updates exactly zero, as the official
    `fix_layer_num` for the FixRes fine-tune; at most the model's block count,
    `len(model_config().expand())`). Only the parameters freeze: the frozen layers still run in
    training mode (batch statistics, drop-path), and their BN running statistics follow the
    batches.

    **Loop:** `seed`, `log_every`, `eval_every`, `checkpoint_every`, `keep_checkpoints`
    (steps; 0 turns evaluation / checkpoints off except at the end).
    """

    model: str = "b0"
    num_classes: int = 1000
    resolution: int | None = None
    test_resolution: int | None = None
    small_image: bool = False
    width: float | None = None
    depth: float | None = None
    head_channels: int | None = None
    dropout_rate: float | None = None
    blocks: tuple[BlockArgs, ...] | None = None
    drop_path_rate: float = 0.2
    bn_momentum: float = 0.99
    bn_eps: float = 1e-3
    bn_debias: bool = True
    precise_bn_batches: int = 20

    labeled_batch: int = 2048
    unlabeled_ratio: float = 3.0
    steps_per_epoch: int | None = None
    epochs: float = 350.0
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    compute_dtype: str = "bfloat16"

    randaugment_layers: int = 2
    randaugment_magnitude: float | None = 27.0

    teacher_temperature: float = 1.0
    hard_targets: bool = False
    unlabeled_label_smoothing: float = 0.0

    optimizer: str = "rmsprop"
    base_learning_rate: float = 0.016
    warmup_epochs: float = 5.0
    lr_decay: str = "exponential"
    decay_epochs: float = 2.4
    decay_rate: float = 0.97
    rmsprop_decay: float = 0.9
    momentum: float = 0.9
    epsilon: float = 1e-3
    weight_decay: float = 1e-5
    label_smoothing: float = 0.1
    grad_clip_norm: float | None = None
    ema_decay: float = 0.9999

    fsdp: bool = False
    bn_groups: int = 1

    freeze_blocks: int = 0

    seed: int = 0
    log_every: int = 100
    eval_every: int = 0
    checkpoint_every: int = 1000
    keep_checkpoints: int = 3

    def __post_init__(self):
        _checks.check_choice("model", self.model, tuple(VARIANTS))
        for name in ("optimizer", "lr_decay", "compute_dtype"):
            choices = {"optimizer": OPTIMIZERS, "lr_decay": LR_DECAYS,
                       "compute_dtype": COMPUTE_DTYPES}[name]  # fmt: skip
            _checks.check_choice(name, getattr(self, name), choices)
        for name in ("small_image", "bn_debias", "hard_targets", "fsdp"):
            _checks.check_bool(name, getattr(self, name))
        ints = dict(num_classes=1, labeled_batch=1, randaugment_layers=0, precise_bn_batches=0,
                    seed=0, log_every=1, eval_every=0, checkpoint_every=0,
                    keep_checkpoints=1, bn_groups=1, freeze_blocks=0)  # fmt: skip
        for name, minimum in ints.items():
            _set(self, name, _checks.check_positive_int(name, getattr(self, name), minimum=minimum))
        for name, minimum in (("resolution", 32), ("test_resolution", 32), ("head_channels", 1),
                              ("steps_per_epoch", 1)):  # fmt: skip
            _set(self, name, _optional(_checks.check_positive_int, name, getattr(self, name),
                                       minimum=minimum))
        positive = dict(min_open=True, maximum=math.inf, max_open=True)
        for name in ("epochs", "base_learning_rate", "decay_epochs", "bn_eps", "epsilon",
                     "teacher_temperature"):
            _set(self, name, _checks.check_number(name, getattr(self, name), minimum=0.0, **positive))
        for name in ("width", "depth", "grad_clip_norm"):
            _set(self, name, _optional(_checks.check_number, name, getattr(self, name),
                                       minimum=0.0, **positive))
        for name in ("unlabeled_ratio", "warmup_epochs", "weight_decay"):
            _set(self, name, _checks.check_number(name, getattr(self, name), minimum=0.0,
                                                  maximum=math.inf, max_open=True))
        for name in ("drop_path_rate", "bn_momentum", "decay_rate", "rmsprop_decay", "momentum",
                     "ema_decay", "label_smoothing", "unlabeled_label_smoothing"):
            _set(self, name, _checks.check_probability(name, getattr(self, name),
                                                       allow_one=name == "decay_rate"))
        _set(self, "dropout_rate", _optional(_checks.check_probability, "dropout_rate",
                                             self.dropout_rate, allow_one=False))
        _set(self, "randaugment_magnitude", _optional(
            _checks.check_number, "randaugment_magnitude", self.randaugment_magnitude,
            minimum=0.0, maximum=1000.0))
        for name, size in (("labeled_batch", self.labeled_batch),
                           ("unlabeled_batch", self.unlabeled_batch)):
            if size % self.bn_groups:
                raise ValueError(f"bn_groups must divide {name} ({size}), got {self.bn_groups}")
        if self.blocks is not None:
            _set(self, "blocks", config_for(self.model, blocks=self.blocks).blocks)
        if self.freeze_blocks:
            count = len(self.model_config().expand())
            if self.freeze_blocks > count:
                raise ValueError(f"freeze_blocks must be at most the model's block count "
                                 f"{count}, got {self.freeze_blocks}")
        for name in ("mean", "std"):
            value = getattr(self, name)
            if isinstance(value, (str, bytes)) or len(value) != 3:
                raise ValueError(f"{name} must be 3 numbers (one per RGB channel), got {value!r}")
            _set(self, name, tuple(_checks.check_number(f"{name}[{i}]", v, minimum=0.0,
                                                        min_open=name == "std",
                                                        maximum=math.inf, max_open=True)
                                   for i, v in enumerate(value)))  # fmt: skip

    # ------------------------------------------------------------------ derived values
    @property
    def unlabeled_batch(self) -> int:
        """`B_u = round(unlabeled_ratio * labeled_batch)`, 0 for supervised training."""
        return int(round(self.unlabeled_ratio * self.labeled_batch))

    @property
    def learning_rate(self) -> float:
        """The peak learning rate, `base_learning_rate * labeled_batch / 256`."""
        return self.base_learning_rate * self.labeled_batch / 256

    @property
    def total_steps(self) -> int:
        """`ceil(epochs * steps_per_epoch)`; needs `steps_per_epoch`."""
        return int(math.ceil(self.epochs * self.require_steps_per_epoch()))

    def require_steps_per_epoch(self) -> int:
        if self.steps_per_epoch is None:
            raise ValueError("steps_per_epoch must be set (labeled examples // labeled_batch) "
                             "to build the learning-rate schedule, got None")
        return self.steps_per_epoch

    def model_config(self) -> EfficientNetConfig:
        """The student's `EfficientNetConfig`: the variant with this config's overrides."""
        overrides = {f: getattr(self, f) for f in _MODEL_FIELDS if getattr(self, f) is not None}
        if self.resolution is not None:
            variant = VARIANTS[self.model]
            overrides["train_resolution"] = self.resolution
            overrides["test_resolution"] = max(32, round(
                self.resolution * variant.test_resolution / variant.train_resolution))
        if self.test_resolution is not None:
            overrides["test_resolution"] = self.test_resolution
        return config_for(self.model, drop_path_rate=self.drop_path_rate, small_image=self.small_image,
                          bn_momentum=self.bn_momentum, bn_eps=self.bn_eps, **overrides)

    @property
    def image_size(self) -> int:
        """The student's training image side."""
        return self.model_config().train_resolution

    # ------------------------------------------------------------------ JSON
    def to_json(self) -> str:
        """The config as a JSON object (every field, sorted)."""
        return json.dumps(dataclasses.asdict(self), indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> TrainConfig:
        """The config a `to_json` wrote; an unknown field is refused by name."""
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError(f"a TrainConfig JSON must be an object, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown TrainConfig fields {unknown}; known: {sorted(known)}")
        for name in ("mean", "std"):
            if name in data:
                data[name] = tuple(data[name])
        if data.get("blocks") is not None:
            data["blocks"] = tuple(BlockArgs(**b) for b in data["blocks"])
        return cls(**data)

    def save(self, path: str | os.PathLike) -> None:
        """Write `to_json()` to `path` atomically (a temporary file, then a rename)."""
        atomic_write_text(path, self.to_json() + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike) -> TrainConfig:
        with open(path) as f:
            return cls.from_json(f.read())


def _set(obj: Any, name: str, value: Any) -> None:
    object.__setattr__(obj, name, value)
