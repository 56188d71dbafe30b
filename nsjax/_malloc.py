"""Transparent huge pages for XLA:CPU's buffers: programs (the `nsjax` command, `python -m
benchmarks`) re-run themselves under `GLIBC_TUNABLES=glibc.malloc.hugetlb=1` before JAX starts.

XLA:CPU allocates a step's buffers anew on every call and frees them after; glibc maps the
large ones fresh from the kernel, so every step faults its memory in again, one 4 KiB page
at a time. EfficientNet-B0's float32 train step at B=16 on the project's 2-core Xeon took
~370,000 page faults and 0.69-0.79 s of kernel time per step (against ~1.9 s of compute).
With `glibc.malloc.hugetlb=1` glibc asks for transparent huge pages (`madvise`) on the memory
it maps: ~1,200 faults and 0.23-0.27 s of kernel time, and a median step of 1.14-1.19 s
instead of 1.34-1.47 s (docs/benchmarks.md). The allocation policy is unchanged; where the
kernel has transparent huge pages off, or glibc is older than 2.35, the setting does nothing.
glibc reads it at process start only, hence the re-run. `NSJAX_MALLOC=system` skips it.
"""

from __future__ import annotations

import os
import platform
import sys
from collections.abc import Mapping, Sequence

TUNABLE = "glibc.malloc.hugetlb=1"
_BEFORE = "NSJAX_GLIBC_TUNABLES_BEFORE"  # GLIBC_TUNABLES as it was before the re-run


def tuned_environ(environ: Mapping[str, str], *, glibc: bool) -> dict[str, str] | None:
    """The environment to re-run a process in: `environ` with `TUNABLE` added to
    `GLIBC_TUNABLES`; None when there is nothing to do (not glibc, `NSJAX_MALLOC=system`, or
    a `GLIBC_TUNABLES` that sets `glibc.malloc.hugetlb` already: a re-run process, or the
    user's own choice, which is kept)."""
    if not glibc or environ.get("NSJAX_MALLOC") == "system":
        return None
    current = environ.get("GLIBC_TUNABLES", "")
    if any(item.split("=", 1)[0] == "glibc.malloc.hugetlb" for item in current.split(":")):
        return None
    tunables = f"{current}:{TUNABLE}" if current else TUNABLE
    return {**environ, "GLIBC_TUNABLES": tunables, _BEFORE: current}


def original_environ(environ: Mapping[str, str]) -> dict[str, str]:
    """`environ` as it was before `reexec`: for the peers' processes, which run under their
    own defaults (timm's CPU train step measured slower with huge pages)."""
    env = dict(environ)
    if _BEFORE in env:
        before = env.pop(_BEFORE)
        if before:
            env["GLIBC_TUNABLES"] = before
        else:
            env.pop("GLIBC_TUNABLES", None)
    return env


def on_glibc() -> bool:
    """Whether this Python runs on Linux with glibc, the C library that reads the setting."""
    return sys.platform == "linux" and platform.libc_ver()[0] == "glibc"


def reexec(argv: Sequence[str]) -> None:
    """Replace this process by `python *argv` under `tuned_environ`, when that gives an
    environment (Linux with glibc); else return. Call it first thing in a program's entry
    point, before JAX starts; never from a library function."""
    env = tuned_environ(os.environ, glibc=on_glibc())
    if env is not None:
        sys.stdout.flush()
        sys.stderr.flush()
        os.execve(sys.executable, [sys.executable, *argv], env)
