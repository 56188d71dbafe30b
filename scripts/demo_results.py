"""The method-validity runs behind `docs/results.md`: the demo's Noisy Student loop over several
seeds, and ablations of its first student, each on the demo's data split of that seed.

    python scripts/demo_results.py --out results-runs --seeds 0 1 2 [--only main hard ...]

Every run is an `nsjax.loop.iterate` folder `OUT/<name>/seed<S>`, resumable (rerun the same
command after a kill). An ablation changes generation 1 of the demo config and starts from a
copy of the same seed's finished generation-0 teacher, so that every ablation student learns
from the very teacher the main run's did; `labeled_only` is the control "the same student
trained as long under the same noise on the labeled data alone". Several processes may run
different names side by side (after `main`). Writes `OUT/results.json` (every finished run's
summary) and prints the Markdown tables of docs/results.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import time

from nsjax.cli._common import setup_jax

setup_jax()  # as `nsjax demo`: XLA's classic CPU codegen, the compilation cache

from nsjax._io import atomic_write_text  # noqa: E402
from nsjax.data import NpzSource  # noqa: E402
from nsjax.loop import IterateConfig, iterate  # noqa: E402
from nsjax.loop._demo import demo_config, digits_splits  # noqa: E402

# name -> (what it tests, generation-1 overrides, or a named change); None: the main run (the
# main run's soft labels keep all 10 classes: top_k=10 is the full vector for the digits)
ABLATIONS = {
    "main": ("teacher -> larger noisy student -> noisy student of that size (the demo)", None),
    "labeled_only": ("the same student, trained as long under the same noise on the labeled "
                     "data alone (no teacher, no unlabeled data)", "labeled_only"),
    "no_noise": ("no noise: no RandAugment, dropout or stochastic depth",
                 dict(randaugment_magnitude=None, dropout_rate=0.0, drop_path_rate=0.0)),
    "no_randaugment": ("no RandAugment (dropout and stochastic depth kept)",
                       dict(randaugment_magnitude=None)),
    "no_model_noise": ("no dropout or stochastic depth (RandAugment kept)",
                       dict(dropout_rate=0.0, drop_path_rate=0.0)),
    "hard": ("hard pseudo-labels instead of soft", dict(hard_targets=True)),
    "no_balance": ("no balancing or threshold: every pseudo-label once", "no_balance"),
    "equal_size": ("a student of the teacher's size (width 0.25 instead of 0.5)",
                   dict(width=0.25)),
    "top_k_3": ("soft labels kept as the top 3 classes (the rest of the mass spread evenly)",
                "top_k=3"),
}


def ablation_config(name: str, base: IterateConfig) -> IterateConfig:
    """The config of run `name`: the demo's `base` with generation 1 changed (the ablations),
    or generation 1's student alone on the labeled data ("labeled_only")."""
    what = ABLATIONS[name][1]
    if what is None:
        return base
    if what == "labeled_only":  # generation 0 only, with the student's model, noise and epochs
        student = base.generation_config(1)
        changes = {f: getattr(student, f) for f in ("width", "depth", "epochs", "dropout_rate",
                                                    "drop_path_rate", "randaugment_magnitude")}
        return IterateConfig(student=base.student,
                             generations=({**base.generations[0], **changes},))
    changes = what if isinstance(what, dict) else {}
    loop = (dict(balance_mode="none") if what == "no_balance" else
            dict(top_k=int(what.removeprefix("top_k="))) if isinstance(what, str) else {})
    return IterateConfig(student=base.student,
                         generations=(base.generations[0], {**base.generations[1], **changes}),
                         **loop)  # fmt: skip


