"""The run report: the summary `iterate` returns as a table (terminal and Markdown), a sentence
comparing the last student with the generation-0 teacher, and a plot of test top-1 accuracy per
generation.

    out_dir/report.md      title, plan, per-generation table, the verdict sentence, the plot
    out_dir/accuracy.png   test top-1 (%) per generation

One column list (`_columns`) makes both tables; matplotlib is imported only when the plot is
drawn, so importing `nsjax.loop` stays light.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from nsjax._io import atomic_write, atomic_write_text

__all__ = ["format_table", "write_report"]

# key -> what it must hold; every generation needs all of them
_REQUIRED = {
    "generation": "an int >= 0 equal to its position in the list",
    "model": "a model name (str)",
    "resolution": "an int > 0 (training image side)",
    "labeled": "an int >= 0",
    "pseudo_labeled": "an int >= 0",
    "test_accuracy": "a fraction in [0, 1]",
    "test_top5": "a fraction in [0, 1]",
    "train_seconds": "a number >= 0",
}
# optional keys shown when some generation has them (not None)
_OPTIONAL = {
    "fixres_resolution": "an int > 0 (FixRes test image side)",
    "fixres_accuracy": "a fraction in [0, 1]",
}
_DASH = "—"


# ---------------------------------------------------------------------------------- cells
def _percent(fraction: float) -> float:
    """A fraction as the percentage the report shows (one decimal)."""
    return round(100.0 * fraction, 1)


def _gain(gens: Sequence[Mapping[str, Any]], i: int) -> float | None:
    """Generation `i`'s top-1 gain over generation `i - 1`, in points of the shown values."""
    if i == 0:
        return None
    return round(_percent(gens[i]["test_accuracy"]) - _percent(gens[i - 1]["test_accuracy"]), 1)


def _duration(seconds: float) -> str:
    seconds = float(seconds)
    if seconds < 60:
        return f"{seconds:.1f} s"
    whole = int(round(seconds))
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days} d {hours:02d} h"
    if hours:
        return f"{hours} h {minutes:02d} min"
    return f"{minutes} min {secs:02d} s"


def _optional_cell(value: Any, fmt: Callable[[Any], str]) -> str:
    return _DASH if value is None else fmt(value)


# (header, right-aligned, cell(generations, index) -> str)
_Column = tuple[str, bool, Callable[[Sequence[Mapping[str, Any]], int], str]]

_BASE_COLUMNS: tuple[_Column, ...] = (
    ("generation", True, lambda gens, i: str(gens[i]["generation"])),
    ("model", False, lambda gens, i: str(gens[i]["model"])),
    ("resolution", True, lambda gens, i: str(gens[i]["resolution"])),
    ("labeled", True, lambda gens, i: f"{gens[i]['labeled']:,}"),
    ("pseudo-labeled", True, lambda gens, i: f"{gens[i]['pseudo_labeled']:,}"),
    ("top-1 %", True, lambda gens, i: f"{_percent(gens[i]['test_accuracy']):.1f}"),
    ("top-5 %", True, lambda gens, i: f"{_percent(gens[i]['test_top5']):.1f}"),
    ("gain (points)", True, lambda gens, i: _optional_cell(_gain(gens, i), "{:+.1f}".format)),
)
_FIXRES_COLUMNS: tuple[_Column, ...] = (
    ("FixRes resolution", True,
     lambda gens, i: _optional_cell(gens[i].get("fixres_resolution"), str)),
    ("FixRes top-1 %", True,
     lambda gens, i: _optional_cell(gens[i].get("fixres_accuracy"),
                                    lambda v: f"{_percent(v):.1f}")),
)
_TIME_COLUMN: _Column = ("time", True, lambda gens, i: _duration(gens[i]["train_seconds"]))


def _columns(gens: Sequence[Mapping[str, Any]]) -> tuple[_Column, ...]:
    """The report's columns; the FixRes ones only when some generation was fine-tuned."""
    fixres = any(g.get(k) is not None for g in gens for k in _OPTIONAL)
    return _BASE_COLUMNS + (_FIXRES_COLUMNS if fixres else ()) + (_TIME_COLUMN,)


