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


def open_source(path: str, *, labeled: bool, classes: str | None = None):
    """The source at `path`: a shard folder (`nsjax convert`'s), an image folder or an .npz."""
    from nsjax.data import ImageFolderSource, NpzSource, ShardSource
    from nsjax.data._shards import MANIFEST

    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such file or folder")
    shards = os.path.isfile(os.path.join(path, MANIFEST))
    if classes is not None and (not labeled or not os.path.isdir(path) or shards):
        raise UsageError("--classes is for labeled image folders (not with --unlabeled, an "
                         ".npz or shards)")
    if shards:
        return ShardSource(path)
    if os.path.isdir(path):
        names = None if classes is None else _load_classes(classes)
        return ImageFolderSource(path, labeled=labeled, classes=names)
    return NpzSource(path, labeled=labeled)


def _convert_source(args: argparse.Namespace):
    return open_source(args.src, labeled=not args.unlabeled, classes=args.classes)


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


# --------------------------------------------------------------------------- label


def _label_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("teacher", help="a teacher file (teacher.eqx of a training run)")
    parser.add_argument("source", help="the unlabeled images: an image folder (any tree), an "
                        ".npz (images) or a shard folder (nsjax convert); labels are ignored")
    parser.add_argument("out", help="the store's folder; rerun the same command to resume")
    parser.add_argument("--top-k", type=_int_in(1), default=10, metavar="K",
                        help="log-probabilities kept per image (default 10)")
    parser.add_argument("--batch-size", type=_int_in(1), default=256, metavar="B",
                        help="images per teacher call on this process (default 256)")
    parser.add_argument("--records-per-shard", type=_int_in(1), metavar="N",
                        help="images per store file (default: a shard folder's own shards, "
                        "else 10000)")
    parser.add_argument("--crop-fraction", type=float, default=0.875, metavar="F",
                        help="the centre crop's side over the image's short side (default "
                        "0.875)")
    parser.add_argument("--threads", type=_int_in(0), default=8, metavar="T",
                        help="decode threads (default 8)")


def _label(args: argparse.Namespace) -> int:
    from nsjax.pseudo import label
    from nsjax.train import TrainConfig, load_teacher, teacher_metadata

    source = open_source(args.source, labeled=False)
    trained = teacher_metadata(args.teacher).get("metadata", {}).get("train_config")
    config = TrainConfig() if trained is None else TrainConfig.from_json(json.dumps(trained))
    teacher = load_teacher(args.teacher)
    start = time.perf_counter()
    job = label(teacher, source, args.out, top_k=args.top_k, batch_size=args.batch_size,
                records_per_shard=args.records_per_shard, crop_fraction=args.crop_fraction,
                mean=config.mean, std=config.std, compute_dtype=config.compute_dtype,
                threads=args.threads, progress=True)  # fmt: skip
    skipped = "; ".join(f"{s['id']} ({s['reason']})" for s in job["skipped"][:3])
    print(f"Labelled {len(job['done'])} of {len(job['shards'])} shards into {args.out} in "
          f"{time.perf_counter() - start:.1f} s (the others were done before or belong to other "
          f"processes); skipped {len(job['skipped'])} images{': ' + skipped if skipped else ''}. "
          f"Read with nsjax.pseudo.read_labels({args.out!r}).")
    return 0


# --------------------------------------------------------------------------- balance


def _balance_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("store", help="a pseudo-label store (nsjax label's output folder)")
    parser.add_argument("out", help="the folder to write balance.npz and balance.json into")
    parser.add_argument("--per-class", type=_int_in(1), required=True, metavar="N",
                        help="rows wanted per predicted class (the ImageNet recipe: 130000)")
    parser.add_argument("--min-confidence", type=float, default=0.3, metavar="P",
                        help="no image below this confidence is kept (default 0.3, the paper's)")
    parser.add_argument("--mode", choices=("topk", "official"), default="topk",
                        help="topk: the paper's rule (default); official: filter_unlabel.py's")
    parser.add_argument("--seed", type=_int_in(0), default=0,
                        help="seeds every random choice (default 0)")


def _balance(args: argparse.Namespace) -> int:
    from nsjax.pseudo import balance, read_labels, save_balance

    result = balance(read_labels(args.store), per_class=args.per_class,
                     min_confidence=args.min_confidence, mode=args.mode, seed=args.seed)
    save_balance(args.out, result)
    print(result.summary())
    return 0


COMMANDS: tuple[Command, ...] = (
    Command("convert", "convert an image folder or .npz into ArrayRecord shards (resumable)",
            _convert_arguments, _convert),
    Command("label", "a teacher's pseudo-labels for unlabeled images, as a compact store "
            "(resumable, per process)", _label_arguments, _label),
    Command("balance", "the balanced selection of a pseudo-label store (per predicted class)",
            _balance_arguments, _balance),
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
