"""A classifier's accuracy under every corruption and severity and under FGSM / PGD, streamed
over batches; the results as a Markdown table and a PNG (accuracy against severity per
corruption, accuracy against ε).

The classifier is `logits_fn(images float32 [B, H, W, 3] on 0-255) -> logits [B, C]`, which
normalises inside (corrupted images are uint8 like the clean ones; attacked images are float32
on the same scale). Pass a model bound as `eqx.Partial(fn, model)` so every batch reuses one
compiled program.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from nsjax import _checks
from nsjax.robustness._adversarial import fgsm, pgd
from nsjax.robustness._corrupt import CORRUPTIONS, corrupt
from nsjax.robustness._metrics import ALEXNET_ERRORS, COMMON_CORRUPTIONS, mce

LogitsFn = Callable[[jax.Array], jax.Array]
SEVERITIES = (1, 2, 3, 4, 5)
EPSILONS = (1.0, 2.0, 4.0, 8.0, 16.0)
"""Default attack strengths in 0-255 pixel units (Noisy Student's FGSM figure spans 0-16)."""


@eqx.filter_jit
def _hits(logits_fn: LogitsFn, images: jax.Array, labels: jax.Array,
          mask: jax.Array) -> jax.Array:  # fmt: skip
    """Correct top-1 predictions among the rows of `mask`, int32 scalar."""
    logits = logits_fn(images.astype(jnp.float32))
    return jnp.sum((jnp.argmax(logits, axis=-1) == labels) & mask, dtype=jnp.int32)


def _cross_entropy(logits_fn: LogitsFn, images: jax.Array, labels: jax.Array) -> jax.Array:
    """Per-image cross-entropy `[B]` of `logits_fn` on float pixels."""
    logits = logits_fn(images).astype(jnp.float32)
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels)


def _check_epsilons(name: str, values) -> tuple[float, ...]:
    return tuple(_checks.check_number(f"{name}[{i}]", v, minimum=0.0)
                 for i, v in enumerate(values))


def robustness_accuracy(logits_fn: LogitsFn, batches: Iterable[Mapping[str, Any]],
                        key: jax.Array, *, corruptions: Sequence[str] = CORRUPTIONS,
                        severities: Sequence[int] = SEVERITIES,
                        fgsm_epsilons: Sequence[float] = EPSILONS,
                        pgd_epsilons: Sequence[float] = EPSILONS,
                        pgd_steps: int = 10) -> dict[str, Any]:  # fmt: skip
    """Top-1 accuracy of `logits_fn` on clean, corrupted and attacked copies of every batch.

    **Arguments:**

    - `logits_fn`: `(float32 [B, H, W, 3] on 0-255) -> logits [B, C]`.
    - `batches`: dicts with `images` uint8 `[B, H, W, 3]` (H, W >= 32), `labels` int `[B]`
      and optionally `mask` bool `[B]` (False rows, a final batch's padding, are not counted),
      e.g. `nsjax.data.eval_pipeline`'s.
    - `key`: a `jax.random` key; batch `b`, corruption `c` (its index in `CORRUPTIONS`) and
      severity `s` use `fold_in(fold_in(fold_in(key, b), c), s)`.
    - `corruptions`: names from `CORRUPTIONS` (default all 19); `severities`: ints in 1..5.
    - `fgsm_epsilons`, `pgd_epsilons`: attack strengths >= 0 in pixel units (may be empty);
      `pgd_steps`: PGD iterations (step size `2.5 ε / pgd_steps`, no random start).

    **Returns:** a JSON-able dict: `count` (images scored), `clean` (accuracy),
    `severities`, `corruptions` (name -> accuracy per severity), `fgsm` and `pgd`
    (`epsilons`, `accuracy`, and PGD's `steps`), and when all 15 benchmark corruptions at
    all 5 severities were run, `mean_corruption_error` (mean top-1 error over them) and
    `mce_alexnet` (mCE normalised by AlexNet's ImageNet-C errors: comparable with published
    numbers only on ImageNet-C itself).
    """
    _checks.check_key("key", key)
    for i, name in enumerate(corruptions):
        if name not in CORRUPTIONS:
            raise ValueError(f"corruptions[{i}] must be one of {CORRUPTIONS}, got {name!r}")
    severities = tuple(int(s) for s in severities)
    if any(s not in SEVERITIES for s in severities):
        raise ValueError(f"severities must be ints in 1..5, got {severities}")
    fgsm_epsilons = _check_epsilons("fgsm_epsilons", fgsm_epsilons)
    pgd_epsilons = _check_epsilons("pgd_epsilons", pgd_epsilons)
    pgd_steps = _checks.check_positive_int("pgd_steps", pgd_steps)
    loss_fn = eqx.Partial(_cross_entropy, logits_fn)

    count = clean = 0
    hits = {(c, s): 0 for c in corruptions for s in severities}
    fgsm_hits, pgd_hits = [0] * len(fgsm_epsilons), [0] * len(pgd_epsilons)
    for b, batch in enumerate(batches):
        images, labels = batch["images"], jnp.asarray(batch["labels"])
        mask = jnp.asarray(batch.get("mask", np.ones(len(labels), bool)))
        count += int(mask.sum())
        clean += int(_hits(logits_fn, images, labels, mask))
        batch_key = jax.random.fold_in(key, b)
        for c in corruptions:
            c_key = jax.random.fold_in(batch_key, CORRUPTIONS.index(c))
            for s in severities:
                corrupted = corrupt(jax.random.fold_in(c_key, s), images, c, s)
                hits[c, s] += int(_hits(logits_fn, corrupted, labels, mask))
        for i, eps in enumerate(fgsm_epsilons):
            fgsm_hits[i] += int(_hits(logits_fn, fgsm(loss_fn, images, labels, eps), labels,
                                      mask))
        for i, eps in enumerate(pgd_epsilons):
            attacked = pgd(loss_fn, images, labels, eps, num_steps=pgd_steps)
            pgd_hits[i] += int(_hits(logits_fn, attacked, labels, mask))
    if count == 0:
        raise ValueError("batches must hold at least one counted image, got none")

    result: dict[str, Any] = {
        "count": count,
        "clean": clean / count,
        "severities": list(severities),
        "corruptions": {c: [hits[c, s] / count for s in severities] for c in corruptions},
        "fgsm": {"epsilons": list(fgsm_epsilons), "accuracy": [h / count for h in fgsm_hits]},
        "pgd": {"epsilons": list(pgd_epsilons), "accuracy": [h / count for h in pgd_hits],
                "steps": pgd_steps},
    }
    if set(COMMON_CORRUPTIONS) <= set(corruptions) and severities == SEVERITIES:
        errors = {c: [1.0 - a for a in result["corruptions"][c]] for c in COMMON_CORRUPTIONS}
        result["mean_corruption_error"] = float(np.mean([np.mean(e) for e in errors.values()]))
        result["mce_alexnet"] = mce(errors, ALEXNET_ERRORS)
    return result