def _cells(gens: Sequence[Mapping[str, Any]]) -> tuple[list[str], list[bool], list[list[str]]]:
    columns = _columns(gens)
    headers = [c[0] for c in columns]
    right = [c[1] for c in columns]
    rows = [[c[2](gens, i) for c in columns] for i in range(len(gens))]
    return headers, right, rows


# ---------------------------------------------------------------------------------- checks
def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _valid(key: str, value: Any, index: int) -> bool:
    if key == "generation":
        return _is_int(value) and value == index
    if key == "model":
        return isinstance(value, str) and bool(value)
    if key in ("resolution", "fixres_resolution"):
        return _is_int(value) and value > 0
    if key in ("labeled", "pseudo_labeled"):
        return _is_int(value) and value >= 0
    if key in ("test_accuracy", "test_top5", "fixres_accuracy"):
        return _is_number(value) and 0.0 <= value <= 1.0
    return _is_number(value) and value >= 0  # train_seconds


def _check_summary(summary: Any) -> list[Mapping[str, Any]]:
    """The summary's generations, every key checked; a `ValueError` names the first bad one."""
    if not isinstance(summary, Mapping) or "generations" not in summary:
        got = sorted(summary) if isinstance(summary, Mapping) else type(summary).__name__
        raise ValueError(f"summary must be a dict with key 'generations' (a non-empty list of "
                         f"per-generation dicts, as iterate returns), got {got}")
    gens = summary["generations"]
    if isinstance(gens, (str, bytes)) or not isinstance(gens, Sequence) or not gens:
        raise ValueError(f"summary['generations'] must be a non-empty list of per-generation "
                         f"dicts, got {gens!r}")
    for i, gen in enumerate(gens):
        if not isinstance(gen, Mapping):
            raise ValueError(f"summary['generations'][{i}] must be a dict, got "
                             f"{type(gen).__name__}")
        missing = [k for k in _REQUIRED if k not in gen]
        if missing:
            raise ValueError(f"summary['generations'][{i}] lacks key {missing[0]!r} (expected "
                             f"{_REQUIRED[missing[0]]}); it has keys {sorted(gen)}")
        present = {k: e for k, e in _OPTIONAL.items() if gen.get(k) is not None}
        for key, expected in {**_REQUIRED, **present}.items():
            if not _valid(key, gen[key], i):
                raise ValueError(f"summary['generations'][{i}][{key!r}] must be {expected}, "
                                 f"got {gen[key]!r}")
    return list(gens)


# ---------------------------------------------------------------------------------- text
def format_table(summary: Mapping[str, Any]) -> str:
    """The per-generation table as fixed-width plain text (what the CLI prints): generation,
    model, resolution, labeled, pseudo-labeled, top-1 %, top-5 %, gain over the previous
    generation in points, (FixRes resolution and top-1 % when present), time. Ends without a
    newline. A bad summary raises a `ValueError` naming the key, expected and actual."""
    headers, right, rows = _cells(_check_summary(summary))
    widths = [max(len(h), *(len(r[j]) for r in rows)) for j, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.rjust(w) if r else c.ljust(w)
                         for c, w, r in zip(cells, widths, right)).rstrip()

    return "\n".join([line(headers), "  ".join("-" * w for w in widths),
                      *(line(r) for r in rows)])


def _markdown_table(gens: Sequence[Mapping[str, Any]]) -> str:
    headers, right, rows = _cells(gens)
    align = ["---:" if r else ":---" for r in right]
    return "\n".join("| " + " | ".join(cells) + " |" for cells in (headers, align, *rows))


def _verdict(gens: Sequence[Mapping[str, Any]]) -> str:
    """One sentence: the last generation against generation 0, on the shown values."""
    first, last = gens[0], gens[-1]
    a, b = _percent(first["test_accuracy"]), _percent(last["test_accuracy"])
    if len(gens) == 1:
        return (f"Only the supervised teacher (generation 0, {first['model']}) has run: "
                f"{a:.1f} % top-1.")
    gain = round(b - a, 1)
    student = f"The last student (generation {last['generation']}, {last['model']})"
    teacher = f"the generation-0 teacher ({first['model']})"
    figures = f"{gain:+.1f} points ({b:.1f} % vs {a:.1f} %)"
    text = (f"{student} beats {teacher} by {figures}" if gain > 0
            else f"{student} does not beat {teacher}: {figures}")
    if last.get("fixres_accuracy") is not None:
        res = last.get("fixres_resolution")
        at = f" at {res} px" if res is not None else ""
        text += f"; after FixRes fine-tuning{at} it reaches {_percent(last['fixres_accuracy']):.1f} %"
    return text + "."


