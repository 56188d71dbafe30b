"""What every `nsjax` command shares: the `Command` record, `UsageError`, argparse types, and
opening a data path as a source."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Command:
    """One sub-command of `nsjax`.

    **Arguments:**

    - `name`: what follows `nsjax` on the command line.
    - `help`: one line, shown by `nsjax --help`.
    - `add_arguments`: adds the command's arguments to its parser.
    - `run`: runs the command on the parsed arguments; returns the exit status.
    """

    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


class UsageError(Exception):
    """A combination of flags that argparse cannot check alone (exit status 2)."""


def int_in(low: int, high: int | None = None) -> Callable[[str], int]:
    """An argparse `type`: an integer in `[low, high]` (`[low, inf)` when `high` is None)."""
    bounds = f">= {low}" if high is None else f"in [{low}, {high}]"

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"must be an integer {bounds}, got {text!r}")
        return value

    return parse


def open_source(path: str, *, labeled: bool, classes: list[str] | None = None):
    """The source at `path`: a shard folder (`nsjax convert`'s), an image folder or an .npz;
    `classes`: a labeled image folder's class names in index order (default: its sorted
    sub-folders; ignored for the other kinds)."""
    from nsjax.data import ImageFolderSource, NpzSource, ShardSource
    from nsjax.data._shards import MANIFEST

    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such file or folder")
    if os.path.isfile(os.path.join(path, MANIFEST)):
        return ShardSource(path)
    if os.path.isdir(path):
        return ImageFolderSource(path, labeled=labeled, classes=classes)
    return NpzSource(path, labeled=labeled)


def open_test(path: str, labeled):
    """The test source at `path`, with the labeled image folder's class mapping when both are
    image folders (a test folder with fewer classes keeps the labeled set's indices; one with
    a class the labeled set lacks is refused by name)."""
    from nsjax.data._shards import MANIFEST

    classes = getattr(labeled, "classes", None)
    folder = os.path.isdir(path) and classes is not None and not os.path.isfile(
        os.path.join(path, MANIFEST))
    return open_source(path, labeled=True, classes=list(classes) if folder else None)


def setup_jax() -> None:
    """Before JAX starts: on a CPU, XLA's classic code generator (`--xla_cpu_use_fusion_emitters
    =false`: the same step speed at half the compile time of the default, 17 s instead of 42 s
    for the scaled-down B0's train step), unless `XLA_FLAGS` says otherwise; and JAX's
    persistent compilation cache in `$NSJAX_CACHE` (default `~/.cache/nsjax/jax`), so the
    generations of a run and a rerun compile each program once, unless the JAX cache is
    configured already (`JAX_COMPILATION_CACHE_DIR`). A multi-process run (every host runs
    the same command) calls `jax.distributed.initialize()`, which reads the cluster from the
    environment (Cloud TPU pods, SLURM, Open MPI; on plain hosts `JAX_COORDINATOR_ADDRESS`
    with `JAX_NUM_PROCESSES` and `JAX_PROCESS_ID`, which nsjax passes on), when
    `NSJAX_DISTRIBUTED=1` or `JAX_COORDINATOR_ADDRESS` is set."""
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_cpu_use_fusion_emitters" not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} --xla_cpu_use_fusion_emitters=false".strip()
    import jax

    if not jax.config.jax_compilation_cache_dir:
        cache = os.environ.get("NSJAX_CACHE",
                               os.path.join(os.path.expanduser("~"), ".cache", "nsjax", "jax"))
        jax.config.update("jax_compilation_cache_dir", cache)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
    if os.environ.get("NSJAX_DISTRIBUTED") == "1" or "JAX_COORDINATOR_ADDRESS" in os.environ:
        count, index = os.environ.get("JAX_NUM_PROCESSES"), os.environ.get("JAX_PROCESS_ID")
        jax.distributed.initialize(num_processes=None if count is None else int(count),
                                   process_id=None if index is None else int(index))
