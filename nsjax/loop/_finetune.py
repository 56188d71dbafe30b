"""The FixRes fine-tune of the Noisy Student paper: a model trained at a small resolution is
fine-tuned for 1.5 epochs on unaugmented labeled images at its larger test resolution, its
shallow layers frozen, then evaluated at that resolution (Xie et al., 2019, after Touvron et
al.'s FixRes; the official code's hooks `remove_aug`, `fix_layer_num` and `--init_model`).

A thin layer over `nsjax.train.fit`: a warm start from the teacher file (`init=`), the centre
crop as the training crop (`TrainCrop(crop="center")`), the first blocks frozen
(`TrainConfig.freeze_blocks`). Rerunning the same call resumes, as `fit` does.
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any

from nsjax import _checks
from nsjax.data import Source, TrainCrop, fit_inputs
from nsjax.loop._evaluate import eval_crop_fraction
from nsjax.train import (
    TrainConfig,
    TrainState,
    current_learning_rate,
    fit,
    load_teacher,
    teacher_metadata,
)

# The fine-tune's least default learning rate, as a fraction of the teacher's peak (a cosine
# schedule ends at 0); the reference's 350 epochs end at 0.97 ** 145 = 0.012 of it.
MIN_LEARNING_RATE_FRACTION = 0.01


def finetune(teacher_file: str | os.PathLike, config: TrainConfig, labeled: Source,
             test: Source | None = None, *, out_dir: str | os.PathLike,
             resolution: int | None = None, epochs: float = 1.5,
             freeze_blocks: int | None = None, learning_rate: float | None = None,
             workers: int = 0, threads: int = 8) -> tuple[TrainState, dict[str, Any]]:  # fmt: skip
    """Fine-tune a trained model at its test resolution (FixRes); rerun the same call after a
    crash or a kill to continue (a finished run trains no further step).

    The run's `TrainConfig` is `config` with:

    - `resolution` and `test_resolution`: the given side, else the teacher's
      `test_resolution` (the fine-tuned model is trained, evaluated and used at it);
    - no unlabeled images (`unlabeled_ratio=0`) and no RandAugment: the training crop is the
      evaluation's centre crop at that resolution, with the evaluation's resizer and no flip
      (`TrainCrop(resolution, crop="center", flip=False, resize="pil")`, the whole image for
      the 32-px variant as its evaluation: `eval_crop_fraction`), so the fine-tune
      sees the test images' statistics, which is the point;
    - `epochs`, no warm-up (the weights are trained already), `steps_per_epoch` from the data;
    - `freeze_blocks`: the given count, else half of the model's blocks, rounded down (the
      paper freezes "the shallow layers" without a number and the official `fix_layer_num`
      is not scripted; the first half computes local features, which a change of scale
      moves least, and the second half and the head adapt to the new apparent object size);
      the stem is frozen with them (`TrainConfig.freeze_blocks`);
    - `base_learning_rate`: `learning_rate` if given, else the rate of the teacher's last
      update under `config`'s schedule (the fine-tune continues its training, at another
      resolution), at least `MIN_LEARNING_RATE_FRACTION` (1/100) of its peak (a cosine
      schedule ends at 0). For the reference's 350 epochs that is 0.97 ** 145 = 0.012 of the
      peak: a converged model fine-tuned at the from-scratch peak would be thrown far from its
      minimum; a teacher whose schedule ended high continues high (on digits, a teacher
      stopped at 0.93 of its peak fine-tuned to 81 % at 48 px with its last rate, 73 % with
      1/100 of it: `docs/training.md`);
    - dropout and drop-path as `config` (the teacher's): the official hooks remove the data
      augmentation and freeze layers, and leave the model's noise as it was; the warm start
      then differs from `config`'s model in its resolution only.

    The run starts from the teacher's weights and BN statistics (`fit(..., init=teacher)`);
    the running statistics are re-estimated at the new resolution (with `config.bn_debias`,
    and precise BN over `precise_bn_batches` unaugmented batches before the evaluation).

    **Arguments:**

    - `teacher_file`: a model file written by `fit` (`out_dir/teacher.eqx`) or
      `nsjax.train.export_teacher`: its EMA weights are the starting point.
    - `config`: the `TrainConfig` the teacher was trained with (its architecture and class
      count must be the teacher's: checked before any weight is read).
    - `labeled`: a labeled `nsjax.data` source, the fine-tune's images.
    - `test`: a labeled source evaluated at the fine-tune's resolution (centre crop), or None.
    - `out_dir`: the run's folder (`fit`'s layout: `config.json`, `checkpoints/`,
      `teacher.eqx`, `summary.json`, ...).
    - `resolution`: int >= 32, the fine-tune's (and evaluation's) image side.
    - `epochs`: float > 0, the fine-tune's length in labeled epochs (the paper's 1.5).
    - `freeze_blocks`: int, 0 to the model's block count (0 freezes nothing, not even the
      stem), or None for half the blocks.
    - `learning_rate`: float > 0, the fine-tune's `base_learning_rate` (per 256 labeled
      images), or None for the teacher's last (see above).
    - `workers`, `threads`: the input pipelines' (`nsjax.data.fit_inputs`).

    **Returns:** `fit`'s `(state, summary)`: the final `TrainState` and the summary dict,
    whose `test_top1` / `test_top5` (with `test`) are at the fine-tune's resolution.

    **Raises:** before any work, a `TypeError` / `ValueError` naming the argument for a
    config that is not a `TrainConfig`, a source that is not one or is unlabeled, a test
    source of more classes than `config.num_classes`, a bad number; `FileNotFoundError` for
    a missing teacher file; `ValueError` naming the file for a teacher of another class count
    or architecture than `config`'s.
    """
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig (the teacher's), got "
                        f"{type(config).__name__}")  # fmt: skip
    if not isinstance(teacher_file, (str, os.PathLike)):
        raise TypeError(f"teacher_file must be a str or os.PathLike, got "
                        f"{type(teacher_file).__name__}")  # fmt: skip
    _check_sources(config, labeled, test)
    if resolution is not None:
        resolution = _checks.check_positive_int("resolution", resolution, minimum=32)
    positive = dict(minimum=0.0, min_open=True, maximum=math.inf, max_open=True)
    epochs = _checks.check_number("epochs", epochs, **positive)
    if learning_rate is not None:
        learning_rate = _checks.check_number("learning_rate", learning_rate, **positive)
    saved = teacher_metadata(teacher_file)["config"]  # the header only, no weights
    resolution = saved["test_resolution"] if resolution is None else resolution
    if freeze_blocks is None:
        freeze_blocks = len(config.model_config().expand()) // 2
    tuned = dataclasses.replace(
        config, resolution=resolution, test_resolution=resolution, unlabeled_ratio=0.0,
        randaugment_magnitude=None, epochs=epochs, warmup_epochs=0.0, freeze_blocks=freeze_blocks,
        base_learning_rate=(_last_learning_rate(config, labeled) if learning_rate is None
                            else learning_rate),
        steps_per_epoch=None)  # fmt: skip
    teacher = load_teacher(teacher_file, num_classes=config.num_classes,
                           config=dataclasses.replace(
                               tuned.model_config(), train_resolution=saved["train_resolution"],
                               test_resolution=saved["test_resolution"]))  # fmt: skip
    crop = TrainCrop(resolution, crop="center", crop_fraction=eval_crop_fraction(tuned),
                     flip=False, resize="pil")
    inputs = fit_inputs(tuned, labeled, test=test, crop=crop, workers=workers, threads=threads)
    return fit(tuned, inputs=inputs, init=teacher, out_dir=os.fspath(out_dir))


def _last_learning_rate(config: TrainConfig, labeled: Source) -> float:
    """The base learning rate (per 256 labeled images) of the last update of `config`'s run
    (`steps_per_epoch` from `labeled` when None, as `fit`), at least
    `MIN_LEARNING_RATE_FRACTION` of its peak."""
    steps = config.steps_per_epoch or max(1, len(labeled) // config.labeled_batch)
    taught = dataclasses.replace(config, steps_per_epoch=steps)
    last = float(current_learning_rate(taught, taught.total_steps - 1))
    return max(last * 256 / config.labeled_batch,
               MIN_LEARNING_RATE_FRACTION * config.base_learning_rate)


def _check_sources(config: TrainConfig, labeled: Any, test: Any) -> None:
    for name, source in (("labeled", labeled), ("test", test)):
        if source is None and name == "test":
            continue
        if not isinstance(source, Source):
            raise TypeError(f"{name} must be an nsjax.data source, got {type(source).__name__}")
        if not source.labeled:
            raise ValueError(f"{name} must be a labeled source, got {source.describe()}")
        if source.num_classes is not None and source.num_classes > config.num_classes:
            raise ValueError(f"{name} has {source.num_classes} classes, more than the config's "
                             f"num_classes {config.num_classes}")
