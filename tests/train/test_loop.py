"""`fit` on a real dataset (scikit-learn's digits): the student learns, its eval-mode BN
statistics are right after a short run, the run folder holds what it promises, and bad input
is refused before any work."""

import json

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nsjax.models import B0_BLOCKS, efficientnet_from_config
from nsjax.train import (
    Checkpointer,
    Teacher,
    TrainConfig,
    TrainState,
    ema_model,
    fit,
    init_state,
    jit_steps,
    load_teacher,
    make_mesh,
    normalize,
    predict_step,
    running_bn_state,
    shard_batch,
)

# Two B0 stages at width 0.25 and 32 px: it compiles in seconds and reaches ~70% on digits in
# 129 steps. BN momentum is the TF default 0.99, the short-run case of the issue.
CONFIG = TrainConfig(width=0.25, blocks=B0_BLOCKS[:2], head_channels=64, small_image=True,
                     resolution=32, num_classes=10, labeled_batch=32, unlabeled_ratio=0.0,
                     epochs=3.0, compute_dtype="float32", randaugment_magnitude=None,
                     dropout_rate=0.0, drop_path_rate=0.0, base_learning_rate=0.1,
                     warmup_epochs=0.5, log_every=10, eval_every=43, checkpoint_every=50)  # fmt: skip


def _digits():
    from sklearn.datasets import load_digits

    d = load_digits()
    x = np.repeat(np.repeat((d.images * (255 / 16)).round().astype(np.uint8), 4, 1), 4, 2)
    x = np.stack([x] * 3, axis=-1)  # [1797, 32, 32, 3]
    order = np.random.default_rng(0).permutation(len(x))
    x, y = x[order], d.target[order].astype(np.int32)
    return dict(images=x[:1400], labels=y[:1400]), dict(images=x[1400:], labels=y[1400:])


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    labeled, test = _digits()
    state, summary = fit(CONFIG, labeled, test=test, out_dir=str(out))
    return out, labeled, test, state, summary