def _markdown(gens: Sequence[Mapping[str, Any]], plan: str | None) -> str:
    parts = ["# Noisy Student run report", ""]
    if plan is not None:
        parts += [f"Plan: {plan}", ""]
    parts += [_markdown_table(gens), "",
              "Accuracies are test-set top-1 / top-5 in percent; the gain is top-1 over the "
              "previous generation, in points; time is the generation's training time.", "",
              _verdict(gens), "", "![Test top-1 accuracy per generation](accuracy.png)", ""]
    return "\n".join(parts)


# ---------------------------------------------------------------------------------- plot
def _plot_png(gens: Sequence[Mapping[str, Any]]) -> bytes:
    """Test top-1 (%) per generation as PNG bytes; FixRes results as extra markers."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    xs = [g["generation"] for g in gens]
    ys = [_percent(g["test_accuracy"]) for g in gens]
    fig = Figure(figsize=(max(4.0, 1.1 * len(gens) + 2.0), 4.0), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.plot(xs, ys, marker="o", label="test top-1")
    for x, y in zip(xs, ys):
        ax.annotate(f"{y:.1f}", (x, y), textcoords="offset points", xytext=(0, 8),
                    ha="center", fontsize=9)
    fixres = [(g["generation"], _percent(g["fixres_accuracy"])) for g in gens
              if g.get("fixres_accuracy") is not None]
    if fixres:
        fx, fy = zip(*fixres)
        ax.plot(fx, fy, linestyle="none", marker="^", label="after FixRes fine-tuning")
        for x, y in fixres:
            ax.annotate(f"{y:.1f}", (x, y), textcoords="offset points", xytext=(7, 0),
                        ha="left", va="center", fontsize=9)
        ax.legend(loc="best")
    ax.set_xticks(xs, [f"gen {g['generation']}\n{g['model']}" for g in gens])
    ax.set_xlim(min(xs) - 0.5, max(xs) + 0.5)
    ax.margins(y=0.25)
    ax.set_xlabel("generation")
    ax.set_ylabel("test top-1 accuracy (%)")
    ax.set_title("Noisy Student: test top-1 per generation")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


# ---------------------------------------------------------------------------------- report
def write_report(out_dir: str | os.PathLike, summary: Mapping[str, Any], *,
                 plan: str | None = None) -> None:  # fmt: skip
    """Write `out_dir/report.md` and `out_dir/accuracy.png` (each atomically) from the summary
    `iterate` returns.

    **Arguments:**

    - `out_dir`: the folder (created if missing), usually the run's `out_dir`.
    - `summary`: `{"generations": [{"generation", "model", "resolution", "labeled",
      "pseudo_labeled", "test_accuracy", "test_top5", "train_seconds"}, ...]}`, accuracies as
      fractions, generation 0 the supervised teacher; optional `"fixres_accuracy"` /
      `"fixres_resolution"` are shown when present; other keys are ignored.
    - `plan`: an optional line shown under the title (e.g. `"b7 -> l0 -> l1 -> l2 -> l2"`).

    A bad summary (no generations, a missing key, an accuracy outside [0, 1]) raises a
    `ValueError` naming the key, what was expected and what was given, before anything is
    written.
    """
    gens = _check_summary(summary)
    if plan is not None and not isinstance(plan, str):
        raise TypeError(f"plan must be a str or None, got {type(plan).__name__}")
    out_dir = os.fspath(out_dir)
    png = _plot_png(gens)
    markdown = _markdown(gens, plan)
    os.makedirs(out_dir, exist_ok=True)
    atomic_write(os.path.join(out_dir, "accuracy.png"), lambda f: f.write(png))
    atomic_write_text(os.path.join(out_dir, "report.md"), markdown)
