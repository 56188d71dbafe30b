"""The Noisy Student loop: generation 0 is a supervised teacher; each later generation labels
the unlabeled images with the previous generation's EMA model, balances the pseudo-labels per
class and trains a noisy student on labeled + pseudo-labeled images, which becomes the next
teacher. Read top to bottom in `iterate`.

Every stage writes into its own folder of `out_dir` and is skipped on a rerun once finished,
or resumed where it stopped (the engine's checkpoints, the labelling job's shards):

    out_dir/iterate.json            the IterateConfig (a rerun must pass the same)
    out_dir/gen0/train/             fit's run folder: config, checkpoints, teacher.eqx, summary
    out_dir/gen1/labels/            the previous teacher's pseudo-label store (nsjax.pseudo)
    out_dir/gen1/balance/           the balanced rows and their per-class report
    out_dir/gen1/train/             the student's run
    out_dir/summary.json            {"generations": [{generation, model, test_accuracy, ...}]}
    out_dir/report.md, accuracy.png the table per generation and the accuracy plot
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from typing import Any

import jax
import numpy as np

from nsjax import _checks
from nsjax._io import atomic_write_text
from nsjax.data import Source, Subset, fit_inputs
from nsjax.loop._evaluate import eval_crop_fraction
from nsjax.loop._finetune import finetune
from nsjax.loop._report import write_report
from nsjax.pseudo import balance, label, load_balance, read_labels, save_balance
from nsjax.train import Teacher, TrainConfig, fit, load_teacher

_BALANCE_MODES = ("topk", "official", "none")


@dataclasses.dataclass(frozen=True)
class IterateConfig:
    """One Noisy Student run: the generations and how each student's data is made.

    - `student`: the `TrainConfig` every generation starts from (data, noise, recipe; its
      `unlabeled_ratio` is the students'; generation 0 trains with ratio 0).
    - `generations`: per generation (0 the teacher), `TrainConfig` field overrides, e.g.
      `({"model": "b0"}, {"model": "b0"}, {"model": "b1"})`.
    - `per_class`: pseudo-labeled rows per class after balancing; None: the unlabeled count
      divided by the class count.
    - `min_confidence`, `balance_mode`: the balancing rule (`nsjax.pseudo.balance`: "topk" the
      paper's, "official" `filter_unlabel.py`'s), or "none": every pseudo-labeled image once,
      no threshold (the ablation without balancing).
    - `top_k`: log-probabilities kept per image in the pseudo-label store.
    - `label_batch`: images per teacher call when labelling.
    - `online`: False (default): offline, the paper's procedure: the teacher labels the
      unlabeled images once, the store is balanced and the student reads fixed targets.
      True: the official code's mode: the teacher runs inside every student step on the clean
      view of the unlabeled images (at its own resolution), over every unlabeled image (no
      threshold or balancing), and its soft or hard targets follow `teacher_temperature` /
      `hard_targets`.
    - `fixres_generations`: the generations followed by a FixRes fine-tune
      (`nsjax.loop.finetune`: `fixres_epochs` epochs on unaugmented labeled images at
      `fixres_resolution`, default the model's test resolution, shallow blocks frozen), scored
      at that resolution (`fixres_accuracy` in the summary). The next generation's teacher is
      the model before the fine-tune, as in the paper, where FixRes finishes the last model.
    """

    student: TrainConfig = TrainConfig()
    generations: tuple[dict[str, Any], ...] = ({}, {})
    per_class: int | None = None
    min_confidence: float = 0.3
    balance_mode: str = "topk"
    top_k: int = 10
    label_batch: int = 256
    online: bool = False
    fixres_generations: tuple[int, ...] = ()
    fixres_epochs: float = 1.5
    fixres_resolution: int | None = None

    def __post_init__(self):
        if not isinstance(self.student, TrainConfig):
            raise TypeError(f"student must be a TrainConfig, got {type(self.student).__name__}")
        if not isinstance(self.generations, tuple) or len(self.generations) < 1 or not all(
                isinstance(g, dict) for g in self.generations):
            raise ValueError(f"generations must be a non-empty tuple of dicts of TrainConfig "
                             f"overrides, got {self.generations!r}")
        for g in range(len(self.generations)):
            self.generation_config(g)  # every override is a valid TrainConfig now
        if self.per_class is not None:
            _checks.check_positive_int("per_class", self.per_class)
        _checks.check_number("min_confidence", self.min_confidence, minimum=0.0, maximum=1.0)
        _checks.check_choice("balance_mode", self.balance_mode, _BALANCE_MODES)
        _checks.check_positive_int("top_k", self.top_k)
        _checks.check_positive_int("label_batch", self.label_batch)
        _checks.check_bool("online", self.online)
        if not isinstance(self.fixres_generations, tuple) or not all(
                isinstance(g, int) and 0 <= g < len(self.generations)
                for g in self.fixres_generations):
            raise ValueError(f"fixres_generations must be a tuple of generation numbers in "
                             f"[0, {len(self.generations)}), got {self.fixres_generations!r}")
        _checks.check_number("fixres_epochs", self.fixres_epochs, minimum=0.0, min_open=True)
        if self.fixres_resolution is not None:
            _checks.check_positive_int("fixres_resolution", self.fixres_resolution, minimum=32)

    def generation_config(self, g: int) -> TrainConfig:
        """Generation `g`'s `TrainConfig` (generation 0: supervised, ratio 0)."""
        overrides = dict(self.generations[g])
        if g == 0:
            overrides["unlabeled_ratio"] = 0.0
        return dataclasses.replace(self.student, **overrides)

    def to_json(self) -> str:
        data = dataclasses.asdict(self)
        data["student"] = json.loads(self.student.to_json())
        return json.dumps(data, indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> IterateConfig:
        data = json.loads(text)
        return cls(**{**data, "student": TrainConfig.from_json(json.dumps(data["student"])),
                      "generations": tuple(data["generations"]),
                      "fixres_generations": tuple(data.get("fixres_generations", ()))})


def _start(out_dir: str, config: IterateConfig) -> None:
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, "iterate.json")
    if os.path.exists(path):
        with open(path) as fh:
            saved = IterateConfig.from_json(fh.read())
        if saved != config:
            raise ValueError(f"out_dir {out_dir} holds a run with another IterateConfig; rerun "
                             f"with the same one to resume, or use a new out_dir (copy the "
                             f"finished genN folders the change leaves alone into it, e.g. "
                             f"gen0, and they are reused)")
    elif jax.process_index() == 0:
        atomic_write_text(path, config.to_json() + "\n")


def _student_data(config: IterateConfig, g: int, teacher_run: str, unlabeled: Source,
                  gen_dir: str, train: TrainConfig) -> tuple[Source, Any]:  # fmt: skip
    """Label `unlabeled` with the teacher of `teacher_run`, balance the store; returns the
    balanced records and their targets."""
    taught = TrainConfig.load(os.path.join(teacher_run, "config.json"))
    teacher = _teacher(teacher_run, train)
    labels_dir = os.path.join(gen_dir, "labels")
    label(teacher, unlabeled, labels_dir, top_k=min(config.top_k, teacher.num_classes),
          batch_size=config.label_batch, crop_fraction=eval_crop_fraction(taught),
          mean=taught.mean, std=taught.std,
          compute_dtype=taught.compute_dtype, progress=sys.stderr.isatty())  # fmt: skip
    _sync(f"gen{g} labels")  # every process labelled its shards
    store = read_labels(labels_dir)
    balance_dir = os.path.join(gen_dir, "balance")
    if config.balance_mode == "none":
        rows = np.arange(len(store))
    elif os.path.exists(os.path.join(balance_dir, "balance.npz")):
        rows = load_balance(balance_dir)
    else:  # every process draws the same rows (seeded); the first writes them
        per_class = config.per_class or max(1, len(unlabeled) // train.num_classes)
        result = balance(store, per_class=per_class, min_confidence=config.min_confidence,
                         mode=config.balance_mode, seed=train.seed + g,
                         min_rows=train.unlabeled_batch)  # fmt: skip
        if jax.process_index() == 0:
            save_balance(balance_dir, result)
        _sync(f"gen{g} balance")
        rows = result.indices
    targets = store.targets(rows, temperature=train.teacher_temperature,
                            hard=train.hard_targets)  # fmt: skip
    return Subset(unlabeled, store.index[rows]), targets


def _teacher(teacher_run: str, train: TrainConfig) -> Teacher:
    """The EMA model of the finished run in `teacher_run`, checked against the student."""
    teacher = load_teacher(os.path.join(teacher_run, "teacher.eqx"))
    if teacher.num_classes != train.num_classes:
        raise ValueError(f"the teacher in {teacher_run} has {teacher.num_classes} classes, the "
                         f"student config num_classes {train.num_classes}")
    return teacher


def iterate(config: IterateConfig, labeled: Source, unlabeled: Source, test: Source, *,
            out_dir: str | os.PathLike, plan: str | None = None) -> dict[str, Any]:  # fmt: skip
    """Run (or resume) the generations of `config`; returns the summary written to
    `out_dir/summary.json`, with the report (`report.md`, `accuracy.png`: `write_report`).

    **Arguments:**

    - `config`: an `IterateConfig`.
    - `labeled`, `unlabeled`, `test`: `nsjax.data` sources (the test set must be labeled
      with the labeled set's classes).
    - `out_dir`: the run's folder (layout in the module doc); rerun the same call to resume.
    - `plan`: a line for the report saying what was run (`nsjax iterate` passes its plan).

    **Returns:** `{"generations": [{"generation", "model", "resolution", "labeled",
    "pseudo_labeled", "test_accuracy", "test_top5", "train_seconds"}, ...]}`, accuracies as
    fractions, generation 0 the supervised teacher.
    """
    if not isinstance(config, IterateConfig):
        raise TypeError(f"config must be an IterateConfig, got {type(config).__name__}")
    _check_sources(config, labeled, unlabeled, test)
    out_dir = os.fspath(out_dir)
    _start(out_dir, config)
    generations = []
    for g in range(len(config.generations)):
        train = config.generation_config(g)
        gen_dir = os.path.join(out_dir, f"gen{g}")
        run_dir = os.path.join(gen_dir, "train")
        summary = _finished(run_dir)
        if summary is None:  # label, balance and train (each resumes where it stopped)
            teacher_run = os.path.join(out_dir, f"gen{g - 1}", "train")
            teacher = None
            if g == 0:
                inputs = fit_inputs(train, labeled, test=test)
            elif config.online:
                teacher = _teacher(teacher_run, train)
                inputs = fit_inputs(train, labeled, unlabeled, test,
                                    teacher_resolution=teacher.resolution)  # fmt: skip
            else:
                images, targets = _student_data(config, g, teacher_run, unlabeled, gen_dir,
                                                train)  # fmt: skip
                inputs = fit_inputs(train, labeled, images, test, targets=targets)
            summary = fit(train, inputs=inputs, teacher=teacher, out_dir=run_dir)[1]
        row = dict(generation=g, model=train.model, resolution=train.image_size,
                   labeled=len(labeled), pseudo_labeled=_pseudo_count(config, g, gen_dir, len(unlabeled)),
                   test_accuracy=summary["test_top1"], test_top5=summary["test_top5"],
                   train_seconds=summary["train_seconds"])  # fmt: skip
        if g in config.fixres_generations:
            tuned = _fixres(config, train, run_dir, labeled, test, gen_dir)
            row.update(fixres_resolution=tuned["resolution"], fixres_accuracy=tuned["test_top1"],
                       train_seconds=row["train_seconds"] + tuned["train_seconds"])
        generations.append(row)
    result = dict(generations=generations)
    if jax.process_index() == 0:
        atomic_write_text(os.path.join(out_dir, "summary.json"),
                          json.dumps(result, indent=1) + "\n")
        write_report(out_dir, result, plan=plan)
    return result


def _sync(name: str) -> None:
    """Wait for every process of a multi-process run (no-op with one)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def _pseudo_count(config: IterateConfig, g: int, gen_dir: str, unlabeled: int) -> int:
    """The pseudo-labeled images generation `g` trained on (online: every unlabeled one)."""
    if g == 0:
        return 0
    if config.online:
        return unlabeled
    if config.balance_mode == "none":
        return len(read_labels(os.path.join(gen_dir, "labels")))
    return len(load_balance(os.path.join(gen_dir, "balance")))


def _fixres(config: IterateConfig, train: TrainConfig, run_dir: str, labeled: Source,
            test: Source, gen_dir: str) -> dict[str, Any]:  # fmt: skip
    """Generation's FixRes fine-tune (resumed or skipped when finished): its summary with
    `resolution`."""
    fixres_dir = os.path.join(gen_dir, "fixres")
    summary = _finished(fixres_dir)
    if summary is None:
        summary = finetune(os.path.join(run_dir, "teacher.eqx"), train, labeled, test,
                           out_dir=fixres_dir, resolution=config.fixres_resolution,
                           epochs=config.fixres_epochs)[1]  # fmt: skip
    tuned = TrainConfig.load(os.path.join(fixres_dir, "config.json"))
    return dict(summary, resolution=tuned.image_size)


def _finished(run_dir: str) -> dict[str, Any] | None:
    """The summary of the finished run in `run_dir` (the same config: `iterate.json` was
    checked), else None."""
    path = os.path.join(run_dir, "summary.json")
    if not os.path.exists(os.path.join(run_dir, "teacher.eqx")) or not os.path.exists(path):
        return None
    with open(path) as fh:
        return json.load(fh)


def _check_sources(config: IterateConfig, labeled: Source, unlabeled: Source,
                   test: Source) -> None:  # fmt: skip
    for name, source in (("labeled", labeled), ("unlabeled", unlabeled), ("test", test)):
        if not isinstance(source, Source):
            raise TypeError(f"{name} must be an nsjax.data source, got {type(source).__name__}")
    for name, source in (("labeled", labeled), ("test", test)):
        if not source.labeled:
            raise ValueError(f"{name} must be a labeled source, got {source.describe()}")
    classes = config.student.num_classes
    for name, source in (("labeled", labeled), ("test", test)):
        if source.num_classes is not None and source.num_classes > classes:
            raise ValueError(f"{name} has {source.num_classes} classes, more than the config's "
                             f"num_classes {classes}")
    names = getattr(labeled, "classes", None), getattr(test, "classes", None)
    if None not in names and not set(names[1]) <= set(names[0]):
        raise ValueError(f"test has classes the labeled set lacks: "
                         f"{sorted(set(names[1]) - set(names[0]))}")