def _records(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_the_student_learns(run):
    out, _, _, state, summary = run
    train = [r for r in _records(out) if "loss" in r]
    assert [r["step"] for r in train] == list(range(10, 130, 10)) + [129]
    assert np.mean([r["loss"] for r in train[-3:]]) < 0.7 * np.mean([r["loss"] for r in train[:2]])
    accuracy = [r["accuracy"] for r in train]
    assert np.mean(accuracy[-3:]) > np.mean(accuracy[:2]) + 0.2
    assert summary["steps"] == int(state.step) == 129  # ceil(3 epochs * 43 steps)
    assert 0.5 < summary["test_top1"] <= summary["test_top5"] <= 1.0  # chance is 0.1
    evals = [r for r in _records(out) if "test_top1" in r]
    assert [r["step"] for r in evals] == [43, 86, 129]


def test_eval_mode_accuracy_matches_batch_statistics_after_a_short_run(run):
    """After 129 steps at BN momentum 0.99 the moving averages lag the weights; the EMA model
    evaluated with its re-estimated statistics scores what it scores with batch statistics
    (within 1 point, or better), while the moving averages alone lose most of it."""
    _, _, test, state, _ = run
    x = normalize(test["images"], CONFIG.mean, CONFIG.std, jnp.float32)
    accuracy = lambda logits: float(np.mean(np.argmax(logits, -1) == test["labels"]))  # noqa: E731
    model, bn_state = ema_model(state)
    eval_mode = accuracy(model(x, bn_state, train=False)[0])
    batch_stats = accuracy(model(x, bn_state, key=jax.random.key(0), train=True)[0])
    moving = accuracy(model(x, running_bn_state(state), train=False)[0])
    assert eval_mode >= batch_stats - 0.01
    assert moving < batch_stats - 0.2  # what the test guards against


def test_the_run_folder_holds_config_metrics_checkpoints_and_the_teacher(run):
    out, _, test, state, summary = run
    assert TrainConfig.load(out / "config.json") == TrainConfig(
        **{**CONFIG.__dict__, "steps_per_epoch": 43})
    assert json.loads((out / "summary.json").read_text())["test_top1"] == summary["test_top1"]
    with Checkpointer(out / "checkpoints", keep=3) as ckpt:
        assert ckpt.all_steps() == [50, 100, 129]
    teacher = load_teacher(out / "teacher.eqx", num_classes=10)
    model, bn_state = ema_model(state)
    predict = eqx.filter_jit(lambda m, s: predict_step(m, s, CONFIG, test["images"][:64], top_k=3))
    want = predict(model, bn_state)
    got = predict(teacher.model, teacher.state)
    np.testing.assert_array_equal(got[1], want[1])
    np.testing.assert_allclose(got[0], want[0], rtol=1e-6)
    steps = jit_steps(state, make_mesh())  # the sharded, jitted predict_step of the EMA model
    images = shard_batch(dict(images=test["images"][:64]), steps.mesh)["images"]
    probs, classes = steps.predict(state, images, top_k=3)
    np.testing.assert_array_equal(classes, want[1])
    np.testing.assert_allclose(probs, want[0], rtol=1e-5, atol=1e-7)


def test_a_rerun_with_another_config_is_refused(run):
    out, labeled, _, _, _ = run
    other = TrainConfig(**{**CONFIG.__dict__, "base_learning_rate": 0.2})
    with pytest.raises(ValueError, match="base_learning_rate"):
        fit(other, labeled, out_dir=str(out))


@pytest.fixture(scope="module")
def data():
    return _digits()


@pytest.mark.parametrize("change, message", [
    (lambda lab, unl: lab.pop("labels"), "labels"),
    (lambda lab, unl: lab.update(images=lab["images"].astype(np.float32)), "images"),
    (lambda lab, unl: lab.update(images=np.transpose(lab["images"], (0, 3, 1, 2))), "images"),
    (lambda lab, unl: lab.update(images=np.pad(lab["images"], ((0, 0), (4, 4), (4, 4), (0, 0)))),
     "32x32"),
    (lambda lab, unl: lab.update(labels=lab["labels"] + 5), r"\[0, 10\)"),
    (lambda lab, unl: lab.update(labels=lab["labels"][:-1]), "one length"),
    (lambda lab, unl: unl.update(images=lab["images"]), "unlabeled"),
])  # fmt: skip
def test_bad_input_is_refused_before_any_work(data, tmp_path, change, message):
    labeled, test = ({k: v.copy() for k, v in d.items()} for d in data)
    unlabeled = {}
    change(labeled, unlabeled)
    with pytest.raises((ValueError, TypeError), match=message):
        fit(CONFIG, labeled, unlabeled or None, test, out_dir=str(tmp_path))
    assert not any(tmp_path.iterdir())  # nothing written


def test_a_teacher_with_another_class_count_is_refused(data, tmp_path):
    labeled, _ = data
    config = TrainConfig(**{**CONFIG.__dict__, "unlabeled_ratio": 1.0})
    model, bn = efficientnet_from_config(config.model_config(), key=jax.random.key(0),
                                         num_classes=5)  # fmt: skip
    with pytest.raises(ValueError, match="5 classes"):
        fit(config, labeled, dict(images=labeled["images"]), teacher=Teacher(model, bn),
            out_dir=str(tmp_path))


@pytest.mark.slow
def test_a_non_finite_loss_stops_the_run_and_keeps_the_last_good_checkpoint(data, tmp_path):
    labeled, _ = data
    config = TrainConfig(**{**CONFIG.__dict__, "base_learning_rate": 1e30, "warmup_epochs": 0.0,
                            "checkpoint_every": 1, "log_every": 1, "eval_every": 0})
    with pytest.raises(FloatingPointError, match="last good checkpoint is step"):
        fit(config, labeled, out_dir=str(tmp_path))
    with Checkpointer(tmp_path / "checkpoints", keep=3) as ckpt:
        last = ckpt.latest_step()
        like = eqx.filter_eval_shape(init_state, TrainConfig.load(tmp_path / "config.json"),
                                     jax.random.key(0))  # fmt: skip
        state, _ = ckpt.restore(like)
    assert isinstance(state, TrainState) and int(state.step) == last
    params = jax.tree.leaves(eqx.filter(state.model, eqx.is_inexact_array))
    assert all(np.all(np.isfinite(v)) for v in params)
