"""Mutation test of the suite: plant plausible bugs in nsjax/, one at a time, and check that the
tests catch each.

Each mutant replaces one exact snippet of one source file (the snippet must occur once) in a
copy of the repository, then runs the test files that should catch it there. A mutant that
leaves those tests green survived: the suite misses that bug. Not collected by pytest (no
`test_` prefix); run it by hand after changing tests or code:

    python tests/mutants.py            # every mutant, a table at the end
    python tests/mutants.py 3 7        # mutants 3 and 7 only
    python tests/mutants.py --list     # what each mutant plants

The working tree is never modified.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parent.parent


class Mutant(NamedTuple):
    what: str  # the plausible bug, in words
    path: str  # file under the repository root
    old: str  # exact snippet, occurring once
    new: str
    tests: tuple[str, ...]  # test files (or node ids) expected to catch it


RA = ("tests/test_randaugment_draws.py", "tests/test_randaugment.py",
      "tests/test_randaugment_levels.py")

MODEL = ("tests/models/test_noise_reaches_student.py",)

FREEZE = ("tests/train/test_freeze.py",)

MUTANTS: tuple[Mutant, ...] = (
    # ---- losses
    Mutant("hard CE: an out-of-range traced label reads a clipped class instead of NaN",
           "nsjax/losses.py", "return _checks.nan_unless(valid, loss)", "return loss",
           ("tests/test_losses.py",)),
    Mutant("hard pseudo labels: ties go to the highest class",
           "nsjax/losses.py", "jnp.argmax(logits, axis=-1)",
           "(logits.shape[-1] - 1 - jnp.argmax(logits[:, ::-1], axis=-1))",
           ("tests/test_losses.py",)),
    Mutant("label smoothing spreads s over C - 1 classes",
           "nsjax/losses.py", "smoothing / targets.shape[-1]",
           "smoothing / (targets.shape[-1] - 1)", ("tests/test_losses.py",)),
    Mutant("noisy_student_loss drops the unlabeled ratio",
           "nsjax/losses.py", "jnp.mean(labeled) + ratio * jnp.mean(unlabeled)",
           "jnp.mean(labeled) + jnp.mean(unlabeled)", ("tests/test_losses.py",)),
    Mutant("padded rows masked by `where` are still checked",
           "nsjax/losses.py", "bad &= np.asarray(where)", "bad &= True",
           ("tests/test_losses.py",)),
    # ---- RandAugment
    Mutant("RandAugment signs drawn with p = 0.75 instead of 0.5",
           "nsjax/noise/_randaugment.py", "jax.random.bernoulli(k_sign, 0.5,",
           "jax.random.bernoulli(k_sign, 0.75,", RA),
    Mutant("RandAugment reuses one sign draw for every layer",
           "nsjax/noise/_randaugment.py", "jax.random.bernoulli(k_sign, 0.5, (num_layers, batch))",
           "jnp.broadcast_to(jax.random.bernoulli(k_sign, 0.5, (1, batch)), (num_layers, batch))",
           RA),
    Mutant("RandAugment never draws the last op",
           "nsjax/noise/_randaugment.py",
           "jax.random.randint(key, (num_layers, batch), 0, num_ops, dtype=jnp.int32)",
           "jax.random.randint(key, (num_layers, batch), 0, num_ops - 1, dtype=jnp.int32)", RA),
    Mutant("enhance factor 1.8 L instead of 1.8 L + 0.1",
           "nsjax/noise/_randaugment.py", "factor=f32(level * 1.8 + 0.1)",
           "factor=f32(level * 1.8)", RA),
    Mutant("Cutout centres one row short (never the last row)",
           "nsjax/noise/_randaugment.py",
           "limits = jnp.broadcast_to(jnp.asarray([height, width], jnp.int32), (*shape, 2))",
           "limits = jnp.broadcast_to(jnp.asarray([height - 1, width], jnp.int32), (*shape, 2))",
           RA),
    # ---- model noise and initialisation
    Mutant("classifier dropout takes the drop-path rate",
           "nsjax/models/_efficientnet.py",
           "pooled = dropout(k_drop, pooled, self.config.dropout_rate, train=train)",
           "pooled = dropout(k_drop, pooled, self.config.drop_path_rate, train=train)", MODEL),
    Mutant("every block draws drop-path from one shared key",
           "nsjax/models/_efficientnet.py",
           "block(h, state, key=None if keys is None else keys[i], train=train)",
           "block(h, state, key=None if keys is None else keys[0], train=train)", MODEL),
    Mutant("drop-path rate rule i / (N + 1)",
           "nsjax/noise/_depth.py", "return tuple(max_rate * i / num_blocks for i in range(num_blocks))",
           "return tuple(max_rate * i / (num_blocks + 1) for i in range(num_blocks))",
           ("tests/models/test_noise_reaches_student.py", "tests/test_noise_depth.py")),
    Mutant("drop-path keeps with probability rate instead of 1 - rate",
           "nsjax/noise/_depth.py", "keep = jax.random.uniform(key, mask_shape) < survival",
           "keep = jax.random.uniform(key, mask_shape) < jnp.maximum(1.0 - survival, 1e-3)",
           ("tests/test_noise_depth.py",)),
    Mutant("convolution init scale from fan_in",
           "nsjax/models/_layers.py",
           "std = conv_init_std(kernel, out_channels, groups)",
           "std = conv_init_std(kernel, in_channels, groups)",
           ("tests/models/test_init_and_batchnorm.py",)),
    Mutant("BN running statistics move by momentum instead of 1 - momentum",
           "nsjax/models/_layers.py", "(m * run_mean + (1 - m) * lax.stop_gradient(mean),",
           "((1 - m) * run_mean + m * lax.stop_gradient(mean),",
           ("tests/models/test_init_and_batchnorm.py",)),
    Mutant("BN epsilon outside the square root",
           "nsjax/models/_layers.py", "mult = self.scale * lax.rsqrt(var + self.eps)",
           "mult = self.scale / (jnp.sqrt(var) + self.eps)",
           ("tests/models/test_init_and_batchnorm.py",)),
    # ---- balance
    Mutant("balance keeps samples just below min_confidence (threshold rounded down)",
           "nsjax/balance.py", "return x if float(x) >= t else np.nextafter(x, np.float32(np.inf))",
           "return x if float(x) <= t else np.nextafter(x, np.float32(-np.inf))",
           ("tests/test_balance.py",)),
    Mutant("balance result not shuffled (rows grouped by class)",
           "nsjax/balance.py", "    rng.shuffle(indices)\n", "", ("tests/test_balance.py",)),
    # ---- fixres
    Mutant("evaluation crop offset rounds down instead of up",
           "nsjax/fixres.py", "return (height - side + 1) // 2, (width - side + 1) // 2, side, side",
           "return (height - side) // 2, (width - side) // 2, side, side",
           ("tests/test_fixres.py",)),
    Mutant("Inception crop shares one box draw across the batch",
           "nsjax/fixres.py", "u = jax.random.uniform(key, (batch, 2 * n + 2))",
           "u = jnp.broadcast_to(jax.random.uniform(key, (1, 2 * n + 2)), (batch, 2 * n + 2))",
           ("tests/test_fixres.py",)),
    # ---- FixRes fine-tune: frozen blocks, warm start, centre crop
    Mutant("frozen leaves masked with optax.masked (their gradients pass through as updates)",
           "nsjax/train/_recipe.py",
           "    return optax.multi_transform(\n        {True: optimizer, False: optax.set_to_zero()},",
           "    return optax.masked(\n        optimizer,", FREEZE),
    Mutant("frozen gradients zeroed, then the whole optimizer (weight decay moves them)",
           "nsjax/train/_recipe.py",
           "    return optax.multi_transform(\n        {True: optimizer, False: optax.set_to_zero()},\n"
           "        lambda params: fixres.fixres_trainable(params, freeze=patterns))",
           "    return optax.chain(optax.masked(optax.set_to_zero(), lambda params: jax.tree.map(\n"
           "        lambda t: not t, fixres.fixres_trainable(params, freeze=patterns))), optimizer)",
           FREEZE),
    Mutant("freeze_blocks freezes one block too many",
           "nsjax/train/_recipe.py", "for i in range(config.freeze_blocks))",
           "for i in range(config.freeze_blocks + 1))", FREEZE),
    Mutant("the stem is not frozen with the blocks",
           "nsjax/train/_recipe.py", r'return r"^\.(stem|bn_stem)\.",', r'return r"^\.(bn_stem)\.",',
           FREEZE),
    Mutant("EMA as optax.incremental_update (an unchanged, frozen value moves by a rounding)",
           "nsjax/train/_recipe.py",
           "return jax.tree.map(lambda e, n: (e - rate * (e - n)).astype(e.dtype), ema, new)",
           "return jax.tree.map(lambda a, e: a.astype(e.dtype),\n"
           "                        optax.incremental_update(new, ema, step_size=rate), ema)",
           FREEZE),
    Mutant("freeze_blocks not checked against the block count",
           "nsjax/train/_config.py", "if self.freeze_blocks > count:",
           "if self.freeze_blocks > count + 1:", FREEZE),
    Mutant("fit ignores its warm start",
           "nsjax/train/_loop.py",
           "warm = {} if init is None else dict(model=init.model, bn_state=init.state)",
           "warm = {}", ("tests/loop/test_finetune.py",)),
    Mutant("a warm start's EMA BN statistics start at (0, 1), not the teacher's",
           "nsjax/train/_state.py", "ema_bn_state=_copy(bn_state),",
           "ema_bn_state=_bn_pairs(bn_state, lambda m, v: (m * 0, v * 0 + 1)),",
           ("tests/train/test_warm_start.py",)),
    Mutant("a warm start of another resolution is refused",
           "nsjax/train/_state.py",
           "got = dataclasses.replace(model.config, train_resolution=want.train_resolution,",
           "got = dataclasses.replace(model.config, train_resolution=model.config.train_resolution,",
           ("tests/train/test_warm_start.py",)),
    Mutant("a warm start of another architecture is accepted",
           "nsjax/train/_state.py", "if got != want or model.num_classes != config.num_classes:",
           "if model.num_classes != config.num_classes:", ("tests/train/test_warm_start.py",)),
    Mutant("the fine-tune's model keeps the teacher's test resolution",
           "nsjax/loop/_finetune.py", "test_resolution=resolution,", "",
           ("tests/loop/test_finetune.py",)),
    Mutant("the fine-tune trains on Inception crops",
           "nsjax/loop/_finetune.py",
           'crop = TrainCrop(resolution, crop="center", flip=False, resize="pil")',
           "crop = TrainCrop(resolution)", ("tests/loop/test_finetune.py",)),
    Mutant("the centre training crop ignores crop_fraction",
           "nsjax/data/_crops.py",
           "self.center = EvalCrop(self.size, crop_fraction=crop_fraction, resize=self.resize)",
           "self.center = EvalCrop(self.size, resize=self.resize)",
           ("tests/data/test_crops_center.py",)),
    Mutant("the centre training crop mirrors even with flip=False",
           "nsjax/data/_crops.py", "if rng.random() < 0.5 and self.flip:",
           "if rng.random() < 0.5 and (self.flip or self.crop == \"center\"):",
           ("tests/data/test_crops_center.py",)),
)


def _copy_tree(dest: Path) -> None:
    ignore = shutil.ignore_patterns(".git", ".venv", "__pycache__", ".hypothesis",
                                    ".pytest_cache", "results", "*.egg-info")
    shutil.copytree(ROOT, dest, ignore=ignore, dirs_exist_ok=True)


def run(mutant: Mutant, workdir: Path) -> tuple[bool, float]:
    """Plant `mutant` in a fresh copy under `workdir`; True when its tests fail (caught)."""
    copy = workdir / "repo"
    shutil.rmtree(copy, ignore_errors=True)
    _copy_tree(copy)
    source = copy / mutant.path
    text = source.read_text()
    count = text.count(mutant.old)
    if count != 1:
        raise SystemExit(f"mutant {mutant.what!r}: snippet occurs {count} times in {mutant.path}")
    source.write_text(text.replace(mutant.old, mutant.new))
    env = {**os.environ, "PYTHONPATH": str(copy)}  # the copy's nsjax shadows the installed one
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-x", "-q", "-n", "0", "-p", "no:cacheprovider",
         *mutant.tests],
        cwd=copy, env=env, capture_output=True, text=True)
    if result.returncode not in (0, 1):  # 1: tests failed; anything else: the run itself broke
        raise SystemExit(f"mutant {mutant.what!r} broke the run (exit {result.returncode}):\n"
                         + result.stdout[-3000:] + result.stderr[-3000:])
    return result.returncode == 1, time.perf_counter() - start


def main(argv: list[str]) -> int:
    if "--list" in argv:
        for i, m in enumerate(MUTANTS):
            print(f"{i:2d}  {m.path}: {m.what}  [{', '.join(m.tests)}]")
        return 0
    chosen = [int(a) for a in argv] or range(len(MUTANTS))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in chosen:
            caught, seconds = run(MUTANTS[i], Path(tmp))
            rows.append((i, caught, seconds))
            print(f"{i:2d} {'caught  ' if caught else 'SURVIVED'} {seconds:6.1f} s  "
                  f"{MUTANTS[i].what}", flush=True)
    survived = [i for i, caught, _ in rows if not caught]
    print(f"\n{len(rows) - len(survived)} of {len(rows)} mutants caught"
          + (f"; survived: {survived}" if survived else ""))
    return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
