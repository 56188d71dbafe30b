"""The registry, timer and report format every benchmark module shares.

A benchmark is a function `fn(opts: Options) -> list[Figure]` registered with `@register(name)`.
A figure is one measured time, with the time of a peer (what a user would use instead) measured
in the same run where one exists; the report shows `speedup = peer_seconds / seconds`.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Callable
from typing import Any

import jax


@dataclasses.dataclass(frozen=True)
class Options:
    """What the command line asked for."""

    quick: bool = False  # fewer repeats and smaller sizes (smoke runs, CI-sized machines)
    large: bool = False  # include the largest sizes (e.g. balance at 10^8 records)
    repeats: int = 5


@dataclasses.dataclass(frozen=True)
class Figure:
    """One measurement: `seconds` per call (median over repeats) for `items` items."""

    name: str
    seconds: float
    items: int
    item_unit: str = "item"
    peer: str | None = None
    peer_seconds: float | None = None
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def throughput(self) -> float:
        return self.items / self.seconds

    @property
    def speedup(self) -> float | None:
        """peer time / nsjax time: above 1 means nsjax is faster."""
        return None if self.peer_seconds is None else self.peer_seconds / self.seconds

    def to_json(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["throughput_per_s"] = self.throughput
        d["speedup_vs_peer"] = self.speedup
        return d


BenchFn = Callable[[Options], list[Figure]]
REGISTRY: dict[str, BenchFn] = {}


def register(name: str) -> Callable[[BenchFn], BenchFn]:
    def deco(fn: BenchFn) -> BenchFn:
        if name in REGISTRY:
            raise ValueError(f"benchmark {name!r} is registered twice")
        REGISTRY[name] = fn
        return fn

    return deco


def _block(out: Any) -> Any:
    return jax.block_until_ready(out)


def time_call(fn: Callable[[], Any], *, repeats: int, warmup: int = 1) -> float:
    """Median wall seconds of `fn()` (JAX outputs are waited for); `warmup` calls not timed."""
    for _ in range(warmup):
        _block(fn())
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        _block(fn())
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def format_table(figures: list[Figure]) -> str:
    head = f"{'benchmark':<44} {'ms/call':>10} {'throughput':>18} {'peer':<34} {'peer ms':>10} {'speedup':>8}"
    rows = [head, "-" * len(head)]
    for f in figures:
        thr = f"{f.throughput:,.0f} {f.item_unit}/s"
        peer_ms = "" if f.peer_seconds is None else f"{f.peer_seconds * 1e3:.2f}"
        speed = "" if f.speedup is None else f"{f.speedup:.2f}x"
        rows.append(
            f"{f.name:<44} {f.seconds * 1e3:>10.2f} {thr:>18} {f.peer or '':<34} {peer_ms:>10} {speed:>8}"
        )
        for k, v in f.extra.items():
            rows.append(f"    {k}: {v}")
    return "\n".join(rows)
