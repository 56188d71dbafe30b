"""The run report from a hand-written summary: the table's values (gain over the previous
generation, negative when a generation loses accuracy), the verdict sentence, a real PNG,
atomic writes, and bad summaries refused by key before anything is written."""

import copy
import os

import pytest
from PIL import Image

from nsjax.loop._report import format_table, write_report


def _gen(g, model, resolution, pseudo, top1, top5, seconds, **extra):
    return dict(generation=g, model=model, resolution=resolution, labeled=1281167,
                pseudo_labeled=pseudo, test_accuracy=top1, test_top5=top5,
                train_seconds=seconds, **extra)  # fmt: skip


# gen 2 loses 0.5 points to gen 1; gen 3 ends 2.9 points above gen 0 (2.4 above gen 2)
SUMMARY = {"generations": [
    _gen(0, "b7", 600, 0, 0.850, 0.972, 3725.0),
    _gen(1, "l0", 380, 130_000_000, 0.876, 0.981, 88_000.0),
    _gen(2, "l1", 380, 130_000_000, 0.871, 0.979, 42.0, unknown_key="ignored"),
    _gen(3, "l2", 475, 81_000_000, 0.879, 0.983, 600.0),
]}


def _rows(table):
    """The plain table's data rows, split on runs of spaces (no cell holds two spaces)."""
    return [[c for c in line.split("  ") if c] for line in table.splitlines()[2:]]


def test_format_table_values():
    table = format_table(SUMMARY)
    header, rule = table.splitlines()[:2]
    assert header.split() == ["generation", "model", "resolution", "labeled", "pseudo-labeled",
                              "top-1", "%", "top-5", "%", "gain", "(points)", "time"]
    assert set(rule) == {"-", " "}
    rows = [[c.strip() for c in r] for r in _rows(table)]
    assert rows[0] == ["0", "b7", "600", "1,281,167", "0", "85.0", "97.2", "—", "1 h 02 min"]
    assert rows[1] == ["1", "l0", "380", "1,281,167", "130,000,000", "87.6", "98.1", "+2.6",
                       "1 d 00 h"]
    assert rows[2][5:] == ["87.1", "97.9", "-0.5", "42.0 s"]  # the loss shows as a negative gain
    assert rows[3][4:] == ["81,000,000", "87.9", "98.3", "+0.8", "10 min 00 s"]
    # fixed width: every line as long as the rule, the numbers right-aligned under their header
    lines = table.splitlines()
    assert all(len(line) <= len(rule) for line in lines)
    assert lines[2].index("85.0") + 4 == header.index("top-1 %") + len("top-1 %")


def test_report_markdown_and_sentence(tmp_path):
    write_report(tmp_path, SUMMARY, plan="b7 -> l0 -> l1 -> l2")
    text = (tmp_path / "report.md").read_text()
    assert text.startswith("# ") and "Plan: b7 -> l0 -> l1 -> l2" in text
    table = [line for line in text.splitlines() if line.startswith("|")]
    assert len(table) == 2 + 4  # header, alignment, one row per generation
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in table]
    assert cells[0][:3] == ["generation", "model", "resolution"] and cells[0][-1] == "time"
    assert [r[7] for r in cells[2:]] == ["—", "+2.6", "-0.5", "+0.8"]  # gain column
    assert [r[5] for r in cells[2:]] == ["85.0", "87.6", "87.1", "87.9"]
    assert ("The last student (generation 3, l2) beats the generation-0 teacher (b7) by "
            "+2.9 points (87.9 % vs 85.0 %).") in text
    assert "FixRes" not in text and "accuracy.png" in text
    # the markdown and the terminal table hold the same cells
    assert [[c.strip() for c in r] for r in _rows(format_table(SUMMARY))] == cells[2:]


