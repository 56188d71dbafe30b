"""What the accelerator-against-CPU checks share (`check_randaugment`, `check_fixres`): finding
the accelerator and their command line."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable

import jax


def accelerator() -> jax.Device | None:
    """The default device when it is a GPU or TPU, else None."""
    device = jax.devices()[0]
    return device if device.platform in ("gpu", "tpu") else None


def main(argv: list[str] | None, *, description: str, check: Callable[[int], list[dict]],
         describe: Callable[[dict], str], passes: Callable[[dict], bool],
         batch: int) -> int:  # fmt: skip
    """`--batch` (default `batch`), `--out` and `--require-accelerator`; prints `describe(row)`
    per row of `check(batch)`. Exits 1 when a row fails `passes`, 2 when an accelerator is
    required and the default device is a CPU, else 0."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--out", help="write the rows as JSON here")
    parser.add_argument("--batch", type=int, default=batch)
    parser.add_argument("--require-accelerator", action="store_true",
                        help="exit 2 unless the default device is a GPU or TPU")
    args = parser.parse_args(argv)
    if args.require_accelerator and accelerator() is None:
        print(f"NO ACCELERATOR: the default device is {jax.devices()[0]}", file=sys.stderr)
        return 2
    rows = check(args.batch)
    for r in rows:
        print(describe(r))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(rows, f, indent=1)
    bad = [f"{r['case']} {r.get('dtype', '')}".strip() for r in rows if not passes(r)]
    if bad:
        print(f"DIFFER from the CPU: {', '.join(bad)}", file=sys.stderr)
        return 1
    print(f"all {len(rows)} cases pass")
    return 0
