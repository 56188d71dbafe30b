"""`nsjax convert`, `nsjax label`, `nsjax balance`: the data and pseudo-label commands."""

from __future__ import annotations

import argparse
import json

import os
import time
from typing import Any

from nsjax.cli._common import Command, UsageError, int_in, open_source, setup_jax


# --------------------------------------------------------------------------- convert


def _convert_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("src", help="an image folder (one sub-folder per class, or any tree of "
                        "images with --unlabeled) or an .npz file (images, labels, ids)")
    parser.add_argument("dst", help="the shard folder to write: new, empty, or an interrupted "
                        "conversion of the same source (rerun the same command to resume)")
    parser.add_argument("--unlabeled", action="store_true",
                        help="the images have no labels (stored with label -1)")
    parser.add_argument("--short-side", type=int_in(1), metavar="S",
                        help="shrink images whose short side exceeds S to a short side of S "
                        "(aspect kept, re-encoded as JPEG); default: keep every size")
    parser.add_argument("--records-per-shard", type=int_in(1), default=1024, metavar="N",
                        help="source images per shard file (default 1024)")
    parser.add_argument("--quality", type=int_in(1, 100), default=95, metavar="Q",
                        help="JPEG quality of re-encoded images (default 95)")
    parser.add_argument("--workers", type=int_in(0), default=0, metavar="W",
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
    from nsjax.data._shards import MANIFEST

    if args.classes is not None and (args.unlabeled or not os.path.isdir(args.src)
                                     or os.path.isfile(os.path.join(args.src, MANIFEST))):
        raise UsageError("--classes is for labeled image folders (not with --unlabeled, an "
                         ".npz or shards)")
    return open_source(args.src, labeled=not args.unlabeled,
                       classes=None if args.classes is None else _load_classes(args.classes))


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
    parser.add_argument("--top-k", type=int_in(1), default=10, metavar="K",
                        help="log-probabilities kept per image (default 10)")
    parser.add_argument("--batch-size", type=int_in(1), default=256, metavar="B",
                        help="images per teacher call on this process (default 256)")
    parser.add_argument("--records-per-shard", type=int_in(1), metavar="N",
                        help="images per store file (default: a shard folder's own shards, "
                        "else 10000)")
    parser.add_argument("--crop-fraction", type=float, metavar="F",
                        help="the centre crop's side over the image's short side (default: the "
                        "teacher's evaluation crop, 0.875, or 1 for a 32-px small-image model)")
    parser.add_argument("--threads", type=int_in(0), default=8, metavar="T",
                        help="decode threads (default 8)")


def _label(args: argparse.Namespace) -> int:
    setup_jax()
    from nsjax.loop._evaluate import eval_crop_fraction, trained_config
    from nsjax.pseudo import label
    from nsjax.train import load_teacher

    source = open_source(args.source, labeled=False)
    config = trained_config(args.teacher)
    teacher = load_teacher(args.teacher)
    start = time.perf_counter()
    job = label(teacher, source, args.out, top_k=args.top_k, batch_size=args.batch_size,
                records_per_shard=args.records_per_shard,
                crop_fraction=args.crop_fraction or eval_crop_fraction(config),
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
    parser.add_argument("--per-class", type=int_in(1), required=True, metavar="N",
                        help="rows wanted per predicted class (the ImageNet recipe: 130000)")
    parser.add_argument("--min-confidence", type=float, default=0.3, metavar="P",
                        help="no image below this confidence is kept (default 0.3, the paper's)")
    parser.add_argument("--mode", choices=("topk", "official"), default="topk",
                        help="topk: the paper's rule (default); official: filter_unlabel.py's")
    parser.add_argument("--seed", type=int_in(0), default=0,
                        help="seeds every random choice (default 0)")


def _balance(args: argparse.Namespace) -> int:
    from nsjax.pseudo import balance, read_labels, save_balance

    result = balance(read_labels(args.store), per_class=args.per_class,
                     min_confidence=args.min_confidence, mode=args.mode, seed=args.seed)
    save_balance(args.out, result)
    print(result.summary())
    return 0


DATA_COMMANDS: tuple[Command, ...] = (
    Command("convert", "convert an image folder or .npz into ArrayRecord shards (resumable)",
            _convert_arguments, _convert),
    Command("label", "a teacher's pseudo-labels for unlabeled images, as a compact store "
            "(resumable, per process)", _label_arguments, _label),
    Command("balance", "the balanced selection of a pseudo-label store (per predicted class)",
            _balance_arguments, _balance),
)
