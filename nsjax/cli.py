"""The `nsjax` command line: `nsjax COMMAND [ARGS]`, one sub-command per task.

Each command is a `Command` in `COMMANDS`: its name, a one-line help, a function adding its
arguments to an argparse parser, and a function running it on the parsed arguments that returns
the exit status. Errors the user can fix are reported without a traceback: bad flags exit with
status 2 (argparse, or a `UsageError` for combinations argparse cannot check), a bad input (a
missing file, an empty folder, labels out of range: `ValueError` / `OSError`) prints its message
on stderr and returns 1, Ctrl-C returns 130. Commands import what they need when they run, so
`nsjax --help` answers at once.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["COMMANDS", "Command", "UsageError", "main"]


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


def _int_in(low: int, high: int | None = None) -> Callable[[str], int]:
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


# --------------------------------------------------------------------------- convert


def _convert_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("src", help="an image folder (one sub-folder per class, or any tree of "
                        "images with --unlabeled) or an .npz file (images, labels, ids)")
    parser.add_argument("dst", help="the shard folder to write: new, empty, or an interrupted "
                        "conversion of the same source (rerun the same command to resume)")
    parser.add_argument("--unlabeled", action="store_true",
                        help="the images have no labels (stored with label -1)")
    parser.add_argument("--short-side", type=_int_in(1), metavar="S",
                        help="shrink images whose short side exceeds S to a short side of S "
                        "(aspect kept, re-encoded as JPEG); default: keep every size")
    parser.add_argument("--records-per-shard", type=_int_in(1), default=1024, metavar="N",
                        help="source images per shard file (default 1024)")
    parser.add_argument("--quality", type=_int_in(1, 100), default=95, metavar="Q",
                        help="JPEG quality of re-encoded images (default 95)")
    parser.add_argument("--workers", type=_int_in(0), default=0, metavar="W",
                        help="write shards in W processes (default 0: in this one)")
    parser.add_argument("--classes", metavar="FILE",
                        help="a JSON list of class names in index order (labeled folders): "
                        "the mapping of an earlier conversion or run, to keep labels the same")


def _load_classes(path: str) -> list[str]:
    with open(path) as f:
        try:
            classes = json.load(f)
        except ValueError as e:
            raise ValueError(f"{path}: not JSON ({e})") from None
    if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
        raise ValueError(f"{path} must hold a JSON list of class names, got "
                         f"{type(classes).__name__}")
    return classes


def _convert_source(args: argparse.Namespace):
    from nsjax.data._sources import ImageFolderSource, NpzSource

    if not os.path.exists(args.src):
        raise FileNotFoundError(f"{args.src}: no such file or folder")
    if args.classes is not None and (args.unlabeled or not os.path.isdir(args.src)):
        raise UsageError("--classes is for labeled image folders (not with --unlabeled or an "
                         ".npz)")
    if os.path.isdir(args.src):
        classes = None if args.classes is None else _load_classes(args.classes)
        return ImageFolderSource(args.src, labeled=not args.unlabeled, classes=classes)
    return NpzSource(args.src, labeled=not args.unlabeled)


def _convert_summary(manifest: dict[str, Any], dst: str, seconds: float, wrote: bool) -> str:
    """One paragraph: what was written, skipped, converted and how it is stored."""
    if wrote:
        rate = manifest["records"] / max(seconds, 1e-9)
        parts = [f"Wrote {manifest['records']} of {manifest['source']['records']} records in "
                 f"{len(manifest['shards'])} shards ({manifest['bytes'] / 1e6:.1f} MB) to {dst} "
                 f"in {seconds:.1f} s ({rate:.0f} records/s)."]  # fmt: skip
    else:
        parts = [f"{dst} already holds this conversion ({manifest['records']} records); "
                 f"nothing written."]
    skipped = manifest["skipped"]
    if skipped:
        listed = "; ".join(f"{s['id']} ({s['reason']})" for s in skipped[:3])
        parts.append(f"Skipped {len(skipped)}: {listed}{'; ...' if len(skipped) > 3 else ''}.")
    else:
        parts.append("Skipped none.")
    converted = manifest["converted"]
    if converted:
        listed = ", ".join(f"{n} {note}" for note, n in converted.items())
        parts.append(f"Converted {sum(converted.values())}: {listed}.")
    stored = ", ".join(f"{n} {kind}" for kind, n in manifest["encodings"].items())
    parts.append(f"Stored {stored}. Read with nsjax.data.ShardSource({dst!r}).")
    return " ".join(parts)


def _convert(args: argparse.Namespace) -> int:
    from nsjax.data._shards import MANIFEST, write_shards

    source = _convert_source(args)
    wrote = not os.path.isfile(os.path.join(args.dst, MANIFEST))
    start = time.perf_counter()
    manifest = write_shards(source, args.dst, records_per_shard=args.records_per_shard,
                            short_side=args.short_side, quality=args.quality,
                            workers=args.workers, progress=True)
    print(_convert_summary(manifest, args.dst, time.perf_counter() - start, wrote))
    return 0


COMMANDS: tuple[Command, ...] = (
    Command("convert", "convert an image folder or .npz into ArrayRecord shards (resumable)",
            _convert_arguments, _convert),
)


# --------------------------------------------------------------------------- main


def _parsers() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    parser = argparse.ArgumentParser(prog="nsjax", description="Noisy Student self-training "
                                     "in JAX. `nsjax COMMAND --help` describes a command.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    parsers = {}
    for command in COMMANDS:
        sub = commands.add_parser(command.name, help=command.help, description=command.help)
        command.add_arguments(sub)
        parsers[command.name] = sub
    return parser, parsers


def main(argv: Sequence[str] | None = None) -> int:
    """Run `nsjax` with `argv` (default: `sys.argv[1:]`).

    **Arguments:**

    - `argv`: the command-line arguments after the program name.

    **Returns:** the exit status (0 on success, 1 for a bad input, 130 on Ctrl-C); bad flags
    raise `SystemExit(2)` with argparse's message.
    """
    parser, parsers = _parsers()
    args = parser.parse_args(argv)
    command = next(c for c in COMMANDS if c.name == args.command)
    try:
        return command.run(args)
    except UsageError as e:
        parsers[command.name].error(str(e))
    except (ValueError, OSError) as e:
        print(f"nsjax {command.name}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"nsjax {command.name}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
