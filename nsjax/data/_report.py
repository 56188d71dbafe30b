"""What a pipeline skipped or converted: bad files are never a crash, never silent.

A `DataReport` counts, per reason, the records a pipeline skipped (undecodable, unreadable) and
the ones it converted (CMYK, palette, 16-bit, alpha, grey, upscaled), and lists the ids of the
first `MAX_LISTED` of each. It is part of the pipeline's iterator state, so it survives a resume,
is logged at the end of every epoch and goes into the run's JSON (`to_json`).
"""

from __future__ import annotations

import logging
from typing import Any

logger = logging.getLogger("nsjax.data")

MAX_LISTED = 100  # ids listed per kind; the counts are always complete


class DataReport:
    """Skipped and converted records of one stream (e.g. "labeled", "unlabeled", "eval").

    `skipped` and `converted` are lists of `{"id", "reason", "epoch"}`; `skip_counts` and
    `convert_counts` count every occurrence by reason (a bad file is counted once per epoch it
    is met in).
    """

    def __init__(self, name: str):
        self.name = name
        self.epoch = 0
        self.skipped: list[dict[str, Any]] = []
        self.converted: list[dict[str, Any]] = []
        self.skip_counts: dict[str, int] = {}
        self.convert_counts: dict[str, int] = {}
        self._epoch_start = (0, 0)  # (skips, conversions) when the current epoch began

    def skip(self, ident: str, reason: str, epoch: int) -> None:
        self._add(self.skipped, self.skip_counts, ident, reason, epoch)

    def convert(self, ident: str, reason: str, epoch: int) -> None:
        self._add(self.converted, self.convert_counts, ident, reason, epoch)

    def _add(self, listed: list, counts: dict, ident: str, reason: str, epoch: int) -> None:
        self.start_epoch(epoch)
        kind = reason.split(":")[0]
        counts[kind] = counts.get(kind, 0) + 1
        if len(listed) < MAX_LISTED:
            listed.append({"id": ident, "reason": reason, "epoch": epoch})

    @property
    def num_skipped(self) -> int:
        return sum(self.skip_counts.values())

    @property
    def num_converted(self) -> int:
        return sum(self.convert_counts.values())

    def start_epoch(self, epoch: int) -> None:
        """Note that records of `epoch` are being read; logs the summary of each epoch that
        ended: a warning when it skipped records, else, for the first epoch only (the same
        conversions recur every epoch), an info line when it converted some."""
        while epoch > self.epoch:
            skips = self.num_skipped - self._epoch_start[0]
            conversions = self.num_converted - self._epoch_start[1]
            if skips or (conversions and self.epoch == 0):
                first = next((s for s in self.skipped if s["epoch"] == self.epoch), None)
                logger.log(logging.WARNING if skips else logging.INFO,
                           "%s epoch %d: %d record(s) skipped%s, %d converted", self.name,
                           self.epoch, skips,
                           f" (first {first['id']}: {first['reason']})" if first else "",
                           conversions)  # fmt: skip
            self.epoch += 1
            self._epoch_start = (self.num_skipped, self.num_converted)

    def to_json(self) -> dict[str, Any]:
        return dict(name=self.name, epoch=self.epoch, skipped=list(self.skipped),
                    converted=list(self.converted), skip_counts=dict(self.skip_counts),
                    convert_counts=dict(self.convert_counts),
                    epoch_start=list(self._epoch_start))

    @classmethod
    def from_json(cls, state: dict[str, Any]) -> DataReport:
        report = cls(state["name"])
        report.epoch = int(state["epoch"])
        report.skipped = [dict(s) for s in state["skipped"]]
        report.converted = [dict(c) for c in state["converted"]]
        report.skip_counts = {k: int(v) for k, v in state["skip_counts"].items()}
        report.convert_counts = {k: int(v) for k, v in state["convert_counts"].items()}
        report._epoch_start = tuple(int(v) for v in state["epoch_start"])
        return report

    def __repr__(self) -> str:
        return (f"DataReport({self.name!r}, epoch={self.epoch}, skipped={self.skip_counts}, "
                f"converted={self.convert_counts})")
