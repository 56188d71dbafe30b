"""Warm starts (`init_state(model=, bn_state=)`, `fit(init=)`): the step-0 state is the given
model, its EMA model the given model with its BN statistics, in copies; a model of another
resolution is taken into the config's, any other architecture or class count is refused
(by `fit` before its folder exists)."""

import dataclasses

import equinox as eqx
import jax
import numpy as np
import pytest

from nsjax.models import B0_BLOCKS, efficientnet_from_config
from nsjax.train import Teacher, ema_model, fit, init_state, running_bn_state
from tests.train._runs import assert_leaves_equal, leaves, tiny_config

CONFIG = tiny_config(blocks=B0_BLOCKS[:1], head_channels=64, unlabeled_ratio=0.0)


def _teacher(config, seed: int = 7, num_classes: int | None = None) -> Teacher:
    """A model of `config`'s architecture (other weights than `init_state`'s) whose BN
    statistics are not the initial (0, 1)."""
    model, state = efficientnet_from_config(config.model_config(), key=jax.random.key(seed),
                                            num_classes=num_classes or config.num_classes)
    rng = np.random.default_rng(seed)
    state = jax.tree.map(lambda x: x + rng.uniform(0.1, 1.0, x.shape).astype(x.dtype), state)
    return Teacher(model, state)


@pytest.mark.parametrize("bn_debias", [True, False])
def test_the_step_0_state_is_the_teacher_in_copies(bn_debias):
    config = dataclasses.replace(CONFIG, bn_debias=bn_debias)
    teacher = _teacher(config)
    state = init_state(config, jax.random.key(0), model=teacher.model, bn_state=teacher.state)
    model, bn_state = ema_model(state)  # the step-0 EMA model is the teacher itself
    for what, got, expected in (("model", state.model, teacher.model),
                                ("EMA model", model, teacher.model),
                                ("EMA BN statistics", bn_state, teacher.state)):  # fmt: skip
        assert_leaves_equal(leaves(got), leaves(expected), what=what)
    running = leaves(running_bn_state(state))
    for name, value in leaves(teacher.state).items():  # debiased: re-estimated from step 0
        assert np.array_equal(running[name], value) != bn_debias, name
    # copies: the teacher stays usable once a step has donated the state's buffers
    stem, teacher_stem = state.model.stem.weight, teacher.model.stem.weight
    assert stem.unsafe_buffer_pointer() != teacher_stem.unsafe_buffer_pointer()


def test_a_model_of_another_resolution_takes_the_configs():
    teacher = _teacher(dataclasses.replace(CONFIG, resolution=64))
    assert teacher.model.config.train_resolution == 64
    state = init_state(CONFIG, jax.random.key(0), model=teacher.model, bn_state=teacher.state)
    fresh = eqx.filter_eval_shape(init_state, CONFIG, jax.random.key(0))
    assert state.model.config == CONFIG.model_config()
    assert jax.tree.structure(state) == jax.tree.structure(fresh)  # what the jitted steps take
    np.testing.assert_array_equal(state.model.classifier.weight,
                                  teacher.model.classifier.weight)


@pytest.mark.parametrize("teacher, message", [
    (lambda: _teacher(CONFIG, num_classes=5), "got a model of 5 classes"),
    (lambda: _teacher(dataclasses.replace(CONFIG, width=0.5)), r"width=0.5 \(expected 0.25\)"),
    (lambda: _teacher(dataclasses.replace(CONFIG, dropout_rate=0.5)), "dropout_rate=0.5"),
    (lambda: _teacher(dataclasses.replace(CONFIG, small_image=False)), "small_image=False"),
])  # fmt: skip
def test_another_architecture_or_class_count_is_refused_before_any_work(tmp_path, teacher,
                                                                        message):  # fmt: skip
    teacher = teacher()
    with pytest.raises(ValueError, match="model must have the config's architecture .*" + message):
        init_state(CONFIG, jax.random.key(0), model=teacher.model, bn_state=teacher.state)
    out = tmp_path / "run"
    labeled = dict(images=np.zeros((8, 32, 32, 3), np.uint8), labels=np.zeros(8, np.int32))
    with pytest.raises(ValueError, match="init must have the config's architecture .*" + message):
        fit(CONFIG, labeled, init=teacher, out_dir=str(out))
    assert not out.exists()


def test_bad_warm_starts_are_refused_naming_the_argument(tmp_path):
    teacher = _teacher(CONFIG)
    labeled = dict(images=np.zeros((8, 32, 32, 3), np.uint8), labels=np.zeros(8, np.int32))
    with pytest.raises(TypeError, match="init must be an nsjax.train.Teacher"):
        fit(CONFIG, labeled, init=teacher.model, out_dir=str(tmp_path / "run"))
    assert not (tmp_path / "run").exists()
    with pytest.raises(ValueError, match="model and bn_state must be given together"):
        init_state(CONFIG, jax.random.key(0), model=teacher.model)
    other = _teacher(tiny_config(blocks=B0_BLOCKS[:2], head_channels=64))
    with pytest.raises(ValueError, match="state does not fit the model"):
        init_state(CONFIG, jax.random.key(0), model=teacher.model, bn_state=other.state)