def run(name: str, seed: int, out: str) -> dict:
    """One run of `name` for `seed` (an ablation starts from a copy of the same seed's main
    teacher); returns its summary."""
    run_dir = os.path.join(out, name, f"seed{seed}")
    paths = digits_splits(os.path.join(out, "data", f"seed{seed}"), seed=seed)
    labeled = NpzSource(paths["labeled"])
    unlabeled = NpzSource(paths["unlabeled"], labeled=False)
    test = NpzSource(paths["test"])
    config = ablation_config(name, demo_config(labeled, seed=seed))
    if name not in ("main", "labeled_only") and not os.path.exists(os.path.join(run_dir, "gen0")):
        shutil.copytree(os.path.join(out, "main", f"seed{seed}", "gen0"),
                        os.path.join(run_dir, "gen0"))
    return iterate(config, labeled, unlabeled, test, out_dir=run_dir)


def _stats(values: list[float]) -> str:
    mean = 100 * statistics.fmean(values)
    std = 100 * statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{mean:.1f} ± {std:.1f}"


def tables(results: dict) -> str:
    """The Markdown tables: the main run per generation, then each ablation's last generation
    beside the main run's generation 1, with its gain over the same seed's teacher and over
    the labeled-only control (the same student without the unlabeled data)."""
    if "main" not in results:
        return "(no finished main run yet: the tables compare every run with it)"
    main = results["main"]
    seeds = sorted(main, key=int)
    lines = ["| generation | model | test top-1 % (mean ± std) | per seed |", "|---|---|---|---|"]
    for g, first in enumerate(main[seeds[0]]["generations"]):
        accs = [main[s]["generations"][g]["test_accuracy"] for s in seeds]
        lines.append(f"| {g}{' (teacher)' if g == 0 else ''} | {first['model']} | "
                     f"{_stats(accs)} | {', '.join(f'{100 * a:.2f}' for a in accs)} |")
    control = results.get("labeled_only", {})
    lines += ["", "| run | what changes | student top-1 % | per seed | gain over the teacher, "
              "points | gain over labeled_only, points |", "|---|---|---|---|---|---|"]
    for name, runs in results.items():
        done = [s for s in seeds if s in runs]
        g = 1 if name == "main" else -1  # the main run's first student; an ablation's last
        student = [runs[s]["generations"][g]["test_accuracy"] for s in done]
        teacher = [main[s]["generations"][0]["test_accuracy"] for s in done]
        over_control = [runs[s]["generations"][g]["test_accuracy"]
                        - control[s]["generations"][0]["test_accuracy"]
                        for s in done if s in control]  # fmt: skip
        gains = [b - a for a, b in zip(teacher, student)]
        lines.append(f"| {name} | {ABLATIONS[name][0]} | {_stats(student)} | "
                     f"{', '.join(f'{100 * a:.2f}' for a in student)} | {_stats(gains)} | "
                     f"{_stats(over_control) if over_control else 'n/a'} |")
    return "\n".join(lines)


def collect(out: str) -> dict:
    """`{name: {seed: summary}}` of every finished run under `out`, read from its folders (so
    that several processes may run ablations side by side)."""
    results = {}
    for name in ABLATIONS:
        folder = os.path.join(out, name)
        for entry in sorted(os.listdir(folder)) if os.path.isdir(folder) else ():
            path = os.path.join(folder, entry, "summary.json")
            if entry.startswith("seed") and os.path.exists(path):
                with open(path) as f:
                    results.setdefault(name, {})[entry.removeprefix("seed")] = json.load(f)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="the folder of every run")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--only", nargs="*", choices=list(ABLATIONS), default=list(ABLATIONS),
                        help="the runs to make (main first: the ablations copy its teacher); "
                        "none: only collect the finished runs and print the tables")
    args = parser.parse_args()
    for name in args.only:
        for seed in args.seeds:
            start = time.perf_counter()
            summary = run(name, seed, args.out)
            accs = ", ".join(f"{100 * g['test_accuracy']:.2f}" for g in summary["generations"])
            print(f"{name} seed {seed}: {accs} ({time.perf_counter() - start:.0f} s)", flush=True)
    results = collect(args.out)
    atomic_write_text(os.path.join(args.out, "results.json"), json.dumps(results, indent=1))
    print(tables(results))


if __name__ == "__main__":
    main()