def test_sentence_does_not_beat_when_worse(tmp_path):
    worse = copy.deepcopy(SUMMARY)
    worse["generations"][-1]["test_accuracy"] = 0.842
    write_report(tmp_path, worse)
    text = (tmp_path / "report.md").read_text()
    assert ("does not beat the generation-0 teacher (b7): -0.8 points (84.2 % vs 85.0 %)."
            in text)
    assert "Plan:" not in text
    even = {"generations": [SUMMARY["generations"][0],
                            {**SUMMARY["generations"][1], "test_accuracy": 0.8501}]}
    write_report(tmp_path, even)
    assert "does not beat" in (tmp_path / "report.md").read_text()  # +0.0 points is no win
    alone = {"generations": SUMMARY["generations"][:1]}
    write_report(tmp_path, alone)
    assert "Only the supervised teacher" in (tmp_path / "report.md").read_text()


def test_fixres_columns_when_present(tmp_path):
    fixres = copy.deepcopy(SUMMARY)
    fixres["generations"][3].update(fixres_accuracy=0.884, fixres_resolution=800)
    table = format_table(fixres)
    assert "FixRes resolution" in table.splitlines()[0]
    rows = [[c.strip() for c in r] for r in _rows(table)]
    assert rows[3][8:10] == ["800", "88.4"] and rows[0][8:10] == ["—", "—"]
    write_report(tmp_path, fixres)
    assert "after FixRes fine-tuning at 800 px it reaches 88.4 %" in (
        tmp_path / "report.md").read_text()


def test_png_is_valid_and_writes_are_atomic(tmp_path):
    out = tmp_path / "new" / "folder"
    write_report(out, SUMMARY)
    assert sorted(os.listdir(out)) == ["accuracy.png", "report.md"]  # no temporary files left
    with Image.open(out / "accuracy.png") as image:
        assert image.format == "PNG"
        width, height = image.size
        image.load()
    assert 300 <= width <= 2000 and 200 <= height <= 1500
    # a rewrite replaces both files and still leaves nothing else behind
    write_report(out, {"generations": SUMMARY["generations"][:2]})
    assert sorted(os.listdir(out)) == ["accuracy.png", "report.md"]
    assert "(generation 1, l0)" in (out / "report.md").read_text()


@pytest.mark.parametrize("mutate, match", [
    (lambda s: s.pop("generations"), r"summary must be a dict with key 'generations'"),
    (lambda s: s.update(generations=[]), r"summary\['generations'\] must be a non-empty list"),
    (lambda s: s["generations"][1].pop("test_top5"),
     r"\[1\] lacks key 'test_top5' \(expected a fraction in \[0, 1\]\)"),
    (lambda s: s["generations"][2].update(test_accuracy=87.1),
     r"\[2\]\['test_accuracy'\] must be a fraction in \[0, 1\], got 87.1"),
    (lambda s: s["generations"][0].update(test_top5=-0.1), r"\['test_top5'\] .* got -0.1"),
    (lambda s: s["generations"][3].update(fixres_accuracy=1.5),
     r"\[3\]\['fixres_accuracy'\] must be a fraction in \[0, 1\], got 1.5"),
    (lambda s: s["generations"][1].update(generation=5),
     r"\['generation'\] must be an int >= 0 equal to its position .* got 5"),
    (lambda s: s["generations"][0].update(labeled="many"), r"\['labeled'\] .* got 'many'"),
])
def test_bad_summaries_refused(tmp_path, mutate, match):
    bad = copy.deepcopy(SUMMARY)
    mutate(bad)
    with pytest.raises(ValueError, match=match):
        format_table(bad)
    with pytest.raises(ValueError, match=match):
        write_report(tmp_path / "out", bad)
    assert not (tmp_path / "out").exists()  # refused before anything was written


def test_bad_plan_and_non_dict_summary(tmp_path):
    with pytest.raises(TypeError, match="plan must be a str or None, got int"):
        write_report(tmp_path, SUMMARY, plan=3)
    with pytest.raises(ValueError, match="got list"):
        format_table([SUMMARY])
