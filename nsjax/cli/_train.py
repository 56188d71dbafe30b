"""`nsjax train` (one training run: a supervised teacher, or a student on pseudo-labels or
with an online teacher) and `nsjax evaluate` (a teacher file's accuracy on a labeled set, or
with `--robustness` teachers' accuracy under corruptions and attacks)."""

from __future__ import annotations

import argparse
import json
import os
import time

from nsjax.cli._common import Command, UsageError, int_in, open_source, open_test, setup_jax
from nsjax.cli._configs import add_config_arguments, parse_sets, read_json, to_fields


def _source_help(what: str) -> str:
    return (f"{what}: an image folder, an .npz or a shard folder (nsjax convert)")


def _train_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--labeled", required=True, metavar="PATH",
                        help=_source_help("the labeled images"))
    parser.add_argument("--test", metavar="PATH",
                        help=_source_help("held-out labeled images, scored at the end") +
                        "; default: none")
    parser.add_argument("--out", required=True, metavar="DIR",
                        help="the run's folder (config.json, metrics.jsonl, checkpoints/, "
                        "teacher.eqx, summary.json); rerun the same command to resume")
    parser.add_argument("--unlabeled", metavar="PATH",
                        help=_source_help("unlabeled images for a student") + ", with "
                        "--pseudo (offline) or --teacher (online); default: none (a "
                        "supervised run, e.g. generation 0's teacher)")
    parser.add_argument("--pseudo", metavar="STORE",
                        help="a pseudo-label store of --unlabeled (nsjax label's output)")
    parser.add_argument("--balance", metavar="DIR",
                        help="the balanced rows of --pseudo (nsjax balance's output); "
                        "default: every row of the store")
    parser.add_argument("--teacher", metavar="FILE",
                        help="a teacher file (teacher.eqx) run inside each step on the clean "
                        "view of --unlabeled (the official online mode)")
    parser.add_argument("--model", metavar="NAME",
                        help="the EfficientNet variant (b0 ... b7, l0, l1, l2; default b0, "
                        "scaled down on a CPU as the plan line says); not with --config")
    add_config_arguments(parser, "TrainConfig")


def _train_config(args: argparse.Namespace, labeled, student: bool):
    from nsjax.cli._configs import train_config
    from nsjax.loop._auto import data_facts, train_defaults
    from nsjax.train import TrainConfig

    facts = data_facts(labeled)
    if args.config is not None:
        if args.model is not None:
            raise UsageError("--model with --config: set \"model\" in the file")
        base = read_json(args.config)
    else:
        base = to_fields(TrainConfig(**train_defaults(facts, args.model or "b0",
                                                      student=student)))  # fmt: skip
    return train_config(base, parse_sets(args.sets)), facts


def _train(args: argparse.Namespace) -> int:
    modes = [name for name in ("pseudo", "teacher") if getattr(args, name) is not None]
    if (args.unlabeled is None) != (not modes) or len(modes) > 1:
        raise UsageError("a student needs --unlabeled with one of --pseudo (offline) and "
                         "--teacher (online); a supervised run none of the three")
    if args.balance is not None and args.pseudo is None:
        raise UsageError("--balance selects rows of --pseudo")
    setup_jax()
    import jax

    from nsjax.data import fit_inputs
    from nsjax.loop._auto import plan_line
    from nsjax.train import fit

    labeled = open_source(args.labeled, labeled=True)
    test = None if args.test is None else open_test(args.test, labeled)
    config, facts = _train_config(args, labeled, student=args.unlabeled is not None)
    teacher, unlabeled, targets = None, None, None
    if args.unlabeled is not None:
        unlabeled = open_source(args.unlabeled, labeled=False)
        if args.teacher is not None:
            teacher = _checked_teacher(args.teacher, config.num_classes)
        else:
            unlabeled, targets = _pseudo_targets(args, unlabeled, config)
    inputs = fit_inputs(config, labeled, unlabeled, test, targets=targets,
                        teacher_resolution=None if teacher is None else teacher.resolution)
    print(plan_line(config, facts, jax.device_count()), flush=True)
    summary = fit(config, inputs=inputs, teacher=teacher, out_dir=args.out)[1]
    scores = (f"; test top-1 {summary['test_top1']:.2%}, top-5 {summary['test_top5']:.2%}"
              if "test_top1" in summary else "")
    print(f"Trained {summary['steps']} steps in {summary['train_seconds']:.0f} s{scores}. "
          f"Teacher: {os.path.join(args.out, 'teacher.eqx')}")
    return 0


