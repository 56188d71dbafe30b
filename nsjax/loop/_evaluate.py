"""A teacher file's accuracy on a labeled source (`nsjax evaluate`): the centre crop at a
resolution, the normalisation it was trained with, eval mode."""

from __future__ import annotations

import json
import os
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from nsjax import _checks
from nsjax.data import EvalCrop, Source, eval_pipeline
from nsjax.train import Teacher, TrainConfig, load_teacher, predict_step, teacher_metadata


def trained_config(teacher_file: str | os.PathLike) -> TrainConfig:
    """The `TrainConfig` a teacher file was trained with (its metadata), else the defaults."""
    saved = teacher_metadata(teacher_file).get("metadata", {}).get("train_config")
    return TrainConfig() if saved is None else TrainConfig.from_json(json.dumps(saved))


def eval_crop_fraction(config: TrainConfig) -> float:
    """The evaluation's centre-crop fraction for a model of `config`: 0.875 (the reference's
    at 224 px), or 1.0 for the 32-px variant (the official SVHN evaluation reads the whole
    image)."""
    return 1.0 if config.small_image else 0.875


def teacher_for_test(teacher_file: str | os.PathLike, test: Source, resolution: int | None
                     ) -> tuple[Teacher, TrainConfig, EvalCrop]:  # fmt: skip
    """The teacher in `teacher_file`, the `TrainConfig` it was trained with and its evaluation
    crop at `resolution` (default its test resolution), once `test` is checked to be a labeled
    source with no more classes than the teacher's (before any weight is used)."""
    if not isinstance(test, Source) or not test.labeled:
        raise ValueError(f"test must be a labeled nsjax.data source, got {test!r}")
    teacher = load_teacher(teacher_file)
    if test.num_classes is not None and test.num_classes > teacher.num_classes:
        raise ValueError(f"test has {test.num_classes} classes, more than the teacher's "
                         f"{teacher.num_classes} ({teacher_file})")
    side = teacher.resolution if resolution is None else _checks.check_positive_int(
        "resolution", resolution, minimum=32)
    config = trained_config(teacher_file)
    return teacher, config, EvalCrop(side, crop_fraction=eval_crop_fraction(config))


@eqx.filter_jit
def _counts(teacher, config: TrainConfig, images, labels, mask) -> jax.Array:
    """`[top-1 hits, top-5 hits]` over the rows of `mask`."""
    probs = predict_step(teacher.model, teacher.state, config, images)
    k = min(5, probs.shape[-1])
    top = jax.lax.top_k(probs, k)[1]
    hits = top == labels[:, None]
    return jnp.stack([(hits[:, 0] & mask).sum(), (hits.any(axis=1) & mask).sum()])


def evaluate_teacher(teacher_file: str | os.PathLike, test: Source, *,
                     resolution: int | None = None, batch_size: int = 256,
                     threads: int = 8) -> dict[str, Any]:  # fmt: skip
    """Top-1 and top-5 accuracy of the teacher in `teacher_file` on `test`.

    **Arguments:**

    - `teacher_file`: a teacher export (`teacher.eqx` of a run).
    - `test`: a labeled source whose classes are the teacher's (checked before any work).
    - `resolution`: the evaluated image side (centre crop, fraction `eval_crop_fraction`,
      then resize); default the teacher's test resolution.
    - `batch_size`, `threads`: as in `nsjax.data.eval_pipeline`.

    **Returns:** `{"top1", "top5"}` (fractions), `"count"` (images scored) and `"resolution"`.
    """
    teacher, config, crop = teacher_for_test(teacher_file, test, resolution)
    totals = np.zeros(3, np.int64)
    with eval_pipeline(test, batch_size, crop, threads=threads) as batches:
        for batch in batches:
            hits = _counts(teacher, config, batch["images"], batch["labels"], batch["mask"])
            totals += [*np.asarray(hits), int(batch["mask"].sum())]
    if totals[2] == 0:
        raise ValueError(f"test: no image of {len(test)} could be read")
    return dict(top1=totals[0] / totals[2], top5=totals[1] / totals[2], count=int(totals[2]),
                resolution=crop.size[0])
