"""The robustness table of `docs/results.md`: the demo's teacher and students (and the
labeled-only control and the noise-free student of `scripts/demo_results.py`) under the 19
corruptions at severities 1-5 and under FGSM / PGD, on each seed's held-out digits.

    python scripts/demo_robustness.py --runs results-runs --seeds 0 1 2

`--runs` is `scripts/demo_results.py`'s `--out` (with `main`, `labeled_only` and `no_noise`
finished). Each seed's models are scored by `nsjax.loop._robustness.evaluate_robustness` with
the same corrupted images (one key per seed); `RUNS/robustness/seed<S>/` gets each model's
result (resumable: a rerun computes only what is missing) and the `nsjax evaluate --robustness`
report (robustness.md, .json, .png). Prints the Markdown tables (mean ± std over seeds): by
corruption group, then per corruption.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics

from nsjax.cli._common import setup_jax

setup_jax()  # as the nsjax commands: XLA's classic CPU codegen, the compilation cache

import jax  # noqa: E402

from nsjax._io import atomic_write_text  # noqa: E402
from nsjax.data import NpzSource  # noqa: E402
from nsjax.loop._robustness import evaluate_robustness, write_robustness_report  # noqa: E402

# label -> (run folder name, generation): the models compared
MODELS = {
    "teacher (gen 0, w0.25)": ("main", 0),
    "student 1 (gen 1, w0.5)": ("main", 1),
    "student 2 (gen 2, w0.5)": ("main", 2),
    "labeled-only control (w0.5)": ("labeled_only", 0),
    "student 1 without noise (w0.5)": ("no_noise", 1),
}
FGSM_EPSILONS = (0.5, 1.0, 2.0, 4.0)
PGD_EPSILONS = (1.0, 2.0)  # 10 steps each: the costliest rows, so the two that separate models


def seed_results(runs: str, seed: int) -> dict:
    """{label: robustness result} of one seed. Each model's result is kept in
    `RUNS/robustness/seed<S>/<label>.json` as soon as it is computed (a rerun skips it), and
    the seed's report is written once all are in."""
    out = os.path.join(runs, "robustness", f"seed{seed}")
    os.makedirs(out, exist_ok=True)
    test = NpzSource(os.path.join(runs, "data", f"seed{seed}", "test.npz"))
    results = {}
    for label, (name, g) in MODELS.items():
        path = os.path.join(out, f"{name}_gen{g}.json")
        if not os.path.exists(path):
            teacher = os.path.join(runs, name, f"seed{seed}", f"gen{g}", "train", "teacher.eqx")
            result = evaluate_robustness(teacher, test, jax.random.key(seed),
                                         fgsm_epsilons=FGSM_EPSILONS, pgd_epsilons=PGD_EPSILONS)
            atomic_write_text(path, json.dumps(result))
            print(f"seed {seed} {label}: clean {result['clean']:.2%}", flush=True)
        with open(path) as f:
            results[label] = json.load(f)
    write_robustness_report(out, results)
    return results


def _stats(values: list[float]) -> str:
    mean = 100 * statistics.fmean(values)
    std = 100 * statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{mean:.1f} ± {std:.1f}"


GROUPS = {
    "noise (4)": ("gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise"),
    "blur (5)": ("defocus_blur", "glass_blur", "motion_blur", "zoom_blur", "gaussian_blur"),
    "weather (4)": ("snow", "frost", "fog", "spatter"),
    "digital (6)": ("brightness", "contrast", "elastic_transform", "pixelate",
                    "jpeg_compression", "saturate"),
}


def _corrupted_mean(result: dict, names=None) -> float:
    """Mean accuracy over the corruptions (`names`, default all run) and their severities."""
    names = names or list(result["corruptions"])
    return statistics.fmean(a for n in names for a in result["corruptions"][n])


def table(per_seed: list[dict], *, per_corruption: bool = False) -> str:
    """Rows: conditions; columns: models; cells: top-1 % mean ± std over seeds. The
    corruptions by group (or each one, `per_corruption`), then the attacks, then the mean
    corruption error over the 15 benchmark corruptions (lower is better)."""
    labels = list(per_seed[0])
    first = per_seed[0][labels[0]]
    rows = [("clean", lambda r: r["clean"]),
            ("all 19 corruptions, severities 1-5", _corrupted_mean)]
    groups = ({n: (n,) for n in first["corruptions"]} if per_corruption else GROUPS)
    for group, names in groups.items():
        rows.append((group, lambda r, names=names: _corrupted_mean(r, names)))
    for attack in ("fgsm", "pgd"):
        for i, eps in enumerate(first[attack]["epsilons"]):
            rows.append((f"{attack.upper()} ε = {eps:g}",
                         lambda r, a=attack, i=i: r[a]["accuracy"][i]))
    rows.append(("mean corruption error, 15 benchmark corruptions (lower is better)",
                 lambda r: r["mean_corruption_error"]))
    lines = ["| condition | " + " | ".join(labels) + " |", "|---|" + "---|" * len(labels)]
    for condition, value in rows:
        cells = [_stats([value(seed[label]) for seed in per_seed]) for label in labels]
        lines.append(f"| {condition} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", required=True, help="scripts/demo_results.py's --out")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    per_seed = [seed_results(args.runs, s) for s in args.seeds]
    print(table(per_seed))
    print()
    print(table(per_seed, per_corruption=True))


if __name__ == "__main__":
    main()