def _pseudo_targets(args: argparse.Namespace, unlabeled, config):
    """The balanced (or all) rows of the store as a Subset of `unlabeled`, and their targets."""
    from nsjax.data import Subset
    from nsjax.pseudo import load_balance, read_labels

    store = read_labels(args.pseudo)
    if store.num_classes != config.num_classes:
        raise ValueError(f"--pseudo {args.pseudo} holds {store.num_classes} classes, the config "
                         f"num_classes {config.num_classes}")
    if int(store.index.max(initial=-1)) >= len(unlabeled):
        raise ValueError(f"--pseudo {args.pseudo} labels records up to index "
                         f"{int(store.index.max())}, but --unlabeled holds {len(unlabeled)}: "
                         "a store of another source")
    rows = None if args.balance is None else load_balance(args.balance)
    targets = store.targets(rows, temperature=config.teacher_temperature,
                            hard=config.hard_targets)  # fmt: skip
    index = store.index if rows is None else store.index[rows]
    return Subset(unlabeled, index), targets


def _checked_teacher(path: str, num_classes: int):
    """The teacher in `path`, refused when its class count is not `num_classes`."""
    from nsjax.train import load_teacher

    teacher = load_teacher(path)
    if teacher.num_classes != num_classes:
        raise ValueError(f"teacher {path} has {teacher.num_classes} classes, the data and "
                         f"config {num_classes}")
    return teacher


def _finetune_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("teacher", help="the trained model: a teacher file (teacher.eqx of a "
                        "run, whose config.json it was trained with is read from its metadata)")
    parser.add_argument("--labeled", required=True, metavar="PATH",
                        help=_source_help("the labeled images (unaugmented, centre-cropped)"))
    parser.add_argument("--test", metavar="PATH",
                        help=_source_help("held-out labeled images, scored at the fine-tune "
                                          "resolution") + "; default: none")
    parser.add_argument("--out", required=True, metavar="DIR",
                        help="the fine-tune's run folder (its teacher.eqx is the fine-tuned "
                        "model); rerun the same command to resume")
    parser.add_argument("--resolution", type=int_in(32), metavar="R",
                        help="the fine-tune's image side (default: the model's test resolution)")
    parser.add_argument("--epochs", type=float, default=1.5, metavar="E",
                        help="labeled epochs of the fine-tune (default 1.5, the paper's)")
    parser.add_argument("--freeze-blocks", type=int_in(0), metavar="K",
                        help="freeze the stem and the first K MBConv blocks (default: half the "
                        "model's blocks, rounded down)")
    parser.add_argument("--learning-rate", type=float, metavar="LR",
                        help="base learning rate per 256 labeled images (default: the rate of "
                        "the teacher's last update, at least 1/100 of its peak)")


def _finetune(args: argparse.Namespace) -> int:
    setup_jax()
    from nsjax.loop import finetune
    from nsjax.loop._evaluate import trained_config

    labeled = open_source(args.labeled, labeled=True)
    test = None if args.test is None else open_test(args.test, labeled)
    summary = finetune(args.teacher, trained_config(args.teacher), labeled, test,
                       out_dir=args.out, resolution=args.resolution, epochs=args.epochs,
                       freeze_blocks=args.freeze_blocks,
                       learning_rate=args.learning_rate)[1]  # fmt: skip
    scores = (f"; test top-1 {summary['test_top1']:.2%}, top-5 {summary['test_top5']:.2%}"
              if "test_top1" in summary else "")
    print(f"Fine-tuned {summary['steps']} steps in {summary['train_seconds']:.0f} s{scores}. "
          f"Model: {os.path.join(args.out, 'teacher.eqx')}")
    return 0


def _evaluate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", nargs="+", metavar="PATH",
                        help="a teacher file (teacher.eqx of a run), then the labeled test "
                        "images unless --data names them; with --robustness, one or more "
                        "teacher files")
    parser.add_argument("--data", metavar="PATH", help=_source_help("the labeled test images"))
    parser.add_argument("--resolution", type=int_in(32), metavar="R",
                        help="the image side it is evaluated at (centre crop, then resize); "
                        "default: the model's test resolution")
    parser.add_argument("--batch-size", type=int_in(1), default=256, metavar="B",
                        help="images per call (default 256)")
    robust = parser.add_argument_group(
        "robustness", "accuracy under the 19 ImageNet-C corruptions at severities 1-5 and "
        "under FGSM / PGD (nsjax.robustness), as a table, robustness.json and robustness.png")
    robust.add_argument("--robustness", action="store_true",
                        help="evaluate robustness instead of clean top-1 / top-5")
    robust.add_argument("--out", default="robustness", metavar="DIR",
                        help="where the table, JSON and plot go (default ./robustness)")
    robust.add_argument("--corruptions", metavar="NAMES",
                        help="comma-separated corruption names (default: all 19), or 'none'")
    robust.add_argument("--severities", default="1,2,3,4,5", metavar="S",
                        help="comma-separated severities in 1..5 (default all)")
    robust.add_argument("--epsilons", default="1,2,4,8,16", metavar="EPS",
                        help="comma-separated FGSM and PGD strengths in 0-255 pixel units "
                        "(default 1,2,4,8,16), or 'none'")
    robust.add_argument("--pgd-steps", type=int_in(1), default=10, metavar="N",
                        help="PGD iterations (default 10, the paper's)")
    robust.add_argument("--max-images", type=int_in(1), metavar="N",
                        help="score only the first N test images (default all)")
    robust.add_argument("--seed", type=int, default=0, help="the corruptions' seed (default 0)")


