"""Run every registered microbenchmark on the backend JAX sees; print a table, write JSON.

    python -m benchmarks                 # all, default sizes
    python -m benchmarks --quick         # smaller sizes, fewer repeats
    python -m benchmarks --only balance  # names containing "balance"
    python -m benchmarks --large         # add the largest sizes (balance at 10^8)
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import json
import os
import pkgutil
import platform
import sys
import traceback

import jax

import benchmarks
from benchmarks import _harness


def import_benchmarks() -> None:
    """Import every `benchmarks/bench_*.py`; importing a module registers its benchmarks."""
    for info in pkgutil.iter_modules(benchmarks.__path__):
        if info.name.startswith("bench_"):
            importlib.import_module(f"benchmarks.{info.name}")


def machine() -> dict[str, object]:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            names = [ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    return {
        "host": platform.node(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "backend": jax.default_backend(),
        "devices": [str(d.device_kind) for d in jax.devices()],
        "jax": jax.__version__,
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "glibc_tunables": os.environ.get("GLIBC_TUNABLES", ""),  # nsjax._malloc
        "python": platform.python_version(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", default="", help="comma list of substrings of benchmark names")
    p.add_argument("--quick", action="store_true", help="smaller sizes and fewer repeats")
    p.add_argument("--large", action="store_true", help="also run the largest sizes")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out", default="benchmarks/results/latest.json", help="JSON output path")
    args = p.parse_args(argv)
    import_benchmarks()

    opts = _harness.Options(quick=args.quick, large=args.large,
                            repeats=2 if args.quick else args.repeats)
    wanted = [s for s in args.only.split(",") if s]
    names = [n for n in _harness.REGISTRY if not wanted or any(w in n for w in wanted)]
    if not names:
        print(f"--only {args.only!r} matches none of {sorted(_harness.REGISTRY)}", file=sys.stderr)
        return 2

    info = machine()
    print(f"# nsjax benchmarks on {info['backend']} ({', '.join(sorted(set(info['devices'])))}), "
          f"{info['cpu']}, jax {info['jax']}, {info['date']}", flush=True)
    figures: list[_harness.Figure] = []
    failed: dict[str, str] = {}
    for name in names:
        try:
            figs = _harness.REGISTRY[name](opts)
        except Exception:  # one failing benchmark must not hide the others
            failed[name] = traceback.format_exc(limit=3)
            print(f"[{name}] FAILED\n{failed[name]}", file=sys.stderr, flush=True)
            continue
        figures.extend(figs)
        for f in figs:
            print(f"[{name}] {f.name}: {f.seconds * 1e3:.2f} ms"
                  + ("" if f.speedup is None else f", {f.speedup:.2f}x vs {f.peer}"), flush=True)

    print()
    print(_harness.format_table(figures))
    out = {"machine": info, "options": vars(args), "figures": [f.to_json() for f in figures],
           "failed": failed}
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    tmp = args.out + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(out, fh, indent=2)
    os.replace(tmp, args.out)
    print(f"\nwrote {args.out}")
    return 1 if failed else 0
