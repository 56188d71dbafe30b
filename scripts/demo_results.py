"""The method-validity runs behind `docs/results.md`: the demo's Noisy Student loop over several
seeds, and ablations of its first student, each on the demo's data split of that seed.

    python scripts/demo_results.py --out results-runs --seeds 0 1 2 [--only main hard ...]

Every run is an `nsjax.loop.iterate` folder `OUT/<name>/seed<S>`, resumable (rerun the same
command after a kill). An ablation changes generation 1 of the demo config and starts from a
copy of the same seed's finished generation-0 teacher, so that every ablation student learns
from the very teacher the main run's did. The teacher itself is the control "the same model
trained as long under the same noise on the labeled data alone": the demo trains it as many
steps as each student. Writes `OUT/results.json` (every
run's per-generation accuracies and times) and prints the Markdown tables of docs/results.md.
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

from nsjax.data import NpzSource  # noqa: E402
from nsjax.loop import IterateConfig, iterate  # noqa: E402
from nsjax.loop._demo import demo_config, digits_splits  # noqa: E402

# name -> (what it tests, generation-1 overrides, or a named change); None: the main run (the
# main run's soft labels keep all 10 classes: top_k=10 is the full vector for the digits)
ABLATIONS = {
    "main": ("teacher -> noisy student -> noisy student (the demo)", None),
    "no_noise": ("no noise: no RandAugment, dropout or stochastic depth",
                 dict(randaugment_magnitude=None, dropout_rate=0.0, drop_path_rate=0.0)),
    "no_randaugment": ("no RandAugment (dropout and stochastic depth kept)",
                       dict(randaugment_magnitude=None)),
    "no_model_noise": ("no dropout or stochastic depth (RandAugment kept)",
                       dict(dropout_rate=0.0, drop_path_rate=0.0)),
    "hard": ("hard pseudo-labels instead of soft", dict(hard_targets=True)),
    "no_balance": ("no balancing or threshold: every pseudo-label once", "no_balance"),
    "larger": ("a larger student (width 0.5 instead of 0.25)", dict(width=0.5)),
    "larger_hard": ("a larger student (width 0.5) on hard pseudo-labels",
                    dict(width=0.5, hard_targets=True)),
    "ratio_3": ("3 pseudo-labeled images per labeled one in a step instead of 1",
                dict(unlabeled_ratio=3.0)),
    "top_k_1": ("soft labels kept as the top 1 class (the rest of the mass spread evenly)",
                "top_k=1"),
    "top_k_3": ("soft labels kept as the top 3 classes", "top_k=3"),
}


def run(name: str, seed: int, out: str) -> dict:
    """One run of the ablation `name` for `seed`; returns its summary."""
    run_dir = os.path.join(out, name, f"seed{seed}")
    paths = digits_splits(os.path.join(out, "data", f"seed{seed}"), seed=seed)
    labeled = NpzSource(paths["labeled"])
    unlabeled = NpzSource(paths["unlabeled"], labeled=False)
    test = NpzSource(paths["test"])
    base = demo_config(labeled, seed=seed)
    what = ABLATIONS[name][1]
    if what is None:
        config = base
    else:
        changes = what if isinstance(what, dict) else {}
        loop = dict(balance_mode="none") if what == "no_balance" else (
            dict(top_k=int(what.removeprefix("top_k="))) if isinstance(what, str) else {})
        config = IterateConfig(student=base.student,
                               generations=(base.generations[0],
                                            {**base.generations[1], **changes}),
                               **loop)  # fmt: skip
        teacher = os.path.join(out, "main", f"seed{seed}", "gen0")
        if not os.path.exists(os.path.join(run_dir, "gen0")):
            shutil.copytree(teacher, os.path.join(run_dir, "gen0"))
    return iterate(config, labeled, unlabeled, test, out_dir=run_dir)


def _stats(values: list[float]) -> str:
    mean = 100 * statistics.fmean(values)
    std = 100 * statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{mean:.1f} ± {std:.1f}"


def tables(results: dict) -> str:
    """The Markdown tables: the main run per generation, then generation 1 of each ablation
    beside the main run's generation 1, with its gain over the same seed's teacher."""
    main = results["main"]
    seeds = list(main)
    lines = ["| generation | model | test top-1 % (mean ± std) | per seed |", "|---|---|---|---|"]
    for g, first in enumerate(main[seeds[0]]["generations"]):
        accs = [main[s]["generations"][g]["test_accuracy"] for s in seeds]
        lines.append(f"| {g}{' (teacher)' if g == 0 else ''} | {first['model']} | "
                     f"{_stats(accs)} | {', '.join(f'{100 * a:.1f}' for a in accs)} |")
    lines += ["", "| run | what changes | student top-1 % | gain over its teacher, points |",
              "|---|---|---|---|"]
    for name, runs in results.items():
        done = [s for s in seeds if s in runs]
        g = 1 if name == "main" else -1  # the main run's first student; an ablation's last
        student = [runs[s]["generations"][g]["test_accuracy"] for s in done]
        teacher = [main[s]["generations"][0]["test_accuracy"] for s in done]
        gains = [b - a for a, b in zip(teacher, student)]
        lines.append(f"| {name} | {ABLATIONS[name][0]} | {_stats(student)} | "
                     f"{_stats(gains)} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="the folder of every run")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--only", nargs="+", choices=list(ABLATIONS), default=list(ABLATIONS),
                        help="the runs to make (main first: the ablations copy its teacher)")
    args = parser.parse_args()
    path = os.path.join(args.out, "results.json")
    results = json.load(open(path)) if os.path.exists(path) else {}
    for name in args.only:
        for seed in args.seeds:
            start = time.perf_counter()
            summary = run(name, seed, args.out)
            seconds = time.perf_counter() - start
            results.setdefault(name, {})[str(seed)] = dict(summary, seconds=seconds)
            with open(path + ".tmp", "w") as f:
                json.dump(results, f, indent=1)
            os.replace(path + ".tmp", path)
            accs = ", ".join(f"{100 * g['test_accuracy']:.1f}" for g in summary["generations"])
            print(f"{name} seed {seed}: {accs} ({time.perf_counter() - start:.0f} s)", flush=True)
    print(tables(results))


if __name__ == "__main__":
    main()
