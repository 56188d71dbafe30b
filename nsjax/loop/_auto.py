"""Defaults chosen from the data and the machine, for `nsjax iterate` and `nsjax train` runs
without a config file. Every choice is a plain `TrainConfig` / `IterateConfig` field, stated in
the run's plan line and saved with the run, so any of them can be overridden.

- **Classes** from the labeled source.
- **Small images** (a longest side of at most 64 px, e.g. 28x28 grey arrays or SVHN's 32x32):
  the official 32-px variant (`small_image`: stages 2 and 3 at stride 1) at 32 px with the
  official SVHN noise (RandAugment magnitude 5; the pipelines reflect-pad-crop without flips),
  instead of upscaling to the variant's 224 px. Grey images become 3 channels when decoded and
  smaller ones are upscaled to the model's side by the crops.
- **On a CPU** (no accelerator): a scaled-down EfficientNet (each variant's width and depth
  times `CPU_SCALE`, 0.25: B0 at width 0.25, depth 0.25 has 7 MBConv blocks and 0.13M
  parameters) in float32, the labeled batch `CPU_LABELED_BATCH` and epochs capped so that each
  generation sees about `CPU_IMAGES` training images (`CPU_TEACHER_IMAGES` for the supervised
  teacher), scaled by `(32 / resolution)^2`: two student generations over 10,000 images of
  <= 32 px then take about 19 minutes on 2 cores (measured in `docs/results.md`). AdamW
  replaces the TF RMSProp of the recipe, whose learning rate (0.016 per 256 images) is made
  for 350 epochs and barely moves a model in a few hundred steps.
- **On accelerators**: the recipe (`TrainConfig`'s defaults: 350 epochs, RMSProp), with the
  labeled batch capped at a quarter of the labeled set.
- **Students** read `unlabeled_ratio` unlabeled images per labeled one: 1 for B0 students and
  3 for larger ones, as the official ImageNet scripts.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from nsjax.data import Source
from nsjax.data._decode import image_size
from nsjax.models import VARIANTS
from nsjax.train import TrainConfig

SMALL_IMAGE_MAX_SIDE = 64
CPU_SCALE = 0.25
CPU_LABELED_BATCH = 32
CPU_IMAGES = 80_000
CPU_TEACHER_IMAGES = 32_000
DEFAULT_MODELS = ("b0", "b0", "b1")

_SAMPLED = 16  # records whose size is read to find the image side


@dataclasses.dataclass(frozen=True)
class DataFacts:
    """What the defaults depend on: `num_classes`, `side` (the longest image side of up to 16
    records spread over the labeled source), `labeled` (the labeled count) and `platform`
    (`jax.default_backend()`: "cpu", "gpu", "tpu")."""

    num_classes: int
    side: int
    labeled: int
    platform: str

    @property
    def small(self) -> bool:
        return self.side <= SMALL_IMAGE_MAX_SIDE

    @property
    def cpu(self) -> bool:
        return self.platform == "cpu"


def data_facts(labeled: Source, *, platform: str | None = None) -> DataFacts:
    """The `DataFacts` of a labeled source on this machine (or `platform`)."""
    import jax

    if not labeled.labeled or not labeled.num_classes:
        raise ValueError(f"labeled must be a labeled source with classes, got "
                         f"{labeled.describe()}")
    picks = np.unique(np.linspace(0, len(labeled) - 1, min(_SAMPLED, len(labeled))).astype(int))
    sides = [_side(labeled[int(i)]["data"]) for i in picks]
    sides = [s for s in sides if s]
    if not sides:
        raise ValueError(f"labeled: none of records {picks.tolist()} could be read as an image")
    return DataFacts(num_classes=labeled.num_classes, side=max(sides), labeled=len(labeled),
                     platform=platform or jax.default_backend())  # fmt: skip


def _side(data: Any) -> int | None:
    if isinstance(data, np.ndarray):
        return int(max(data.shape[:2]))
    try:
        return max(image_size(data))
    except Exception:  # an unreadable record: the pipelines skip and report it
        return None


def train_defaults(facts: DataFacts, model: str, *, student: bool) -> dict[str, Any]:
    """`TrainConfig` fields for `model` on these data and this machine (module doc)."""
    fields: dict[str, Any] = dict(model=model, num_classes=facts.num_classes)
    if facts.small:
        fields.update(small_image=True, resolution=32, randaugment_magnitude=5.0)
    if facts.cpu:
        variant = VARIANTS[model]
        fields.update(width=variant.width * CPU_SCALE, depth=variant.depth * CPU_SCALE,
                      compute_dtype="float32", optimizer="adamw", base_learning_rate=0.024,
                      weight_decay=1e-4, labeled_batch=_batch(CPU_LABELED_BATCH, facts.labeled),
                      checkpoint_every=200, log_every=50)  # fmt: skip
    else:
        fields.update(labeled_batch=_batch(TrainConfig.labeled_batch, facts.labeled))
    # the official scripts' unlabeled:labeled ratio: 1 for B0, 3 for the larger students
    fields["unlabeled_ratio"] = (1.0 if model == "b0" else 3.0) if student else 0.0
    if facts.cpu:
        config = TrainConfig(**fields)
        budget = (CPU_IMAGES if student else CPU_TEACHER_IMAGES) * (32 / config.image_size) ** 2
        per_epoch = max(1, facts.labeled // config.labeled_batch) * (
            config.labeled_batch + config.unlabeled_batch)
        fields["epochs"] = float(min(TrainConfig.epochs, max(1, round(budget / per_epoch))))
        fields["warmup_epochs"] = min(TrainConfig.warmup_epochs, fields["epochs"] / 10)
    return fields


def _batch(cap: int, labeled: int) -> int:
    """The largest power of two <= `cap` and <= a quarter of the labeled set (at least 8)."""
    return max(8, min(cap, 2 ** int(math.log2(max(labeled // 4, 1)))))


def iterate_defaults(facts: DataFacts, models: tuple[str, ...] = DEFAULT_MODELS
                     ) -> dict[str, Any]:  # fmt: skip
    """`IterateConfig` fields for a schedule of `models` (generation 0 the teacher)."""
    base = train_defaults(facts, models[-1], student=True)
    generations = []
    for g, model in enumerate(models):
        fields = train_defaults(facts, model, student=g > 0)
        generations.append({k: v for k, v in fields.items() if base.get(k) != v})
    return dict(student=TrainConfig(**base), generations=tuple(generations))


def plan_line(config: Any, facts: DataFacts, devices: int) -> str:
    """One line: the models, resolutions, epochs, batch sizes and devices of a run."""
    from nsjax.loop._iterate import IterateConfig

    configs = ([config.generation_config(g) for g in range(len(config.generations))]
               if isinstance(config, IterateConfig) else [config])  # fmt: skip
    parts = []
    for c in configs:
        m, variant = c.model_config(), VARIANTS[c.model]
        scaled = (m.width, m.depth) != (variant.width, variant.depth)
        model = f"{c.model}(w{m.width:g},d{m.depth:g})" if scaled else c.model
        batch = f"{c.labeled_batch}+{c.unlabeled_batch}" if c.unlabeled_batch else f"{c.labeled_batch}"
        parts.append(f"{model} {c.image_size}px {c.epochs:g}ep batch {batch}")
    small = " (small-image variant)" if configs[0].small_image else ""
    return (f"Plan: {' -> '.join(parts)}{small}; {facts.num_classes} classes, "
            f"{facts.labeled} labeled images of <= {facts.side} px; {devices} {facts.platform} "
            f"device(s).")
