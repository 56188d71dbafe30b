"""`nsjax iterate` (the Noisy Student loop on your data) and `nsjax demo` (the same loop on the
digits shipped with nsjax): a plan line first, progress bars on a terminal, the table and the
report at the end."""

from __future__ import annotations

import argparse
import datetime
import os
import time

from nsjax.cli._common import Command, UsageError, int_in, open_source, open_test, setup_jax
from nsjax.cli._configs import (
    add_config_arguments,
    iterate_config,
    parse_sets,
    read_json,
    to_fields,
)


def _models(text: str) -> tuple[str, ...]:
    from nsjax.models import VARIANTS

    models = tuple(m.strip() for m in text.split(","))
    bad = [m for m in models if m not in VARIANTS]
    if bad or len(models) < 1:
        raise argparse.ArgumentTypeError(f"must be comma-separated model names from "
                                         f"{sorted(VARIANTS)}, got {text!r}")
    return models


def _add_loop_arguments(parser: argparse.ArgumentParser, *, default_models: str) -> None:
    parser.add_argument("--models", type=_models, metavar="M0,M1,...",
                        help="the model of each generation, generation 0 the supervised "
                        "teacher, e.g. b0,b0,b1 or the paper's b7,l0,l1,l2,l2 (default "
                        f"{default_models}; on a CPU each scaled down, see the plan line); "
                        "not with --config")
    add_config_arguments(parser, "IterateConfig")


def _iterate_arguments(parser: argparse.ArgumentParser) -> None:
    labeled = ("an image folder (one sub-folder per class), an .npz (images uint8 [N, H, W] or "
               "[N, H, W, 3], labels [N]) or a shard folder (nsjax convert)")
    parser.add_argument("--labeled", required=True, metavar="PATH",
                        help=f"the labeled images: {labeled}")
    parser.add_argument("--unlabeled", required=True, metavar="PATH",
                        help="the unlabeled images: an image folder (any tree), an .npz "
                        "(images) or a shard folder; labels, if any, are ignored")
    parser.add_argument("--test", required=True, metavar="PATH",
                        help=f"the held-out labeled images every generation is scored on: "
                        f"{labeled}; a folder takes the labeled folder's class order")
    parser.add_argument("--out", required=True, metavar="DIR",
                        help="the run's folder; rerun the same command to resume a stopped run")
    _add_loop_arguments(parser, default_models="b0,b0,b1")


def _loop_config(args: argparse.Namespace, labeled, default_models: tuple[str, ...]):
    """The IterateConfig of the flags, and the data facts the plan line states."""
    from nsjax.loop._auto import data_facts, iterate_defaults

    facts = data_facts(labeled)
    if args.config is not None:
        if args.models is not None:
            raise UsageError("--models sets the generations of the defaults; with --config, set "
                             "them in the file (\"generations\")")
        base = read_json(args.config)
    else:
        from nsjax.loop import IterateConfig

        defaults = iterate_defaults(facts, args.models or default_models)
        base = to_fields(IterateConfig(**defaults))
    return iterate_config(base, parse_sets(args.sets)), facts


def run_loop(config, facts, labeled, unlabeled, test, out: str) -> int:
    """Print the plan, run (or resume) `iterate`, print the table and where the report is."""
    import jax

    from nsjax.loop import format_table, iterate
    from nsjax.loop._auto import plan_line

    plan = plan_line(config, facts, jax.device_count())
    print(plan, flush=True)
    start = time.perf_counter()
    summary = iterate(config, labeled, unlabeled, test, out_dir=out, plan=plan)
    print(format_table(summary))
    print(f"Done in {time.perf_counter() - start:.0f} s. Report: {os.path.join(out, 'report.md')}"
          f", {os.path.join(out, 'accuracy.png')}; every stage is in {out}.")
    return 0


def _iterate(args: argparse.Namespace) -> int:
    setup_jax()
    labeled = open_source(args.labeled, labeled=True)
    unlabeled = open_source(args.unlabeled, labeled=False)
    test = open_test(args.test, labeled)
    from nsjax.loop._auto import DEFAULT_MODELS

    config, facts = _loop_config(args, labeled, default_models=DEFAULT_MODELS)
    return run_loop(config, facts, labeled, unlabeled, test, args.out)


def _demo_arguments(parser: argparse.ArgumentParser) -> None:
    from nsjax.loop._demo import DEMO_LABELED_PER_CLASS, DEMO_TEST

    parser.add_argument("--out", metavar="DIR",
                        help="the run's folder (default: a new nsjax-demo-DATE-TIME folder in "
                        "the working directory); rerun with the same --out to resume")
    parser.add_argument("--seed", type=int_in(0), default=0,
                        help="draws the data split and seeds the run (default 0)")
    parser.add_argument("--labeled-per-class", type=int_in(1, 100),
                        default=DEMO_LABELED_PER_CLASS, metavar="N",
                        help=f"labeled digits per class (default {DEMO_LABELED_PER_CLASS}); the "
                        "other ~1,300 of the 1,797 are the unlabeled set")
    parser.add_argument("--test", type=int_in(10, 1000), default=DEMO_TEST, metavar="N",
                        help=f"held-out digits (default {DEMO_TEST})")
    _add_loop_arguments(parser, default_models="b0,b0,b0")


def _demo(args: argparse.Namespace) -> int:
    setup_jax()
    from nsjax.loop._auto import data_facts
    from nsjax.loop._demo import DEMO_MODELS, demo_config, digits_splits

    out = args.out or f"nsjax-demo-{datetime.datetime.now():%Y%m%d-%H%M%S}"
    paths = digits_splits(os.path.join(out, "data"), seed=args.seed,
                          labeled_per_class=args.labeled_per_class, test=args.test)
    labeled = open_source(paths["labeled"], labeled=True)
    unlabeled = open_source(paths["unlabeled"], labeled=False)
    test = open_source(paths["test"], labeled=True)
    print(f"nsjax demo: {len(labeled)} labeled, {len(unlabeled)} unlabeled and {len(test)} "
          f"held-out real handwritten digits (8x8 grey, 10 classes) in {paths['labeled']}, ...")
    if args.config is not None:
        config, facts = _loop_config(args, labeled, default_models=DEMO_MODELS)
    else:
        base = demo_config(labeled, seed=args.seed, models=args.models or DEMO_MODELS)
        config = iterate_config(to_fields(base), parse_sets(args.sets))
        facts = data_facts(labeled)
    return run_loop(config, facts, labeled, unlabeled, test, os.path.join(out, "run"))


LOOP_COMMANDS: tuple[Command, ...] = (
    Command("demo", "the whole Noisy Student loop on real handwritten digits shipped with "
            "nsjax: a teacher and two noisy students, on a CPU in minutes",
            _demo_arguments, _demo),
    Command("iterate", "the Noisy Student loop on your data: a supervised teacher, then "
            "label -> balance -> noisy student per generation (resumable)",
            _iterate_arguments, _iterate),
)