def _listed(text: str, convert, flag: str) -> list:
    """A comma-separated flag value as a list ('none': empty)."""
    if text.strip().lower() == "none":
        return []
    try:
        return [convert(v) for v in text.split(",") if v.strip()]
    except ValueError as e:
        raise UsageError(f"{flag}: {e}") from e


def _evaluate(args: argparse.Namespace) -> int:
    if args.data is None and len(args.files) != 2:
        raise UsageError(f"evaluate takes a teacher file and the test images (or --data PATH), "
                         f"got {len(args.files)} paths")
    if args.data is not None and len(args.files) > 1 and not args.robustness:
        raise UsageError("several teacher files need --robustness")
    teachers, data = ((args.files, args.data) if args.data is not None
                      else (args.files[:1], args.files[1]))
    setup_jax()
    if args.robustness:
        return _evaluate_robustness(args, teachers, data)
    from nsjax.loop._evaluate import evaluate_teacher

    test = open_source(data, labeled=True)
    start = time.perf_counter()
    scores = evaluate_teacher(teachers[0], test, resolution=args.resolution,
                              batch_size=args.batch_size)
    print(json.dumps(scores))
    print(f"{teachers[0]} on {data}: top-1 {scores['top1']:.2%}, top-5 "
          f"{scores['top5']:.2%} over {scores['count']} images at {scores['resolution']} px "
          f"({time.perf_counter() - start:.1f} s)")
    return 0


def _evaluate_robustness(args: argparse.Namespace, teachers: list[str], data: str) -> int:
    import jax

    from nsjax.loop._robustness import evaluate_robustness, run_labels, write_robustness_report
    from nsjax.robustness import CORRUPTIONS

    corruptions = (list(CORRUPTIONS) if args.corruptions is None
                   else _listed(args.corruptions, str.strip, "--corruptions"))
    unknown = [c for c in corruptions if c not in CORRUPTIONS]
    if unknown:
        raise UsageError(f"--corruptions: unknown {unknown}; valid: {', '.join(CORRUPTIONS)}")
    severities = _listed(args.severities, int, "--severities")
    if not severities or any(s not in range(1, 6) for s in severities):
        raise UsageError(f"--severities must be integers in 1..5, got {args.severities!r}")
    epsilons = _listed(args.epsilons, float, "--epsilons")
    if any(e < 0 for e in epsilons):
        raise UsageError(f"--epsilons must be >= 0, got {args.epsilons!r}")
    test = open_source(data, labeled=True)
    results = {}
    for label, teacher in zip(run_labels(teachers), teachers):
        start = time.perf_counter()
        results[label] = evaluate_robustness(
            teacher, test, jax.random.key(args.seed), resolution=args.resolution,
            batch_size=args.batch_size, max_images=args.max_images, corruptions=corruptions,
            severities=severities, fgsm_epsilons=epsilons, pgd_epsilons=epsilons,
            pgd_steps=args.pgd_steps)
        print(f"{teacher}: clean top-1 {results[label]['clean']:.2%} over "
              f"{results[label]['count']} images ({time.perf_counter() - start:.0f} s)")
    print(write_robustness_report(args.out, results))
    print(f"Wrote {os.path.join(args.out, 'robustness.md')}, robustness.json and "
          f"robustness.png")
    return 0


TRAIN_COMMANDS: tuple[Command, ...] = (
    Command("train", "one training run: a supervised teacher, or a noisy student on "
            "pseudo-labels (offline) or with a teacher in the step (online); resumable",
            _train_arguments, _train),
    Command("finetune", "the FixRes stage: fine-tune a trained model at its test resolution "
            "on unaugmented labeled images, shallow blocks frozen (resumable)",
            _finetune_arguments, _finetune),
    Command("evaluate", "a teacher file's top-1 / top-5 accuracy on labeled images, or with "
            "--robustness teachers' accuracy under corruptions and FGSM / PGD",
            _evaluate_arguments, _evaluate),
)