def _rows(results: Mapping[str, Mapping[str, Any]]) -> list[tuple[str, list[float | None]]]:
    """(condition, accuracy per model or None) for the table, in a fixed order."""
    models = list(results.values())
    names = [c for c in CORRUPTIONS if any(c in r["corruptions"] for r in models)]
    rows: list[tuple[str, list[float | None]]] = [("clean", [r["clean"] for r in models])]
    for c in names:
        rows.append((f"{c} (mean of severities)",
                     [float(np.mean(r["corruptions"][c])) if c in r["corruptions"] else None
                      for r in models]))
    for attack in ("fgsm", "pgd"):
        epsilons = sorted({e for r in models for e in r[attack]["epsilons"]})
        for eps in epsilons:
            rows.append((f"{attack.upper()} ε = {eps:g}",
                         [dict(zip(r[attack]["epsilons"], r[attack]["accuracy"])).get(eps)
                          for r in models]))
    return rows


def robustness_table(results: Mapping[str, Mapping[str, Any]]) -> str:
    """A Markdown table of top-1 accuracy (%) per condition (rows) and model (columns), then
    the mean corruption error and mCE rows where every model has them.

    **Arguments:** `results`: model label -> a `robustness_accuracy` result.

    **Returns:** str.
    """
    if not results:
        raise ValueError("results must hold at least one model's results, got none")
    labels = list(results)
    lines = ["| condition | " + " | ".join(labels) + " |",
             "|---|" + "---:|" * len(labels)]

    def cell(v):
        return "–" if v is None else f"{100 * v:.1f}"

    for condition, values in _rows(results):
        lines.append(f"| {condition} | " + " | ".join(cell(v) for v in values) + " |")
    if all("mean_corruption_error" in r for r in results.values()):
        lines.append("| mean corruption error (15 benchmark corruptions) | " + " | ".join(
            f"{100 * r['mean_corruption_error']:.1f}" for r in results.values()) + " |")
        lines.append("| mCE vs AlexNet (ImageNet-C only) | " + " | ".join(
            f"{r['mce_alexnet']:.1f}" for r in results.values()) + " |")
    return "\n".join(lines)


def robustness_plot(results: Mapping[str, Mapping[str, Any]]) -> bytes:
    """PNG bytes: one panel per corruption (top-1 % against severity, 0 = clean) and one per
    attack (top-1 % against ε, 0 = clean), every model a line.

    **Arguments:** `results`: model label -> a `robustness_accuracy` result.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not results:
        raise ValueError("results must hold at least one model's results, got none")
    models = list(results.items())
    panels = [c for c in CORRUPTIONS if any(c in r["corruptions"] for _, r in models)]
    panels += [a for a in ("fgsm", "pgd") if any(r[a]["epsilons"] for _, r in models)]
    cols = min(5, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig = Figure(figsize=(3.0 * cols, 2.5 * rows + 0.6), dpi=100)
    FigureCanvasAgg(fig)
    for i, panel in enumerate(panels):
        ax = fig.add_subplot(rows, cols, i + 1)
        for label, r in models:
            if panel in ("fgsm", "pgd"):
                xs, ys = [0.0] + r[panel]["epsilons"], [r["clean"]] + r[panel]["accuracy"]
            elif panel in r["corruptions"]:
                xs, ys = [0] + r["severities"], [r["clean"]] + r["corruptions"][panel]
            else:
                continue
            ax.plot(xs, [100 * y for y in ys], marker="o", markersize=3, label=label)
        title = {"fgsm": "FGSM", "pgd": "PGD"}.get(panel, panel.replace("_", " "))
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("ε (pixels, 0-255)" if panel in ("fgsm", "pgd") else "severity",
                      fontsize=8)
        ax.set_ylim(0, 100)
        ax.tick_params(labelsize=7)
        ax.grid(True, alpha=0.3)
        if i % cols == 0:
            ax.set_ylabel("top-1 (%)", fontsize=8)
    handles, labels = fig.axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=min(len(labels), 6), fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.5 / fig.get_figheight()))
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()
