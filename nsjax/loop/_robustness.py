"""Teacher files' robustness on a labeled source (`nsjax evaluate --robustness`): clean,
corrupted (19 corruptions x 5 severities) and FGSM / PGD top-1 accuracy at the teacher's test
resolution, written as a table, JSON and a plot.

    out_dir/robustness.json   {label: nsjax.robustness.robustness_accuracy result}
    out_dir/robustness.md     the table (rows: conditions; columns: teachers) and the plot
    out_dir/robustness.png    accuracy against severity per corruption and against ε
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from nsjax import _checks
from nsjax._io import atomic_write, atomic_write_text
from nsjax.data import Source, eval_pipeline
from nsjax.loop._evaluate import teacher_for_test
from nsjax.robustness import robustness_accuracy, robustness_plot, robustness_table
from nsjax.train import Teacher
from nsjax.train._step import normalize


def _teacher_logits(teacher: Teacher, mean: tuple[float, ...], std: tuple[float, ...],
                    dtype: str, images: jax.Array) -> jax.Array:  # fmt: skip
    """Eval-mode logits float32 `[B, C]` of float32 pixels `[B, H, W, 3]` on 0-255."""
    x = normalize(images, mean, std, jnp.dtype(dtype))
    return teacher.model(x, teacher.state, train=False)[0].astype(jnp.float32)


def _first(batches: Iterable[Mapping[str, Any]], limit: int | None) -> Iterator[dict]:
    """The batches until `limit` counted images (the rest masked out), or all of them."""
    seen = 0
    for batch in batches:
        if limit is not None and seen >= limit:
            return
        mask = np.asarray(batch["mask"]).copy()
        if limit is not None:
            mask &= np.cumsum(mask) <= limit - seen
        seen += int(mask.sum())
        yield {"images": batch["images"], "labels": batch["labels"], "mask": mask}


def evaluate_robustness(teacher_file: str | os.PathLike, test: Source, key: jax.Array, *,
                        resolution: int | None = None, batch_size: int = 256,
                        threads: int = 8, max_images: int | None = None,
                        **options: Any) -> dict[str, Any]:  # fmt: skip
    """`nsjax.robustness.robustness_accuracy` of the teacher in `teacher_file` on `test`.

    **Arguments:**

    - `teacher_file`: a teacher export (`teacher.eqx` of a run).
    - `test`: a labeled source whose classes are the teacher's (checked before any work).
    - `key`: a `jax.random` key for the corruptions' draws (the same key gives every teacher
      the same corrupted images).
    - `resolution`: the evaluated image side (default the teacher's test resolution); the
      corruptions apply to the centre crop at that side, as ImageNet-C's to 224-px crops.
    - `batch_size`, `threads`: as in `nsjax.data.eval_pipeline`.
    - `max_images`: score only the first `max_images` images (default all).
    - `options`: `corruptions`, `severities`, `fgsm_epsilons`, `pgd_epsilons`, `pgd_steps` of
      `robustness_accuracy`.

    **Returns:** `robustness_accuracy`'s dict, plus `resolution`.
    """
    if max_images is not None:
        max_images = _checks.check_positive_int("max_images", max_images)
    teacher, config, crop = teacher_for_test(teacher_file, test, resolution)
    logits_fn = eqx.Partial(_teacher_logits, teacher, tuple(config.mean), tuple(config.std),
                            str(config.compute_dtype))
    with eval_pipeline(test, batch_size, crop, threads=threads) as batches:
        result = robustness_accuracy(logits_fn, _first(batches, max_images), key, **options)
    return {**result, "resolution": crop.size[0]}


def run_labels(paths: Sequence[str]) -> list[str]:
    """Short labels for teacher files: the parts of their paths that differ (`run/gen0/train/
    teacher.eqx`, `run/gen1/train/teacher.eqx` -> `gen0`, `gen1`); one file keeps its path."""
    parts = [os.path.normpath(p).split(os.sep) for p in paths]
    if len(parts) < 2 or len({tuple(p) for p in parts}) < len(parts):
        return [str(p) for p in paths]
    head = 0
    while all(len(p) > head + 1 for p in parts) and len({p[head] for p in parts}) == 1:
        head += 1
    tail = 0
    while (all(len(p) - tail - 1 > head for p in parts)
           and len({p[len(p) - tail - 1] for p in parts}) == 1):
        tail += 1
    return [os.sep.join(p[head:len(p) - tail]) for p in parts]


def write_robustness_report(out_dir: str | os.PathLike,
                            results: Mapping[str, Mapping[str, Any]]) -> str:
    """Write `robustness.json`, `robustness.md` and `robustness.png` into `out_dir` (created if
    missing), each atomically; returns the Markdown table."""
    os.makedirs(out_dir, exist_ok=True)
    table = robustness_table(results)
    atomic_write_text(os.path.join(out_dir, "robustness.json"),
                      json.dumps(results, indent=2) + "\n")
    png = robustness_plot(results)
    atomic_write(os.path.join(out_dir, "robustness.png"), lambda f: f.write(png))
    some = next(iter(results.values()))
    text = ["# Robustness", "",
            f"Top-1 accuracy (%) on {some['count']} images at {some.get('resolution', '?')} px: "
            f"clean, under each corruption (the mean over severities "
            f"{', '.join(map(str, some['severities']))}; per severity in robustness.json) and "
            f"under FGSM / PGD ({some['pgd']['steps']} steps) with ε in 0-255 pixel units.", "",
            table, "", "![Accuracy against severity and ε](robustness.png)", ""]
    atomic_write_text(os.path.join(out_dir, "robustness.md"), "\n".join(text))
    return table
